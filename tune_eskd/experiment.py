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
    # Each field with a knob is a `tune-eskd sweep` flag (cli._config_flags): its default and help live here only.
    # A bool that defaults to True is a --no-NAME flag, and its help says what turning it off does.
    storage: str
    name: str
    cpus_per_trial: float = knob(1, "CPUs a trial reserves", gt=0, metavar="N")
    gpus_per_trial: float | None = knob(
        None, "fractions share a GPU, e.g. 0.25; 0 trains on the CPU (default: with GPUs, 0.25, 0.5 or 1 from the "
              "largest trial's memory estimate, printed; without, 0)", ge=0, metavar="N")  # see gpu_plan.plan_gpus
    max_concurrent: int | None = knob(None, "at most this many trials (and soft-label tasks) at once", ge=1,
                                      metavar="N")
    scheduler: Literal["fifo", "asha"] = knob("fifo", "stage 2 scheduler")
    grace_period: int | None = knob(None, "ASHA: epochs before the first cut (default: right after the longest "
                                          "KD phase)", ge=1, metavar="EPOCHS")
    reduction_factor: float = knob(2, "ASHA reduction factor", gt=1, metavar="ETA")
    max_t: int | None = knob(None, "ASHA max epochs (default: the students' epochs)", ge=1, metavar="EPOCHS")
    address: str | None = knob(None, "join a running Ray cluster, e.g. HEAD:6379 or auto", metavar="HOST:PORT")
    soft_label_cache: bool = knob(True, "run the live teacher in every student instead of caching its soft labels")
    max_failures: int = knob(2, "retries of a crashed trial from its checkpoint", ge=-1,
                             rule=">= 0 (or -1: retry forever)", metavar="N")
    keep_weights: Literal["none", "final", "best"] = knob(
        "final", "weights a finished trial keeps, as float16; its optimizer state is dropped")  # older records: final
    deterministic: bool = knob(False, "deterministic cuDNN/cuBLAS kernels: bit-identical reruns on the same GPU "
                                      "type, somewhat slower")  # see tune_eskd.gpu
    soft_label_precision: Literal["float32", "bf16"] = knob(
        "float32", "teacher passes (soft labels, live teachers): float32, exact, or bf16 autocast (CPUs with "
                   "AMX/AVX512-BF16, GPUs of compute capability >= 8)")
    search: Literal["grid", "optuna"] = knob(
        "grid", "stage 2: grid (distributions drawn at random) or optuna (TPE per grid cell; tune-eskd[optuna])")
    pipeline: bool = knob(True, "run the stages one after another (teachers, soft labels, students) instead of "
                                "starting each student as soon as its snapshot is ready")  # older records: False
    mlflow: str | None = knob(None, "log every trial to MLflow, e.g. sqlite:////abs/mlflow.db or "
                                    "http://HOST:5000 (tune-eskd[mlflow])", metavar="URI")  # see tracking.py
    wandb: str | None = knob(None, "log every trial to this W&B project (tune-eskd[wandb])",
                              metavar="PROJECT")

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
