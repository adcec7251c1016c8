"""Per-epoch trial checkpoints for Ray Tune: the trainer's state and history, checksummed.

A checkpoint that fails its checksum is never used silently: the trial warns and starts over, so a damaged
file costs time, not a wrong result.
"""
import hashlib
import io
import json
import logging
import os
import tempfile
from contextlib import contextmanager

import torch
from ray import tune

STATE_FILE, META_FILE = "state.pt", "state.json"
log = logging.getLogger("tune_eskd")


@contextmanager
def checkpoint_dir(state: dict):
    """A temporary directory holding `state`, ready for tune.Checkpoint.from_directory."""
    buf = io.BytesIO()
    torch.save(state, buf)
    blob = buf.getvalue()
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, STATE_FILE), "wb") as f:
            f.write(blob)
        with open(os.path.join(tmp, META_FILE), "w") as f:
            json.dump({"sha256": hashlib.sha256(blob).hexdigest(), "epoch": state["trainer"]["epoch"]}, f)
        yield tmp


def restore_state() -> dict | None:
    """The state of the trial's latest checkpoint, or None for a fresh start (or a damaged checkpoint)."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        try:
            with open(os.path.join(d, STATE_FILE), "rb") as f:
                blob = f.read()
            with open(os.path.join(d, META_FILE)) as f:
                expected = json.load(f)["sha256"]
        except (OSError, ValueError, KeyError) as exc:
            log.warning("checkpoint %s is unreadable (%s): restarting the trial from epoch 0", checkpoint.path, exc)
            return None
    if hashlib.sha256(blob).hexdigest() != expected:
        log.warning("checkpoint %s fails its checksum: restarting the trial from epoch 0", checkpoint.path)
        return None
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


def report_epoch(metrics: dict, state: dict) -> None:
    with checkpoint_dir(state) as d:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
