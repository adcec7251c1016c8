"""Everyday commands on real sweeps: stop a background sweep and resume it (also when its recorded cluster is
gone), rm an experiment, gc the shared store."""
import json
import os
import socket
import subprocess
import sys
import time

from search_spaces import load_space
from sweep_helpers import TINY, cli, tiny_overrides, trial_results, trial_statuses
from tune_eskd.cli import main
from tune_eskd.experiment import Experiment, SweepOptions
from tune_eskd.pipeline import resume_sweep, run_sweep


def _tune_eskd(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tune_eskd.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def _one_line_error(r: subprocess.CompletedProcess, *parts: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tune-eskd: error: "), r.stderr
    for part in parts:
        assert part in lines[0], lines[0]


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


def test_stop_a_background_sweep_then_resume_it_elsewhere(tmp_path):
    exp_path = str(tmp_path / "bg")
    students = os.path.join(exp_path, "students")
    flags = [arg for v in TINY + ["epochs=3"] for arg in ("--set", v)]
    proc = cli(["sweep", "--space", "quick", *flags, "--storage", str(tmp_path), "--name", "bg"])
    try:
        deadline = time.time() + 400
        while not any(trial_results(students).values()):  # stage 2 runs: a student reported an epoch
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else "timeout"
            time.sleep(0.5)
        _one_line_error(_tune_eskd("rm", exp_path), "is running", "tune-eskd stop")
        _one_line_error(_tune_eskd("resume", exp_path), "already running")
        stopped = _tune_eskd("stop", exp_path)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert "sent SIGINT" in stopped.stdout and f"tune-eskd resume {exp_path}" in stopped.stdout
        out, _ = proc.communicate(timeout=60)  # `stop` returned once the driver had ended
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    assert proc.returncode == 130, out
    assert "interrupted after" in out and "Traceback" not in out, out
    assert set(trial_statuses(students).values()) != {"TERMINATED"}  # stopped midway
    assert not os.path.exists(os.path.join(exp_path, "driver.json"))
    _one_line_error(_tune_eskd("stop", exp_path), "no driver is running")

    # A driver recorded on another host: this machine cannot stop it, and rm/resume refuse to act under it.
    with open(os.path.join(exp_path, "driver.json"), "w") as f:
        json.dump({"pid": 1, "host": "elsewhere.invalid", "start": "1"}, f)
    _one_line_error(_tune_eskd("stop", exp_path), "runs on host elsewhere.invalid")
    _one_line_error(_tune_eskd("rm", exp_path), "on host elsewhere.invalid")
    os.remove(os.path.join(exp_path, "driver.json"))

    # The cluster the sweep recorded is gone: one line within seconds, naming the way out.
    gone = _dead_address()
    _set_recorded_address(exp_path, gone)
    start = time.time()
    _one_line_error(_tune_eskd("resume", exp_path), f"no Ray cluster answers at {gone}", "--local")
    assert time.time() - start < 30  # CLI start-up (torch, ray imports) plus a 3 s probe, not minutes
    other = _dead_address()
    _one_line_error(_tune_eskd("resume", exp_path, "--address", other), f"at {other}")  # the override is used

    resumed = _tune_eskd("resume", exp_path, "--local")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert set(trial_statuses(students).values()) == {"TERMINATED"} and len(trial_results(students)) == 9
    assert all(rows[-1]["epoch"] == 3 for rows in trial_results(students).values())

    removed = _tune_eskd("rm", exp_path)
    assert removed.returncode == 0 and not os.path.exists(exp_path), removed.stderr
    assert os.path.isdir(tmp_path / "snapshots")  # the shared store is kept


def _listed(out: str) -> set[str]:
    return {line.split()[0] for line in out.splitlines() if line.startswith("  ")}


def test_gc_keeps_what_any_experiment_references(tmp_path, ray_session, capsys):
    storage = str(tmp_path)
    space_a = load_space("quick", tiny_overrides())  # ResNet-8 and ResNet-14 teachers, snapshots 1 and 2
    assert run_sweep(space_a, SweepOptions(storage=storage, name="a")) == 0
    # b shares a's ResNet-8 teacher but distills from its epoch-2 snapshot only
    space_b = load_space("quick", tiny_overrides(["teacher_arch=resnet8", "snapshots=[2]", "alpha=0.5"]))
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
                f"{storage}/snapshots/{h8}/epoch_001.pt", f"{storage}/snapshots/{h8}/epoch_001.json",
                f"{storage}/soft_labels/{h8}/epoch_001"}
    assert listed == expected
    assert all(os.path.exists(p) for p in expected)  # listing deletes nothing

    assert main(["gc", storage, "--yes"]) == 0
    capsys.readouterr()
    assert not any(os.path.exists(p) for p in expected)
    for kept in (f"snapshots/{h8}/epoch_002.pt", f"snapshots/{h8}/epoch_002.json", f"snapshots/{h8}/teacher.json"):
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
