"""Search spaces: a YAML mapping of flat keys, validated up front, expanded into teacher and student trials.

Each key holds a fixed value, a list (a grid axis) or, for student hyper-parameters, a distribution
(`{uniform: [lo, hi]}`, `{loguniform: [lo, hi]}`, `{choice: [...]}`, `{randint: [lo, hi]}`, hi included)
sampled `num_samples` times by Ray Tune; a list may hold distributions among its values
(`kd_epochs: [0, {randint: [1, 5]}]`). Teacher keys must be enumerable: stage 1 trains each unique teacher once.
Students with kd_epochs 0 (the CE-only baseline) never see a teacher, so they are run once per student config,
not once per teacher x snapshot x alpha x temperature, and sampled only in the keys that apply to them.
"""
import dataclasses
import difflib
import itertools
from dataclasses import dataclass

import yaml

from tune_eskd.config import StudentConfig, TeacherConfig
from tune_eskd.errors import UsageError
from tune_eskd.import_teacher import as_imported


@dataclass(frozen=True)
class Key:
    default: object
    scope: str            # "data" (fixed, shared), "shared" (fixed, both stages), "teacher" or "student" (axes)
    distributions: tuple = ()
    help: str = ""


KEYS: dict[str, Key] = {
    "description": Key("", "meta", help="one line shown by `tune-eskd spaces`"),
    "num_samples": Key(1, "meta", help="how many times Ray samples the distributions"),
    "dataset": Key("synthetic", "data", help="synthetic | cifar10 | cifar100 | imagefolder:PATH | npz:FILE"),
    "data_dir": Key(None, "data", help="where cifar10/cifar100 live"),
    "subset": Key(None, "data", help="keep this many training images (stratified)"),
    "val_split": Key(0.1, "data", help="fraction of train held out for selection and ASHA"),
    "split_seed": Key(0, "data", help="seed of the validation split (shared by all trials)"),
    "batch_size": Key(128, "shared"),
    "momentum": Key(0.9, "shared"),
    "weight_decay": Key(5e-4, "shared"),
    "nesterov": Key(False, "shared"),
    "schedule": Key("multistep", "shared", help="multistep | cosine"),
    "gamma": Key(0.1, "shared", help="MultiStepLR decay (milestones at 50% and 75% of epochs)"),
    "teacher_arch": Key("resnet18", "teacher"),
    "teacher_width": Key(1.0, "teacher"),
    "teacher_epochs": Key(10, "teacher"),
    "teacher_lr": Key(0.1, "teacher"),
    "teacher_seed": Key(0, "teacher"),
    "teacher_import": Key(None, "import", help="students distill from the teacher imported under this name "
                          "(`tune-eskd import-teacher`); nothing is trained"),
    "snapshots": Key([3, 6, 9, 10], "snapshots", help="teacher epochs to snapshot; each is a student axis value"),
    "student_arch": Key("resnet18", "student"),
    "student_width": Key(1.0, "student"),
    "epochs": Key(10, "student", help="student epochs"),
    "lr": Key(0.1, "student", ("uniform", "loguniform", "choice")),
    "kd_epochs": Key(5, "student", ("choice", "randint"), help="KD for the first N epochs, then CE; 0 = CE-only baseline"),
    "alpha": Key(0.9, "student", ("uniform", "choice"), help="weight of the KD term"),
    "temperature": Key(4.0, "student", ("uniform", "loguniform", "choice")),
    "seed": Key(0, "student", help="student seed: init, data order, augmentation"),
}
DISTRIBUTIONS = ("uniform", "loguniform", "choice", "randint")
TEACHER_FIELDS = {"teacher_arch": "model", "teacher_width": "width", "teacher_epochs": "epochs",
                  "teacher_lr": "lr", "teacher_seed": "seed"}
STUDENT_FIELDS = {"student_arch": "model", "student_width": "width"}
BASELINE_BLANKS = ("teacher_hash", "teacher_arch", "snapshot_epoch", "alpha", "temperature")


