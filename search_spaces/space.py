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
from typing import Annotated, Any

import yaml
from annotated_types import Ge, Len
from pydantic import BaseModel, ConfigDict, StrictFloat, StrictInt, TypeAdapter, ValidationError, create_model, \
    model_validator

from tune_eskd.config import StudentConfig, TeacherConfig, default_of
from tune_eskd.errors import UsageError
from tune_eskd.trial import TEACHER_ONLY, StudentTrial


@dataclass(frozen=True)
class Key:
    default: object
    scope: str            # "data" (fixed, shared), "shared" (fixed, both stages), "teacher" or "student" (axes)
    distributions: tuple = ()
    help: str = ""
    field: str | None = None  # the TeacherConfig/StudentConfig field it sets


def _config_keys() -> dict[str, Key]:
    """The keys that set config fields, generated from the fields (config.py: default, help, scope, sampling)."""
    by_scope = {"data": {}, "shared": {}, "teacher": {}, "snapshots": {}, "student": {}}
    teacher_fields = dataclasses.fields(TeacherConfig)
    extra = [f for f in dataclasses.fields(StudentConfig) if f.name not in {t.name for t in teacher_fields}]
    for f in [*teacher_fields, *extra]:
        space, help = f.metadata.get("space"), f.metadata.get("description", "")
        if isinstance(space, tuple):  # a field both roles have: a teacher key and a student key
            by_scope["teacher"][space[0]] = Key(default_of(f), "teacher", help=help, field=f.name)
            by_scope["student"][space[1]] = Key(default_of(f), "student", f.metadata["sample"], help, f.name)
        elif space:
            by_scope[space][f.name] = Key(default_of(f), space, f.metadata["sample"], help, f.name)
    # The seed is the innermost grid axis: a config's replicates are adjacent trials (as they always were).
    by_scope["student"]["seed"] = by_scope["student"].pop("seed")
    return {
        "description": Key("", "meta", help="one line shown by `tune-eskd spaces`"),
        "num_samples": Key(1, "meta", help="how many times Ray samples the distributions"),
        **by_scope["data"], **by_scope["shared"], **by_scope["teacher"],
        "teacher_import": Key(None, "import", help="students distill from the teacher imported under this name "
                              "(`tune-eskd import-teacher`); nothing is trained"),
        **by_scope["snapshots"], **by_scope["student"]}


KEYS: dict[str, Key] = _config_keys()
DISTRIBUTIONS = ("uniform", "loguniform", "choice", "randint")
TEACHER_FIELDS = {k: spec.field for k, spec in KEYS.items() if spec.scope == "teacher"}


# --- the shapes pydantic checks: the space's keys, the distributions, snapshots and num_samples ----------------

_SpaceKeys = create_model("SearchSpace", __config__=ConfigDict(extra="forbid"),
                          **{k: (Any, spec.default) for k, spec in KEYS.items()})


class _Distribution(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="after")
    def _ordered(self):
        (kind, args), = self.model_dump().items()
        if kind != "choice" and not args[0] < args[1]:
            raise ValueError(f"{kind} needs low < high, got {args}")
        return self


Bounds = Annotated[list[StrictFloat], Len(2, 2)]
DISTRIBUTION_MODELS = {
    "uniform": create_model("Uniform", __base__=_Distribution, uniform=(Bounds, ...)),
    "loguniform": create_model("LogUniform", __base__=_Distribution, loguniform=(Bounds, ...)),
    "choice": create_model("Choice", __base__=_Distribution, choice=(Annotated[list[Any], Len(1)], ...)),
    "randint": create_model("RandInt", __base__=_Distribution, randint=(Annotated[list[StrictInt], Len(2, 2)], ...)),
}
SNAPSHOTS = TypeAdapter(list[StrictInt])
NUM_SAMPLES = TypeAdapter(Annotated[StrictInt, Ge(1)])


