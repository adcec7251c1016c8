"""The single-run CLI: every bad input exits 2 with one `tune-eskd: error:` line and writes nothing."""
import json
import os
import shutil

import pytest

from sweep_helpers import own_lines
from tune_eskd.cli import main


def _flags(data_key) -> list[str]:
    """The student/teacher flags that select the session teacher's data."""
    return ["--dataset", data_key["dataset"], "--subset", str(data_key["subset"]),
            "--val-split", str(data_key["val_split"])]


def _copy_snapshot(teacher_run, tmp_path) -> str:
    for ext in (".pt", ".json"):
        shutil.copy(teacher_run.snapshot[:-3] + ext, tmp_path / f"snap{ext}")
    return str(tmp_path / "snap.pt")


def _expect_usage_error(capsys, argv, out, *needles):
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 2, captured.err
    lines = own_lines(captured.err)
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("tune-eskd: error: ")
    for needle in needles:
        assert needle in lines[0]
    assert not os.path.exists(out), os.listdir(out)
    return lines[0]


def _teacher(out, *extra):
    return ["train-teacher", "--model", "resnet8", "--epochs", "3", "--subset", "600", "--threads", "2",
            "--device", "cpu", "--out", str(out), *extra]


def _student(out, snapshot, data_key, *extra):
    return ["train-student", "--model", "resnet8", "--epochs", "3", "--kd-epochs", "2", *_flags(data_key),
            "--teacher-snapshot", str(snapshot), "--threads", "2", "--device", "cpu", "--out", str(out), *extra]


# --- teacher -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra,needles", [
    (["--model", "resnet9"], ["unknown model 'resnet9'"]),
    (["--dataset", "bogus"], ["unknown dataset 'bogus'"]),
    (["--dataset", "npz:/nonexistent/d.npz"], ["does not exist"]),
    (["--snapshots", "1", "4"], ["snapshot epochs [4]", "1..3"]),
    (["--snapshots", "0", "3"], ["snapshot epochs [0]"]),
    (["--epochs", "0"], ["epochs must be a positive integer"]),
    (["--subset", "5"], ["subset must be at least 10"]),
    (["--val-split", "1.0"], ["val_split"]),
    (["--milestones", "9"], ["milestones [9]"]),
    (["--width", "0"], ["width must be > 0"]),
])
def test_bad_teacher_inputs(tmp_path, capsys, extra, needles):
    out = tmp_path / "out"
    _expect_usage_error(capsys, _teacher(out, *extra), out, *needles)


def test_dataset_folder_without_train_and_test(tmp_path, capsys):
    folder = tmp_path / "images"
    (folder / "cats").mkdir(parents=True)  # class folders, but not under train/ and test/
    out = tmp_path / "out"
    _expect_usage_error(capsys, _teacher(out, "--dataset", f"imagefolder:{folder}", "--subset", "10"), out,
                        "has no train/ or test/", str(folder))


# --- student -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra,needles", [
    (["--model", "resnet9"], ["unknown model 'resnet9'"]),
    (["--dataset", "bogus"], ["unknown dataset 'bogus'"]),
    (["--alpha", "1.5"], ["alpha must be in [0, 1]", "1.5"]),
    (["--alpha", "-0.1"], ["alpha must be in [0, 1]"]),
    (["--temperature", "0"], ["temperature must be > 0"]),
    (["--temperature", "-2"], ["temperature must be > 0"]),
    (["--kd-epochs", "4"], ["kd_epochs 4", "0..epochs (3)"]),
    (["--kd-epochs", "-1"], ["kd_epochs -1"]),
])
def test_bad_student_inputs(tmp_path, capsys, teacher_run, extra, needles):
    out = tmp_path / "out"
    data_key = teacher_run.cfg.data_key()
    _expect_usage_error(capsys, _student(out, teacher_run.snapshot, data_key, *extra), out, *needles)


def test_missing_snapshot(tmp_path, capsys, teacher_run):
    out = tmp_path / "out"
    missing = tmp_path / "epoch_009.pt"
    _expect_usage_error(capsys, _student(out, missing, teacher_run.cfg.data_key()), out, str(missing))


