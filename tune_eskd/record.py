"""Where a sweep lives, and the record (sweep.json) that lets `resume`, `status` and analysis pick it up.

    STORAGE/snapshots/<teacher hash>/epoch_NNN.{pt,json}    shared by every sweep on this storage
    STORAGE/soft_labels/...                                  shared teacher logits (see soft_labels.py)
    STORAGE/NAME/sweep.json                                  the validated space and the sweep options
    STORAGE/NAME/teachers/                                   stage 1: a Ray Tune experiment
    STORAGE/NAME/students/                                   stage 2: a Ray Tune experiment

The storage layer: it imports neither torch nor Ray, so analysis can read an experiment without them.
"""
import json
import os
import platform
from dataclasses import dataclass
from importlib import metadata

from pyarrow import fs as pafs

from .blobs import filesystem, read_bytes, write_bytes
from .errors import UsageError

SWEEP_FILE = "sweep.json"


def library_versions() -> dict:
    """The versions a record or snapshot was written with. Writers are the training layers, which have torch
    loaded: its own __version__ carries the build tag (e.g. 2.14.1+cu130) that package metadata lacks."""
    import torch
    import torchvision

    from . import __version__

    return {"tune_eskd": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "ray": _installed("ray"), "python": platform.python_version()}


def _installed(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


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

    def write_record(self, space_name: str, space_values: dict, options: dict, asha: dict | None = None,
                     data_hash: str | None = None) -> None:
        """options: the sweep options as plain data (experiment.SweepOptions.to_record()); asha: the bounds an
        ASHA sweep runs with ({"grace_period", "max_t"}), which analysis reads rather than recomputes; data_hash:
        the content hash of npz:/imagefolder: data (data.Splits.content_hash), which `resume` compares."""
        record = {"space_name": space_name, "space": space_values, "options": options,
                  "versions": library_versions(), "data_hash": data_hash}
        if asha is not None:
            record["asha"] = asha
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
