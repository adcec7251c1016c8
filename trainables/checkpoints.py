"""Per-epoch trial checkpoints for Ray Tune, checksummed, and what a finished trial keeps of them.

While a trial runs, Tune keeps its two latest checkpoints (CheckpointConfig(num_to_keep=2)): the trainer's full
state (weights, optimizer momentum, schedule), enough to resume. (One would force a full experiment-state save
after every epoch of every trial: see pipeline._tune_configs.) When the trial finishes, `SlimFinishedTrials`
rewrites its latest checkpoint in place without the optimizer state, keeping the weights the sweep asked for
(--keep-weights none|final|best; weights are stored as float16), and deletes the other one.

A checkpoint that fails its checksum (or cannot be read) is never used: the trial warns and tries the older
checkpoint folder in its trial folder; when none is good it starts over from epoch 0. A damaged latest
checkpoint therefore costs at most the trial's epochs so far, never a wrong result: an epoch is a pure
function of (seed, role, epoch), so rerunning it gives the same metrics.

Tune deletes a checkpoint beyond num_to_keep as soon as a newer one registers, and saves its experiment state
(which names the trial's latest checkpoint) a moment later: a driver killed in between leaves a saved state that
names a deleted checkpoint, which Tune refuses to restore ("does not exist on storage anymore"), erroring the
trial. `stand_in_for_lost_checkpoints` puts an empty folder in its place before a resume, so the trial starts and
restarts from epoch 0 as above.
"""
import io
import logging
import math
import tempfile
import time
from contextlib import contextmanager

import torch
from pyarrow import fs as pafs
from ray import tune

from tune_eskd.blobs import CORRUPT, Blob, BlobError

STATE_FILE = "state.pt"  # its checksum sidecar is state.json (see tune_eskd.blobs)
KEEP_WEIGHTS = ("none", "final", "best")
log = logging.getLogger("tune_eskd")


def half(weights: dict) -> dict:
    """A state_dict with its floating tensors as float16 (integer buffers such as BN counters unchanged)."""
    return {k: v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu()
            for k, v in weights.items()}


def _write(fsys, folder: str, state: dict) -> None:
    """Write `state` into a checkpoint folder as a checksummed blob (state.pt + state.json)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    Blob(fsys, f"{folder}/{STATE_FILE}").write(buf.getvalue(), {"epoch": state["trainer"]["epoch"],
                                                                "finished": bool(state.get("finished"))})


@contextmanager
def checkpoint_dir(state: dict):
    """A temporary directory holding `state`, ready for tune.Checkpoint.from_directory."""
    with tempfile.TemporaryDirectory() as tmp:
        _write(pafs.LocalFileSystem(), tmp, state)
        yield tmp


class EpochCheckpoints:
    """A trainable's checkpoints: restore at start, report every epoch. With keep_weights="best" the state
    also carries the float16 weights of the best epoch so far (by val_acc), which the trial keeps at its end."""

    def __init__(self, keep_weights: str = "final"):
        self.keep_best = keep_weights == "best"
        self.best = None

    def restore(self) -> dict | None:
        """The latest good state (see restore_state); a finished trial's state has "finished": True."""
        state = restore_state()
        if state is not None:
            self.best = state.get("best")
        return state

    def report(self, metrics: dict, state: dict, model: torch.nn.Module) -> None:
        if self.keep_best and (self.best is None or metrics["val_acc"] > self.best["val_acc"]):
            self.best = {"epoch": metrics["epoch"], "val_acc": metrics["val_acc"], "model": half(model.state_dict())}
        report_epoch(metrics, {**state, "best": self.best} if self.keep_best else state)


def restore_state() -> dict | None:
    """The state of the trial's latest good checkpoint, or None for a fresh start (see the module docstring)."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    for candidate in _trial_checkpoints(checkpoint):
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
        blob, _ = Blob(checkpoint.filesystem, f"{checkpoint.path}/{STATE_FILE}").read()
    except BlobError as exc:
        if exc.reason == CORRUPT:
            log.warning("checkpoint %s fails its checksum (truncated or corrupted): not using it", checkpoint.path)
        else:
            log.warning("checkpoint %s is unreadable (%s): not using it", checkpoint.path, exc.reason)
        return None
    except OSError as exc:
        log.warning("checkpoint %s is unreadable (%s): not using it", checkpoint.path, exc)
        return None
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


def _trial_checkpoints(named) -> list:
    """`named` (the checkpoint Tune restored), then the older checkpoint_NNNNNN folders beside it, newest first.
    A newer folder is never used: Tune persisted it but never recorded its epoch's results (the driver died
    first), so resuming from it would leave that epoch out of the trial's results."""
    parent, name = named.path.rstrip("/").rsplit("/", 1)
    try:
        index = int(name.rsplit("_", 1)[1])
        infos = named.filesystem.get_file_info(pafs.FileSelector(parent))
    except (ValueError, IndexError, OSError):
        return [named]
    older = []
    for info in infos:
        prefix, _, num = info.base_name.rpartition("_")
        if info.type == pafs.FileType.Directory and prefix == "checkpoint" and num.isdigit() and int(num) < index:
            older.append((int(num), info.path))
    return [named, *(tune.Checkpoint(path, filesystem=named.filesystem) for _, path in sorted(older, reverse=True))]


