"""Datasets decoded once into uint8 arrays, with a stratified validation split held out from train.

Sources: `synthetic` (built in, offline), `cifar10` / `cifar100` (torchvision, under --data-dir),
`imagefolder:PATH` (PATH/train/<class>/*, PATH/test/<class>/*) and `npz:FILE` (x_train, y_train, x_test,
y_test, classes; NHWC or NCHW uint8). Arrays are numpy so Ray's object store hands them to trials zero-copy.
The file-backed sources carry a hash of their content (`Splits.content_hash`, part of a run's data key), so
snapshots and soft labels of files that have since changed are never reused.
"""
import hashlib
import json
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from .errors import UsageError
from .synthetic import make_synthetic

BUILTIN_SOURCES = ("synthetic", "cifar10", "cifar100")
PREFIX_SOURCES = ("imagefolder:", "npz:")


@dataclass
class Splits:
    """Train / validation / test images as (N, 3, H, W) uint8 arrays with int64 labels."""
    name: str
    classes: list
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    mean: tuple
    std: tuple
    content_hash: str | None = None  # of the source's arrays, for npz: and imagefolder: (fixed by name otherwise)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def check_source(source: str, data_dir: str | None = None) -> None:
    """Fail fast, before any work, on a dataset name or folder that cannot be read."""
    if source in BUILTIN_SOURCES:
        return
    if source.startswith("imagefolder:"):
        root = source.split(":", 1)[1]
        missing = [s for s in ("train", "test") if not os.path.isdir(os.path.join(root, s))]
        if missing:
            raise UsageError(f"dataset folder {root!r} has no {' or '.join(m + '/' for m in missing)}: "
                             f"imagefolder:PATH needs PATH/train/<class>/* and PATH/test/<class>/*")
        return
    if source.startswith("npz:"):
        path = source.split(":", 1)[1]
        if not os.path.isfile(path):
            raise UsageError(f"npz dataset {path!r} does not exist: pass npz:/absolute/path/to/file.npz")
        return
    raise UsageError(f"unknown dataset {source!r}: use synthetic, cifar10, cifar100, imagefolder:PATH or npz:FILE")


def _load_torchvision(source: str, data_dir: str | None):
    from torchvision import datasets

    data_dir = os.path.abspath(data_dir or os.path.expanduser("~/.cache/tune-eskd/data"))
    cls = datasets.CIFAR10 if source == "cifar10" else datasets.CIFAR100
    try:
        train, test = (cls(data_dir, train=flag, download=True) for flag in (True, False))
    except Exception as exc:  # torchvision raises URLError, RuntimeError, ... when offline
        raise UsageError(f"cannot load {source} from {data_dir} ({type(exc).__name__}: could not download): put the "
                         f"dataset there with --data-dir, or use an offline source: synthetic, imagefolder:PATH, "
                         f"npz:FILE") from None
    nchw = lambda d: np.ascontiguousarray(np.asarray(d.data).transpose(0, 3, 1, 2))
    return nchw(train), np.asarray(train.targets), nchw(test), np.asarray(test.targets), list(train.classes)


def _load_imagefolder(root: str):
    from PIL import Image

    classes = sorted(d.name for d in os.scandir(os.path.join(root, "train")) if d.is_dir())
    if not classes:
        raise UsageError(f"{root}/train has no class folders: put images under {root}/train/<class>/")
    out = []
    for split in ("train", "test"):
        xs, ys = [], []
        for label, name in enumerate(classes):
            folder = os.path.join(root, split, name)
            for fname in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
                path = os.path.join(folder, fname)
                try:
                    with Image.open(path) as img:
                        xs.append(np.asarray(img.convert("RGB").resize((32, 32))).transpose(2, 0, 1))
                except (OSError, ValueError):  # PIL.UnidentifiedImageError is an OSError; so is a truncated file
                    raise UsageError(f"{path} is not an image PIL can read: remove it from the dataset folder") from None
                ys.append(label)
        if not xs:
            raise UsageError(f"{root}/{split} holds no images of the classes in {root}/train: add them")
        out += [np.stack(xs), np.asarray(ys, dtype=np.int64)]
    return (*out, classes)