def is_distribution(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in DISTRIBUTIONS


def _samples_something(value) -> bool:
    """A distribution, or a list (grid axis) with a distribution among its values."""
    return is_distribution(value) or isinstance(value, list) and any(map(is_distribution, value))


def _highest(value):
    """A value's highest possible draw: itself, or a distribution's top (randint's hi is included)."""
    if is_distribution(value):
        (_, args), = value.items()
        return max(args)
    return value


def _bound_variants(trial: StudentTrial) -> list[StudentTrial]:
    """The trial with each distribution replaced by each of its bounds (or options), for validation."""
    variants = [trial]
    for key, value in trial.row().items():
        if is_distribution(value):
            (_, args), = value.items()
            variants = [dataclasses.replace(v, **{key: a}) for v in variants for a in args]
    return variants


@dataclass
class SweepSpace:
    """A validated search space: its raw values, the unique teachers, and the student trials."""
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

    def teachers(self) -> list[TeacherConfig]:
        from tune_eskd.import_teacher import as_imported  # torch: only where teachers are built

        keys = list(TEACHER_FIELDS)
        out = []
        for combo in itertools.product(*(self.axis(k) for k in keys)):
            fields = {TEACHER_FIELDS[k]: v for k, v in zip(keys, combo)}
            cfg = TeacherConfig(**self.fixed("data"), **self.fixed("shared"), **fields,
                                snapshots=sorted(self.values["snapshots"]))
            # An imported teacher (`tune-eskd import-teacher`) is named by its import, not by a training run.
            out.append(as_imported(cfg, self.values["teacher_import"]) if self.values.get("teacher_import") else cfg)
        return out

    def student_grid(self) -> list[StudentTrial]:
        """One trial per grid row of students, naming its teacher snapshot, with the space's distributions that
        apply to it (a CE-only baseline has no teacher, alpha or temperature). trials() repeats the sampling ones."""
        dists = self.distributions()
        grid_keys = [k for k, spec in KEYS.items() if spec.scope == "student" and k not in dists]
        teachers = self.teachers()
        out, seen = [], set()
        for combo in itertools.product(*(self.axis(k) for k in grid_keys)):
            base = {**self.fixed("data"), **self.fixed("shared"), **dists, **dict(zip(grid_keys, combo))}
            if base["kd_epochs"] == 0:
                trial = StudentTrial(**{**base, **dict.fromkeys(TEACHER_ONLY)})
                key = tuple(sorted((k, str(v)) for k, v in trial.row().items()))
                if key not in seen:
                    seen.add(key)
                    out.append(trial)
                continue
            for t in teachers:
                for snap in sorted(self.values["snapshots"]):
                    out.append(StudentTrial(**base, teacher_hash=t.teacher_hash(), teacher_arch=t.model,
                                            snapshot_epoch=snap))
        return out

    def needed_teachers(self) -> list[TeacherConfig]:
        """The teachers some student distills from (a grid of CE-only students needs none)."""
        used = {trial.teacher_hash for trial in self.student_grid()}
        return [t for t in self.teachers() if t.teacher_hash() in used]

    def trials(self) -> list[StudentTrial]:
        """One per student trial. Distributions stay {kind: args} values that Ray Tune draws per trial: a trial
        that samples something is repeated num_samples times, one that samples nothing (a CE-only baseline under
        an alpha or temperature distribution) runs once rather than as identical copies."""
        out = []
        for trial in self.student_grid():
            out += [trial] * (self.num_samples if any(map(is_distribution, trial.row().values())) else 1)
        return out

    # Temporary dict views for the callers that still index rows (pipeline, plan, gpu_plan, search, gate): they
    # move to trials() / student_grid(), then these two go.
    def student_rows(self) -> list[dict]:
        return [trial.row() for trial in self.student_grid()]

    def trial_rows(self) -> list[dict]:
        return [trial.row() for trial in self.trials()]

    def trial_counts(self) -> tuple[int, int]:
        return len(self.needed_teachers()), len(self.trials())

    def max_kd_epochs(self) -> int:
        """The longest KD phase a student can have: a distribution's highest value (randint's hi included)."""
        return max(map(_highest, self.axis("kd_epochs")))


def student_config(row: "dict | StudentTrial") -> StudentConfig:
    """The StudentConfig of a trial, or of a row as a dict (search-space keys or StudentConfig field names)."""
    return StudentConfig.from_row(row.row() if isinstance(row, StudentTrial) else row)


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
    try:
        values = _SpaceKeys(**{**raw, **(overrides or {})}).model_dump()
    except ValidationError as exc:  # extra="forbid": the only error a model of Any values raises
        key = exc.errors()[0]["loc"][0]
        near = difflib.get_close_matches(str(key), list(KEYS), n=1)
        hint = f"did you mean {near[0]!r}?" if near else "see `tune-eskd spaces --keys`"
        raise UsageError(f"search space {name}: unknown key {key!r}: {hint}") from None
    _check_shapes(name, values)
    space = SweepSpace(name, values)
    _check_values(space)
    return space


def _check_shapes(name: str, values: dict) -> None:
    """Where lists (grid axes) and distributions may stand; the values themselves are the configs' to check."""
    for key, value in values.items():
        spec = KEYS[key]
        where = f"search space {name}: {key}"
        if isinstance(value, list) and not value:
            raise UsageError(f"{where} is an empty list: give at least one value")
        if key == "snapshots":
            try:
                SNAPSHOTS.validate_python(value)
            except ValidationError:
                raise UsageError(f"{where} must be a list of epochs, e.g. {list(KEYS['snapshots'].default)}; "
                                 f"got {value!r}") from None
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
    try:
        NUM_SAMPLES.validate_python(values["num_samples"])
    except ValidationError:
        raise UsageError(f"search space {name}: num_samples must be a positive integer, "
                         f"got {values['num_samples']!r}") from None
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
    try:
        DISTRIBUTION_MODELS[kind].model_validate(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] == "value_error":  # the model's own check: low < high
            raise UsageError(f"{where}: {error['ctx']['error']}") from None
        what = "[options]" if kind == "choice" else "[low, high]" + (" of integers" if kind == "randint" else "")
        raise UsageError(f"{where}: {kind} takes a list {what}, got {args!r}") from None


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
        for t in space.teachers():
            t.validate()
    except UsageError as exc:
        raise UsageError(f"search space {name}: teacher: {exc}") from None
    grid = space.student_grid()
    try:
        for trial in grid:
            for variant in _bound_variants(trial):
                variant.student_config().validate()
    except UsageError as exc:
        raise UsageError(f"search space {name}: student: {exc}") from None
    if not grid:
        raise UsageError(f"search space {name}: the grid is empty: give every axis at least one value")
    if space.values["val_split"] == 0:
        raise UsageError(f"search space {name}: val_split 0 leaves nothing to select on: use e.g. 0.1 "
                         f"(test accuracy is reported, never tuned on)")
