"""Shared teacher soft labels: a teacher snapshot's logits on exactly the views a student sees, computed once.

In an ESKD grid many students distill from the same teacher snapshot, and for a small student the teacher's
forward pass costs more than the student's own step. Augmentation and batch order are pure functions of
(seed, role, epoch, sample index) (see augment.py and engine.Images.views), so the teacher's logits on a
student's views of epoch e depend only on the snapshot, the data, the student's seed and the batch size: not on
alpha, T, kd_epochs or the student's architecture. They are computed once per (snapshot, data, seed, batch_size)
and every such student reads them.

Layout under ROOT (a local path or any URI pyarrow.fs understands, e.g. s3://bucket/soft-labels):

    ROOT/<teacher hash>/epoch_<snapshot:03d>/<key>/epoch_<e:03d>.pt    logits [N, C] (float32 by default)
    ROOT/<teacher hash>/epoch_<snapshot:03d>/<key>/epoch_<e:03d>.json  sha256, shape, dtype, snapshot sha256, ...

<key> is a short hash of (cfg.data_key(), seed, batch_size, the teacher pass's precision and device kind) (see
`cache_key`): a GPU sweep whose teachers run bf16 never reads a CPU sweep's float32 entries, nor the reverse. The
.json is written last, so an epoch whose .json exists is complete; its checksum catches a damaged .pt.

The teacher is run on the student's own batches (same shuffled order, same composition), so on CPU the cached
logits are bit-identical to those a live teacher computes, and with float32 storage a student trained from the
cache matches one trained with the live teacher exactly (bit-identical weights and metrics); float32 is the default
(about 1.8 MB a CIFAR-10 epoch). float16 storage (`dtype=torch.float16`, half that) is opt-in: it rounds the
logits to 11 significant bits, so a student matches the live-teacher one only within a tolerance;
with --soft-label-precision bf16 the teacher runs under bf16 autocast (8 bits), which float16 holds exactly
for logits of ordinary size. float16 overflows past 65504, which an early snapshot of a deep teacher can reach:
such an entry is stored as float32 instead, with a one-line warning.

The sweep driver calls `ensure_soft_labels` once per (snapshot, seed, batch_size) group, with the epochs
1..max(kd_epochs) of the group's students, before those students start; students then use `cached_teacher`.
"""
import hashlib
import io
import json
import logging
import time
from typing import Callable

import torch

from .blobs import NO_DATA, Blob, BlobError, filesystem
from .config import TrainConfig
from .data import Splits
from .engine import Images, TeacherLogits, live_teacher
from .snapshots import SnapshotError, read_metadata
from .teachers import load_teacher

# Bump when augment.py / Images.views change what a (seed, epoch, index) view is: old caches then go unused.
VIEWS_VERSION = 3  # 2: crop and flip drawn from separate streams; 3: streams keyed by role (student views)
log = logging.getLogger("tune_eskd")
DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}


class SoftLabelError(SnapshotError):
    """A soft-label file that is missing, truncated, corrupted or does not fit the run."""


def cache_key(cfg: TrainConfig, precision: str = "float32", device_kind: str = "cpu") -> str:
    """A short id of what decides the logits besides the snapshot: the student's data, seed and batch size (its
    views), and the teacher pass's precision (gpu.TEACHER_PRECISIONS) and device kind (cpu, cuda, mps)."""
    fields = {"data": cfg.data_key(), "seed": int(cfg.seed), "batch_size": int(cfg.batch_size),
              "views_version": VIEWS_VERSION, "precision": precision, "device": device_kind}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _dtype_name(dtype: torch.dtype) -> str:
    for name, d in DTYPES.items():
        if d == dtype:
            return name
    raise ValueError(f"soft labels are stored as one of {', '.join(DTYPES)}, not {dtype}")


