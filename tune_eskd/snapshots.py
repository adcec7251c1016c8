"""Teacher snapshots: a state_dict plus JSON metadata (with the weights' sha256) side by side.

A snapshot store keeps them under ROOT/<teacher hash>/epoch_NNN.{pt,json}; ROOT is a local path or any URI
pyarrow.fs understands (s3://..., gs://...), so every node of a cluster that shares the storage sees them.
The .json is written last, so a snapshot whose .json exists is complete, and its checksum catches a damaged .pt.
"""
import hashlib
import io
import json
import os
import time

import torch
from pyarrow import fs as pafs

from .blobs import filesystem, read_bytes, write_bytes
from .errors import UsageError


class SnapshotError(UsageError):
    """A snapshot that is missing, truncated, corrupted or does not fit the run."""


def save_snapshot(weights_path: str, state_dict: dict, metadata: dict) -> dict:
    """Write weights, then metadata naming their sha256. weights_path may be a local path or URI."""
    fsys, path = filesystem(weights_path)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buf)
    blob = buf.getvalue()
    metadata = {**metadata, "sha256": hashlib.sha256(blob).hexdigest(), "created": time.time()}
    write_bytes(fsys, path, blob)
    write_bytes(fsys, _meta_path(path), json.dumps(metadata, indent=1, default=str).encode())
    return metadata


def read_metadata(weights_path: str) -> dict:
    fsys, path = filesystem(weights_path)
    try:
        return json.loads(read_bytes(fsys, _meta_path(path)))
    except FileNotFoundError:
        raise SnapshotError(f"snapshot {weights_path} has no metadata file {_meta_path(path)}: "
                            f"pass the .pt written by `tune-eskd train-teacher` (under OUT/snapshots/)") from None
    except json.JSONDecodeError:
        raise SnapshotError(f"snapshot metadata {_meta_path(path)} is not valid JSON: retrain the teacher") from None


def load_snapshot(weights_path: str) -> tuple[dict, dict]:
    """(state_dict, metadata), loaded with weights_only=True after checking the weights' checksum."""
    blob, meta = _verified_weights(weights_path)
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True), meta


def _verified_weights(weights_path: str) -> tuple[bytes, dict]:
    """(weights bytes, metadata) once the bytes match the metadata's sha256; SnapshotError otherwise."""
    meta = read_metadata(weights_path)
    fsys, path = filesystem(weights_path)
    try:
        blob = read_bytes(fsys, path)
    except FileNotFoundError:
        raise SnapshotError(f"snapshot weights {weights_path} are missing: retrain the teacher") from None
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        raise SnapshotError(f"snapshot {weights_path} is truncated or corrupted (checksum mismatch): "
                            f"delete it and retrain the teacher")
    return blob, meta


def _meta_path(weights_path: str) -> str:
    return os.path.splitext(weights_path)[0] + ".json"


class SnapshotStore:
    """Snapshots keyed by (teacher hash, epoch) under one root shared by every sweep on the same storage."""

    def __init__(self, root: str):
        self.root = root if "://" in root else os.path.abspath(root)

    def path(self, teacher_hash: str, epoch: int) -> str:
        return f"{self.root}/{teacher_hash}/epoch_{epoch:03d}.pt"

    def has(self, teacher_hash: str, epoch: int) -> bool:
        fsys, path = filesystem(_meta_path(self.path(teacher_hash, epoch)))
        return fsys.get_file_info(path).type == pafs.FileType.File

    def missing(self, teacher_hash: str, epochs) -> list[int]:
        return [e for e in epochs if not self.has(teacher_hash, e)]

    def damaged(self, teacher_hash: str, epochs) -> list[int]:
        """The recorded snapshots (their .json exists) whose weights are missing, unreadable or fail their
        checksum. `missing` only looks for the .json, so without this a damaged snapshot would count as done."""
        bad = []
        for e in epochs:
            if not self.has(teacher_hash, e):
                continue
            try:
                _verified_weights(self.path(teacher_hash, e))
            except (SnapshotError, OSError):
                bad.append(e)
        return bad

    def discard(self, teacher_hash: str, epoch: int) -> None:
        """Remove a snapshot (its .json first, so it reads as missing even if the .pt cannot be removed)."""
        weights = self.path(teacher_hash, epoch)
        for p in (_meta_path(weights), weights):
            fsys, path = filesystem(p)
            if fsys.get_file_info(path).type == pafs.FileType.File:
                fsys.delete_file(path)
