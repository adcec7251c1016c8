"""Bring your own teacher: `tune-eskd import-teacher` puts existing teacher checkpoints (state_dicts) into the
snapshot store, with metadata and their validation and test accuracy measured at import. A search space then
names them (`teacher_import: NAME`) and its students distill from them; nothing is retrained.

Accepted layouts: a bare state_dict, or one wrapped as {"state_dict": ...} or {"model": ...}; keys with or
without DataParallel's `module.` prefix; tune-eskd's own names, torchvision's (conv1, bn1, layerN, fc), or the
common CIFAR scripts' (..., shortcut, linear). Loaded with torch.load(weights_only=True): a pickled object is
refused, never run.
"""
import dataclasses
import hashlib
import json
import os
import pickle

import torch

from .config import TeacherConfig
from .data import load_splits
from .errors import UsageError
from .models import MODELS, build_model
from .blobs import filesystem, write_bytes
from .record import library_versions
from .snapshots import SnapshotStore, read_metadata, save_snapshot

WRAPPERS = ("state_dict", "model")
# Other layouts' top-level names -> tune-eskd's (blocks inside share torchvision's conv1/bn1/conv2/bn2 names).
RENAMES = (("conv1.", "stem.0."), ("bn1.", "stem.1."), ("linear.", "fc."))


@dataclasses.dataclass
class ImportedTeacher(TeacherConfig):
    """A teacher that was trained elsewhere: its hash names the import (and its data), not a training run."""
    import_name: str = ""

    def teacher_hash(self) -> str:
        return imported_hash(self.import_name, self.data_key())


def imported_hash(name: str, data_key: dict) -> str:
    blob = json.dumps({"import": name, **data_key}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def as_imported(cfg: TeacherConfig, name: str) -> ImportedTeacher:
    return ImportedTeacher(**dataclasses.asdict(cfg), import_name=name)


def read_state_dict(path: str) -> dict:
    """A checkpoint's tensors under tune-eskd's key names; UsageError (one line) for anything else."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"checkpoint {path} does not exist") from None
    except pickle.UnpicklingError:
        raise UsageError(f"checkpoint {path} holds pickled Python objects, not just tensors (weights_only=True "
                         f"refuses to run them): save model.state_dict() instead") from None
    except Exception as exc:  # a truncated file, or not a torch file at all
        raise UsageError(f"checkpoint {path} is not a readable torch file ({type(exc).__name__}): "
                         f"pass a state_dict saved with torch.save") from None
    for key in WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UsageError(f"checkpoint {path} is not a state_dict (a mapping of names to tensors, possibly under "
                         f"'state_dict' or 'model'): save model.state_dict()")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    if any(k.startswith("layer1.") for k in state):  # torchvision / CIFAR-script layout
        state = {_rename(k): v for k, v in state.items()}
    return state


def _rename(key: str) -> str:
    if key.startswith("layer"):
        stage, rest = key[len("layer"):].split(".", 1)
        return f"stages.{int(stage) - 1}.{rest.replace('shortcut.', 'downsample.')}"
    for old, new in RENAMES:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def fit_model(state: dict, path: str, arch: str, width: float, num_classes: int) -> torch.nn.Module:
    """`arch` with the checkpoint's weights, or one line saying why they do not fit."""
    fc = state.get("fc.weight")
    if fc is not None and fc.ndim == 2 and fc.shape[0] != num_classes:
        raise UsageError(f"checkpoint {path} predicts {fc.shape[0]} classes but the dataset has {num_classes}: "
                         f"import it with its own --dataset")
    model = build_model(arch, num_classes, width)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = str(exc).split("\n\t", 1)[-1].split("\n")[0][:160]
        raise UsageError(f"checkpoint {path} does not fit {arch} at width {width:g} ({detail}): "
                         f"pass the --arch (and --width) it was trained as") from None
    return model.eval()


def import_teacher(name: str, arch: str, checkpoints: list[str], epochs: list[int], storage: str, *,
                   dataset: str = "cifar10", width: float = 1.0, data_dir: str | None = None,
                   subset: int | None = None, val_split: float = 0.1, split_seed: int = 0,
                   device: str = "cpu", overwrite: bool = False) -> list[dict]:
    """Check every checkpoint, measure each, then write the snapshots; returns their metadata. Nothing is written
    unless all of them are good."""
    from .engine import Images, accuracy, pick_device

    _check_args(name, arch, checkpoints, epochs, storage)
    data = load_splits(dataset, data_dir=data_dir, val_split=val_split, split_seed=split_seed, subset=subset)
    cfg = as_imported(TeacherConfig(model=arch, width=width, dataset=dataset, data_dir=data_dir, subset=subset,
                                    val_split=val_split, split_seed=split_seed, epochs=max(epochs),
                                    snapshots=sorted(epochs)), name)
    cfg.data_hash = data.content_hash
    store = SnapshotStore(f"{storage}/snapshots")
    teacher_hash = cfg.teacher_hash()
    if not overwrite and store.missing(teacher_hash, epochs) != list(epochs):
        raise UsageError(f"teacher import {name!r} on this data already exists in {store.root}/{teacher_hash}: "
                         f"pick another name, or pass --overwrite")
    models = {epoch: fit_model(read_state_dict(path), path, arch, width, data.num_classes)
              for epoch, path in zip(epochs, checkpoints)}
    dev = pick_device(device)
    val = Images(data.val_x, data.val_y, data.mean, data.std, dev)
    test = Images(data.test_x, data.test_y, data.mean, data.std, dev)
    written, history = [], []
    for epoch, path in sorted(zip(epochs, checkpoints)):
        model = models[epoch].to(dev)
        metrics = {"epoch": epoch, "val_acc": accuracy(model, val), "test_acc": accuracy(model, test)}
        with open(path, "rb") as f:
            source_sha = hashlib.sha256(f.read()).hexdigest()
        written.append(save_snapshot(store.path(teacher_hash, epoch), model.state_dict(), {
            "arch": arch, "width": width, "num_classes": data.num_classes, "data": cfg.data_key(), **metrics,
            "teacher_hash": teacher_hash, "config": dataclasses.asdict(cfg), "versions": library_versions(),
            "imported": {"name": name, "from": os.path.abspath(path), "sha256": source_sha}}))
        history.append(metrics)
    fsys, p = filesystem(f"{store.root}/{teacher_hash}/teacher.json")  # as a trained teacher's, for analysis
    write_bytes(fsys, p, json.dumps({"teacher_hash": teacher_hash, "config": dataclasses.asdict(cfg),
                                     "history": history, "imported": name}, indent=1).encode())
    return written


def _check_args(name, arch, checkpoints, epochs, storage) -> None:
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"--name {name!r} must be a plain name, e.g. resnet34-seed: spaces name it as teacher_import")
    if arch not in MODELS:
        raise UsageError(f"unknown --arch {arch!r}: choose one of {', '.join(MODELS)}")
    if len(epochs) != len(checkpoints):
        raise UsageError(f"{len(epochs)} --epochs for {len(checkpoints)} checkpoints: give one epoch per checkpoint, "
                         f"in the same order")
    if len(set(epochs)) != len(epochs) or any(e < 1 for e in epochs):
        raise UsageError(f"--epochs {epochs} must be distinct epochs >= 1, one per checkpoint")
    if "://" not in storage and not os.path.isabs(storage):
        raise UsageError(f"--storage must be an absolute path or a URI, got {storage!r}")


