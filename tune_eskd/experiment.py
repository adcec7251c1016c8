"""The options of a sweep (how and where it runs); the sweep's on-disk record is record.Experiment."""
import os
from dataclasses import asdict, dataclass, fields
from typing import Literal

from pydantic import with_config

from .config import STRICT, check_fields, knob
from .cpus import local_cpus
from .errors import UsageError
from .record import SWEEP_FILE


@with_config(STRICT)
@dataclass
class SweepOptions:
    storage: str
    name: str
    cpus_per_trial: float = knob(1, gt=0)
    gpus_per_trial: float | None = knob(None, ge=0)  # None: the GPUs when there are any (see gpu_plan.plan_gpus), else 0
    max_concurrent: int | None = knob(None, ge=1)
    scheduler: Literal["fifo", "asha"] = "fifo"
    grace_period: int | None = knob(None, ge=1)   # default: right after the longest KD phase
    reduction_factor: float = knob(2, gt=1)
    max_t: int | None = knob(None, ge=1)          # default: the students' epochs
    address: str | None = None
    soft_label_cache: bool = True
    max_failures: int = knob(2, ge=-1, rule=">= 0 (or -1: retry forever)")
    keep_weights: Literal["none", "final", "best"] = "final"  # what a finished trial keeps (float16); older records: final
    deterministic: bool = False       # deterministic cuDNN/cuBLAS kernels (see tune_eskd.gpu)
    soft_label_precision: Literal["float32", "bf16"] = "float32"  # teacher passes: float32 (exact) or bf16 (opt-in)
    search: Literal["grid", "optuna"] = "grid"  # stage 2: grid (Ray Tune's random draws) | optuna (TPE per grid cell)
    pipeline: bool = True             # stages at once (False: --no-pipeline, one after another); older records: False
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
        check_fields(self, label=lambda name: "--" + name.replace("_", "-"))  # types and bounds (pydantic)
        self.check_local_resources()

    def to_record(self) -> dict:
        """The options as plain data, for the experiment record (sweep.json)."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict, path: str) -> "SweepOptions":
        """The SweepOptions a record (Experiment.read_record() of the experiment at `path`) was written with."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(record["options"]) - known)
        if unknown or not {"storage", "name"} <= set(record["options"]):
            what = f"unknown options {unknown}" if unknown else "no storage or name among its options"
            raise UsageError(f"{path}/{SWEEP_FILE} is damaged: it holds {what}; it is written by `tune-eskd sweep`")
        return cls(**record["options"])

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
        cpus = local_cpus()
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
