"""One student trial of a sweep, typed: the row a search space expands to, and its one conversion to and from
the Ray Tune config ({"trial": row}). The row's keys are the search-space keys (student_arch, lr, ...) and, once
written to disk as Tune configs, the contract that lets older experiments resume: keep them.

No torch, no Ray: analysis reads trial configs with this module too.
"""
import dataclasses
from dataclasses import dataclass

# What only a distilled student has: a CE-only baseline (kd_epochs 0) never sees a teacher, so these are blank.
TEACHER_ONLY = ("teacher_hash", "teacher_arch", "snapshot_epoch", "alpha", "temperature")
Sampled = dict  # a distribution, {kind: [args]}, that Ray Tune draws per trial (see search_spaces/space.py)


@dataclass(frozen=True, kw_only=True)
class StudentTrial:
    # data: fixed for the whole sweep
    dataset: str
    data_dir: str | None
    subset: int | None
    val_split: float
    split_seed: int
    data_hash: str | None = None   # the content hash of npz:/imagefolder: data, set by the sweep once it loaded them
    # fixed for both stages
    batch_size: int
    momentum: float
    weight_decay: float
    nesterov: bool
    schedule: str
    gamma: float
    # the student's axes (a Sampled value until Ray Tune draws it)
    student_arch: str
    student_width: float
    epochs: int
    lr: float | Sampled
    kd_epochs: int | Sampled
    alpha: float | Sampled | None
    temperature: float | Sampled | None
    seed: int
    # its teacher snapshot (None for a CE-only baseline)
    teacher_hash: str | None = None
    teacher_arch: str | None = None
    snapshot_epoch: int | None = None
    # whether it reads shared cached teacher logits; None until the sweep decides (pipeline.mark_soft_labels)
    soft_labels: bool | None = None

    @property
    def is_baseline(self) -> bool:
        return self.kd_epochs == 0

    def row(self) -> dict:
        """The row as a dict, in field order; data_hash and soft_labels only once set (as rows always had them)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None or f.name not in ("data_hash", "soft_labels")}

    def to_config(self) -> dict:
        """The Ray Tune config of this trial (distributions still {kind: args}: see pipeline.student_param_space)."""
        return {"trial": self.row()}

    @classmethod
    def from_config(cls, config: dict) -> "StudentTrial":
        """The trial of a Tune config, as the trainable receives it, or as a (possibly older) experiment saved it."""
        return cls(**flat_config(config))

    def student_config(self):
        """The StudentConfig this trial trains (config.StudentConfig.from_row)."""
        from .config import StudentConfig

        return StudentConfig.from_row(self.row())


def flat_config(config: dict) -> dict:
    """A Tune config as one flat dict: a student's row ("trial") or a teacher's config ("teacher"), with any keys
    Ray Tune sampled at the top level (as "key" or "trial/key")."""
    flat = dict(config.get("trial") or config.get("teacher") or {})
    for k, v in config.items():
        if k not in ("trial", "teacher"):
            flat[k.removeprefix("trial/")] = v
    return flat
