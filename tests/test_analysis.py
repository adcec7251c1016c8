"""Analysis tables on one small real sweep: row counts, dtypes, resume de-duplication, incremental reload,
running/interrupted experiments, several experiments side by side, the `results` and `report` commands."""
import json
import os
import shutil

import pandas as pd
import pytest

import analysis
from analysis import stats
from analysis.tables import load, read_saved
from sweep_helpers import own_lines
from tune_eskd.cli import main

OVERRIDES = {"subset": 600, "teacher_epochs": 2, "snapshots": [1, 2], "epochs": 2, "kd_epochs": [0, 1],
             "seed": [0, 1], "alpha": 0.9}
N_TEACHERS, N_SNAPSHOTS, N_SEEDS, EPOCHS = 2, 2, 2, 2
N_TRIALS = N_TEACHERS * N_SNAPSHOTS * N_SEEDS + N_SEEDS    # KD students + CE-only baselines


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One real sweep (quick space, 2 teachers x 2 snapshots, 10 students), shared by this module's tests.
    Tests that change files work on a copy (see `copy`)."""
    from search_spaces import load_space
    from tune_eskd.experiment import SweepOptions
    from tune_eskd.pipeline import run_sweep

    import logging

    import ray

    own = not ray.is_initialized()
    if own:  # a private instance: address="local" never attaches to another `ray start` cluster on this machine
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    storage = tmp_path_factory.mktemp("sweep")
    try:
        code = run_sweep(load_space("quick", OVERRIDES), SweepOptions(storage=str(storage), name="t"))
    finally:
        if own:
            ray.shutdown()
    assert code == 0
    yield str(storage / "t")


@pytest.fixture
def copy(sweep, tmp_path):
    """A private copy of the sweep's storage (experiment + snapshot store), safe to modify."""
    src = os.path.dirname(sweep)
    dst = tmp_path / "storage"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("soft_labels", "tables", "report", "checkpoint_*"))
    return str(dst / "t")


def _trial_folder(path: str, trial_id: str) -> str:
    return os.path.join(path, "students", load(path, write=False, teacher_stats=False)
                        .trials.set_index("trial_id").loc[trial_id, "trial_dir"])


def test_row_counts(sweep):
    t = load(sweep)
    assert len(t.trials) == N_TRIALS
    assert len(t.epochs) == N_TRIALS * EPOCHS
    assert len(t.teachers) == N_TEACHERS * N_SNAPSHOTS
    assert len(t.teacher_epochs) == N_TEACHERS * 2
    assert (t.trials["status"] == "TERMINATED").all()
    assert (t.trials["epochs_run"] == EPOCHS).all() and not t.trials["stopped_by_asha"].any()
    assert (t.trials["method"] == "CE-only").sum() == N_SEEDS
    ce = t.trials[t.trials["method"] == "CE-only"]
    assert ce["teacher_hash"].isna().all() and ce["snapshot_epoch"].isna().all() and ce["alpha"].isna().all()
    assert set(t.trials["teacher_hash"].dropna()) == set(t.teachers["teacher_hash"])
    assert t.epochs.groupby("trial_id")["phase"].apply(list).map(tuple).isin([("kd", "ce"), ("ce", "ce")]).all()
    assert t.notes == []


def test_dtypes(sweep):
    t = load(sweep)
    for df, cols in ((t.trials, ["teacher_arch", "student_arch", "status", "method"]), (t.epochs, ["phase"]),
                     (t.teachers, ["arch"]), (t.teacher_epochs, ["arch", "phase"])):
        for c in cols:
            assert isinstance(df[c].dtype, pd.CategoricalDtype), c
    for df, cols in ((t.trials, ["snapshot_epoch", "kd_epochs", "seed", "epochs", "epochs_run", "best_epoch"]),
                     (t.epochs, ["epoch", "training_iteration"]),
                     (t.teachers, ["snapshot_epoch", "teacher_epochs", "seed"]), (t.teacher_epochs, ["epoch"])):
        for c in cols:
            assert str(df[c].dtype) == "Int64", c
    for c in ("final_val_acc", "final_test_acc", "best_val_acc", "best_test_acc", "alpha", "temperature", "lr"):
        assert t.trials[c].dtype == "float64", c
    assert t.trials["stopped_by_asha"].dtype == bool
    # saved parquet reads back with the same dtypes
    saved = read_saved(sweep)
    for name in ("trials", "epochs", "teachers", "teacher_epochs"):
        pd.testing.assert_frame_equal(getattr(saved, name), getattr(t, name), check_dtype=True)