def is_distribution(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in DISTRIBUTIONS


def _samples_something(value) -> bool:
    """A distribution, or a list (grid axis) with a distribution among its values."""
    return is_distribution(value) or isinstance(value, list) and any(map(is_distribution, value))


def _is_baseline(row: dict) -> bool:
    return row.get("kd_epochs") == 0


def _highest(value):
    """A value's highest possible draw: itself, or a distribution's top (randint's hi is included)."""
    if is_distribution(value):
        (_, args), = value.items()
        return max(args)
    return value


def _bound_variants(row: dict) -> list[dict]:
    """The row with each distribution replaced by each of its bounds (or options), for validation."""
    variants = [row]
    for key, value in row.items():
        if is_distribution(value):
            (_, args), = value.items()
            variants = [{**v, key: a} for v in variants for a in args]
    return variants


@dataclass
class SweepSpace:
    """A validated search space: its raw values, the unique teachers, and the student trial rows."""
    name: str
    values: dict
    data_hash: str | None = None  # the loaded npz:/imagefolder: data's content hash, set by the sweep (not a key)

    @property
    def num_samples(self) -> int:
        return self.values["num_samples"]

    def axis(self, key: str) -> list:
        v = self.values[key]
        return list(v) if isinstance(v, list) and key != "snapshots" else [v]

    def fixed(self, scope: str) -> dict:
        out = {k: self.values[k] for k, spec in KEYS.items() if spec.scope == scope}
        if scope == "data" and self.data_hash is not None:
            out["data_hash"] = self.data_hash  # into every config, so changed files give new teachers and keys
        return out

    def distributions(self) -> dict:
        return {k: v for k, v in self.values.items() if is_distribution(v)}

    def _with_distributions(self, row: dict) -> dict:
        """A grid row with the space's distributions that apply to it (a baseline ignores alpha and T)."""
        dists = self.distributions()
        return {**row, **{k: v for k, v in dists.items() if not (_is_baseline(row) and k in BASELINE_BLANKS)}}

    def teachers(self) -> list[TeacherConfig]:
        keys = list(TEACHER_FIELDS)
        out = []
        for combo in itertools.product(*(self.axis(k) for k in keys)):
            fields = {TEACHER_FIELDS[k]: v for k, v in zip(keys, combo)}
            cfg = TeacherConfig(**self.fixed("data"), **self.fixed("shared"), **fields,
                                snapshots=sorted(self.values["snapshots"]))
            # An imported teacher (`tune-eskd import-teacher`) is named by its import, not by a training run.
            out.append(as_imported(cfg, self.values["teacher_import"]) if self.values.get("teacher_import") else cfg)
        return out

    def student_rows(self) -> list[dict]:
        """One dict per grid row of students, naming its teacher snapshot (trial_rows() has one per trial)."""
        grid_keys = [k for k, spec in KEYS.items() if spec.scope == "student" and not is_distribution(self.values[k])]
        teachers = self.teachers()
        rows, seen = [], set()
        for combo in itertools.product(*(self.axis(k) for k in grid_keys)):
            base = {**self.fixed("data"), **self.fixed("shared"), **dict(zip(grid_keys, combo))}
            if _is_baseline(base):
                row = {**base, **{k: None for k in BASELINE_BLANKS}}
                key = tuple(sorted((k, str(v)) for k, v in row.items()))
                if key not in seen:
                    seen.add(key)
                    rows.append(row)
                continue
            for t in teachers:
                for snap in sorted(self.values["snapshots"]):
                    rows.append({**base, "teacher_hash": t.teacher_hash(), "teacher_arch": t.model,
                                 "snapshot_epoch": snap})
        return rows

    def needed_teachers(self) -> list[TeacherConfig]:
        """The teachers some student distills from (a grid of CE-only students needs none)."""
        used = {row["teacher_hash"] for row in self.student_rows()}
        return [t for t in self.teachers() if t.teacher_hash() in used]

    def trial_rows(self) -> list[dict]:
        """One dict per student trial. Distributions stay {kind: args} values that Ray Tune draws per trial: a
        row that samples something is repeated num_samples times, one that samples nothing (a CE-only baseline
        under an alpha or temperature distribution) runs once rather than as identical copies."""
        out = []
        for row in self.student_rows():
            row = self._with_distributions(row)
            copies = self.num_samples if any(map(is_distribution, row.values())) else 1
            out += [dict(row) for _ in range(copies)]
        return out

    def trial_counts(self) -> tuple[int, int]:
        return len(self.needed_teachers()), len(self.trial_rows())

    def max_kd_epochs(self) -> int:
        """The longest KD phase a student can have: a distribution's highest value (randint's hi included)."""
        return max(map(_highest, self.axis("kd_epochs")))


def student_config(row: dict) -> StudentConfig:
    """The StudentConfig of a trial row (a baseline's blank alpha and temperature get harmless defaults)."""
    names = {f.name for f in dataclasses.fields(StudentConfig)}
    fields = {STUDENT_FIELDS.get(k, k): v for k, v in row.items() if STUDENT_FIELDS.get(k, k) in names}
    # A distribution is drawn per trial by Ray Tune: the driver's config of a row leaves it at its default.
    fields = {k: v for k, v in fields.items() if (v is not None or k in ("subset", "data_dir")) and not is_distribution(v)}
    return StudentConfig(**fields)


def parse_overrides(pairs: list[str]) -> dict:
    """`--set key=value` pairs; values are YAML (`alpha=[0.5,0.9]`, `lr={loguniform: [0.01, 0.1]}`)."""
    out = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {pair!r} is not key=value: write e.g. --set alpha=0.9 or --set 'alpha=[0.5,0.9]'")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise UsageError(f"--set {pair!r}: the value is not valid YAML: quote lists as 'key=[1, 2]'") from None
    return out


def build_space(name: str, raw: dict, overrides: dict | None = None) -> SweepSpace:
    """Validate raw YAML values (plus overrides) and return the space; raises UsageError naming the problem."""
    if not isinstance(raw, dict):
        raise UsageError(f"search space {name}: expected a mapping of keys to values, got {type(raw).__name__}")
    merged = {**raw, **(overrides or {})}
    for key in merged:
        if key not in KEYS:
            near = difflib.get_close_matches(key, list(KEYS), n=1)
            hint = f"did you mean {near[0]!r}?" if near else "see `tune-eskd spaces --keys`"
            raise UsageError(f"search space {name}: unknown key {key!r}: {hint}")
    values = {k: merged.get(k, spec.default) for k, spec in KEYS.items()}
    _check_shapes(name, values)
    space = SweepSpace(name, values)
    _check_values(space)
    return space


def _check_shapes(name: str, values: dict) -> None:
    for key, value in values.items():
        spec = KEYS[key]
        where = f"search space {name}: {key}"
        if isinstance(value, list) and not value:
            raise UsageError(f"{where} is an empty list: give at least one value")
        if key == "snapshots":
            if not isinstance(value, list) or not all(isinstance(e, int) and not isinstance(e, bool) for e in value):
                raise UsageError(f"{where} must be a list of epochs, e.g. [3, 6, 9, 10]; got {value!r}")
            if len(set(value)) != len(value):
                raise UsageError(f"{where} lists an epoch twice ({value}): list each snapshot epoch once")
            continue
        if isinstance(value, list) and spec.scope not in ("teacher", "student"):
            raise UsageError(f"{where} must be a single value for the whole sweep, got the list {value!r}")
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, dict):
                _check_distribution(where, spec, v)
                if key == "kd_epochs":
                    _refuse_baseline_draws(where, value, v)
    if not isinstance(values["num_samples"], int) or values["num_samples"] < 1:
        raise UsageError(f"search space {name}: num_samples must be a positive integer, got {values['num_samples']!r}")
    if values["num_samples"] > 1 and not any(map(_samples_something, values.values())):
        raise UsageError(f"search space {name}: num_samples {values['num_samples']} would repeat identical trials: "
                         f"list seeds instead (seed: [0, 1, 2]) or sample a key from a distribution")