def _load_npz(path: str):
    # A file that is not an npz archive, or one holding pickled objects (refused: allow_pickle=False), raises
    # BadZipFile / ValueError / OSError from numpy: name the file instead of showing a traceback.
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
            if missing:
                raise UsageError(f"{path} lacks arrays {sorted(missing)}: an npz dataset needs x_train, y_train, "
                                 f"x_test, y_test")
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
            classes = [str(c) for c in f["classes"]] if "classes" in f.files else None
    except UsageError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{path} is not a readable .npz archive of plain arrays ({type(exc).__name__}): write it "
                         f"with numpy.savez(x_train=..., y_train=..., x_test=..., y_test=...)") from None
    xs, ys = [], []
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        # Wrong shapes or labels would otherwise fail deep inside training with an unrelated traceback.
        if x.ndim != 4 or 3 not in (x.shape[1], x.shape[-1]):
            raise UsageError(f"{path}: x_{split} has shape {x.shape}: images must be N x H x W x 3 or N x 3 x H x W")
        if y.ndim != 1 or len(y) != len(x):
            raise UsageError(f"{path}: {len(x)} images but {len(y)} labels in x_{split}/y_{split}: "
                             f"give one integer label per image")
        if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
            raise UsageError(f"{path}: y_{split} labels must be integers >= 0, got {y.dtype} from {y.min() if len(y) else '-'}")
        xs.append(np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if x.shape[-1] == 3 else x)
        ys.append(y.astype(np.int64))
    if classes is None:
        classes = [str(i) for i in range(int(max(ys[0].max(initial=0), ys[1].max(initial=0))) + 1)]
    return xs[0], ys[0], xs[1], ys[1], classes


def content_hash(train_x, train_y, test_x, test_y, classes) -> str:
    """A short sha256 of a dataset's arrays (shape, dtype and bytes) and class names."""
    h = hashlib.sha256(json.dumps(list(classes)).encode())
    for a in (train_x, train_y, test_x, test_y):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()[:16]


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held_out) sorted index arrays: `fraction` of every class held out, chosen by `seed`."""
    rng = np.random.default_rng([seed, 7])
    held = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        held.append(idx[: int(round(fraction * len(idx)))])
    held = np.sort(np.concatenate(held)) if held else np.array([], dtype=np.int64)
    keep = np.setdiff1d(np.arange(len(labels)), held)
    return keep, held


def load_splits(source: str, *, data_dir: str | None = None, val_split: float = 0.1, split_seed: int = 0,
                subset: int | None = None) -> Splits:
    """Load `source`, keep a stratified `subset` of train if given, and hold out `val_split` of it."""
    check_source(source, data_dir)
    if not 0 <= val_split < 1:
        raise UsageError(f"val_split must be in [0, 1), got {val_split}: use e.g. 0.1, or 0 for no validation")
    if source == "synthetic":
        train_x, train_y, test_x, test_y, classes = make_synthetic(seed=0)
    elif source in ("cifar10", "cifar100"):
        train_x, train_y, test_x, test_y, classes = _load_torchvision(source, data_dir)
    elif source.startswith("imagefolder:"):
        train_x, train_y, test_x, test_y, classes = _load_imagefolder(source.split(":", 1)[1])
    else:
        train_x, train_y, test_x, test_y, classes = _load_npz(source.split(":", 1)[1])
    # Files can change under the same name; the built-in sources cannot (synthetic is generated, CIFAR is fixed).
    digest = None if source in BUILTIN_SOURCES else content_hash(train_x, train_y, test_x, test_y, classes)
    if subset:
        if subset > len(train_y):
            raise UsageError(f"subset {subset} exceeds the {len(train_y)} training images of {source}: lower it")
        keep, _ = stratified_split(train_y, 1 - subset / len(train_y), split_seed)
        train_x, train_y = train_x[keep], train_y[keep]
    keep, held = stratified_split(train_y, val_split, split_seed)
    scaled = train_x[keep].astype(np.float32) / 255
    mean = tuple(float(v) for v in scaled.mean(axis=(0, 2, 3)))
    std = tuple(float(v) for v in scaled.std(axis=(0, 2, 3)))
    return Splits(source, classes, train_x[keep], train_y[keep], train_x[held], train_y[held], test_x, test_y,
                  mean, std, digest)
