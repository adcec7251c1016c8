"""A sweep survives SIGKILL of its driver, spreads its trials over a two-node Ray cluster, and stops cleanly on
Ctrl-C."""
import signal

import pytest

from sweep_helpers import CLUSTER_DRIVER, TINY, assert_no_traceback, resume, sweep_args, trial_results, \
    trial_statuses

# Each test runs whole sweeps in subprocesses with their own Ray (2-3 minutes apiece on 2 cores): make test-all
# and CI run them, make test skips them (its budget is 8 minutes).
pytestmark = pytest.mark.slow

# One ResNet-8 teacher (the default suite's kill and cluster runs need no second one): 5 students (2 snapshots x
# 2 alphas + the CE baseline), or 3 with one alpha.
ONE_TEACHER = TINY + ["teacher_arch=resnet8"]
EPOCHS = 4


def test_sigkill_during_students_then_resume(tmp_path, drivers):
    exp_path = tmp_path / "killed"
    students = str(exp_path / "students")
    d = drivers(sweep_args(tmp_path, "killed", ONE_TEACHER + [f"epochs={EPOCHS}"]))

    def mid_stage_two():
        res = trial_results(students)
        finished = {k for k, rows in res.items() if rows and rows[-1]["epoch"] == EPOCHS}
        midway = {k for k, rows in res.items() if rows and rows[-1]["epoch"] < EPOCHS}
        return (finished, midway) if len(finished) >= 2 and midway else None

    finished, midway = d.wait_for(mid_stage_two, "two students finished and one midway")
    before = trial_results(students)
    d.kill_group()

    out = resume(drivers, exp_path)
    assert "stage 1: all 1 teachers already have their snapshots" in out

    after = trial_results(students)
    assert len(after) == 5
    assert set(trial_statuses(students).values()) == {"TERMINATED"}
    for trial in finished:  # finished trials are never rerun
        assert after[trial] == before[trial]
    for trial, rows in after.items():  # every trial completes, each epoch reported (repeats only at the cut)
        assert sorted({r["epoch"] for r in rows}) == list(range(1, EPOCHS + 1))
    for trial in midway:  # an interrupted trial continues from its checkpoint, not from epoch 1
        assert [r["epoch"] for r in after[trial]].count(1) == 1


def test_two_node_cluster_runs_trials_on_both_nodes(tmp_path, drivers):
    d = drivers(sweep_args(tmp_path, "c", ONE_TEACHER + ["alpha=0.9"]), script=CLUSTER_DRIVER)
    assert d.finish() == 0, d.output[-5000:]
    teacher_nodes = {rows[-1]["node_id"] for rows in trial_results(str(tmp_path / "c" / "teachers")).values()}
    students = trial_results(str(tmp_path / "c" / "students"))
    assert len(students) == 3
    student_nodes = {rows[-1]["node_id"] for rows in students.values()}
    assert len(teacher_nodes | student_nodes) == 2


@pytest.mark.fault  # listed in RELIABILITY.md's fault table
def test_ctrl_c_stops_cleanly_and_prints_the_resume_command(tmp_path, drivers):
    students = str(tmp_path / "int" / "students")
    d = drivers(sweep_args(tmp_path, "int", TINY + ["kd_epochs=0", "epochs=6", "seed=[0, 1, 2]"]))
    d.wait_for(lambda: any(rows for rows in trial_results(students).values()), "a student epoch")
    d.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the driver
    code = d.finish(timeout=120)
    out = d.output
    assert code == 130, out
    assert f"tune-eskd resume {tmp_path / 'int'}" in out
    assert_no_traceback(out)
    assert "Tuner.restore" not in out  # nor a Python-API hint
    assert list(trial_statuses(students).values()).count("TERMINATED") < 3  # stopped before the end