def _check_distribution(where: str, spec: Key, value: dict) -> None:
    if not is_distribution(value):
        raise UsageError(f"{where} = {value!r} is not a distribution: use one of "
                         f"{', '.join('{' + d + ': [...]}' for d in DISTRIBUTIONS)}")
    (kind, args), = value.items()
    if kind not in spec.distributions:
        allowed = ", ".join(spec.distributions) or "none (use a value or a list)"
        raise UsageError(f"{where} cannot be sampled from {kind}: allowed distributions: {allowed}")
    if not isinstance(args, list) or (kind != "choice" and len(args) != 2) or not args:
        raise UsageError(f"{where}: {kind} takes a list [low, high]{' of options' if kind == 'choice' else ''}, got {args!r}")
    if kind != "choice" and not args[0] < args[1]:
        raise UsageError(f"{where}: {kind} needs low < high, got {args}")


def _refuse_baseline_draws(where: str, value, dist: dict) -> None:
    """A kd_epochs distribution that can draw 0 would put a CE-only student under a teacher snapshot (with its
    teacher_hash), where it could rank as that snapshot's best config: the baseline is the grid value 0."""
    (kind, args), = dist.items()
    if not (0 in args if kind == "choice" else args[0] <= 0 <= args[1]):
        return
    rest = [a for a in args if a != 0] if kind == "choice" else list(range(1, args[1] + 1))
    draws = [{kind: rest if kind == "choice" else [1, args[1]]}] if len(rest) > 1 else rest
    others = [v for v in value if v not in (0, dist)] if isinstance(value, list) else []
    fixed = [0, *others, *draws]
    raise UsageError(f"{where} {_flow(dist)} can draw 0, the CE-only baseline, which would then run under a "
                     f"teacher snapshot: keep 0 a grid value and draw the rest: kd_epochs: {_flow(fixed)}")


def _flow(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip()


def _check_values(space: SweepSpace) -> None:
    """Build and validate every teacher and student config (distributions at their bounds and options)."""
    name = space.name
    try:
        teachers = space.teachers()
        for t in teachers:
            t.validate()
    except UsageError as exc:
        raise UsageError(f"search space {name}: teacher: {exc}") from None
    except TypeError as exc:
        raise UsageError(f"search space {name}: a teacher value has the wrong type ({exc})") from None
    try:
        rows = space.student_rows()
        for row in rows:
            for variant in _bound_variants(space._with_distributions(row)):
                student_config(variant).validate()
    except UsageError as exc:
        raise UsageError(f"search space {name}: student: {exc}") from None
    except TypeError as exc:
        raise UsageError(f"search space {name}: a student value has the wrong type ({exc})") from None
    if not rows:
        raise UsageError(f"search space {name}: the grid is empty: give every axis at least one value")
    if space.values["val_split"] == 0:
        raise UsageError(f"search space {name}: val_split 0 leaves nothing to select on: use e.g. 0.1 "
                         f"(test accuracy is reported, never tuned on)")
