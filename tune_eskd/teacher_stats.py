"""A teacher snapshot's validation logits, stored beside it, and the soft-label statistics analysis reads off them.

When a snapshot is saved (sweep or single run, see teachers.save_teacher_snapshot) the teacher's float32 logits on
the un-augmented validation images are stored as a checksummed blob next to it:

    ROOT/<teacher hash>/epoch_NNN.val_logits.npy   logits [N_val, C], numpy format (no pickle)
    ROOT/<teacher hash>/epoch_NNN.val_logits.json  sha256, shape, split

They are written before the snapshot, whose metadata names their checksum (META_KEY), so a complete snapshot has
them (unless it predates them, or was imported) and they cannot be mistaken for another snapshot's. Logits rather than the statistics themselves: a snapshot serves sweeps of any temperatures, and the
statistics of a temperature are cheap to compute from them. This module needs numpy only, so analysis reads them
without torch.
"""
import io
import os
import time

import numpy as np

from .blobs import CORRUPT, Blob, BlobError

SUFFIX = ".val_logits.npy"
META_KEY = "val_logits_sha256"  # in the snapshot's metadata: the checksum of its validation logits


def val_logits_path(snapshot_path: str) -> str:
    """epoch_NNN.pt -> epoch_NNN.val_logits.npy"""
    return os.path.splitext(snapshot_path)[0] + SUFFIX


def write_val_logits(snapshot_path: str, logits: np.ndarray) -> dict:
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    buf = io.BytesIO()
    np.save(buf, logits, allow_pickle=False)
    return Blob.at(val_logits_path(snapshot_path)).write(
        buf.getvalue(), {"split": "val", "shape": list(logits.shape), "dtype": "float32", "created": time.time()})


def read_val_logits(snapshot_path: str, snapshot_meta: dict) -> np.ndarray | None:
    """The logits stored with the snapshot whose metadata is `snapshot_meta`, checked against the checksum that
    metadata names (so they are this snapshot's, not a retrained one's). None when the snapshot names none (saved
    before they were stored, or imported); blobs.BlobError when they are missing, damaged or another snapshot's."""
    expected = snapshot_meta.get(META_KEY)
    if expected is None:
        return None
    blob = Blob.at(val_logits_path(snapshot_path))
    data, meta = blob.read()
    if meta["sha256"] != expected:
        raise BlobError(blob.path, blob.sidecar, CORRUPT)
    return np.load(io.BytesIO(data), allow_pickle=False)


def soft_label_stats(logits: np.ndarray, temperature: float) -> dict:
    """Mean over the images of the largest softmax(logits / T) probability, and mean entropy (nats); NaN for no
    images (a sweep without a validation split)."""
    if len(logits) == 0:
        return {"max_prob": float("nan"), "entropy": float("nan")}
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    p = np.exp(logp)
    return {"max_prob": float(p.max(axis=1).mean()), "entropy": float(-(p * logp).sum(axis=1).mean())}
