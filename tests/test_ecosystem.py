"""Ray Tune's ecosystem, against the real libraries: Optuna's TPE per grid cell (--search optuna), MLflow and
W&B through Ray's logger callbacks (--mlflow, --wandb), and TensorBoard reading Tune's event files."""
import glob
import os
import subprocess
import sys

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
    by_trial = {run.data.tags["trial_name"].rsplit("_", 1)[-1]: run for run in runs}
    for trial_id, rows in students.items():
        run = by_trial[trial_id]
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert [m.step for m in history] == [1, 2]
        assert [m.value for m in history] == pytest.approx([r["val_acc"] for r in rows])
        config = rows[-1]["config"]["trial"]
        assert run.data.params["trial/seed"] == str(config["seed"])
        assert run.data.params["trial/kd_epochs"] == str(config["kd_epochs"])
    teachers = client.search_runs([client.get_experiment_by_name("t/teachers").experiment_id])
    assert len(teachers) == 1 and teachers[0].data.params["teacher/model"] == "resnet8"


def test_wandb_offline_run_files_hold_each_trials_epochs(tracked):
    from wandb.sdk.internal.datastore import DataStore
    from wandb.proto import wandb_internal_pb2

    root, _, wandb_dir = tracked
    students = trial_results(str(root / "t" / "students"))
    run_files = glob.glob(str(wandb_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    logged = {}
    for path in run_files:
        store = DataStore()
        store.open_for_scan(path)
        run_id, history = None, []
        while (data := store.scan_data()) is not None:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            if record.HasField("run"):
                run_id = record.run.run_id
            elif record.HasField("history"):
                items = {i.key or "/".join(i.nested_key): i.value_json for i in record.history.item}
                history.append(items)
        logged[run_id] = history
    for trial_id, rows in students.items():
        assert trial_id in logged, sorted(logged)
        val_acc = [float(h["val_acc"]) for h in logged[trial_id] if "val_acc" in h]
        assert val_acc == pytest.approx([r["val_acc"] for r in rows])


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


def test_missing_extras_fail_in_one_line(tmp_path):
    """Without the library installed (hidden from the import system here), the flag names the extra to install."""
    for flag, module, extra in (("--search", "optuna", "optuna"), ("--mlflow", "mlflow", "mlflow"),
                                ("--wandb", "wandb", "wandb")):
        value = {"--search": "optuna", "--mlflow": f"sqlite:///{tmp_path}/m.db", "--wandb": "p"}[flag]
        code = (f"import sys; sys.modules[{module!r}] = None; from tune_eskd.cli import main; "
                f"sys.exit(main(['sweep', '--set', 'alpha={{uniform: [0.1, 0.9]}}', '--storage', {str(tmp_path)!r}, "
                f"'--name', 'x', {flag!r}, {value!r}]))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr
        assert f"pip install 'tune-eskd[{extra}]'" in lines[0]
        assert not (tmp_path / "x").exists()


def test_optuna_without_a_distribution_is_refused(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tune_eskd.cli", "sweep", "--search", "optuna", "--storage",
                           str(tmp_path), "--name", "x"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "has none" in done.stderr and "--search grid" in done.stderr
    assert not (tmp_path / "x").exists()
