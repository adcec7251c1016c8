"""Per-epoch trial checkpoints for Ray Tune: the trainer's state and history, checksummed.

A checkpoint that fails its checksum (or cannot be read) is never used: the trial warns and falls back to the
previous checkpoint Tune kept (CheckpointConfig(num_to_keep=2)), or starts over when none is good, so a damaged
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
    """The state of the trial's latest good checkpoint, or None for a fresh start.

    A damaged latest checkpoint (a truncated or corrupted state.pt, a missing state.json) is skipped with a
    warning and the previous one kept beside it is tried, newest first; only when none is good does the trial
    restart from epoch 0. Epochs are a pure function of (seed, epoch), so rerunning one gives the same metrics.
    """
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    for candidate in [checkpoint, *_older_checkpoints(checkpoint)]:
        state = _read_verified(candidate)
        if state is not None:
            if candidate is not checkpoint:
                log.warning("resuming the trial from the earlier checkpoint %s (epoch %s)", candidate.path,
                            state["trainer"]["epoch"])
            return state
    log.warning("no good checkpoint left for this trial: restarting it from epoch 0")
    return None


def _read_verified(checkpoint) -> dict | None:
    """A checkpoint's state after checking its checksum; None (with a warning) when it is damaged."""
    try:
        with checkpoint.as_directory() as d:
            with open(os.path.join(d, STATE_FILE), "rb") as f:
                blob = f.read()
            with open(os.path.join(d, META_FILE)) as f:
                expected = json.load(f)["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("checkpoint %s is unreadable (%s): not using it", checkpoint.path, exc)
        return None
    if hashlib.sha256(blob).hexdigest() != expected:
        log.warning("checkpoint %s fails its checksum (truncated or corrupted): not using it", checkpoint.path)
        return None
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


def _older_checkpoints(latest) -> list:
    """The trial's other checkpoint_NNNNNN folders older than `latest`, newest first (Tune keeps num_to_keep)."""
    from pyarrow import fs as pafs

    parent, name = latest.path.rstrip("/").rsplit("/", 1)
    try:
        index = int(name.rsplit("_", 1)[1])
        infos = latest.filesystem.get_file_info(pafs.FileSelector(parent))
    except (ValueError, IndexError, OSError):
        return []
    older = []
    for info in infos:
        prefix, _, num = info.base_name.rpartition("_")
        if info.type == pafs.FileType.Directory and prefix == "checkpoint" and num.isdigit() and int(num) < index:
            older.append((int(num), info.path))
    return [tune.Checkpoint(path, filesystem=latest.filesystem) for _, path in sorted(older, reverse=True)]


def report_epoch(metrics: dict, state: dict) -> None:
    with checkpoint_dir(state) as d:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
