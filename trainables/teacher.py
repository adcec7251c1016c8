"""Ray Tune trainable: train one teacher, writing its snapshots into the shared snapshot store."""
import dataclasses
import json

from tune_eskd.config import TeacherConfig
from tune_eskd.data import Splits
from tune_eskd.engine import Trainer
from tune_eskd.gpu import DeviceSettings
from tune_eskd.blobs import filesystem, write_bytes
from tune_eskd.snapshots import SnapshotStore
from tune_eskd.teachers import save_teacher_snapshot

from .checkpoints import EpochCheckpoints
from .divergence import run_epoch
from .runtime import node_id, trial_device


def train_teacher(config: dict, data: Splits, store_root: str, keep_weights: str = "final",
                  settings: DeviceSettings = DeviceSettings()) -> None:
    cfg = TeacherConfig(**config["teacher"])
    store = SnapshotStore(store_root)
    teacher_hash = cfg.teacher_hash()
    checkpoints = EpochCheckpoints(keep_weights)
    state = checkpoints.restore()
    if state is not None and state.get("finished"):  # finished before the driver died: its snapshots are stored
        return
    trainer = Trainer(cfg, data, trial_device(settings))
    history = []
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        history = state["history"]
    while not trainer.done:
        metrics = run_epoch(trainer)
        if metrics["epoch"] in cfg.snapshots and not store.has(teacher_hash, metrics["epoch"]):
            save_teacher_snapshot(store.path(teacher_hash, metrics["epoch"]), cfg, trainer.model, metrics, data)
        history.append(metrics)
        if trainer.done:  # the teacher's curve lives beside its snapshots, for analysis without this experiment
            fsys, path = filesystem(f"{store.root}/{teacher_hash}/teacher.json")
            record = {"teacher_hash": teacher_hash, "config": dataclasses.asdict(cfg), "history": history}
            write_bytes(fsys, path, json.dumps(record, indent=1).encode())
        checkpoints.report({**metrics, "teacher_hash": teacher_hash, "node_id": node_id()},
                           {"trainer": trainer.state_dict(), "history": history}, trainer.model)
