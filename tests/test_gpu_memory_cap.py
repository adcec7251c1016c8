"""The per-trial GPU memory cap of a fractional-GPU trial (--gpus-per-trial below 1).

A Ray worker's device is the bare `cuda` (Ray sets CUDA_VISIBLE_DEVICES); torch's
set_per_process_memory_fraction wants a device index and raised on it, so every packed trial failed at its start
(found on the first GPU run, BENCHMARKS.md). These tests run without a GPU: they record what torch is asked.
"""
import pytest
import torch

from tune_eskd import gpu


@pytest.fixture
def asked(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d=None: calls.append((f, d)))
    return calls


def test_bare_cuda_device_caps_the_current_gpu_by_index(asked):
    gpu.cap_memory(torch.device("cuda"), 0.25)
    assert asked == [(pytest.approx(gpu.memory_fraction(0.25)), 0)]


def test_indexed_device_keeps_its_index(asked):
    gpu.cap_memory(torch.device("cuda", 3), 0.5)
    assert asked == [(pytest.approx(gpu.memory_fraction(0.5)), 3)]


@pytest.mark.parametrize("device,share", [("cuda", 1.0), ("cuda", 0), ("cpu", 0.25)])
def test_whole_gpu_or_cpu_sets_no_cap(asked, device, share):
    gpu.cap_memory(torch.device(device), share)
    assert asked == []