def resolve_import(space, snapshot_root: str) -> None:
    """For a space with `teacher_import`: check that the import holds every snapshot epoch the space asks for,
    and take its arch and width into the space in place of teacher_arch and teacher_width (so every row and the
    record name the real teacher)."""
    name = space.values.get("teacher_import")
    if not name:
        return
    if not isinstance(name, str):
        raise UsageError(f"search space {space.name}: teacher_import must be the name of an import, got {name!r}")
    listed = [k for k in ("teacher_epochs", "teacher_lr", "teacher_seed") if isinstance(space.values[k], list)]
    if listed:
        raise UsageError(f"search space {space.name}: teacher_import {name!r} is one teacher: drop the lists in "
                         f"{', '.join(listed)}")
    store = SnapshotStore(snapshot_root)
    teacher_hash = space.teachers()[0].teacher_hash()  # every teacher of the space names the same import
    missing = store.missing(teacher_hash, space.values["snapshots"])
    if missing:
        names = _listing(store, teacher_hash)
        held = sorted(int(f[6:9]) for f in names if f.startswith("epoch_") and f.endswith(".json"))
        what = f"holds epochs {held}" if held else "is not in this storage (or was imported for other data)"
        raise UsageError(f"search space {space.name}: teacher_import {name!r} {what}, not {missing}: import them "
                         f"with `tune-eskd import-teacher --name {name} ...` into {os.path.dirname(snapshot_root)}")
    meta = read_metadata(store.path(teacher_hash, space.values["snapshots"][0]))
    space.values["teacher_arch"], space.values["teacher_width"] = meta["arch"], meta["width"]


def _listing(store: SnapshotStore, teacher_hash: str) -> list[str]:
    from pyarrow import fs as pafs

    fsys, p = filesystem(f"{store.root}/{teacher_hash}")
    if fsys.get_file_info(p).type != pafs.FileType.Directory:
        return []
    return [i.base_name for i in fsys.get_file_info(pafs.FileSelector(p))]
