"""What a trial learns from Ray about where it runs: its device, its CPU threads and its share of a GPU."""
import logging
import os

import ray
import torch
from ray import tune

from tune_eskd import gpu
from tune_eskd.engine import pick_device, set_threads


def trial_device(settings: gpu.DeviceSettings = gpu.DeviceSettings()) -> torch.device:
    """CUDA when Ray gave this trial a GPU (Ray sets CUDA_VISIBLE_DEVICES), else CPU; threads = trial CPUs."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one "checkpoint created" line per epoch is noise
    resources = tune.get_context().get_trial_resources()
    set_threads(int(resources.head_cpus) or 1)
    return worker_device(resources.required_resources.get("GPU", 0), settings)


def worker_device(gpus: float, settings: gpu.DeviceSettings) -> torch.device:
    """The device of a trial or Ray task holding `gpus` GPUs, with the backends set up and a shared GPU's
    memory capped to the share (see tune_eskd.gpu)."""
    gpu.configure_backends(settings.deterministic)
    if ray.get_gpu_ids():
        # Fewer fragments when trials share a GPU; read when CUDA starts, so it only acts before the first CUDA op.
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    device = pick_device("cuda" if ray.get_gpu_ids() else "cpu")
    gpu.cap_memory(device, gpus)
    if device.type == "cuda":  # a reused actor ran other trials before: gpu_peak_mb is this trial's own peak
        torch.cuda.reset_peak_memory_stats(device)
    return device


def node_id() -> str:
    return ray.get_runtime_context().get_node_id()
