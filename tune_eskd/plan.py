"""The plan of a sweep, before it runs: what it trains and infers, and the disk it will take.

`tune-eskd sweep --dry-run` prints it and stops (no Ray, nothing written); a real sweep prints it when it starts
and refuses to start when the storage has less free space than the plan needs (`--force` overrides).

The disk estimate counts what the sweep leaves behind: new teacher snapshots, new soft labels, Ray Tune's trial
folders (results, TensorBoard events, params) and experiment state, and the float16 weights each finished trial
keeps (--keep-weights). Weight sizes are exact (the models' state_dicts are serialized); the Tune files are
measured per trial and per epoch on Ray 2.60 (TUNE_* below). Under ASHA the trial folders are an upper bound.
"""
import dataclasses
import io
import json
import os
import shutil
from dataclasses import dataclass, field

from .errors import UsageError
from .experiment import SweepOptions
from .record import Experiment

# Bytes Ray Tune 2.60 writes per trial, measured on the quick space: result.json, progress.csv and the
# TensorBoard events grow per epoch (each result row repeats the trial's config); params.json/.pkl once;
# the experiment state and search-state files hold one entry per trial.
TUNE_EPOCH_BYTES = 2200     # plus the config's JSON length, per epoch
TUNE_TRIAL_BYTES = 900      # plus twice the config's JSON length, once per trial
TUNE_STATE_BYTES = 22500    # per trial, in experiment_state-*.json and basic-variant-state-*.json
CHECKPOINT_META_BYTES = 150    # state.json beside a trial's state.pt
SNAPSHOT_META_BYTES = 1000     # epoch_NNN.json beside a snapshot, and teacher.json per teacher
SOFT_LABEL_META_BYTES = 700    # epoch_NNN.json beside a soft-label file
# Training images of the built-in sources (before --subset and the validation split), and their classes.
BUILTIN_SIZES = {"synthetic": (6000, 10), "cifar10": (50000, 10), "cifar100": (50000, 100)}


# Tune keeps two full checkpoints per running trial and writes the next one before it deletes the oldest.
CHECKPOINTS_WHILE_RUNNING = 3


