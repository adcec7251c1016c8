"""Everyday commands on real sweeps: stop a background sweep and resume it (also when its recorded cluster is
gone), rm an experiment, gc the shared store."""
import json
import os
import socket
import time

import pytest

from search_spaces import load_space
from sweep_helpers import TINY, assert_no_traceback, expect_one_line_error, sweep_args, tiny_overrides, \
    trial_results, trial_statuses
from tune_eskd.cli import main
from tune_eskd.experiment import SweepOptions
from tune_eskd.record import Experiment
from tune_eskd.pipeline import resume_sweep, run_sweep


def _dead_address() -> str:
    """HOST:PORT on which nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _set_recorded_address(exp_path, address: str) -> None:
    path = os.path.join(exp_path, "sweep.json")
    with open(path) as f:
        record = json.load(f)
    record["options"]["address"] = address
    with open(path, "w") as f:
        json.dump(record, f)


@pytest.mark.fault  # a RELIABILITY.md row
@pytest.mark.slow  # a sweep in its own process with its own Ray, stopped, then resumed
def test_stop_a_background_sweep_then_resume_it_elsewhere(tmp_path, ray_session, capsys, drivers):
    exp_path = str(tmp_path / "bg")
    students = os.path.join(exp_path, "students")
    d = drivers(sweep_args(tmp_path, "bg", TINY + ["epochs=6"]))
    d.wait_for(lambda: any(trial_results(students).values()), "stage 2 (a student reported an epoch)")
    expect_one_line_error(capsys, ["rm", exp_path], "is running", "tune-eskd stop")
    expect_one_line_error(capsys, ["resume", exp_path], "already running")
    assert main(["stop", exp_path]) == 0
    out = capsys.readouterr().out
    assert "sent SIGINT" in out and f"tune-eskd resume {exp_path}" in out
    code = d.finish(timeout=60)  # `stop` returned once the driver had ended
    out = d.output
    assert code == 130, out
    assert "interrupted after" in out, out
    assert_no_traceback(out)
    assert set(trial_statuses(students).values()) != {"TERMINATED"}  # stopped midway
    assert not os.path.exists(os.path.join(exp_path, "driver.json"))
    expect_one_line_error(capsys, ["stop", exp_path], "no driver is running")

    # A driver recorded on another host: this machine cannot stop it, and rm/resume refuse to act under it.
    with open(os.path.join(exp_path, "driver.json"), "w") as f:
        json.dump({"pid": 1, "host": "elsewhere.invalid", "start": "1"}, f)
    expect_one_line_error(capsys, ["stop", exp_path], "runs on host elsewhere.invalid")
    expect_one_line_error(capsys, ["rm", exp_path], "on host elsewhere.invalid")
    os.remove(os.path.join(exp_path, "driver.json"))

    # The cluster the sweep recorded is gone: one line within seconds, naming the way out.
    gone = _dead_address()
    _set_recorded_address(exp_path, gone)
    start = time.time()
    expect_one_line_error(capsys, ["resume", exp_path], f"no Ray cluster answers at {gone}", "--local")
    assert time.time() - start < 15  # a 3 s probe at most, not ray.init's minutes of retries
    other = _dead_address()
    expect_one_line_error(capsys, ["resume", exp_path, "--address", other], f"at {other}")  # the override is used

    assert main(["resume", exp_path, "--local"]) == 0
    capsys.readouterr()
    assert set(trial_statuses(students).values()) == {"TERMINATED"} and len(trial_results(students)) == 9
    assert all(rows[-1]["epoch"] == 6 for rows in trial_results(students).values())

    assert main(["rm", exp_path]) == 0 and not os.path.exists(exp_path)
    assert os.path.isdir(tmp_path / "snapshots")  # the shared store is kept


# A stored snapshot's files: weights, metadata, and its teacher's validation logits (tune_eskd.teacher_stats).
SNAPSHOT_FILES = (".pt", ".json", ".val_logits.npy", ".val_logits.json")


def _listed(out: str) -> set[str]:
    return {line.split()[0] for line in out.splitlines() if line.startswith("  ")}


def test_gc_keeps_what_any_experiment_references(tmp_path, ray_session, capsys):
    storage = str(tmp_path)
    space_a = load_space("quick", tiny_overrides(["epochs=1"]))  # ResNet-8 and ResNet-14 teachers, snapshots 1, 2
    assert run_sweep(space_a, SweepOptions(storage=storage, name="a")) == 0
    # b shares a's ResNet-8 teacher but distills from its epoch-2 snapshot only
    space_b = load_space("quick", tiny_overrides(["epochs=1", "teacher_arch=resnet8", "snapshots=[2]", "alpha=0.5"]))
    assert run_sweep(space_b, SweepOptions(storage=storage, name="b")) == 0
    (h8,) = {t.teacher_hash() for t in space_b.needed_teachers()}
    (h14,) = {t.teacher_hash() for t in space_a.needed_teachers()} - {h8}
    capsys.readouterr()

    assert main(["gc", storage]) == 0
    out = capsys.readouterr().out
    assert "2 experiment(s)" in out and "0 unreferenced item(s)" in out and not _listed(out)

    assert main(["rm", f"{storage}/a"]) == 0
    assert main(["gc", storage]) == 0
    listed = _listed(capsys.readouterr().out)
    expected = {f"{storage}/snapshots/{h14}", f"{storage}/soft_labels/{h14}",
                *(f"{storage}/snapshots/{h8}/epoch_001{ext}" for ext in SNAPSHOT_FILES),
                f"{storage}/soft_labels/{h8}/epoch_001"}
    assert listed == expected
    assert all(os.path.exists(p) for p in expected)  # listing deletes nothing

    assert main(["gc", storage, "--yes"]) == 0
    capsys.readouterr()
    assert not any(os.path.exists(p) for p in expected)
    for kept in [f"snapshots/{h8}/epoch_002{ext}" for ext in SNAPSHOT_FILES] + [f"snapshots/{h8}/teacher.json"]:
        assert os.path.exists(f"{storage}/{kept}"), kept
    assert resume_sweep(f"{storage}/b") == 0  # b still finds everything it needs
    assert "stage 1: all 1 teachers already have their snapshots" in capsys.readouterr().out

    # An experiment whose record cannot be read: gc cannot tell what it references, so it deletes nothing.
    os.makedirs(f"{storage}/broken")
    with open(f"{storage}/broken/sweep.json", "w") as f:
        f.write("{not json")
    assert main(["gc", storage, "--yes"]) == 2
    assert "gc deletes nothing" in capsys.readouterr().err
    assert main(["gc", f"{storage}/b"]) == 2  # an experiment, not a storage
    assert f"`tune-eskd gc {storage}`" in capsys.readouterr().err
    assert Experiment(storage, "b").exists()
