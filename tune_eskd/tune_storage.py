"""The filesystem Ray Tune writes a local experiment through: every file lands whole.

Tune saves its state by copying its staging folder over the experiment folder (pyarrow's copy_files), rewriting
the same files each time: the stage's experiment and searcher state, every trial's result.json and progress.csv.
On a local disk that copy truncates each file and then fills it, so a driver killed mid-copy can leave a file cut
short. A damaged state file makes Tune give up restoring the stage and start it afresh from an empty config (seen
in CI as a teacher trial failing with KeyError 'teacher'); a cut result.json would lose a finished trial's
results. Through this filesystem each file is written under a temporary name and moved into place, as
blobs.write_bytes does: a reader (or a resumed sweep) sees the old file or the new one, never half of one, also
after a failed write (a full disk). Storage URIs (s3://, gs://) keep pyarrow's own filesystem: an object store
never shows a half-written object.
"""
import io
import os
import uuid

from pyarrow import PythonFile
from pyarrow import fs as pafs

from .blobs import filesystem


class _WholeFile:
    """A file object that replaces `path` whole when closed: small files are gathered in memory and left alone
    when unchanged (Tune re-copies every finished trial's files on each state save), larger ones are written
    under a temporary name in the same folder and moved onto `path`. After a failed write (a full disk) the
    close leaves `path` as it was."""

    IN_MEMORY = 1 << 20

    def __init__(self, path: str):
        self.path = path
        self._buffer, self._spill, self._tmp = io.BytesIO(), None, None
        self._failed = self.closed = False

    def _spill_to_disk(self) -> None:
        folder, name = os.path.split(self.path)
        self._tmp = os.path.join(folder, f".{name}.tmp-{uuid.uuid4().hex[:8]}")  # hidden: Tune's globs skip it
        self._spill = open(self._tmp, "wb")
        self._spill.write(self._buffer.getvalue())

    def write(self, data) -> int:
        try:
            if self._spill is None and self._buffer.tell() + len(data) > self.IN_MEMORY:
                self._spill_to_disk()
            return (self._spill or self._buffer).write(data)
        except BaseException:
            self._failed = True
            raise

    def flush(self) -> None:
        pass  # the file appears whole at close

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._spill is None and (self._failed or _holds(self.path, self._buffer.getvalue())):
            return
        try:
            if self._spill is None:
                self._spill_to_disk()
            self._spill.close()
        except BaseException:
            self._failed = True
            raise
        finally:
            if self._failed and self._tmp is not None and os.path.exists(self._tmp):
                os.remove(self._tmp)
        if not self._failed:
            os.replace(self._tmp, self.path)


def _holds(path: str, data: bytes) -> bool:
    """Whether the file at `path` already holds exactly `data`."""
    try:
        if os.path.getsize(path) != len(data):
            return False
        with open(path, "rb") as f:
            return f.read() == data
    except OSError:
        return False


class WholeFileWrites(pafs.FileSystemHandler):
    """pyarrow's local filesystem, except that open_output_stream writes whole files (see the module doc)."""

    def __init__(self):
        self.local = pafs.LocalFileSystem()

    def __reduce__(self):  # Ray pickles the filesystem to the workers that upload checkpoints
        return WholeFileWrites, ()

    def __eq__(self, other):
        return isinstance(other, WholeFileWrites)

    def equals(self, other) -> bool:
        return self == other

    def get_type_name(self) -> str:
        return "whole-file-local"

    def normalize_path(self, path: str) -> str:
        return self.local.normalize_path(path)

    def get_file_info(self, paths):
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.local.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.local.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("refusing to delete the contents of the filesystem's root")

    def delete_file(self, path):
        self.local.delete_file(path)

    def move(self, src, dest):
        self.local.move(src, dest)

    def copy_file(self, src, dest):
        self.local.copy_file(src, dest)

    def open_input_stream(self, path):
        return self.local.open_input_stream(path)

    def open_input_file(self, path):
        return self.local.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return PythonFile(_WholeFile(path), mode="w")

    def open_append_stream(self, path, metadata):
        return self.local.open_append_stream(path)


def tune_storage(path: str) -> tuple[pafs.FileSystem | None, str]:
    """(storage_filesystem, storage path) to give Ray Tune for an experiment at `path` (a local path or URI):
    whole-file writes on a local disk; None (Ray's choice) and the URI itself for remote storage."""
    fsys, local = filesystem(path)
    if isinstance(fsys, pafs.LocalFileSystem):
        return pafs.PyFileSystem(WholeFileWrites()), local
    return None, path
