"""A sweep survives SIGKILL of its driver, and spreads its trials over a two-node Ray cluster."""
import os
import signal
import sys
import time

import pytest

from sweep_helpers import TINY, cli, trial_results, trial_statuses

EPOCHS = 4


def _set_flags(values: list[str]) -> list[str]:
    return [arg for v in values for arg in ("--set", v)]


def _wait_for(predicate, proc, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended before {what}:\n{proc.stdout.read()}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _kill_group(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # the group already ended by itself
        pass
    proc.wait()


def test_sigkill_during_students_then_resume(tmp_path):
    exp_path = tmp_path / "killed"
    students = str(exp_path / "students")
    proc = cli(["sweep", "--space", "quick", *_set_flags(TINY + [f"epochs={EPOCHS}"]),
                "--storage", str(tmp_path), "--name", "killed"])

    def mid_stage_two():
        res = trial_results(students)
        finished = {k for k, rows in res.items() if rows and rows[-1]["epoch"] == EPOCHS}
        midway = {k for k, rows in res.items() if rows and rows[-1]["epoch"] < EPOCHS}
        return (finished, midway) if len(finished) >= 2 and midway else None

    try:
        finished, midway = _wait_for(mid_stage_two, proc, 400, "two students finished and one midway")
        before = trial_results(students)
    finally:
        _kill_group(proc)

    resumed = cli(["resume", str(exp_path)])
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert "stage 1: all 2 teachers already have their snapshots" in out

    after = trial_results(students)
    assert len(after) == 9
    assert set(trial_statuses(students).values()) == {"TERMINATED"}
    for trial in finished:  # finished trials are never rerun
        assert after[trial] == before[trial]
    for trial, rows in after.items():  # every trial completes, each epoch reported (repeats only at the cut)
        assert sorted({r["epoch"] for r in rows}) == list(range(1, EPOCHS + 1))
    for trial in midway:  # an interrupted trial continues from its checkpoint, not from epoch 1
        assert [r["epoch"] for r in after[trial]].count(1) == 1


CLUSTER_DRIVER = """
import sys
from ray.cluster_utils import Cluster

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
from tune_eskd.cli import main
import ray

code = main(sys.argv[1:] + ["--address", cluster.address])
ray.shutdown()  # disconnect the driver before the nodes go
cluster.shutdown()
sys.exit(code)
"""


def test_two_node_cluster_runs_trials_on_both_nodes(tmp_path):
    import subprocess

    args = ["sweep", "--space", "quick", *_set_flags(TINY + ["alpha=0.9"]), "--storage", str(tmp_path), "--name", "c"]
    proc = subprocess.run([sys.executable, "-c", CLUSTER_DRIVER, *args], capture_output=True, text=True,
                          timeout=600, start_new_session=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    teacher_nodes = {rows[-1]["node_id"] for rows in trial_results(str(tmp_path / "c" / "teachers")).values()}
    students = trial_results(str(tmp_path / "c" / "students"))
    assert len(students) == 5
    student_nodes = {rows[-1]["node_id"] for rows in students.values()}
    assert len(teacher_nodes | student_nodes) == 2


@pytest.mark.fault  # listed in RELIABILITY.md's fault table
def test_ctrl_c_stops_cleanly_and_prints_the_resume_command(tmp_path):
    students = str(tmp_path / "int" / "students")
    proc = cli(["sweep", "--space", "quick", *_set_flags(TINY + ["kd_epochs=0", "epochs=6", "seed=[0, 1, 2]"]),
                "--storage", str(tmp_path), "--name", "int"])
    try:
        _wait_for(lambda: any(rows for rows in trial_results(students).values()), proc, 300, "a student epoch")
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the driver
        out, _ = proc.communicate(timeout=120)
    finally:
        _kill_group(proc)
    assert proc.returncode == 130, out
    assert f"tune-eskd resume {tmp_path / 'int'}" in out
    # The driver prints no traceback and no Python-API hint. (A worker's own lines, prefixed "(train_... pid=N)",
    # may show Ray's SystemExit on the SIGTERM that stops it: that is Ray's shutdown, not a tune-eskd error.)
    driver_lines = [line for line in out.splitlines() if "pid=" not in line]
    assert not any("Traceback" in line for line in driver_lines), out
    assert "Tuner.restore" not in out
    assert list(trial_statuses(students).values()).count("TERMINATED") < 3  # stopped before the end
