"""One source of truth per setting: the config fields generate the CLI flags and the search-space keys, the trial
row is one typed object with one conversion to and from the Tune config, and the core modules stay light."""
import dataclasses
import subprocess
import sys

import pytest

from search_spaces import KEYS, StudentTrial, load_space, parse_overrides
from tune_eskd.cli import build_parser
from tune_eskd.config import StudentConfig, TeacherConfig, default_of
from tune_eskd.errors import UsageError
from tune_eskd.trial import flat_config


def _defaults(command: str) -> dict:
    return vars(build_parser().parse_args([command, "--out", "x", *(["--teacher-snapshot", "s.pt"]
                                                                     if command == "train-student" else [])]))


@pytest.mark.parametrize("command,cls", [("train-teacher", TeacherConfig), ("train-student", StudentConfig)])
def test_single_run_flags_are_the_config_fields_with_their_defaults(command, cls):
    flags = _defaults(command)
    fields = [f for f in dataclasses.fields(cls) if f.name != "data_hash"]  # set once the data is loaded
    assert {f.name: flags[f.name] for f in fields} == {f.name: default_of(f) for f in fields}


def test_sweep_flags_are_the_sweep_options_with_their_defaults_and_their_negations():
    from tune_eskd.cli import _sweep_options
    from tune_eskd.experiment import SweepOptions

    parse = build_parser().parse_args
    assert _sweep_options(parse(["sweep", "--storage", "/s"])) == SweepOptions(storage="/s", name="sweep")
    flags = parse(["sweep", "--storage", "/s", "--no-pipeline", "--no-soft-label-cache", "--deterministic",
                   "--scheduler", "asha", "--max-failures", "-1", "--mlflow", "sqlite:////m.db"])
    assert _sweep_options(flags) == SweepOptions(storage="/s", name="sweep", pipeline=False, soft_label_cache=False,
                                                 deterministic=True, scheduler="asha", max_failures=-1,
                                                 mlflow="sqlite:////m.db")


def test_search_space_keys_take_the_config_defaults():
    teacher, student = TeacherConfig(), StudentConfig()
    for key, spec in KEYS.items():
        if spec.scope == "teacher":
            assert spec.default == getattr(teacher, spec.field), key
        elif spec.field is not None:
            assert spec.default == getattr(student if spec.scope == "student" else teacher, spec.field), key
    assert KEYS["snapshots"].default == TeacherConfig().snapshots == [3, 6, 9, 10]
    assert KEYS["lr"].distributions == ("uniform", "loguniform", "choice")
    assert "lr" not in [k for k, s in KEYS.items() if s.scope == "teacher"] and KEYS["teacher_lr"].distributions == ()


def test_the_trial_row_holds_the_data_shared_and_student_keys():
    keys = {k for k, s in KEYS.items() if s.scope in ("data", "shared", "student")}
    links = {"teacher_hash", "teacher_arch", "snapshot_epoch", "soft_labels", "data_hash"}
    assert {f.name for f in dataclasses.fields(StudentTrial)} == keys | links


def test_a_trial_round_trips_through_its_tune_config():
    space = load_space("quick", parse_overrides(["lr={uniform: [0.05, 0.1]}", "num_samples=2"]))
    trials = space.trials()
    assert [t.row() for t in trials] == space.trial_rows()
    marked = dataclasses.replace(trials[0], soft_labels=True)
    assert StudentTrial.from_config(marked.to_config()) == marked
    assert "soft_labels" not in trials[0].to_config()["trial"]  # unset: not in the Tune config, as before
    with pytest.raises(dataclasses.FrozenInstanceError):
        trials[0].soft_labels = True
    baseline = next(t for t in trials if t.is_baseline)
    assert baseline.teacher_hash is None and baseline.alpha is None and baseline.student_config().alpha == 0.9


def test_a_saved_tune_config_of_an_earlier_experiment_still_loads():
    """The Tune config on disk is the contract: {"trial": row} with the space's key names (and keys that Tune
    sampled at the top level, as "key" or "trial/key")."""
    row = {"dataset": "synthetic", "data_dir": None, "subset": 1500, "val_split": 0.1, "split_seed": 0,
           "batch_size": 64, "momentum": 0.9, "weight_decay": 0.0005, "nesterov": False, "schedule": "multistep",
           "gamma": 0.1, "student_arch": "resnet8", "student_width": 0.5, "epochs": 4, "kd_epochs": 2,
           "alpha": 0.5, "temperature": 4, "seed": 0, "teacher_hash": "abc123def456", "teacher_arch": "resnet8",
           "snapshot_epoch": 2, "soft_labels": True}
    trial = StudentTrial.from_config({"trial": row, "trial/lr": 0.07})
    assert trial.lr == 0.07 and trial.soft_labels and trial.row() == {**row, "lr": 0.07}
    cfg = trial.student_config()
    assert (cfg.model, cfg.width, cfg.lr, cfg.kd_epochs, cfg.alpha) == ("resnet8", 0.5, 0.07, 2, 0.5)
    assert flat_config({"teacher": {"model": "resnet8"}, "seed": 1}) == {"model": "resnet8", "seed": 1}


@pytest.mark.parametrize("values,message", [
    ({"lr": "fast"}, "lr must be a number, got 'fast'"),
    ({"nesterov": 1}, "nesterov must be true or false, got 1"),
    ({"schedule": "step"}, "unknown schedule 'step': choose one of multistep, cosine"),
    ({"milestones": [1, "a"]}, "milestones must be a list of integers"),
    ({"seed": -1}, "seed must be >= 0, got -1"),
    ({"momentum": -0.5}, "momentum must be >= 0, got -0.5"),
])
def test_config_fields_are_checked_with_one_line_messages(values, message):
    with pytest.raises(UsageError) as exc:
        StudentConfig(**values).validate()
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_validation_keeps_the_values_as_given():
    """pydantic only checks: an int lr stays an int, so the teacher hash of an existing space does not change."""
    cfg = TeacherConfig(lr=1)
    cfg.validate()
    assert type(cfg.lr) is int


def test_distribution_arguments_are_typed():
    with pytest.raises(UsageError, match=r"randint takes a list \[low, high\] of integers"):
        load_space("quick", parse_overrides(["kd_epochs=[0, {randint: [1.5, 3]}]"]))


def test_core_modules_import_neither_torch_nor_ray():
    code = ("import sys; import tune_eskd.config, tune_eskd.trial, tune_eskd.progress, search_spaces; "
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
