"""The pipelined sweep: students start as soon as their snapshot and soft labels are ready, the soft-label pass
runs as one task per (snapshot, seed, epoch), a SIGKILLed pipelined run resumes with every trial exactly once,
and --no-pipeline still runs the stages in turn."""
import json
import os

import pytest

from search_spaces import load_space, parse_overrides
from sweep_helpers import assert_no_traceback, resume, store_teacher_snapshots, sweep_args, tiny_overrides, \
    trial_results, trial_statuses
from tune_eskd.experiment import SweepOptions
from tune_eskd.pipeline import run_sweep
from tune_eskd.record import Experiment

# A fast and a slow teacher (resnet8, and resnet18 at about 20x its cost), two snapshots each, two alphas per
# snapshot (so they share soft labels): 8 students of one epoch. The slow teacher's 3 epochs must outlast the
# fast one's plus the start of a soft-label task and of a student (process start-ups, slow on loaded cores).
FAST_SLOW = ["subset=600", "teacher_arch=[resnet8, resnet18]", "teacher_width=0.5", "teacher_epochs=3",
             "snapshots=[1, 3]", "student_width=0.25", "epochs=1", "kd_epochs=1", "alpha=[0.5, 0.9]"]


def soft_label_log(exp: Experiment) -> list[dict]:
    with open(f"{exp.path}/soft_labels.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def first_and_last_time(rows: list[dict]) -> tuple[float, float]:
    """When a trial reported its first and last result (unix seconds, from Tune's result rows)."""
    return rows[0]["timestamp"], rows[-1]["timestamp"]


@pytest.fixture(scope="module")
def fast_slow(tmp_path_factory, ray_session):
    storage = str(tmp_path_factory.mktemp("pipeline"))
    code = run_sweep(load_space("quick", parse_overrides(FAST_SLOW)), SweepOptions(storage=storage, name="fs"))
    assert code == 0
    return Experiment(storage, "fs")


def test_students_of_the_fast_teacher_start_before_the_slow_teacher_ends(fast_slow):
    teachers = {rows[0]["config"]["teacher"]["model"]: first_and_last_time(rows)
                for rows in trial_results(fast_slow.teachers_path).values()}
    students = trial_results(fast_slow.students_path)
    assert len(students) == 8 and set(trial_statuses(fast_slow.students_path).values()) == {"TERMINATED"}
    fast_starts = [first_and_last_time(rows)[0] for rows in students.values()
                   if rows[0]["config"]["trial"]["teacher_arch"] == "resnet8"]
    assert len(fast_starts) == 4
    slow_end = teachers["resnet18"][1]
    assert min(fast_starts) < slow_end, (fast_starts, teachers)


def test_every_soft_label_epoch_is_one_logged_task(fast_slow):
    records = soft_label_log(fast_slow)
    keys = sorted((r["teacher_hash"], r["snapshot"], r["seed"], r["epoch"]) for r in records)
    assert len(keys) == 4 and len(set(keys)) == 4  # 2 teachers x 2 snapshots x 1 seed x 1 KD epoch
    assert all(not r["cached"] and r["start"] <= r["end"] and r["pid"] and r["node"] for r in records)


def test_soft_label_tasks_of_one_snapshot_run_at_once(tmp_path, teacher_run, ray_session):
    """Two KD epochs of one snapshot are two tasks, which overlap on the session's two CPUs."""
    from tune_eskd.pipeline import _load_data, _soft_label_stage
    from tune_eskd.snapshots import SnapshotStore

    from conftest import TEACHER_DATA

    c = teacher_run.cfg  # a space whose one teacher is the session teacher: its snapshots stand in for stage 1
    space = load_space("quick", parse_overrides([
        f"subset={TEACHER_DATA['subset']}", f"batch_size={c.batch_size}", f"teacher_arch={c.model}",
        f"teacher_width={c.width}", f"teacher_epochs={c.epochs}", f"snapshots={list(c.snapshots)}",
        "student_width=0.25", "epochs=2", "kd_epochs=2", "alpha=[0.5, 0.9]"]))
    exp = Experiment(str(tmp_path), "s")
    os.makedirs(exp.path)
    store = SnapshotStore(exp.snapshot_root)
    store_teacher_snapshots(store, teacher_run)
    _soft_label_stage(exp, space, SweepOptions(storage=str(tmp_path), name="s"), _load_data(space))
    records = soft_label_log(exp)
    assert sorted((r["snapshot"], r["epoch"]) for r in records) == [(1, 1), (1, 2), (3, 1), (3, 2)]
    overlapping = [(a, b) for a in records for b in records if a is not b and a["snapshot"] == b["snapshot"]
                   and a["start"] < b["end"] and b["start"] < a["end"]]
    assert overlapping, records
    assert len({r["pid"] for r in records}) >= 2


def test_no_pipeline_runs_the_stages_in_turn(tmp_path, ray_session, capsys):
    storage = str(tmp_path)
    space = load_space("quick", tiny_overrides(["teacher_arch=resnet8", "snapshots=[2]"]))  # 1 teacher, 3 students
    code = run_sweep(space, SweepOptions(storage=storage, name="bar", pipeline=False))
    assert code == 0
    exp = Experiment(storage, "bar")
    assert exp.read_record()["options"]["pipeline"] is False
    teacher_end = max(first_and_last_time(rows)[1] for rows in trial_results(exp.teachers_path).values())
    students = trial_results(exp.students_path)
    assert len(students) == 3 and set(trial_statuses(exp.students_path).values()) == {"TERMINATED"}
    assert min(first_and_last_time(rows)[0] for rows in students.values()) >= teacher_end
    assert len(soft_label_log(exp)) == 1  # the barrier run logs its soft-label tasks too


def test_a_record_from_before_pipelining_resumes_in_stages(tmp_path, monkeypatch):
    """An experiment written before the pipeline existed (no `pipeline` option) is resumed as it was run."""
    import tune_eskd.pipeline as pipeline

    exp = Experiment(str(tmp_path), "old")
    options = SweepOptions(storage=str(tmp_path), name="old").to_record()
    del options["pipeline"]
    exp.write_record("quick", load_space("quick", tiny_overrides()).values, options)
    seen = []
    monkeypatch.setattr(pipeline, "_run", lambda exp, space, options, data: seen.append(options.pipeline) or 0)
    monkeypatch.setattr(pipeline, "_load_data", lambda space: None)
    assert pipeline.resume_sweep(exp.path) == 0 and seen == [False]


# One teacher (resnet18, 3 epochs, snapshots 1 and 3: slow enough to outlast a student's process start-up on
# loaded cores) and 2 snapshots x 2 alphas x 2 seeds students plus a CE-only baseline per seed: 10 students of
# 3 epochs. The kill lands while the teacher still trains and a student (a CE-only baseline needs no snapshot)
# has reported.
KILL = ["subset=400", "teacher_arch=resnet18", "teacher_width=0.5", "teacher_epochs=3", "snapshots=[1, 3]",
        "student_width=0.25", "epochs=3", "kd_epochs=[0, 2]", "alpha=[0.5, 0.9]", "seed=[0, 1]"]


@pytest.mark.slow
def test_sigkill_mid_pipeline_then_resume_runs_every_trial_exactly_once(tmp_path, drivers):
    exp = tmp_path / "killed"

    def student_reported_while_teacher_trains():
        teachers = trial_results(str(exp / "teachers"))
        training = teachers and all(rows and rows[-1]["epoch"] < 3 for rows in teachers.values())
        return training and any(trial_results(str(exp / "students")).values())

    d = drivers(sweep_args(tmp_path, "killed", KILL))
    d.wait_for(student_reported_while_teacher_trains, "a student reported while the teacher trains")
    d.kill_group()
    out = resume(drivers, exp)
    assert_no_traceback(out)
    for stage, n in (("teachers", 1), ("students", 10)):
        assert list(trial_statuses(str(exp / stage)).values()) == ["TERMINATED"] * n, stage
    configs = [json.dumps(rows[0]["config"]["trial"], sort_keys=True)
               for rows in trial_results(str(exp / "students")).values()]
    assert len(configs) == 10 and len(set(configs)) == 10  # one trial folder per trial, none run twice
    for rows in trial_results(str(exp / "students")).values():
        assert sorted({r["epoch"] for r in rows}) == [1, 2, 3]
