"""Where a sweep lives, and the record (sweep.json) that lets `resume` and `status` pick it up.

    STORAGE/snapshots/<teacher hash>/epoch_NNN.{pt,json}    shared by every sweep on this storage
    STORAGE/soft_labels/...                                  shared teacher logits (see soft_labels.py)
    STORAGE/NAME/sweep.json                                  the validated space and the sweep options
    STORAGE/NAME/teachers/                                   stage 1: a Ray Tune experiment
    STORAGE/NAME/students/                                   stage 2: a Ray Tune experiment
"""
import json
import os
from dataclasses import asdict, dataclass, fields

from pyarrow import fs as pafs

from .errors import UsageError
from .snapshots import filesystem, library_versions, read_bytes, write_bytes

SWEEP_FILE = "sweep.json"


@dataclass
class SweepOptions:
    storage: str
    name: str
    cpus_per_trial: float = 1
    gpus_per_trial: float | None = None  # None: the GPUs when there are any (see gpu_plan.plan_gpus), else 0
    max_concurrent: int | None = None
    scheduler: str = "fifo"
    grace_period: int | None = None   # default: right after the longest KD phase
    reduction_factor: float = 2
    max_t: int | None = None          # default: the students' epochs
    address: str | None = None
    soft_label_cache: bool = True
    max_failures: int = 2
    keep_weights: str = "final"       # what a finished trial keeps: none | final | best (float16); older records: final
    deterministic: bool = False       # deterministic cuDNN/cuBLAS kernels (see tune_eskd.gpu)
    soft_label_precision: str = "float32"  # teacher passes: float32 (exact) or bf16 (opt-in)
    search: str = "grid"              # stage 2: grid (Ray Tune's random draws) | optuna (TPE per grid cell)
    mlflow: str | None = None         # MLflow tracking URI (see tracking.py)
    wandb: str | None = None          # W&B project

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
        if self.gpus_per_trial is not None and self.gpus_per_trial < 0:
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
        if self.keep_weights not in ("none", "final", "best"):
            raise UsageError(f"--keep-weights must be none, final or best, got {self.keep_weights!r}")
        if self.soft_label_precision not in ("float32", "bf16"):
            raise UsageError(f"--soft-label-precision must be float32 or bf16, got {self.soft_label_precision!r}")
        if self.max_failures < -1:
            raise UsageError(f"--max-failures must be >= 0 (or -1: retry forever), got {self.max_failures}")
        self.check_local_resources()

    def device_settings(self):
        """What every trial and soft-label task applies (a gpu.DeviceSettings)."""
        from .gpu import DeviceSettings

        return DeviceSettings(self.deterministic, self.soft_label_precision)

    def check_local_resources(self) -> None:
        """On a private local Ray, a trial that asks for more CPUs or GPUs than this machine has would wait
        forever (Ray Tune only warns about infeasible trials): refuse it up front. A cluster (--address) may
        have bigger nodes than the driver's, so it is not checked."""
        if self.address:
            return
        cpus = _local_cpus()
        if self.cpus_per_trial > cpus:
            raise UsageError(f"--cpus-per-trial {self.cpus_per_trial:g} exceeds the {cpus} CPUs of this machine: "
                             f"no trial could ever start (use at most {cpus}, or --address a cluster)")
        if self.gpus_per_trial:
            import torch

            gpus = torch.cuda.device_count()
            if gpus == 0:
                raise UsageError(f"--gpus-per-trial {self.gpus_per_trial:g} asked for but this machine has no GPU "
                                 f"(CUDA is not available): drop the flag, or --address a cluster with GPUs")
            if self.gpus_per_trial > gpus:
                raise UsageError(f"--gpus-per-trial {self.gpus_per_trial:g} exceeds the {gpus} GPUs of this machine: "
                                 f"no trial could ever start (use at most {gpus})")


def _local_cpus() -> int:
    """The CPUs a private local Ray sees (it honours cgroup limits and CPU affinity)."""
    try:
        from ray._private.utils import get_num_cpus

        return int(get_num_cpus())
    except Exception:  # a private Ray helper: fall back to the affinity mask
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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
            record = json.loads(read_bytes(fsys, p))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UsageError(f"{self.path}/{SWEEP_FILE} is not valid JSON: the experiment record is damaged") from None
        # Valid JSON of the wrong shape (hand-edited, or written by another tool) would otherwise end in a
        # KeyError/TypeError traceback in resume or status.
        missing = [k for k in ("space_name", "space", "options") if not isinstance(record, dict) or k not in record]
        if missing or not isinstance(record["space"], dict) or not isinstance(record["options"], dict):
            what = f"lacks {', '.join(missing)}" if missing else "holds a space or options that are not mappings"
            raise UsageError(f"{self.path}/{SWEEP_FILE} is damaged: it {what}; it is written by `tune-eskd sweep`")
        return record

    def read_options(self, record: dict) -> SweepOptions:
        """The SweepOptions a record was written with."""
        known = {f.name for f in fields(SweepOptions)}
        unknown = sorted(set(record["options"]) - known)
        if unknown or not {"storage", "name"} <= set(record["options"]):
            what = f"unknown options {unknown}" if unknown else "no storage or name among its options"
            raise UsageError(f"{self.path}/{SWEEP_FILE} is damaged: it holds {what}; it is written by `tune-eskd sweep`")
        return SweepOptions(**record["options"])

    def check_writable(self) -> None:
        """Fail on a read-only or full experiment folder before Ray starts (resume rewrites Tune's state)."""
        fsys, p = filesystem(f"{self.path}/.write-check-{os.getpid()}")
        try:
            with fsys.open_output_stream(p) as f:
                f.write(b"x")
            fsys.delete_file(p)
        except OSError as exc:
            raise UsageError(f"cannot write to experiment {self.path} ({exc}): resume needs a writable folder "
                             f"(`tune-eskd status` only reads it)") from None

    def remove(self) -> None:
        fsys, p = filesystem(self.path)
        if fsys.get_file_info(p).type == pafs.FileType.Directory:
            fsys.delete_dir(p)