class SoftLabelCache:
    """Soft labels keyed by (teacher hash, snapshot epoch, cache_key(cfg), epoch) under one root."""

    def __init__(self, root: str, precision: str = "float32", device_kind: str = "cpu"):
        """precision, device_kind: the teacher pass this cache's entries come from (part of every key)."""
        self.root = root.rstrip("/") if "://" in root else filesystem(root)[1]
        self.precision, self.device_kind = precision, device_kind

    def key(self, cfg: TrainConfig) -> str:
        return cache_key(cfg, self.precision, self.device_kind)

    def dir(self, teacher_hash: str, snapshot_epoch: int, cfg: TrainConfig) -> str:
        return f"{self.root}/{teacher_hash}/epoch_{int(snapshot_epoch):03d}/{self.key(cfg)}"

    def path(self, teacher_hash: str, snapshot_epoch: int, cfg: TrainConfig, epoch: int) -> str:
        """The .pt file of one student epoch's soft labels (its metadata is the .json beside it)."""
        return f"{self.dir(teacher_hash, snapshot_epoch, cfg)}/epoch_{int(epoch):03d}.pt"

    def blob(self, teacher_hash: str, snapshot_epoch: int, cfg: TrainConfig, epoch: int) -> Blob:
        return Blob.at(self.path(teacher_hash, snapshot_epoch, cfg, epoch))

    def metadata(self, teacher_hash: str, snapshot_epoch: int, cfg: TrainConfig, epoch: int) -> dict | None:
        """The epoch's metadata, or None when it has not been (completely) written, or is damaged (so that the
        epoch counts as missing and is recomputed)."""
        try:
            return self.blob(teacher_hash, snapshot_epoch, cfg, epoch).read_meta()
        except BlobError:
            return None

    def has(self, teacher_hash: str, snapshot_epoch: int, cfg: TrainConfig, epoch: int) -> bool:
        return self.blob(teacher_hash, snapshot_epoch, cfg, epoch).exists()

    def missing_epochs(self, teacher_hash: str, snapshot_epoch: int, cfg: TrainConfig, epochs,
                       dtype: torch.dtype | None = None, snapshot_sha256: str | None = None) -> list[int]:
        """The epochs with no complete entry. With dtype / snapshot_sha256 given, an entry stored in another
        dtype, or computed from other snapshot weights (a retrained teacher), also counts as missing."""
        if dtype is None and snapshot_sha256 is None:
            return [e for e in epochs if not self.has(teacher_hash, snapshot_epoch, cfg, e)]
        out = []
        for e in epochs:
            meta = self.metadata(teacher_hash, snapshot_epoch, cfg, e)
            asked = meta and meta.get("requested_dtype", meta.get("dtype"))  # a float32 fallback serves float16
            if (meta is None or (dtype is not None and asked != _dtype_name(dtype))
                    or (snapshot_sha256 is not None and meta.get("snapshot_sha256") != snapshot_sha256)):
                out.append(e)
        return out

    def save(self, teacher_hash: str, snapshot_epoch: int, cfg: TrainConfig, epoch: int, logits: torch.Tensor,
             dtype: torch.dtype = torch.float32, **extra) -> dict:
        """Write logits [N, C] as `dtype`, then the metadata naming their sha256 (both atomically). Logits that
        overflow a narrower dtype (float16 past 65504) are stored as float32, with a warning."""
        if logits.dim() != 2:
            raise ValueError(f"soft labels are [N, C] logits, got shape {tuple(logits.shape)}")
        what = f"soft labels of teacher {teacher_hash} snapshot epoch {snapshot_epoch}, student epoch {epoch}"
        if not torch.isfinite(logits).all():
            raise SoftLabelError(f"{what} are not finite: the teacher's outputs are not finite, check the snapshot")
        requested = dtype
        tensor = logits.detach().to("cpu", dtype).contiguous()
        if not torch.isfinite(tensor).all():
            log.warning("%s reach |logit| %.4g, beyond %s: stored as float32", what, logits.abs().max().item(),
                        _dtype_name(dtype))
            dtype = torch.float32
            tensor = logits.detach().to("cpu", dtype).contiguous()
        buf = io.BytesIO()
        torch.save(tensor, buf)
        meta = {**extra, "teacher_hash": teacher_hash, "snapshot_epoch": int(snapshot_epoch), "epoch": int(epoch),
                "key": self.key(cfg), "precision": self.precision, "device_kind": self.device_kind,
                "data": cfg.data_key(), "seed": int(cfg.seed),
                "batch_size": int(cfg.batch_size), "views_version": VIEWS_VERSION,
                "shape": list(tensor.shape), "dtype": _dtype_name(dtype), "requested_dtype": _dtype_name(requested),
                "created": time.time()}
        return self.blob(teacher_hash, snapshot_epoch, cfg, epoch).write(buf.getvalue(), meta)

    def discard(self, teacher_hash: str, snapshot_epoch: int, cfg: TrainConfig, epoch: int) -> None:
        """Forget one epoch's entry (its metadata), so that `ensure_soft_labels` computes it again."""
        self.blob(teacher_hash, snapshot_epoch, cfg, epoch).forget()

    def load(self, teacher_hash: str, snapshot_epoch: int, cfg: TrainConfig, epoch: int) -> torch.Tensor:
        """The stored logits (in their stored dtype, on CPU), after checking checksum, shape and dtype."""
        blob = self.blob(teacher_hash, snapshot_epoch, cfg, epoch)
        uri = self.path(teacher_hash, snapshot_epoch, cfg, epoch)
        meta = self.metadata(teacher_hash, snapshot_epoch, cfg, epoch)
        if meta is None:
            raise SoftLabelError(f"no soft labels for teacher {teacher_hash} snapshot epoch {snapshot_epoch}, "
                                 f"student epoch {epoch} at {uri}", "run ensure_soft_labels for this snapshot, "
                                 f"seed and batch size first")
        try:
            data, _ = blob.read(meta)
        except BlobError as exc:
            what = "are missing but their metadata exists" if exc.reason == NO_DATA else \
                "are truncated or corrupted (checksum mismatch)"
            raise SoftLabelError(f"soft labels {uri} {what}",
                                 f"delete {blob.sidecar} and run ensure_soft_labels again") from None
        tensor = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if (not isinstance(tensor, torch.Tensor) or list(tensor.shape) != meta.get("shape")
                or _dtype_name(tensor.dtype) != meta.get("dtype")):
            raise SoftLabelError(f"soft labels {uri} do not match their metadata (shape {meta.get('shape')}, "
                                 f"dtype {meta.get('dtype')})", f"delete {blob.sidecar} and recompute them")
        return tensor