def test_best_test_is_taken_at_best_val_epoch(sweep):
    t = load(sweep)
    for _, row in t.trials.iterrows():
        ep = t.epochs[t.epochs["trial_id"] == row["trial_id"]]
        best = ep.loc[ep["val_acc"].idxmax()]
        assert row["best_val_acc"] == best["val_acc"] and row["best_epoch"] == best["epoch"]
        assert row["best_test_acc"] == best["test_acc"]
        last = ep.iloc[-1]
        assert row["final_val_acc"] == last["val_acc"] and row["final_test_acc"] == last["test_acc"]


def test_teacher_soft_label_stats(sweep):
    import math

    t = load(sweep)
    assert t.temperatures == [1.0, 4.0]
    for c in ("max_prob_T1", "max_prob_T4", "entropy_T1", "entropy_T4"):
        assert t.teachers[c].notna().all(), c
    classes = 10
    assert t.teachers["max_prob_T4"].between(1 / classes, 1).all()
    assert t.teachers["entropy_T4"].between(0, math.log(classes) + 1e-9).all()
    # a higher temperature gives softer labels
    assert (t.teachers["entropy_T4"] > t.teachers["entropy_T1"]).all()
    assert (t.teachers["max_prob_T4"] < t.teachers["max_prob_T1"]).all()
    # read off the validation logits the sweep stored beside each snapshot, not recomputed with torch
    assert all(os.path.exists(p[:-len(".pt")] + ".val_logits.npy") for p in t.teachers["snapshot_path"])


def test_incremental_reload_and_resume_duplicates(copy):
    first = load(copy)
    assert len(first.reread) == N_TRIALS
    again = load(copy)
    assert again.reread == []
    for name in ("trials", "epochs", "teachers"):
        pd.testing.assert_frame_equal(getattr(again, name), getattr(first, name))

    # simulate a resume: the trial re-reports its last epoch (with a different value) after its checkpoint
    tid = first.trials["trial_id"].iloc[3]
    folder = _trial_folder(copy, tid)
    with open(os.path.join(folder, "result.json")) as f:
        lines = f.read().splitlines()
    repeat = json.loads(lines[-1])
    repeat["val_acc"] = 59 / 60    # a count over the 60 validation images, as every accuracy is
    with open(os.path.join(folder, "result.json"), "a") as f:
        f.write(lines[0] + "\n" + json.dumps(repeat) + "\n")
    third = load(copy)
    assert third.reread == [os.path.basename(folder)]
    assert len(third.epochs) == N_TRIALS * EPOCHS
    row = third.trials.set_index("trial_id").loc[tid]
    assert row["final_val_acc"] == 59 / 60 and row["best_val_acc"] == 59 / 60 and row["epochs_run"] == EPOCHS
    others = third.trials[third.trials["trial_id"] != tid].reset_index(drop=True)
    pd.testing.assert_frame_equal(others, first.trials[first.trials["trial_id"] != tid].reset_index(drop=True))

    # a fresh load (no manifest) de-duplicates the same way
    shutil.rmtree(os.path.join(copy, "tables"))
    fresh = load(copy, teacher_stats=False)
    assert len(fresh.reread) == N_TRIALS and len(fresh.epochs) == N_TRIALS * EPOCHS
    assert fresh.trials.set_index("trial_id").loc[tid, "final_val_acc"] == 59 / 60