def test_snapshot_weights_missing(tmp_path, capsys, teacher_run):
    snap = _copy_snapshot(teacher_run, tmp_path)
    os.remove(snap)  # metadata present, weights gone
    out = tmp_path / "out"
    _expect_usage_error(capsys, _student(out, snap, teacher_run.cfg.data_key()), out, "missing")


def test_truncated_snapshot(tmp_path, capsys, teacher_run):
    snap = _copy_snapshot(teacher_run, tmp_path)
    size = os.path.getsize(snap)
    with open(snap, "r+b") as f:
        f.truncate(size // 2)
    out = tmp_path / "out"
    _expect_usage_error(capsys, _student(out, snap, teacher_run.cfg.data_key()), out, "checksum mismatch")


@pytest.mark.parametrize("arch", ["resnet14", "resnet20", "resnet18"])
def test_wrong_arch_snapshot(tmp_path, capsys, teacher_run, arch):
    snap = _copy_snapshot(teacher_run, tmp_path)
    meta_path = tmp_path / "snap.json"
    meta = json.loads(meta_path.read_text())
    meta["arch"] = arch  # sha256 untouched: the weights pass the checksum but not the architecture
    meta_path.write_text(json.dumps(meta))
    out = tmp_path / "out"
    _expect_usage_error(capsys, _student(out, snap, teacher_run.cfg.data_key()), out, "do not fit", repr(arch))


def test_unknown_arch_in_snapshot(tmp_path, capsys, teacher_run):
    snap = _copy_snapshot(teacher_run, tmp_path)
    meta_path = tmp_path / "snap.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "arch": "vgg11"}))
    out = tmp_path / "out"
    _expect_usage_error(capsys, _student(out, snap, teacher_run.cfg.data_key()), out, "unknown arch 'vgg11'")


def test_snapshot_from_other_data(tmp_path, capsys, teacher_run):
    out = tmp_path / "out"
    data_key = {**teacher_run.cfg.data_key(), "subset": 700}
    _expect_usage_error(capsys, _student(out, teacher_run.snapshot, data_key), out, "was trained on")


def test_snapshot_metadata_not_json(tmp_path, capsys, teacher_run):
    snap = _copy_snapshot(teacher_run, tmp_path)
    (tmp_path / "snap.json").write_text("{not json")
    out = tmp_path / "out"
    _expect_usage_error(capsys, _student(out, snap, teacher_run.cfg.data_key()), out, "not valid JSON")


# --- happy paths ---------------------------------------------------------------------------------------------------

def test_student_run_then_refuses_to_overwrite(tmp_path, capsys, teacher_run):
    out = tmp_path / "out"
    argv = ["train-student", "--model", "resnet8", "--epochs", "1", "--kd-epochs", "1",
            *_flags(teacher_run.cfg.data_key()), "--teacher-snapshot", teacher_run.snapshot, "--threads", "2",
            "--device", "cpu", "--batch-size", "64", "--out", str(out)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "student resnet8 epoch   1 [kd]" in captured.out
    assert sorted(os.listdir(out)) == ["config.json", "metrics.jsonl", "student.json", "student.pt"]
    config = json.loads((out / "config.json").read_text())
    assert config["teacher_snapshot"] == os.path.abspath(teacher_run.snapshot)
    assert config["teacher_hash"] == teacher_run.cfg.teacher_hash() and config["snapshot_epoch"] == 3
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["phase"] for m in metrics] == ["kd"]
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}

    # a second run into the same --out is refused before anything is touched
    assert main(argv) == 2
    err = own_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("tune-eskd: error: ") and "already holds a run" in err[0]
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before


def test_output_piped_into_head_ends_quietly():
    """`tune-eskd models | head -1`: the closed pipe is no error (was a BrokenPipeError traceback, exit 1)."""
    import subprocess
    import sys

    out = subprocess.run(f"{sys.executable} -m tune_eskd.cli models | head -1; exit ${{PIPESTATUS[0]}}",
                         shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr
    assert out.stdout.startswith("model")