@torch.no_grad()
def compute_epoch_logits(teacher_model: torch.nn.Module, images: Images, seed: int, epoch: int,
                         batch_size: int, precision: str = "float32") -> torch.Tensor:
    """The teacher's float32 logits [N, C] on every training view of this epoch, row i for sample i.

    It runs over the very batches a student with this seed and batch size trains on (engine.Images.views with the
    student's role: its order and views, never the teacher's own), and
    computes each exactly as engine.live_teacher does, so on CPU the rows are bit-identical to a live teacher's.
    """
    teacher = live_teacher(teacher_model, precision)
    out = None
    for idx, inputs in images.views(seed, "student", epoch, batch_size):
        logits = teacher(epoch, idx, inputs)
        if out is None:
            out = torch.full((len(images), logits.shape[1]), float("nan"), device=logits.device)
        out[idx] = logits
    if out is None:
        raise ValueError("cannot compute soft labels of an empty training set")
    return out


def epochs_to_compute(cache: SoftLabelCache, snapshot_path: str, student_cfg: TrainConfig, epochs,
                      dtype: torch.dtype = torch.float32) -> list[int]:
    """The epochs whose entry is missing, in another dtype, or computed from other weights than the snapshot's
    current ones (its teacher was retrained): what `ensure_soft_labels` would compute."""
    meta = read_metadata(snapshot_path)
    teacher_hash, snapshot_epoch = meta.get("teacher_hash"), meta.get("epoch")
    if teacher_hash is None or snapshot_epoch is None:
        raise SoftLabelError(f"snapshot {snapshot_path} metadata names no teacher_hash / epoch: soft labels "
                             f"need a teacher snapshot written by tune-eskd")
    _dtype_name(dtype)
    return cache.missing_epochs(teacher_hash, snapshot_epoch, student_cfg, sorted({int(e) for e in epochs}),
                                dtype=dtype, snapshot_sha256=meta.get("sha256"))


