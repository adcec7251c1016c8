"""Single runs without Ray: a teacher that writes snapshots, a student distilled from one snapshot."""
import dataclasses
import json
import os
import sys

from tqdm import tqdm

from .config import StudentConfig, TeacherConfig
from .data import load_splits
from .engine import Trainer, live_teacher, pick_device, set_threads
from .gpu import configure_backends
from .errors import UsageError
from .snapshots import read_metadata, save_snapshot
from .teachers import load_teacher, save_teacher_snapshot

METRICS_FILE = "metrics.jsonl"


def _claim_out_dir(out: str) -> str:
    out = os.path.abspath(out)
    if os.path.exists(os.path.join(out, METRICS_FILE)):
        raise UsageError(f"{out} already holds a run ({METRICS_FILE} exists): pick another --out or delete it")
    return out


def _train(trainer: Trainer, out: str, label: str, after_epoch) -> list[dict]:
    history = []
    with open(os.path.join(out, METRICS_FILE), "w") as log:
        while not trainer.done:
            n = len(trainer.train)
            with tqdm(total=n, desc=f"{label} epoch {trainer.epoch + 1}/{trainer.cfg.epochs}", unit="img",
                      leave=False, file=sys.stderr, disable=None) as bar:
                metrics = trainer.run_epoch(progress=bar.update)
            history.append(metrics)
            log.write(json.dumps(metrics) + "\n")
            log.flush()
            print(format_metrics(label, metrics), flush=True)
            after_epoch(metrics)
    return history


def format_metrics(label: str, m: dict) -> str:
    return (f"{label} epoch {m['epoch']:>3} [{m['phase']}] lr {m['lr']:.4g} loss {m['train_loss']:.4f} "
            f"train {m['train_acc']:.4f} val {m['val_acc']:.4f} test {m['test_acc']:.4f} "
            f"({m['epoch_seconds']:.1f}s, {m['images_per_sec']:.0f} img/s)")


def train_teacher(cfg: TeacherConfig, out: str, device: str = "auto", threads: int | None = None,
                  deterministic: bool = False) -> list[dict]:
    cfg.validate()
    out = _claim_out_dir(out)
    dev = pick_device(device)
    set_threads(threads)
    configure_backends(deterministic)
    data = load_splits(cfg.dataset, data_dir=cfg.data_dir, val_split=cfg.val_split, split_seed=cfg.split_seed,
                       subset=cfg.subset)
    cfg.data_hash = data.content_hash  # a snapshot of changed files then no longer matches
    os.makedirs(out, exist_ok=True)
    _write_config(out, cfg)
    trainer = Trainer(cfg, data, dev)

    def snapshot(metrics):
        if metrics["epoch"] in cfg.snapshots:
            path = os.path.join(out, "snapshots", f"epoch_{metrics['epoch']:03d}.pt")
            save_teacher_snapshot(path, cfg, trainer.model, metrics, data)
            print(f"  snapshot -> {path}", flush=True)

    return _train(trainer, out, f"teacher {cfg.model}", snapshot)


def train_student(cfg: StudentConfig, snapshot: str, out: str, device: str = "auto",
                  threads: int | None = None, deterministic: bool = False) -> list[dict]:
    cfg.validate()
    read_metadata(snapshot)  # fail on a missing snapshot before anything is written
    out = _claim_out_dir(out)
    dev = pick_device(device)
    set_threads(threads)
    configure_backends(deterministic)
    data = load_splits(cfg.dataset, data_dir=cfg.data_dir, val_split=cfg.val_split, split_seed=cfg.split_seed,
                       subset=cfg.subset)
    cfg.data_hash = data.content_hash  # a snapshot of changed files then no longer matches
    teacher, meta = load_teacher(snapshot, cfg, data.num_classes, dev)
    os.makedirs(out, exist_ok=True)
    _write_config(out, cfg, teacher_snapshot=os.path.abspath(snapshot), teacher_hash=meta.get("teacher_hash"),
                  snapshot_epoch=meta.get("epoch"))
    trainer = Trainer(cfg, data, dev, live_teacher(teacher))
    history = _train(trainer, out, f"student {cfg.model}", lambda m: None)
    save_snapshot(os.path.join(out, "student.pt"), trainer.model.state_dict(),
                  {"arch": cfg.model, "width": cfg.width, "num_classes": data.num_classes, "data": cfg.data_key(),
                   "epoch": trainer.epoch, "config": dataclasses.asdict(cfg), "teacher_snapshot": snapshot})
    return history


def _write_config(out: str, cfg, **extra) -> None:
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({**dataclasses.asdict(cfg), **extra}, f, indent=1)
