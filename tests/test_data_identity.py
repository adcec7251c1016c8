"""Changed dataset files are noticed: the data key of npz: and imagefolder: data carries a hash of their content,
so a teacher's snapshots and soft labels of the old files are never reused for the new ones."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from sweep_helpers import own_lines
from tune_eskd.cli import main
from tune_eskd.config import StudentConfig, TeacherConfig
from tune_eskd.data import load_splits
from tune_eskd.engine import Trainer
from tune_eskd.errors import UsageError
from tune_eskd.snapshots import SnapshotError
from tune_eskd.soft_labels import SoftLabelCache, cache_key, ensure_soft_labels, epochs_to_compute

CPU = torch.device("cpu")
TINY = dict(model="resnet8", width=0.25, epochs=1, batch_size=32, val_split=0.1)


def _write_npz(path, seed: int) -> str:
    rng = np.random.default_rng(seed)
    np.savez(path, x_train=rng.integers(0, 256, (80, 32, 32, 3), dtype=np.uint8), y_train=np.arange(80) % 4,
             x_test=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), y_test=np.arange(20) % 4)
    return f"npz:{path}"


def _load(source):
    return load_splits(source, val_split=TINY["val_split"])


def test_npz_data_key_follows_the_files_content(tmp_path):
    source = _write_npz(tmp_path / "d.npz", seed=0)
    first = _load(source)
    assert _load(_write_npz(tmp_path / "d.npz", seed=0)).content_hash == first.content_hash  # rewritten, same pixels
    second = _load(_write_npz(tmp_path / "d.npz", seed=1))  # same path, other pixels
    assert first.content_hash and second.content_hash != first.content_hash
    old, new = (TeacherConfig(dataset=source, data_hash=d.content_hash, **TINY) for d in (first, second))
    assert old.data_key() != new.data_key() and old.teacher_hash() != new.teacher_hash()
    assert cache_key(StudentConfig(**old.data_key())) != cache_key(StudentConfig(**new.data_key()))
    assert load_splits("synthetic", subset=100).content_hash is None  # built in: fixed by its name


def test_imagefolder_data_key_follows_the_images(tmp_path):
    for split in ("train", "test"):
        for name, color in (("a", (200, 0, 0)), ("b", (0, 0, 200))):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (32, 32), color).save(tmp_path / split / name / f"{i}.png")
    source = f"imagefolder:{tmp_path}"
    before = load_splits(source, val_split=0.0).content_hash
    Image.new("RGB", (32, 32), (0, 200, 0)).save(tmp_path / "train" / "a" / "1.png")
    assert load_splits(source, val_split=0.0).content_hash != before


def _teacher_cli(out, source) -> list[str]:
    return ["train-teacher", "--model", "resnet8", "--width", "0.25", "--epochs", "1", "--snapshots", "1",
            "--batch-size", "32", "--dataset", source, "--threads", "1", "--device", "cpu", "--out", str(out)]


def _student_cli(out, source, snapshot) -> list[str]:
    return ["train-student", "--model", "resnet8", "--width", "0.25", "--epochs", "1", "--kd-epochs", "1",
            "--batch-size", "32", "--dataset", source, "--teacher-snapshot", snapshot, "--threads", "1",
            "--device", "cpu", "--out", str(out)]


def test_rewritten_npz_is_not_distilled_from_its_stale_snapshot(tmp_path, capsys):
    """A teacher trained on an npz, then the npz rewritten with other pixels at the same path: its snapshot
    (and every soft label computed from it) is refused in one line, before the student writes anything."""
    source = _write_npz(tmp_path / "d.npz", seed=0)
    assert main(_teacher_cli(tmp_path / "teacher", source)) == 0
    snapshot = str(tmp_path / "teacher" / "snapshots" / "epoch_001.pt")
    data = _load(source)
    cfg = StudentConfig(dataset=source, data_hash=data.content_hash, kd_epochs=1, **TINY)
    cache = SoftLabelCache(str(tmp_path / "soft"))
    assert ensure_soft_labels(cache, snapshot, cfg, data, [1], CPU) == [1]
    capsys.readouterr()

    _write_npz(tmp_path / "d.npz", seed=1)
    out = tmp_path / "student"
    assert main(_student_cli(out, source, snapshot)) == 2
    lines = own_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "files changed" in lines[0] and snapshot in lines[0], lines
    assert not os.path.exists(out)

    new_data = _load(source)
    new_cfg = StudentConfig(dataset=source, data_hash=new_data.content_hash, kd_epochs=1, **TINY)
    assert epochs_to_compute(cache, snapshot, new_cfg, [1]) == [1]  # the old soft labels are not reused
    with pytest.raises(SnapshotError, match="files changed"):
        ensure_soft_labels(cache, snapshot, new_cfg, new_data, [1], CPU)
    with pytest.raises(UsageError, match="files changed"):  # e.g. a resumed trial set up before the rewrite
        Trainer(StudentConfig(dataset=source, data_hash=data.content_hash, kd_epochs=0, **TINY), new_data, CPU)


def test_sweep_teachers_follow_the_files_content(tmp_path):
    """In a sweep, the teacher hash (the snapshot store's key) and every student row carry the data's content
    hash, so a sweep on rewritten files trains new teachers instead of reusing the stored snapshots."""
    from search_spaces import build_space
    from tune_eskd.pipeline import _load_data

    def hashes(seed):
        space = build_space("t", {"dataset": _write_npz(tmp_path / "d.npz", seed), "teacher_arch": "resnet8",
                                  "student_arch": "resnet8", "teacher_epochs": 1, "snapshots": [1], "epochs": 1,
                                  "kd_epochs": 1})
        data = _load_data(space)
        rows = space.student_rows()
        assert {r["data_hash"] for r in rows} == {data.content_hash}
        return {t.teacher_hash() for t in space.needed_teachers()}

    assert hashes(0).isdisjoint(hashes(1))


def test_resume_after_the_dataset_files_changed_fails_in_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    """The sweep records its data's content hash; `resume` on rewritten files would fail every trial (their
    configs carry the old hash), so it refuses in one line, before Ray starts; on the same files it goes on."""
    from sweep_helpers import expect_one_line_error
    from tune_eskd import pipeline

    runs = []
    monkeypatch.setattr(pipeline, "_run", lambda exp, space, options, data: runs.append(data.content_hash) or 0)
    source = _write_npz(tmp_path / "d.npz", seed=0)
    space = ["--set", f"dataset={source}", "--set", "subset=null", "--set", "teacher_arch=resnet8",
             "--set", "teacher_epochs=1", "--set", "snapshots=[1]", "--set", "epochs=2", "--set", "kd_epochs=[0, 1]"]
    assert main(["sweep", *space, "--storage", str(tmp_path / "runs"), "--name", "n"]) == 0
    assert main(["resume", str(tmp_path / "runs" / "n")]) == 0 and runs[0] == runs[1] is not None  # same files
    _write_npz(tmp_path / "d.npz", seed=1)
    expect_one_line_error(capsys, ["resume", str(tmp_path / "runs" / "n")], "dataset files", "changed since the sweep",
                          "restore the original files")
    assert len(runs) == 2  # nothing ran
