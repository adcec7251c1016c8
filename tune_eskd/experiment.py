"""Where a sweep lives, and the record (sweep.json) that lets `resume` and `status` pick it up.

    STORAGE/snapshots/<teacher hash>/epoch_NNN.{pt,json}    shared by every sweep on this storage
    STORAGE/soft_labels/...                                  shared teacher logits (see soft_labels.py)
    STORAGE/NAME/sweep.json                                  the validated space and the sweep options
    STORAGE/NAME/teachers/                                   stage 1: a Ray Tune experiment
    STORAGE/NAME/students/                                   stage 2: a Ray Tune experiment
"""
import json
import os
from dataclasses import asdict, dataclass

from pyarrow import fs as pafs

from .errors import UsageError
from .snapshots import filesystem, library_versions, read_bytes, write_bytes

SWEEP_FILE = "sweep.json"


@dataclass
class SweepOptions:
    storage: str
    name: str
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    max_concurrent: int | None = None
    scheduler: str = "fifo"
    grace_period: int | None = None   # default: right after the longest KD phase
    reduction_factor: float = 2
    max_t: int | None = None          # default: the students' epochs
    address: str | None = None
    soft_label_cache: bool = True
    max_failures: int = 2

    def validate(self) -> None:
        if "://" not in self.storage and not os.path.isabs(self.storage):
            raise UsageError(f"--storage must be an absolute path or a URI, got {self.storage!r}: "
                             f"use e.g. {os.path.abspath(self.storage)}")
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise UsageError(f"--name {self.name!r} must be a plain folder name, e.g. my-study")
        if self.name in ("snapshots", "soft_labels"):
            raise UsageError(f"--name {self.name!r} is reserved for the shared store: pick another name")
        if self.cpus_per_trial <= 0:
            raise UsageError(f"--cpus-per-trial must be > 0, got {self.cpus_per_trial}")
        if self.gpus_per_trial < 0:
            raise UsageError(f"--gpus-per-trial must be >= 0, got {self.gpus_per_trial}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise UsageError(f"--max-concurrent must be >= 1, got {self.max_concurrent}")
        if self.scheduler not in ("fifo", "asha"):
            raise UsageError(f"--scheduler must be fifo or asha, got {self.scheduler!r}")
        if self.reduction_factor <= 1:
            raise UsageError(f"--reduction-factor must be > 1, got {self.reduction_factor}")
        for flag, v in (("--grace-period", self.grace_period), ("--max-t", self.max_t)):
            if v is not None and v < 1:
                raise UsageError(f"{flag} must be >= 1 epoch, got {v}")


@dataclass
class Experiment:
    storage: str
    name: str

    @classmethod
    def at(cls, path: str) -> "Experiment":
        """The experiment at STORAGE/NAME (a local path or URI), which must hold a sweep.json."""
        path = path.rstrip("/")
        if "://" not in path:
            path = os.path.abspath(path)
        storage, name = path.rsplit("/", 1)
        exp = cls(storage, name)
        if not exp.exists():
            raise UsageError(f"{path} is not a tune-eskd experiment (no {SWEEP_FILE}): pass the folder that "
                             f"`tune-eskd sweep` printed, STORAGE/NAME")
        return exp

    @property
    def path(self) -> str:
        return f"{self.storage}/{self.name}"

    @property
    def teachers_path(self) -> str:
        return f"{self.path}/teachers"

    @property
    def students_path(self) -> str:
        return f"{self.path}/students"

    @property
    def snapshot_root(self) -> str:
        return f"{self.storage}/snapshots"

    @property
    def soft_label_root(self) -> str:
        return f"{self.storage}/soft_labels"

    def exists(self) -> bool:
        fsys, p = filesystem(f"{self.path}/{SWEEP_FILE}")
        return fsys.get_file_info(p).type == pafs.FileType.File

    def stage_started(self, stage_path: str) -> bool:
        fsys, p = filesystem(stage_path)
        return fsys.get_file_info(p).type == pafs.FileType.Directory and any(
            i.base_name.startswith("experiment_state") for i in fsys.get_file_info(pafs.FileSelector(p)))

    def write_record(self, space_name: str, space_values: dict, options: SweepOptions) -> None:
        record = {"space_name": space_name, "space": space_values, "options": asdict(options),
                  "versions": library_versions()}
        fsys, p = filesystem(f"{self.path}/{SWEEP_FILE}")
        try:
            write_bytes(fsys, p, json.dumps(record, indent=1).encode())
        except OSError as exc:
            raise UsageError(f"cannot write to storage {self.storage} ({exc}): pick a writable --storage") from None

    def read_record(self) -> dict:
        fsys, p = filesystem(f"{self.path}/{SWEEP_FILE}")
        try:
            return json.loads(read_bytes(fsys, p))
        except json.JSONDecodeError:
            raise UsageError(f"{self.path}/{SWEEP_FILE} is not valid JSON: the experiment record is damaged") from None

    def remove(self) -> None:
        fsys, p = filesystem(self.path)
        if fsys.get_file_info(p).type == pafs.FileType.Directory:
            fsys.delete_dir(p)
