"""Ray Tune trainable: distill one student from a teacher snapshot (KD for kd_epochs, then CE)."""
from search_spaces import student_config
from tune_eskd.data import Splits
from tune_eskd.engine import Trainer, live_teacher
from tune_eskd.snapshots import SnapshotStore
from tune_eskd.teachers import load_teacher

from .checkpoints import report_epoch, restore_state
from .runtime import node_id, trial_device


def train_student(config: dict, data: Splits, store_root: str, soft_label_root: str) -> None:
    """config = {"trial": row, **sampled}; rows marked soft_labels read the shared teacher logits."""
    row = {**config["trial"], **{k: v for k, v in config.items() if k != "trial"}}
    cfg = student_config(row)
    device = trial_device()
    teacher_logits = None
    if cfg.kd_epochs > 0:
        if row.get("soft_labels"):
            from tune_eskd.soft_labels import SoftLabelCache, cached_teacher, repair_soft_labels

            cache = SoftLabelCache(soft_label_root)
            snapshot = SnapshotStore(store_root).path(row["teacher_hash"], row["snapshot_epoch"])
            # A damaged shared entry is detected by its checksum and recomputed from the snapshot, with a warning.
            teacher_logits = cached_teacher(cache, row["teacher_hash"], row["snapshot_epoch"], cfg, device,
                                            repair=lambda e: repair_soft_labels(cache, snapshot, cfg, data, e, device))
        else:
            path = SnapshotStore(store_root).path(row["teacher_hash"], row["snapshot_epoch"])
            teacher_logits = live_teacher(load_teacher(path, cfg, data.num_classes, device)[0])
    trainer = Trainer(cfg, data, device, teacher_logits)
    state = restore_state()
    if state is not None:
        trainer.load_state_dict(state["trainer"])
    while not trainer.done:
        metrics = trainer.run_epoch()
        report_epoch({**metrics, "node_id": node_id()}, {"trainer": trainer.state_dict()})