def test_running_and_interrupted_experiment(copy):
    base = load(copy, teacher_stats=False)
    tid = base.trials["trial_id"].iloc[0]
    folder = _trial_folder(copy, tid)
    # the trial is mid-way: one epoch written and a second line cut off by the writer
    with open(os.path.join(folder, "result.json")) as f:
        lines = f.read().splitlines()
    with open(os.path.join(folder, "result.json"), "w") as f:
        f.write(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    # the driver was killed mid-trial: its trial.json still says RUNNING (as the callback wrote it at the start)
    with open(os.path.join(folder, "trial.json")) as f:
        record = json.load(f)
    with open(os.path.join(folder, "trial.json"), "w") as f:
        json.dump({**record, "status": "RUNNING"}, f)
    t = load(copy, teacher_stats=False)
    row = t.trials.set_index("trial_id").loc[tid]
    assert row["status"] == "RUNNING" and row["epochs_run"] == 1 and not row["stopped_by_asha"]
    assert len(t.epochs) == N_TRIALS * EPOCHS - 1
    # an experiment from before trial.json: the config from params.json, the status from the reports (the cut
    # trial has no final report: unfinished) and error files
    students = os.path.join(copy, "students")
    for d in os.listdir(students):
        if os.path.exists(os.path.join(students, d, "trial.json")):
            os.remove(os.path.join(students, d, "trial.json"))
    other = _trial_folder(copy, base.trials["trial_id"].iloc[1])
    open(os.path.join(other, "error.txt"), "w").close()
    with open(os.path.join(other, "result.json")) as f:
        first_line = f.readline()
    with open(os.path.join(other, "result.json"), "w") as f:
        f.write(first_line)
    t = load(copy, teacher_stats=False)
    assert len(t.trials) == N_TRIALS
    by_id = t.trials.set_index("trial_id")
    assert by_id.loc[tid, "status"] == "RUNNING" and by_id.loc[base.trials["trial_id"].iloc[1], "status"] == "ERROR"
    assert (t.trials["status"] == "TERMINATED").sum() == N_TRIALS - 2
    pd.testing.assert_frame_equal(t.trials.drop(columns=["status", "epochs_run", "final_val_acc", "final_test_acc",
                                                         "best_val_acc", "best_epoch", "best_test_acc", "wall_seconds",
                                                         "config_complete"]),
                                  base.trials.drop(columns=["status", "epochs_run", "final_val_acc", "final_test_acc",
                                                            "best_val_acc", "best_epoch", "best_test_acc",
                                                            "wall_seconds", "config_complete"]),
                                  check_like=True)  # params.json lists the config keys sorted
    assert main(["results", copy, "--no-teacher-stats"]) == 0


def test_results_cli(sweep, tmp_path, capsys):
    assert main(["results", sweep]) == 0
    out = capsys.readouterr().out
    assert "Top configs" in out and "Students per teacher snapshot" in out and "CE-only (no teacher)" in out
    assert "Seed-to-seed standard deviation" in out
    assert "| CI over |" in out and "student seeds" in out and "paired t-test" in out
    assert "left out" not in out          # a FIFO sweep: every config complete

    assert main(["results", sweep, "--query", "snapshot_epoch == 1 and seed == 0"]) == 0
    assert "matching" in capsys.readouterr().out

    csv = tmp_path / "kd.csv"
    assert main(["results", sweep, "--query", "method == 'KD'", "--format", "csv", "--out", str(csv)]) == 0
    assert len(pd.read_csv(csv)) == N_TRIALS - N_SEEDS
    pq = tmp_path / "epochs.parquet"
    assert main(["results", sweep, "--table", "epochs", "--query", "phase == 'kd'", "--out", str(pq)]) == 0
    assert len(pd.read_parquet(pq)) == N_TRIALS - N_SEEDS  # one KD epoch per KD student
    capsys.readouterr()
    assert main(["results", sweep, "--format", "markdown", "--table", "teachers"]) == 0
    assert capsys.readouterr().out.startswith("| teacher_hash | teacher_config | arch |")


@pytest.mark.parametrize("query", ["snapshot_epoc == 1", "snapshot_epoch ==", "import os"])
def test_results_bad_query_is_one_line(sweep, capsys, query):
    assert main(["results", sweep, "--query", query]) == 2
    err, = own_lines(capsys.readouterr().err)
    assert err.startswith("tune-eskd: error: --query")
    if query.startswith("snapshot_epoc "):
        assert "did you mean 'snapshot_epoch'" in err


def test_report(sweep, capsys):
    assert main(["report", sweep]) == 0
    out = capsys.readouterr().out
    html_path = os.path.join(sweep, "report", "report.html")
    assert html_path in out
    with open(html_path) as f:
        html = f.read()
    with open(os.path.join(sweep, "report", "report.md")) as f:
        md = f.read()
    assert html.count("data:image/png;base64,") >= 5 and "src='figures/" not in html
    assert "Seed-to-seed standard deviation" in md and "Welch" in md and "(paired t-test" in md
    assert "## What matters most" in md and f"Not computed: only {N_TRIALS} students of complete configs" in md
    assert "Not drawn: alpha (0.9) and temperature (4) are fixed" in md
    assert "Not drawn: the sweep ran without ASHA" in md
    for key in ("ray", "torch", "tune_eskd"):
        assert f"| {key} |" in md
    for name in ("teacher_curves", "student_curves", "final_by_snapshot", "teacher_vs_student", "ce_vs_kd"):
        for ext in ("png", "svg"):
            assert os.path.getsize(os.path.join(sweep, "report", "figures", f"{name}.{ext}")) > 1000


def test_load_at_the_package_top(sweep):
    t = analysis.load(sweep, write=False, teacher_stats=False)
    pd.testing.assert_frame_equal(t.trials, load(sweep, write=False, teacher_stats=False).trials)
    assert (t.trials["experiment"] == "t").all() and t.trials["config_complete"].all()
    # the evaluation images, read off the accuracies: 10% of 600 held out; the synthetic test set has 1000
    assert (t.trials["val_images"] == 60).all() and (t.trials["test_images"] == 1000).all()


def test_several_experiments_side_by_side(copy, capsys):
    other = os.path.join(os.path.dirname(copy), "t2")
    shutil.copytree(copy, other)
    t = analysis.load(copy, other, teacher_stats=False)
    assert len(t.trials) == 2 * N_TRIALS and t.trials.groupby("experiment").size().to_dict() == {"t": N_TRIALS,
                                                                                                  "t2": N_TRIALS}
    assert len(t.epochs) == 2 * N_TRIALS * EPOCHS and set(t.teachers["experiment"]) == {"t", "t2"}
    assert "experiment" in stats.config_columns(t.trials)      # never pooled across experiments
    assert isinstance(t.trials["teacher_arch"].dtype, pd.CategoricalDtype)
    assert main(["results", copy, other, "--no-teacher-stats"]) == 0
    out = capsys.readouterr().out
    assert "experiment t (space quick" in out and "experiment t2 (space quick" in out
    assert "side by side" in out and "| t: seeds |" in out and "| t2: seeds |" in out
    assert "| experiment | rank |" in out and "| t | 1 |" in out and "| t2 | 1 |" in out
    assert f"analysis.load({copy!r}, {other!r})" in out


def test_report_without_teacher_stats(copy, capsys):
    assert main(["report", copy, "--no-teacher-stats"]) == 0
    assert os.path.exists(os.path.join(copy, "report", "report.html"))
    assert load(copy, write=False, teacher_stats=False).teachers["entropy_T1"].isna().all()


def test_trial_records_match_tunes_statuses(sweep):
    """Every trial folder of both stages holds the trial.json the sweep wrote, and it agrees with Tune's saved
    state on the trial's status and config."""
    from ray.tune import ExperimentAnalysis

    from tune_eskd.trial_files import stage_trials

    for stage in ("teachers", "students"):
        path = os.path.join(sweep, stage)
        tune_view = {t.trial_id: (t.status, t.config) for t in ExperimentAnalysis(path).trials}
        assert all(os.path.exists(os.path.join(path, d, "trial.json"))
                   for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
        assert {t.trial_id: (t.status, t.config) for t in stage_trials(path)} == tune_view
        assert {status for status, _ in tune_view.values()} == {"TERMINATED"}


def test_a_resumed_trial_is_recorded_running_again(tmp_path, ray_session):
    """A trial that ended (or errored) in an earlier run is written RUNNING when Tune starts it again."""
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial

    from tune_eskd.trial_files import read_trial
    from tune_eskd.trial_record import TrialRecord
    from tune_eskd.blobs import filesystem

    trial = Trial("train_student", config={"trial": {"epochs": 2}}, trial_id="abcde_00000", stub=True,
                  storage=StorageContext(storage_path=str(tmp_path), experiment_dir_name="students"))
    record = TrialRecord()

    def status():
        return read_trial(*filesystem(os.path.dirname(trial.local_path)), trial.relative_logdir).status

    record.on_trial_error(0, [trial], trial)
    assert status() == "ERROR"
    record.on_trial_start(0, [trial], trial)
    assert status() == "RUNNING"
    record.on_trial_complete(0, [trial], trial)
    assert status() == "TERMINATED"
    record.on_trial_start(0, [trial], trial)
    assert status() == "RUNNING"
