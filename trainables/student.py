"""Ray Tune trainable: distill one student from a teacher snapshot (KD for kd_epochs, then CE)."""
from tune_eskd.data import Splits
from tune_eskd.gpu import DeviceSettings
from tune_eskd.engine import Trainer, live_teacher
from tune_eskd.snapshots import SnapshotStore
from tune_eskd.teachers import load_teacher
from tune_eskd.trial import StudentTrial

from .checkpoints import EpochCheckpoints
from .divergence import run_epoch
from .runtime import node_id, trial_device


def train_student(config: dict, data: Splits, store_root: str, soft_label_root: str,
                  keep_weights: str = "final", settings: DeviceSettings = DeviceSettings()) -> None:
    """config: a StudentTrial's Tune config; trials marked soft_labels read the shared teacher logits."""
    trial = StudentTrial.from_config(config)
    cfg = trial.student_config()
    device = trial_device(settings)
    precision = settings.teacher_precision(device)  # of the teacher pass: the cache key names it
    teacher_logits = None
    if cfg.kd_epochs > 0:
        if trial.soft_labels:
            from tune_eskd.soft_labels import SoftLabelCache, cached_teacher, repair_soft_labels

            cache = SoftLabelCache(soft_label_root, precision, device.type)
            snapshot = SnapshotStore(store_root).path(trial.teacher_hash, trial.snapshot_epoch)
            # A damaged shared entry is detected by its checksum and recomputed from the snapshot, with a warning.
            teacher_logits = cached_teacher(cache, trial.teacher_hash, trial.snapshot_epoch, cfg, device,
                                            repair=lambda e: repair_soft_labels(cache, snapshot, cfg, data, e, device))
        else:
            path = SnapshotStore(store_root).path(trial.teacher_hash, trial.snapshot_epoch)
            teacher_logits = live_teacher(load_teacher(path, cfg, data.num_classes, device)[0], precision)
    checkpoints = EpochCheckpoints(keep_weights)
    state = checkpoints.restore()
    if state is not None and state.get("finished"):  # finished before the driver died: its results are saved
        return
    trainer = Trainer(cfg, data, device, teacher_logits)
    if state is not None:
        trainer.load_state_dict(state["trainer"])
    while not trainer.done:
        metrics = run_epoch(trainer)
        checkpoints.report({**metrics, "node_id": node_id()}, {"trainer": trainer.state_dict()}, trainer.model)
