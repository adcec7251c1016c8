"""Ray Tune's ecosystem, against the real libraries: Optuna's TPE per grid cell (--search optuna), MLflow and
W&B through Ray's logger callbacks (--mlflow, --wandb), and TensorBoard reading Tune's event files."""
import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweep_helpers import cli, trial_results

# One resnet8 teacher, snapshots 1 and 2: two KD cells and one CE-only baseline, 2 epochs each.
SMALL = ["subset=400", "teacher_arch=resnet8", "teacher_epochs=2", "snapshots=[1, 2]", "epochs=2",
         "kd_epochs=[0, 1]", "teacher_width=0.5", "student_width=0.25", "alpha=0.5"]


def _flags(values: list[str]) -> list[str]:
    return [arg for v in values for arg in ("--set", v)]


def _run(args: list[str], env: dict | None = None) -> str:
    proc = cli(args, env={**os.environ, **(env or {})})
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    return out


# ---- trackers: one small sweep logged to MLflow (sqlite store) and W&B (offline), read back by each library

@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    db = root / "mlflow.db"
    wandb_dir = root / "wandb"
    wandb_dir.mkdir()
    _run(["sweep", "--space", "quick", *_flags(SMALL), "--storage", str(root), "--name", "t",
          "--mlflow", f"sqlite:///{db}", "--wandb", "eskd-test"],
         env={"WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir), "WANDB_SILENT": "true"})
    return root, f"sqlite:///{db}", wandb_dir


def test_mlflow_has_a_run_per_trial_with_epoch_metrics_and_config_params(tracked):
    from mlflow import MlflowClient

    root, uri, _ = tracked
    client = MlflowClient(tracking_uri=uri)
    students = trial_results(str(root / "t" / "students"))
    exp = client.get_experiment_by_name("t/students")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == len(students) == 3
    for trial_id, rows in students.items():
        run, = [r for r in runs if r.data.tags["trial_name"].endswith(trial_id)]  # Tune's name: trainable_id
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert [m.step for m in history] == [1, 2]
        assert [m.value for m in history] == pytest.approx([r["val_acc"] for r in rows])
        config = rows[-1]["config"]["trial"]
        assert run.data.params["trial/seed"] == str(config["seed"])
        assert run.data.params["trial/kd_epochs"] == str(config["kd_epochs"])
    teachers = client.search_runs([client.get_experiment_by_name("t/teachers").experiment_id])
    assert len(teachers) == 1 and teachers[0].data.params["teacher/model"] == "resnet8"


def _wandb_records(run_dir: str) -> list[dict]:
    """The records of an offline run's .wandb log, as W&B's own reader prints them (`wandb leet inspect --json`)."""
    wandb = str(Path(sys.executable).with_name("wandb"))
    out = subprocess.run([wandb, "leet", "inspect", "--json", run_dir], capture_output=True, text=True, check=True,
                         timeout=120).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_wandb_offline_run_files_hold_each_trials_epochs(tracked):
    root, _, wandb_dir = tracked
    students = trial_results(str(root / "t" / "students"))
    logged = {}
    for run_dir in glob.glob(str(wandb_dir / "wandb" / "offline-run-*")):
        records = _wandb_records(run_dir)
        run, = [r["run"] for r in records if r["type"] == "run"]
        history = [r["history"]["item"] for r in records if r["type"] == "history"]
        logged[run["run_id"]] = (run, history)
    for trial_id, rows in students.items():
        run, history = logged[trial_id]
        assert run["project"] == "eskd-test" and run["run_group"] == "t/students"
        assert run["config"]["update"]["trial"]["seed"] == rows[-1]["config"]["trial"]["seed"]
        assert [h["val_acc"] for h in history] == pytest.approx([r["val_acc"] for r in rows])


def test_tensorboard_reads_val_acc_from_tunes_event_files(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, _, _ = tracked
    students = trial_results(str(root / "t" / "students"))
    for trial_id, rows in students.items():
        events = glob.glob(str(root / "t" / "students" / trial_id / "events.out.tfevents.*"))
        assert events, f"no event file for trial {trial_id}"
        acc = EventAccumulator(os.path.dirname(events[0]))
        acc.Reload()
        scalars = acc.Scalars("ray/tune/val_acc")
        assert [s.value for s in scalars] == pytest.approx([r["val_acc"] for r in rows])


MISSING = """
import contextlib, io, sys
from tune_eskd.cli import main
storage = sys.argv[1]
for module in ("optuna", "mlflow", "wandb"):
    sys.modules[module] = None  # not installed, as far as imports can tell
for flag, value in (("--search", "optuna"), ("--mlflow", f"sqlite:///{storage}/m.db"), ("--wandb", "p")):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["sweep", "--set", "alpha={uniform: [0.1, 0.9]}", "--storage", storage, "--name", "x", flag, value])
    print(code, err.getvalue().strip().replace(chr(10), " | "))
"""


def test_missing_extras_fail_in_one_line(tmp_path):
    """Without the libraries (hidden from the import system in a fresh process), each flag names its extra."""
    done = subprocess.run([sys.executable, "-c", MISSING, str(tmp_path)], capture_output=True, text=True, timeout=300)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 3, done.stdout + done.stderr
    for line, extra in zip(lines, ("optuna", "mlflow", "wandb")):
        code, _, message = line.partition(" ")
        assert code == "2" and " | " not in message and f"pip install 'tune-eskd[{extra}]'" in message, line
    assert not (tmp_path / "x").exists()


def test_optuna_without_a_distribution_is_refused(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tune_eskd.cli", "sweep", "--search", "optuna", "--storage",
                           str(tmp_path), "--name", "x"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "has none" in done.stderr and "--search grid" in done.stderr
    assert not (tmp_path / "x").exists()


# ---- --search optuna: one TPE study per grid cell, num_samples trials each, its state saved with the experiment

OPTUNA = SMALL + ["alpha={uniform: [0.1, 0.9]}", "num_samples=3"]  # 2 KD cells x 3 trials + 1 CE-only baseline


def _searcher_state(students: str):
    """The PerCellOptuna that Tune saved with stage 2 (Searcher.save_to_dir), restored into a fresh one."""
    from search_spaces import load_space
    from tune_eskd.pipeline import mark_soft_labels
    from tune_eskd.experiment import SweepOptions
    from tune_eskd.search import PerCellOptuna

    space = load_space("quick", _overrides(OPTUNA))
    searcher = PerCellOptuna(mark_soft_labels(space.trials(), SweepOptions(storage="/", name="x")))
    searcher.restore_from_dir(students)
    return searcher


def _overrides(values):
    from search_spaces import parse_overrides

    return parse_overrides(values)


def _per_cell(students: str) -> dict:
    """snapshot epoch (None: the CE-only baseline) -> [(alpha, final val_acc)] of its finished trials."""
    cells = {}
    for rows in trial_results(students).values():
        trial = rows[-1]["config"]["trial"]
        cells.setdefault(trial["snapshot_epoch"], []).append((trial["alpha"], rows[-1]["val_acc"]))
    return cells


def _check_optuna_sweep(students: str) -> None:
    cells = _per_cell(students)
    assert sorted(cells, key=str) == sorted([1, 2, None], key=str)
    assert len(cells[None]) == 1  # the baseline samples nothing (alpha is blank for it): it runs once
    for snap in (1, 2):
        alphas = [a for a, _ in cells[snap]]
        assert len(alphas) == 3 and len(set(alphas)) == 3 and all(0.1 <= a <= 0.9 for a in alphas)
    studies = {fixed["snapshot_epoch"]: study for fixed, study in _searcher_state(students).studies()}
    assert studies[None] is None  # the baseline cell has nothing to sample
    for snap in (1, 2):
        done = sorted((t.params["alpha"], t.value) for t in studies[snap].trials if t.state.name == "COMPLETE")
        expected = sorted(cells[snap])
        assert [a for a, _ in done] == pytest.approx([a for a, _ in expected])
        assert [v for _, v in done] == pytest.approx([v for _, v in expected])


def test_optuna_search_gives_each_grid_cell_its_own_tpe_study(tmp_path, ray_session):
    from search_spaces import load_space
    from tune_eskd.experiment import SweepOptions
    from tune_eskd.pipeline import run_sweep

    space = load_space("quick", _overrides(OPTUNA))
    assert run_sweep(space, SweepOptions(storage=str(tmp_path), name="o", search="optuna")) == 0
    _check_optuna_sweep(str(tmp_path / "o" / "students"))


@pytest.mark.slow
def test_optuna_search_resumes_with_its_searcher_state(tmp_path):
    """SIGKILL the driver after two students, resume: each cell still gets exactly its 3 trials (a searcher that
    restarted from scratch would hand the first cell 3 more) and each study holds them all."""
    import signal
    import time

    students = str(tmp_path / "o" / "students")
    proc = cli(["sweep", "--space", "quick", *_flags(OPTUNA), "--search", "optuna", "--storage", str(tmp_path),
                "--name", "o"])
    try:
        deadline = time.time() + 600
        while sum(len(rows) == 2 for rows in trial_results(students).values()) < 2:
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert sum(len(rows) == 2 for rows in trial_results(students).values()) < 7
    _run(["resume", str(tmp_path / "o")])
    _check_optuna_sweep(students)


@pytest.mark.slow
def test_optuna_search_with_asha_tells_each_study_the_trials_asha_stopped(tmp_path, ray_session):
    """--search optuna --scheduler asha: ASHA cuts some students at its epoch-2 rung; each cell still gets its 3
    trials, and its study records every one of them, a stopped trial with the val_acc it was stopped at.
    (--max-concurrent 1 fixes the arrival order, so which trials ASHA stops is the same every run.)"""
    from search_spaces import load_space
    from tune_eskd.experiment import SweepOptions
    from tune_eskd.pipeline import run_sweep

    space = load_space("quick", _overrides(OPTUNA + ["epochs=4"]))  # KD 1 epoch: ASHA's first rung at epoch 2
    options = SweepOptions(storage=str(tmp_path), name="o", search="optuna", scheduler="asha", max_concurrent=1)
    assert run_sweep(space, options) == 0
    students = str(tmp_path / "o" / "students")
    _check_optuna_sweep(students)
    epochs_run = sorted(len(rows) for rows in trial_results(students).values())
    assert epochs_run[0] == 2 and epochs_run[-1] == 4, epochs_run  # some stopped at the rung, some ran on
