"""tune_eskd.tune_storage: the filesystem Ray Tune saves a local experiment through never leaves half a file."""
import os
import pickle
import subprocess
import sys

import pytest
from pyarrow import fs as pafs

from sweep_helpers import small_mount
from tune_eskd.tune_storage import tune_storage

KILLED_MID_WRITE = """
import os, signal, sys
from tune_eskd.tune_storage import tune_storage

fsys, _ = tune_storage(sys.argv[1])
stream = fsys.open_output_stream(sys.argv[1])
stream.write(b"new state, first half")
os.kill(os.getpid(), signal.SIGKILL)  # the driver dies before the write ends, as under kill -9
"""


def _killed_while_writing(path, big: bool):
    code = KILLED_MID_WRITE.replace("first half\")", "first half\" * 100_000)") if big else KILLED_MID_WRITE
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()


def test_a_driver_killed_mid_write_leaves_the_old_file_whole(tmp_path):
    """What made a resumed stage restart from an empty config: Tune's state save killed halfway through a file.
    Small files (Tune's state, result.json) and large ones (checkpoints, written through a temporary file)."""
    for big in (False, True):
        state = tmp_path / f"experiment_state-{big}.json"
        state.write_bytes(b'{"trial_data": ["the old, complete state"]}')
        _killed_while_writing(state, big)
        assert state.read_bytes() == b'{"trial_data": ["the old, complete state"]}'
    visible = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert visible == ["experiment_state-False.json", "experiment_state-True.json"], \
        "a leftover temporary file must be hidden from Tune's state-file globs"


def test_a_write_that_fills_the_disk_leaves_the_old_file_whole(tmp_path):
    """A full disk mid-save (a real tmpfs): the write fails, the previous file stays, no temporary file is left.
    Both paths: a small file (gathered in memory, written at close) and a large one (written as it comes)."""
    disk = tmp_path / "disk"
    with small_mount(disk, size="2m"):
        (disk / "filler").write_bytes(b"\0" * (1900 << 10))  # leaves about 100 KiB free
        fsys, _ = tune_storage(str(disk))
        for name, size in (("result.json", 512 << 10), ("checkpoint.pt", 4 << 20)):
            (disk / name).write_bytes(b"the previous, whole file")
            with pytest.raises(OSError, match="No space left on device"):
                with fsys.open_output_stream(str(disk / name)) as f:
                    f.write(os.urandom(size))
            assert (disk / name).read_bytes() == b"the previous, whole file"
        assert sorted(p.name for p in disk.iterdir()) == ["checkpoint.pt", "filler", "result.json"]


def test_copy_files_through_it_round_trips_and_leaves_unchanged_files_alone(tmp_path):
    """Tune's sync is pyarrow.fs.copy_files of its staging folder onto the experiment: the copy is exact, a
    large file (past the in-memory limit) too, and a file that did not change is not rewritten."""
    src, dst = tmp_path / "staging", tmp_path / "experiment"
    (src / "trial_a").mkdir(parents=True)
    (src / "trial_a" / "result.json").write_bytes(b'{"epoch": 1}\n')
    (src / "experiment_state-x.json").write_bytes(b"state 1")
    (src / "trial_a" / "checkpoint.pt").write_bytes(os.urandom(3 << 20))
    fsys, _ = tune_storage(str(dst))
    pafs.copy_files(str(src), str(dst), destination_filesystem=fsys)
    for name in ("trial_a/result.json", "experiment_state-x.json", "trial_a/checkpoint.pt"):
        assert (dst / name).read_bytes() == (src / name).read_bytes()
    unchanged = (dst / "trial_a" / "result.json").stat().st_ino
    (src / "experiment_state-x.json").write_bytes(b"state 2, longer")
    pafs.copy_files(str(src), str(dst), destination_filesystem=fsys)
    assert (dst / "experiment_state-x.json").read_bytes() == b"state 2, longer"
    assert (dst / "trial_a" / "result.json").stat().st_ino == unchanged
    assert not [p for p in dst.rglob("*") if ".tmp-" in p.name]


def test_local_paths_get_it_and_survive_pickling_remote_storage_keeps_pyarrows(tmp_path):
    """Ray pickles the storage filesystem to the workers that upload checkpoints."""
    fsys, path = tune_storage(str(tmp_path / "exp"))
    assert path == str(tmp_path / "exp") and fsys.type_name == "py::whole-file-local"
    assert pickle.loads(pickle.dumps(fsys)).equals(fsys)
    assert tune_storage("mock:///bucket/exp") == (None, "mock:///bucket/exp")