def ensure_soft_labels(cache: SoftLabelCache, snapshot_path: str, student_cfg: TrainConfig, data: Splits,
                       epochs, device: torch.device, dtype: torch.dtype = torch.float32) -> list[int]:
    """Compute and store the soft labels of the given student epochs that the cache lacks; return those epochs.

    One call serves every student of the same snapshot, data, seed and batch size (whatever its alpha, T,
    kd_epochs or arch): pass epochs 1..max(kd_epochs) of that group. Entries stored in another dtype, or
    computed from other weights under the same snapshot name, are recomputed. The teacher is only loaded when
    something is missing.
    """
    device = torch.device(device)
    if device.type != cache.device_kind:
        raise ValueError(f"a soft-label cache for {cache.device_kind} teacher passes cannot be filled on {device}")
    todo = epochs_to_compute(cache, snapshot_path, student_cfg, epochs, dtype)
    if not todo:
        return []
    teacher, meta = load_teacher(snapshot_path, student_cfg, data.num_classes, device)
    images = Images(data.train_x, data.train_y, data.mean, data.std, device)
    for epoch in todo:
        start = time.perf_counter()
        logits = compute_epoch_logits(teacher, images, student_cfg.seed, epoch, student_cfg.batch_size,
                                      cache.precision)
        cache.save(meta["teacher_hash"], meta["epoch"], student_cfg, epoch, logits, dtype=dtype,
                   snapshot=str(snapshot_path), snapshot_sha256=meta.get("sha256"), arch=meta.get("arch"),
                   device=str(device), seconds=time.perf_counter() - start)
    return todo


def cached_teacher(cache: SoftLabelCache, teacher_hash: str, snapshot_epoch: int, student_cfg: TrainConfig,
                   device: torch.device, repair: Callable[[int], None] | None = None) -> TeacherLogits:
    """An engine.TeacherLogits `(epoch, indices, inputs) -> float32 logits` reading the cache.

    It loads an epoch's [N, C] tensor on first use, onto `device`, and keeps only the current epoch in memory.
    An entry that is missing, truncated or corrupted raises SoftLabelError, unless `repair(epoch)` is given: then
    it warns, lets `repair` recompute the entry (see `repair_soft_labels`) and loads it again.
    """
    device = torch.device(device)
    current: dict = {}

    def load(epoch: int) -> torch.Tensor:
        try:
            return cache.load(teacher_hash, snapshot_epoch, student_cfg, epoch)
        except SoftLabelError as exc:
            if repair is None:
                raise
            log.warning("%s; recomputing it from the teacher snapshot", exc.problem)
            repair(epoch)
            return cache.load(teacher_hash, snapshot_epoch, student_cfg, epoch)

    def logits(epoch: int, indices: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        if current.get("epoch") != epoch:
            current.clear()  # drop the previous epoch before loading the next
            current["table"] = load(epoch).to(device)
            current["epoch"] = epoch
        table = current["table"]
        return table[indices.to(table.device)].float()

    return logits


def repair_soft_labels(cache: SoftLabelCache, snapshot_path: str, student_cfg: TrainConfig, data: Splits,
                       epoch: int, device: torch.device) -> None:
    """Recompute one damaged epoch entry from the snapshot, exactly as the soft-label stage computed it (same
    batches and dtype, so on CPU the repaired entry is bit-identical to the original)."""
    meta = read_metadata(snapshot_path)
    old = cache.metadata(meta.get("teacher_hash"), meta.get("epoch"), student_cfg, epoch) or {}
    dtype = DTYPES.get(old.get("requested_dtype", old.get("dtype")), torch.float32)
    cache.discard(meta.get("teacher_hash"), meta.get("epoch"), student_cfg, epoch)
    ensure_soft_labels(cache, snapshot_path, student_cfg, data, [epoch], device, dtype=dtype)
