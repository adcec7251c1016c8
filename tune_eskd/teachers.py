"""Teachers as snapshots: what a snapshot records about its teacher, and loading one for a student."""
import dataclasses

import torch

from .config import StudentConfig, TeacherConfig
from .data import Splits
from .engine import Images, predict
from .models import MODELS, build_model
from .record import library_versions
from .snapshots import SnapshotError, load_snapshot, save_snapshot
from .teacher_stats import META_KEY, write_val_logits


def save_teacher_snapshot(path: str, cfg: TeacherConfig, model: torch.nn.Module, metrics: dict, data: Splits) -> dict:
    """Store the snapshot, after its logits on the validation split (for analysis: see teacher_stats)."""
    val = Images(data.val_x, data.val_y, data.mean, data.std, next(model.parameters()).device)
    logits = write_val_logits(path, predict(model, val).cpu().numpy())
    return save_snapshot(path, model.state_dict(), {
        "arch": cfg.model, "width": cfg.width, "num_classes": data.num_classes, "data": cfg.data_key(),
        "epoch": metrics["epoch"], "val_acc": metrics["val_acc"], "test_acc": metrics["test_acc"],
        "teacher_hash": cfg.teacher_hash(), "config": dataclasses.asdict(cfg), "versions": library_versions(),
        META_KEY: logits["sha256"],
    })


def load_teacher(path: str, student: StudentConfig, num_classes: int, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """The snapshot's model in eval mode, after checking it fits the student's data."""
    state, meta = load_snapshot(path)
    trained_on = meta.get("data") or {}
    if trained_on.get("data_hash") != student.data_hash and trained_on.get("dataset") == student.dataset:
        raise SnapshotError(f"snapshot {path} was trained on other contents of {student.dataset} (content hash "
                            f"{trained_on.get('data_hash')}, now {student.data_hash}): its files changed since; "
                            f"retrain the teacher on them")
    if trained_on != student.data_key():
        raise SnapshotError(f"snapshot {path} was trained on {meta.get('data')} but the student uses "
                            f"{student.data_key()}: pass the teacher's dataset, subset and split to the student")
    if meta.get("num_classes") != num_classes:
        raise SnapshotError(f"snapshot {path} predicts {meta.get('num_classes')} classes, the data has {num_classes}")
    arch = meta.get("arch")
    if arch not in MODELS:
        raise SnapshotError(f"snapshot {path} names unknown arch {arch!r}: retrain the teacher")
    model = build_model(arch, num_classes, meta.get("width", 1.0))
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise SnapshotError(f"snapshot {path} weights do not fit arch {arch!r} named in its metadata: "
                            f"retrain the teacher") from None
    model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model, meta
