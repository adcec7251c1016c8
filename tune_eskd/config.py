"""Run configurations for teachers and students, their validation, and the teacher hash.

Each field is declared once, with `knob`: its default, its help text, its bounds and where a search space sets
it. The train-teacher/train-student flags (cli.py) and the search-space keys (search_spaces/space.py) are
generated from these fields, and pydantic checks every value against the field's type and bounds.
"""
import dataclasses
import functools
import hashlib
import json
import types
import typing
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import AfterValidator, ConfigDict, TypeAdapter, ValidationError, with_config
from pydantic_core import PydanticCustomError

from . import seeds
from .errors import UsageError

SCHEDULES = ("multistep", "cosine")
DEFAULT_SNAPSHOTS = (3, 6, 9, 10)

# Strict: a string or bool where a number belongs (`lr: '0.1'`, `alpha: yes` in a YAML space) is refused, never
# coerced; an int stays allowed for a float. Instances are revalidated, so `validate()` checks the values set.
STRICT = ConfigDict(strict=True, extra="forbid", revalidate_instances="always")


def _known_model(name: str) -> str:
    from .models import MODELS  # torch: imported when a config is checked, not by the CLI's parser

    if name not in MODELS:
        raise PydanticCustomError("unknown_choice", "unknown model", {"choices": tuple(MODELS)})
    return name


ModelName = typing.Annotated[str, AfterValidator(_known_model)]


def knob(default=None, help: str = "", *, factory=None, space=None, sample=(), flag: bool = True, rule: str = "",
         fix: str = "", metavar: str | None = None, **bounds) -> dataclasses.Field:
    """A config field. bounds are pydantic's (gt, ge, lt, le). space: where a search space sets it: "data" or
    "shared" (one value for the whole sweep), "student" (a student axis), "snapshots", or (teacher key, student
    key) for a field both roles have. sample: the distributions its student key may be drawn from. flag: whether
    the field is a command-line flag (of train-teacher/train-student; of sweep for experiment.SweepOptions), with
    metavar as its value's name in --help. rule and fix: the error
    message's "must be RULE" (default: from the type and bounds) and what to do instead."""
    metadata = {"description": help, **bounds, "space": space, "sample": tuple(sample), "flag": flag,
                "rule": rule, "fix": fix, "metavar": metavar}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@with_config(STRICT)
