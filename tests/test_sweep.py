"""The two-stage sweep on a shared Ray instance: trial counts, snapshots, soft labels, resume, ASHA, status."""
import os

import pytest

from search_spaces import load_space
from sweep_helpers import tiny_overrides, trial_results, trial_statuses
from tune_eskd.experiment import SweepOptions
from tune_eskd.record import Experiment
from tune_eskd.pipeline import resume_sweep, run_sweep
from tune_eskd.snapshots import SnapshotStore


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory, ray_session):
    storage = str(tmp_path_factory.mktemp("storage"))
    space = load_space("quick", tiny_overrides())
    code = run_sweep(space, SweepOptions(storage=storage, name="tiny"))
    assert code == 0
    return Experiment(storage, "tiny"), space


def test_two_stage_pipeline_runs_every_trial(finished_sweep):
    exp, space = finished_sweep
    teachers = space.needed_teachers()
    assert len(teachers) == 2
    store = SnapshotStore(exp.snapshot_root)
    for t in teachers:
        assert store.missing(t.teacher_hash(), [1, 2]) == []
        assert os.path.exists(f"{store.root}/{t.teacher_hash()}/teacher.json")

    results = trial_results(exp.students_path)
    assert len(results) == 9  # 2 teachers x 2 snapshots x 2 alphas + one CE-only baseline
    assert set(trial_statuses(exp.students_path).values()) == {"TERMINATED"}
    for rows in results.values():
        assert [r["epoch"] for r in rows] == [1, 2]
        assert all(0 <= r["val_acc"] <= 1 and 0 <= r["test_acc"] <= 1 for r in rows)
    configs = [rows[-1]["config"]["trial"] for rows in results.values()]
    baselines = [c for c in configs if c["kd_epochs"] == 0]
    assert len(baselines) == 1 and baselines[0]["teacher_hash"] is None
    hashes = {t.teacher_hash() for t in teachers}
    for c in configs:
        if c["kd_epochs"]:
            assert c["teacher_hash"] in hashes and store.has(c["teacher_hash"], c["snapshot_epoch"])
            assert c["soft_labels"]  # two alphas share each snapshot, so they share its logits
    phases = {tuple(r["phase"] for r in rows) for rows in results.values()}
    assert phases == {("kd", "ce"), ("ce", "ce")}


def test_shared_soft_labels_written_once_per_snapshot(finished_sweep):
    exp, _ = finished_sweep
    files = [os.path.join(d, f) for d, _, fs in os.walk(exp.soft_label_root) for f in fs if f.endswith(".pt")]
    assert len(files) == 4  # 2 teachers x 2 snapshots x 1 seed x 1 KD epoch


def test_resume_of_finished_sweep_reruns_nothing(finished_sweep, capsys):
    exp, _ = finished_sweep
    before = trial_results(exp.students_path)
    assert resume_sweep(exp.path) == 0
    out = capsys.readouterr().out
    assert "stage 1: all 2 teachers already have their snapshots" in out
    assert trial_results(exp.students_path) == before


def test_second_sweep_on_same_storage_reuses_teachers(finished_sweep, capsys):
    exp, _ = finished_sweep
    space = load_space("quick", tiny_overrides(["alpha=0.7"]))
    assert run_sweep(space, SweepOptions(storage=exp.storage, name="again")) == 0
    assert "stage 1: all 2 teachers already have their snapshots" in capsys.readouterr().out
    assert not os.path.exists(Experiment(exp.storage, "again").teachers_path)


def test_status_reports_counts_and_best(finished_sweep, capsys):
    from tune_eskd.cli import main

    exp, _ = finished_sweep
    assert main(["status", exp.path]) == 0
    out = capsys.readouterr().out
    assert "students: 9 trials: 9 terminated; 0 left to run" in out
    assert "best so far: val_acc" in out


def test_asha_stops_poor_configs(tmp_path, ray_session):
    # CE-only students (no teacher stage) where lr 1e-5 is a poor config; ASHA judges at epochs 1 and 2.
    space = load_space("quick", tiny_overrides(["kd_epochs=0", "epochs=3", "lr=[0.1, 0.00001]", "seed=[0, 1, 2]",
                                                "subset=1000", "student_width=0.5"]))
    options = SweepOptions(storage=str(tmp_path), name="asha", scheduler="asha", grace_period=1)
    assert run_sweep(space, options) == 0
    results = trial_results(Experiment(str(tmp_path), "asha").students_path)
    assert len(results) == 6
    stopped = [rows for rows in results.values() if rows[-1]["epoch"] < 3]
    assert stopped, "ASHA stopped no trial"
    assert any(rows[-1]["config"]["trial"]["lr"] == 0.00001 for rows in stopped)
    # the bounds it ran with are in the record, for analysis to read (max_t: the students' epochs)
    assert Experiment(str(tmp_path), "asha").read_record()["asha"] == {"grace_period": 1, "max_t": 3}


def test_diverged_trial_errors_at_once_with_reason_and_sweep_goes_on(tmp_path, ray_session, capsys):
    # Default --max-failures 2: a crash would be retried, but a divergence is deterministic and is not.
    space = load_space("quick", tiny_overrides(["kd_epochs=0", "epochs=1", "lr=[0.1, 100000000.0]"]))
    options = SweepOptions(storage=str(tmp_path), name="nan")
    assert options.max_failures == 2
    assert run_sweep(space, options) == 0
    students = Experiment(str(tmp_path), "nan").students_path
    statuses = trial_statuses(students)
    assert sorted(statuses.values()) == ["ERROR", "TERMINATED"]
    errored = next(tid for tid, s in statuses.items() if s == "ERROR")
    with open(os.path.join(students, errored, "error.txt")) as f:
        error = f.read()
    assert "training loss became nan" in error
    assert error.count("Failure #") == 1, error  # one attempt: no retry from its checkpoint
    assert "1 finished, 1 errored" in capsys.readouterr().out
