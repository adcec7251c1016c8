"""Run configurations for teachers and students, their validation, and the teacher hash."""
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import ClassVar

from . import seeds
from .data import check_source
from .errors import UsageError
from .models import MODELS

SCHEDULES = ("multistep", "cosine")


@dataclass
class TrainConfig:
    """What defines one training run. Defaults are the seed study's (SGD 0.1, momentum 0.9, wd 5e-4, batch 128)."""
    model: str = "resnet18"
    width: float = 1.0
    dataset: str = "synthetic"
    data_dir: str | None = None
    subset: int | None = None          # keep this many training images (stratified), before the validation split
    val_split: float = 0.1
    split_seed: int = 0                # fixed across seeds, so no teacher ever trains on a student's validation set
    data_hash: str | None = None       # data.Splits.content_hash of an npz:/imagefolder: dataset, set once loaded
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "multistep"
    milestones: list[int] | None = None  # default: 50% and 75% of epochs
    gamma: float = 0.1
    seed: int = 0
    role: ClassVar[str] = "teacher"  # keys every random stream (seeds.py), with the seed

    def lr_milestones(self) -> list[int]:
        if self.milestones is not None:
            return list(self.milestones)
        return sorted({max(1, round(self.epochs * 0.5)), max(1, round(self.epochs * 0.75))})

    def validate(self) -> None:
        if self.model not in MODELS:
            raise UsageError(f"unknown model {self.model!r}: choose one of {', '.join(MODELS)}")
        check_source(self.dataset, self.data_dir)
        # A string or bool where a number belongs (`lr: fast` in a YAML space) would otherwise surface as a
        # TypeError that names neither the key nor the value.
        for name in ("width", "lr", "momentum", "weight_decay", "gamma", "val_split", *self._extra_numbers):
            _number(name, getattr(self, name))
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        if self.width <= 0:
            raise UsageError(f"width must be > 0, got {self.width}: use e.g. 1.0")
        if self.lr <= 0:
            raise UsageError(f"lr must be > 0, got {self.lr}: use e.g. 0.1")
        if not 0 <= self.val_split < 1:
            raise UsageError(f"val_split must be in [0, 1), got {self.val_split}: use e.g. 0.1, or 0 for none")
        if self.subset is not None and self.subset < 10:
            raise UsageError(f"subset must be at least 10 images, got {self.subset}: use e.g. 5000, or leave it unset")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"unknown schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}")
        bad = [m for m in self.lr_milestones() if not 1 <= m <= self.epochs]
        if bad:
            raise UsageError(f"lr milestones {bad} lie outside 1..{self.epochs}: pick epochs within the run")

    _extra_numbers = ()

    def data_key(self) -> dict:
        """The fields that decide which images a run trains, selects and tests on (with the files' content hash)."""
        key = {k: getattr(self, k) for k in ("dataset", "subset", "val_split", "split_seed")}
        if self.data_hash is not None:
            key["data_hash"] = self.data_hash
        return key

    def check_data(self, data) -> None:
        """Refuse loaded data (data.Splits) whose content is not what this config was set up with."""
        if self.data_hash != data.content_hash:
            raise UsageError(f"dataset {self.dataset} now holds other images than this run was set up with (content "
                             f"hash {data.content_hash}, expected {self.data_hash}): its files changed; start a new "
                             f"run (or a sweep with a new --name) on them")


@dataclass
class TeacherConfig(TrainConfig):
    snapshots: list[int] = field(default_factory=lambda: [3, 6, 9, 10])

    def validate(self) -> None:
        super().validate()
        bad = [e for e in self.snapshots if not 1 <= e <= self.epochs]
        if bad:
            raise UsageError(f"snapshot epochs {bad} lie outside 1..{self.epochs}: snapshot only epochs the teacher trains")

    def teacher_hash(self) -> str:
        """A short id of everything that decides the teacher's weights (not where data lives, not which snapshots)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("data_dir", "snapshots")}
        fields["milestones"] = self.lr_milestones()
        fields["streams"] = seeds.VERSION  # how the seed becomes init, order and views
        blob = json.dumps(fields, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


@dataclass
class StudentConfig(TrainConfig):
    kd_epochs: int = 5
    alpha: float = 0.9
    temperature: float = 4.0
    role: ClassVar[str] = "student"
    _extra_numbers = ("alpha", "temperature")

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.alpha <= 1:
            raise UsageError(f"alpha must be in [0, 1] (the weight of the KD term), got {self.alpha}")
        if self.temperature <= 0:
            raise UsageError(f"temperature must be > 0, got {self.temperature}: use e.g. 4")
        if not 0 <= self.kd_epochs <= self.epochs:
            raise UsageError(f"kd_epochs {self.kd_epochs} must be in 0..epochs ({self.epochs}): "
                             f"KD runs for the first kd_epochs epochs, 0 for the CE-only baseline")


def _number(name: str, value) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise UsageError(f"{name} must be a number, got {value!r}")


def _positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value!r}")


def config_from_dict(cls, values: dict):
    """Build a config from a dict, refusing unknown keys with the nearest valid name."""
    import difflib

    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            near = difflib.get_close_matches(key, names, n=1)
            hint = f": did you mean {near[0]!r}?" if near else f": valid keys are {', '.join(names)}"
            raise UsageError(f"unknown {cls.__name__} key {key!r}{hint}")
    return cls(**values)
