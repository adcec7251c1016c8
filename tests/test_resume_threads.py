"""Bit-identical resume holds only at a fixed thread count: a trainer's state records torch's thread count and
restoring it brings that count back (with a one-line warning when the process had another)."""
import io
import logging

import pytest
import torch

from tune_eskd.config import StudentConfig
from tune_eskd.data import load_splits
from tune_eskd.engine import Trainer

CPU = torch.device("cpu")
CFG = dict(model="resnet8", width=0.25, epochs=2, kd_epochs=0, batch_size=32, seed=0, dataset="synthetic",
           subset=300)
TIMING = ("epoch_seconds", "images_per_sec")


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _metrics(m):
    return {k: v for k, v in m.items() if k not in TIMING}


def test_resume_restores_the_thread_count_and_continues_bit_identically(threads, caplog):
    data = load_splits("synthetic", subset=300)
    torch.set_num_threads(2)
    reference = Trainer(StudentConfig(**CFG), data, CPU)
    uninterrupted = [_metrics(reference.run_epoch()) for _ in range(2)]

    first = Trainer(StudentConfig(**CFG), data, CPU)
    assert _metrics(first.run_epoch()) == uninterrupted[0]
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)  # as a trial checkpoint stores it

    torch.set_num_threads(1)  # e.g. resumed on a worker that sets another count
    resumed = Trainer(StudentConfig(**CFG), data, CPU)
    with caplog.at_level(logging.WARNING, logger="tune_eskd"):
        resumed.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    assert torch.get_num_threads() == 2
    assert [r.getMessage().count("\n") for r in caplog.records] == [0]
    assert "2 torch threads" in caplog.records[0].getMessage()
    assert _metrics(resumed.run_epoch()) == uninterrupted[1]
    ref_state, state = reference.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(ref_state[k], state[k]) for k in ref_state)