@dataclass
class Plan:
    teachers_to_train: list[str]
    teachers_stored: list[str]
    teacher_epochs: int
    students: int
    student_epochs: int
    asha: bool
    soft_label_groups: int
    soft_label_groups_cached: int
    soft_label_epochs: int          # teacher-epochs of inference still to compute
    disk: dict = field(default_factory=dict)   # what -> bytes the sweep adds
    running_extra: int = 0          # full checkpoints of the trials running at once (gone when they finish)
    unknown: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.disk.values())

    def lines(self) -> list[str]:
        upto = "at most " if self.asha else ""
        stored = f", {len(self.teachers_stored)} already in the store" if self.teachers_stored else ""
        out = [f"plan: teachers: {len(self.teachers_to_train)} to train ({self.teacher_epochs} epochs){stored}",
               f"plan: students: {self.students} trials, {upto}{self.student_epochs} student epochs"
               + (" (ASHA stops some early)" if self.asha else ""),
               f"plan: soft labels: {self.soft_label_groups} snapshot x seed groups"
               f" ({self.soft_label_groups_cached} already cached), {self.soft_label_epochs} teacher-epochs of inference",
               "plan: disk: " + ", ".join(f"{k} {human(v)}" for k, v in self.disk.items())
               + f"; total {upto}{human(self.total)}"
               + f" (+ up to {human(self.running_extra)} while trials run)"]
        out += [f"plan: could not know {what}" for what in self.unknown]
        return out

    def check_free_space(self, storage: str, force: bool) -> None:
        """Refuse to start when the local storage has less free space than the plan needs."""
        if "://" in storage:
            return  # object storage: no free-space figure to compare with
        free = shutil.disk_usage(_existing_ancestor(storage)).free
        need = self.total + self.running_extra
        if free < need and not force:
            raise UsageError(f"the sweep needs about {human(need)} but {storage} has {human(free)} free: free some "
                             f"space, pass --keep-weights none, or --force to start anyway")


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _existing_ancestor(path: str) -> str:
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def make_plan(space, options: SweepOptions, exp: Experiment, data=None) -> Plan:
    """The plan of `space` under `options`; `data` (the loaded Splits) when known, else the source's known size."""
    from search_spaces import student_config

    from .pipeline import asha_bounds, mark_soft_labels
    from .snapshots import SnapshotStore
    from .soft_label_work import soft_label_groups
    from .soft_labels import SoftLabelCache

    values, unknown = space.values, []
    train_images, classes = _train_size(values, data)
    if train_images is None:
        unknown.append(f"the soft labels' size: {values['dataset']} is read when the sweep starts")

    store = SnapshotStore(exp.snapshot_root)
    teachers = space.needed_teachers()
    missing = {t.teacher_hash(): store.missing(t.teacher_hash(), t.snapshots) for t in teachers}
    to_train = [t for t in teachers if missing[t.teacher_hash()]]

    rows = mark_soft_labels(space.trials(), options)  # one row per trial
    grace, max_t = asha_bounds(space, options) if options.scheduler == "asha" else (None, None)
    epochs_of = lambda row: min(row["epochs"], max_t) if max_t else row["epochs"]
    cache = SoftLabelCache(exp.soft_label_root)
    groups = soft_label_groups([r for r in rows if r["soft_labels"]])
    kd_epochs = list(range(1, space.max_kd_epochs() + 1))
    to_compute = {key: cache.missing_epochs(key[0], key[1], student_config(group[0]), kd_epochs)
                  for key, group in groups.items()}
    inference_epochs = sum(len(e) for e in to_compute.values())

    weights = _WeightSizes(classes)
    kept = options.keep_weights != "none"
    disk = {"snapshots": sum(len(missing[t.teacher_hash()]) * (weights.full(t.model, t.width) + SNAPSHOT_META_BYTES)
                             + SNAPSHOT_META_BYTES for t in to_train),
            "soft labels": (inference_epochs * (train_images * classes * 4 + SOFT_LABEL_META_BYTES)  # float32
                            if train_images else 0),
            "trial folders": 0, "kept weights": 0}
    teacher_trials = [(dataclasses.asdict(t), t.epochs, t.model, t.width) for t in to_train]
    student_trials = [(row, epochs_of(row), row["student_arch"], row["student_width"]) for row in rows]
    for row, epochs, model, width in teacher_trials + student_trials:
        config = len(json.dumps(row, default=str))
        disk["trial folders"] += (TUNE_TRIAL_BYTES + 2 * config + epochs * (TUNE_EPOCH_BYTES + config)
                                  + TUNE_STATE_BYTES + CHECKPOINT_META_BYTES)
        disk["kept weights"] += weights.half(model, width) if kept else 0
    concurrent = min(options.max_concurrent or _concurrent_trials(options), max(len(student_trials), 1))
    biggest = max((weights.full(m, w) for _, _, m, w in teacher_trials + student_trials), default=0)
    return Plan(teachers_to_train=[t.teacher_hash() for t in to_train],
                teachers_stored=[t.teacher_hash() for t in teachers if t not in to_train],
                teacher_epochs=sum(t.epochs for t in to_train), students=len(student_trials),
                student_epochs=sum(e for _, e, _, _ in student_trials),
                asha=max_t is not None and grace < max_t,  # no rung: ASHA stops nothing
                soft_label_groups=len(groups), soft_label_groups_cached=sum(not e for e in to_compute.values()),
                soft_label_epochs=inference_epochs, disk=disk,
                running_extra=CHECKPOINTS_WHILE_RUNNING * biggest * concurrent,
                unknown=unknown)


def _concurrent_trials(options: SweepOptions) -> int:
    from .cpus import local_cpus

    return max(1, int(local_cpus() // options.cpus_per_trial))


def _train_size(values: dict, data) -> tuple[int | None, int]:
    """(training images after --subset and the validation split, classes); None images when unknown."""
    if data is not None:
        return len(data.train_y), data.num_classes
    total, classes = BUILTIN_SIZES.get(values["dataset"], (None, 10))
    if total is None:
        return None, classes
    total = min(values["subset"] or total, total)
    return total - round(total * values["val_split"]), classes


class _WeightSizes:
    """Serialized state_dict sizes of (model, width), float32 and float16, computed once each."""

    def __init__(self, classes: int):
        self.classes, self.sizes = classes, {}

    def _measure(self, model: str, width: float) -> tuple[int, int]:
        from trainables.checkpoints import half

        from .models import build_model

        if (model, width) not in self.sizes:
            state = build_model(model, self.classes, width).state_dict()
            self.sizes[(model, width)] = tuple(_saved_size(s) for s in (state, half(state)))
        return self.sizes[(model, width)]

    def full(self, model: str, width: float) -> int:
        return self._measure(model, width)[0]

    def half(self, model: str, width: float) -> int:
        return self._measure(model, width)[1]


def _saved_size(state: dict) -> int:
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return len(buf.getvalue())