@dataclass
class TrainConfig:
    """What defines one training run. Defaults are the seed study's (SGD 0.1, momentum 0.9, wd 5e-4, batch 128)."""
    model: ModelName = knob("resnet18", "model name (see `tune-eskd models`)",
                                         space=("teacher_arch", "student_arch"))
    width: float = knob(1.0, "channel width multiplier", gt=0, fix="use e.g. 1.0",
                        space=("teacher_width", "student_width"))
    dataset: str = knob("synthetic", "synthetic | cifar10 | cifar100 | imagefolder:PATH | npz:FILE", space="data")
    data_dir: str | None = knob(None, "where cifar10/cifar100 live or are downloaded to", space="data")
    # keep this many training images (stratified), before the validation split
    subset: int | None = knob(None, "keep this many training images (stratified)", ge=10, rule="at least 10 images",
                              fix="use e.g. 5000, or leave it unset", space="data")
    val_split: float = knob(0.1, "fraction of train held out for validation (selection and ASHA)", ge=0, lt=1,
                            fix="use e.g. 0.1, or 0 for none", space="data")
    # fixed across seeds, so no teacher ever trains on a student's validation set
    split_seed: int = knob(0, "seed of the validation split (shared by all trials)", ge=0, space="data")
    # data.Splits.content_hash of an npz:/imagefolder: dataset, set once loaded
    data_hash: str | None = knob(None, flag=False)
    epochs: int = knob(10, "epochs to train", ge=1, rule="a positive integer", space=("teacher_epochs", "epochs"))
    batch_size: int = knob(128, "batch size", ge=1, rule="a positive integer", space="shared")
    lr: float = knob(0.1, "learning rate (SGD)", gt=0, fix="use e.g. 0.1", space=("teacher_lr", "lr"),
                     sample=("uniform", "loguniform", "choice"))
    momentum: float = knob(0.9, "SGD momentum", ge=0, space="shared")
    weight_decay: float = knob(5e-4, "weight decay", ge=0, space="shared")
    nesterov: bool = knob(False, "Nesterov momentum", space="shared")
    schedule: Literal[SCHEDULES] = knob("multistep", "learning-rate schedule", space="shared")
    milestones: list[int] | None = knob(None, "MultiStepLR epochs (default: 50% and 75% of the epochs)")
    gamma: float = knob(0.1, "MultiStepLR decay (milestones at 50% and 75% of epochs)", gt=0, space="shared")
    seed: int = knob(0, "drives init, data order and augmentation", ge=0, space=("teacher_seed", "seed"))
    role: ClassVar[str] = "teacher"  # keys every random stream (seeds.py), with the seed

    def lr_milestones(self) -> list[int]:
        if self.milestones is not None:
            return list(self.milestones)
        return sorted({max(1, round(self.epochs * 0.5)), max(1, round(self.epochs * 0.75))})

    def validate(self) -> None:
        from .data import check_source

        check_fields(self)
        check_source(self.dataset, self.data_dir)
        bad = [m for m in self.lr_milestones() if not 1 <= m <= self.epochs]
        if bad:
            raise UsageError(f"lr milestones {bad} lie outside 1..{self.epochs}: pick epochs within the run")

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
    snapshots: list[int] = knob(help="epochs to snapshot; in a search space, each is a student axis value",
                                factory=lambda: list(DEFAULT_SNAPSHOTS), space="snapshots")

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
    # Bounded against epochs in validate(), whose message names both ends.
    kd_epochs: int = knob(5, "distill for the first N epochs, then CE only (0: the CE-only baseline)", space="student",
                          sample=("choice", "randint"))
    alpha: float = knob(0.9, "weight of the KD term, in [0, 1]", ge=0, le=1, fix="alpha is the weight of the KD term",
                        space="student", sample=("uniform", "choice"))
    temperature: float = knob(4.0, "softmax temperature of the KD term", gt=0, fix="use e.g. 4", space="student",
                              sample=("uniform", "loguniform", "choice"))
    role: ClassVar[str] = "student"

    @classmethod
    def from_row(cls, row: dict) -> "StudentConfig":
        """The config of a student trial's row (search-space keys such as student_arch, or field names). The blank
        (None) alpha and temperature of a CE-only baseline, and distributions not drawn yet, keep their defaults."""
        names = {f.name: f.name for f in dataclasses.fields(cls)}
        names.update({f.metadata["space"][1]: f.name for f in dataclasses.fields(cls)
                      if isinstance(f.metadata.get("space"), tuple)})  # student_arch -> model, ...
        values = {names[k]: v for k, v in row.items() if k in names}
        return cls(**{k: v for k, v in values.items()
                      if (v is not None or k in ("subset", "data_dir")) and not isinstance(v, dict)})

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.kd_epochs <= self.epochs:
            raise UsageError(f"kd_epochs {self.kd_epochs} must be in 0..epochs ({self.epochs}): "
                             f"KD runs for the first kd_epochs epochs, 0 for the CE-only baseline")


# --- field checks: pydantic does them, the messages stay one line naming the field, the value and the fix ----------

def default_of(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def value_type(f: dataclasses.Field) -> tuple[object, bool]:
    """(the field's type without None and validators, whether None is allowed)."""
    kind, optional = f.type, False
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        kind, optional = next(a for a in args if a is not type(None)), True
    if typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    return kind, optional


@functools.cache
def _adapter(cls) -> TypeAdapter:
    return TypeAdapter(cls)


def check_fields(obj, label=lambda name: name) -> None:
    """Check a dataclass's values against its fields' types and bounds (pydantic); raise the first problem as a
    UsageError. label turns a field name into the name the user typed (a key, or a --flag)."""
    try:
        _adapter(type(obj)).validate_python(obj)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = error["loc"][0]
        f = next(f for f in dataclasses.fields(obj) if f.name == name)
        raise UsageError(field_message(f, getattr(obj, name), error, label(name))) from None


TYPE_WORDS = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}


def field_message(f: dataclasses.Field, value, error: dict, name: str) -> str:
    """The one-line message of a pydantic error on field f (value: the field's whole value)."""
    kind, _ = value_type(f)
    error_type = error["type"]
    if error_type in ("literal_error", "unknown_choice"):
        choices = error["ctx"]["choices"] if error_type == "unknown_choice" else typing.get_args(kind)
        return f"unknown {name} {value!r}: choose one of {', '.join(choices)}"
    meta = f.metadata
    if meta.get("rule"):
        rule = meta["rule"]
    elif error_type.endswith("_type"):
        rule = TYPE_WORDS.get(kind, "a list of integers" if typing.get_origin(kind) is list else str(kind))
    else:
        rule = _bounds_text(meta)
    fix = f": {meta['fix']}" if meta.get("fix") else ""
    return f"{name} must be {rule}, got {value!r}{fix}"


def _bounds_text(meta) -> str:
    low = ("[", meta["ge"]) if "ge" in meta else ("(", meta["gt"]) if "gt" in meta else None
    high = ("]", meta["le"]) if "le" in meta else (")", meta["lt"]) if "lt" in meta else None
    if low and high:
        return f"in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]:g}"
    return f"{'<=' if high[0] == ']' else '<'} {high[1]:g}"

