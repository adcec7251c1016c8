"""Storage primitives: files on a local path or any URI pyarrow.fs understands (s3://, gs://, file://).

Writes are atomic (a temporary name, then a move), so a reader never sees a half-written file.
"""
import os
import uuid

from pyarrow import fs as pafs


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
