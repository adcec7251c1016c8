"""Teacher snapshots: a state_dict stored as a checksummed blob (blobs.Blob: NAME.pt + NAME.json metadata).

A snapshot store keeps them under ROOT/<teacher hash>/epoch_NNN.{pt,json}; ROOT is a local path or any URI
pyarrow.fs understands (s3://..., gs://...), so every node of a cluster that shares the storage sees them.
The .json is written last, so a snapshot whose .json exists is complete, and its checksum catches a damaged .pt.
"""
import io
import os
import time

import torch

from .blobs import CORRUPT, NO_DATA, NO_SIDECAR, Blob, BlobError
from .errors import UsageError
from .teacher_stats import val_logits_path


class SnapshotError(UsageError):
    """A snapshot that is missing, truncated, corrupted or does not fit the run."""


def save_snapshot(weights_path: str, state_dict: dict, metadata: dict) -> dict:
    """Write weights, then metadata naming their sha256. weights_path may be a local path or URI."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buf)
    return Blob.at(weights_path).write(buf.getvalue(), {**metadata, "created": time.time()})


def read_metadata(weights_path: str) -> dict:
    try:
        return Blob.at(weights_path).read_meta()
    except BlobError as exc:
        raise _snapshot_error(weights_path, exc) from None


def load_snapshot(weights_path: str) -> tuple[dict, dict]:
    """(state_dict, metadata), loaded with weights_only=True after checking the weights' checksum."""
    try:
        blob, meta = Blob.at(weights_path).read()
    except BlobError as exc:
        raise _snapshot_error(weights_path, exc) from None
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True), meta


def _snapshot_error(weights_path: str, exc: BlobError) -> SnapshotError:
    if exc.reason == NO_SIDECAR:
        return SnapshotError(f"snapshot {weights_path} has no metadata file {exc.sidecar}",
                             "pass the .pt written by `tune-eskd train-teacher` (under OUT/snapshots/)")
    if exc.reason == NO_DATA:
        return SnapshotError(f"snapshot weights {weights_path} are missing", "retrain the teacher")
    if exc.reason == CORRUPT:
        return SnapshotError(f"snapshot {weights_path} is truncated or corrupted (checksum mismatch)",
                             "delete it and retrain the teacher")
    return SnapshotError(f"snapshot metadata {exc.sidecar} is not valid JSON", "retrain the teacher")


class SnapshotStore:
    """Snapshots keyed by (teacher hash, epoch) under one root shared by every sweep on the same storage."""

    def __init__(self, root: str):
        self.root = root if "://" in root else os.path.abspath(root)

    def path(self, teacher_hash: str, epoch: int) -> str:
        return f"{self.root}/{teacher_hash}/epoch_{epoch:03d}.pt"

    def has(self, teacher_hash: str, epoch: int) -> bool:
        return Blob.at(self.path(teacher_hash, epoch)).exists()

    def missing(self, teacher_hash: str, epochs) -> list[int]:
        return [e for e in epochs if not self.has(teacher_hash, e)]

    def damaged(self, teacher_hash: str, epochs) -> list[int]:
        """The recorded snapshots (their .json exists) whose weights are missing, unreadable or fail their
        checksum. `missing` only looks for the .json, so without this a damaged snapshot would count as done."""
        bad = []
        for e in epochs:
            blob = Blob.at(self.path(teacher_hash, e))
            if not blob.exists():
                continue
            try:
                blob.read()
            except (BlobError, OSError):
                bad.append(e)
        return bad

    def discard(self, teacher_hash: str, epoch: int) -> None:
        """Remove a snapshot (its .json first, so it reads as missing even if the .pt cannot be removed), then
        its validation logits."""
        Blob.at(self.path(teacher_hash, epoch)).discard()
        Blob.at(val_logits_path(self.path(teacher_hash, epoch))).discard()
