"""Storage primitives: files on a local path or any URI pyarrow.fs understands (s3://, gs://, file://), and
checksummed blobs.

Writes are atomic (a temporary name, then a move), so a reader never sees a half-written file. A blob is a data
file (NAME.pt) plus a JSON sidecar (NAME.json) naming the data's sha256. The sidecar is written last, so a blob
whose sidecar exists is complete, and the checksum catches data damaged since. Snapshots, soft labels and trial
checkpoints are all stored this way.
"""
import hashlib
import json
import os
import uuid
from dataclasses import dataclass

from pyarrow import fs as pafs

# BlobError.reason: what is wrong with a blob
NO_SIDECAR, BAD_SIDECAR, NO_DATA, CORRUPT = "no sidecar", "sidecar not JSON", "data missing", "checksum mismatch"


def filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and path within it for a local path or a storage URI."""
    if "://" in root:
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), os.path.abspath(root)


def write_bytes(fsys: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write via a temporary name and a move, so readers never see a half-written file."""
    fsys.create_dir(os.path.dirname(path), recursive=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"  # unique across the nodes sharing this storage
    with fsys.open_output_stream(tmp) as f:
        f.write(data)
    fsys.move(tmp, path)


def read_bytes(fsys: pafs.FileSystem, path: str) -> bytes:
    with fsys.open_input_stream(path) as f:
        return f.read()


def is_file(fsys: pafs.FileSystem, path: str) -> bool:
    return fsys.get_file_info(path).type == pafs.FileType.File


class BlobError(Exception):
    """A blob that cannot be used: `path` (its data file), `sidecar` and `reason` (NO_SIDECAR, BAD_SIDECAR,
    NO_DATA or CORRUPT). Its stores turn it into their own one-line error."""

    def __init__(self, path: str, sidecar: str, reason: str):
        self.path, self.sidecar, self.reason = path, sidecar, reason
        super().__init__(f"{path}: {reason}")


def sidecar_path(path: str) -> str:
    """NAME.pt -> NAME.json."""
    return os.path.splitext(path)[0] + ".json"


@dataclass(frozen=True)
class Blob:
    """One checksummed blob: data at `path` on `fsys`, metadata in the JSON sidecar beside it."""
    fsys: pafs.FileSystem
    path: str

    @classmethod
    def at(cls, uri: str) -> "Blob":
        """The blob whose data file is `uri` (a local path or a storage URI)."""
        return cls(*filesystem(uri))

    @property
    def sidecar(self) -> str:
        return sidecar_path(self.path)

    def exists(self) -> bool:
        """True once the blob is completely written (its sidecar, written last, exists)."""
        return is_file(self.fsys, self.sidecar)

    def write(self, data: bytes, meta: dict) -> dict:
        """Write the data, then the sidecar: `meta` plus the data's sha256 (returned)."""
        meta = {**meta, "sha256": hashlib.sha256(data).hexdigest()}
        write_bytes(self.fsys, self.path, data)
        write_bytes(self.fsys, self.sidecar, json.dumps(meta, indent=1, default=str).encode())
        return meta

    def read_meta(self) -> dict:
        """The sidecar; BlobError(NO_SIDECAR or BAD_SIDECAR) when it is missing or not a JSON object."""
        try:
            meta = json.loads(read_bytes(self.fsys, self.sidecar))
        except FileNotFoundError:
            raise BlobError(self.path, self.sidecar, NO_SIDECAR) from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BlobError(self.path, self.sidecar, BAD_SIDECAR) from None
        if not isinstance(meta, dict):
            raise BlobError(self.path, self.sidecar, BAD_SIDECAR)
        return meta

    def read(self, meta: dict | None = None) -> tuple[bytes, dict]:
        """(data, sidecar) once the data match the sidecar's sha256; BlobError otherwise. Pass `meta` when the
        sidecar was already read."""
        meta = self.read_meta() if meta is None else meta
        try:
            data = read_bytes(self.fsys, self.path)
        except FileNotFoundError:
            raise BlobError(self.path, self.sidecar, NO_DATA) from None
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            raise BlobError(self.path, self.sidecar, CORRUPT)
        return data, meta

    def forget(self) -> None:
        """Remove the sidecar only: the blob reads as missing, so it is written again."""
        try:
            self.fsys.delete_file(self.sidecar)
        except FileNotFoundError:
            pass  # another process repairing the same blob got there first

    def discard(self) -> None:
        """Remove the blob, its sidecar first (so it reads as missing even if the data cannot be removed)."""
        for p in (self.sidecar, self.path):
            if is_file(self.fsys, p):
                self.fsys.delete_file(p)