def stand_in_for_lost_checkpoints(stage_path: str) -> list[str]:
    """Before a stage resumes: for each unfinished trial whose saved latest checkpoint is gone (see the module
    docstring), create that folder empty, so the trial restarts from epoch 0 instead of erroring. Returns one
    line per such trial."""
    from tune_eskd.saved_state import stage_trials

    lines = []
    for trial in stage_trials(stage_path):
        checkpoint = trial.checkpoint
        if trial.status == "TERMINATED" or checkpoint is None:
            continue
        if checkpoint.filesystem.get_file_info(checkpoint.path).type == pafs.FileType.NotFound:
            checkpoint.filesystem.create_dir(checkpoint.path)
            lines.append(f"trial {trial.trial_id}: its saved checkpoint {checkpoint.path} was deleted by Tune just "
                         f"before the driver stopped; the trial restarts from epoch 0 (same results)")
    return lines


def report_epoch(metrics: dict, state: dict) -> None:
    with checkpoint_dir(state) as d:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def finished_state(state: dict, keep_weights: str) -> dict:
    """What a finished trial keeps of its last state: its epoch, and the weights asked for, as float16."""
    slim = {"trainer": {"epoch": state["trainer"]["epoch"]}, "finished": True, "keep_weights": keep_weights}
    if keep_weights == "final":
        slim.update(weights=half(state["trainer"]["model"]), weights_epoch=state["trainer"]["epoch"])
    elif keep_weights == "best" and state.get("best"):
        slim.update(weights=state["best"]["model"], weights_epoch=state["best"]["epoch"])
    return slim


def slim_trial(checkpoint, keep_weights: str) -> list:
    """Rewrite a finished trial's checkpoint in place as its finished_state; return the trial's older checkpoint
    folders, which SlimFinishedTrials deletes once Tune has saved the trial as finished. state.pt is replaced
    before state.json: a driver killed in between leaves a checkpoint that fails its checksum, which a resume
    treats as damaged (it reruns the trial), never as wrong."""
    state = _read_verified(checkpoint)
    fsys, path = checkpoint.filesystem, checkpoint.path.rstrip("/")
    if state is not None and not state.get("finished"):
        _write(fsys, path, finished_state(state, keep_weights))
    return [other for other in _trial_checkpoints(checkpoint) if other.path.rstrip("/") != path]


def _delete(checkpoints) -> None:
    for other in checkpoints:
        try:
            other.filesystem.delete_dir(other.path)
        except OSError:  # already gone
            pass


def _state_saved_at(trial) -> float:
    """When Tune last saved this stage's experiment state to storage (its file's mtime; 0 if none yet)."""
    storage = trial.storage
    try:
        infos = storage.storage_filesystem.get_file_info(pafs.FileSelector(storage.experiment_fs_path))
    except OSError:
        return 0.0
    times = [i.mtime.timestamp() for i in infos if i.base_name.startswith("experiment_state-") and i.mtime]
    return max(times, default=0.0)


class SlimFinishedTrials(tune.Callback):
    """Drops a finished trial's optimizer state as soon as it finishes (so a sweep's disk use stays at one full
    checkpoint per running trial). Errored trials keep theirs: `resume` retries them from it.

    The trial's older checkpoint folders are deleted only once Tune has saved the stage's state after the trial
    finished: until then the saved state names an older checkpoint, and a driver killed in between resumes the
    trial from it, rerunning its last epoch (that epoch's report may not have reached result.json). Deleting it
    at once made such a resume fail ("does not exist on storage anymore")."""

    CHECK_SECONDS = 1.0  # how often to look for a new state save (it lists the stage folder, one entry a trial)

    def __init__(self, keep_weights: str):
        self.keep_weights = keep_weights
        self._pending = []  # (trial, when it finished, its older checkpoints)
        self._checked = -math.inf  # time.monotonic() of the last look

    def on_trial_complete(self, iteration, trials, trial, **info):
        if trial.checkpoint is not None:
            self._pending.append((trial, time.time(), slim_trial(trial.checkpoint, self.keep_weights)))

    def on_step_begin(self, iteration, trials, **info):
        if not self._pending or time.monotonic() - self._checked < self.CHECK_SECONDS:
            return
        self._checked = time.monotonic()
        saved = _state_saved_at(self._pending[0][0])
        done = [p for p in self._pending if saved > p[1]]
        for _, _, older in done:
            _delete(older)
        self._pending = [p for p in self._pending if p not in done]

    def on_experiment_end(self, trials, **info):
        for _, _, older in self._pending:  # Tune saved the final state just before this call
            _delete(older)
        self._pending = []

    def __getstate__(self):  # Tuner.restore unpickles callbacks: pending work belongs to the process that had it
        return {**self.__dict__, "_pending": [], "_checked": -math.inf}
