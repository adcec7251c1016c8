"""Large sweeps that fit: the checkpoint policy (two checkpoints while a trial runs; a finished trial keeps only
the float16 weights --keep-weights asks for), and the plan printed before a sweep (--dry-run) with its disk
estimate checked against what a real run writes."""
import glob
import os
import resource
import shutil
import subprocess
import sys

import pytest
import torch

from search_spaces import load_space
from sweep_helpers import TINY, expect_one_line_error, tiny_overrides, tree_digest, trial_results
from tune_eskd.experiment import SweepOptions
from tune_eskd.record import Experiment
from tune_eskd.pipeline import run_sweep
from tune_eskd.plan import make_plan


def files_size(root) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files)


def checkpoint_states(stage_path) -> dict:
    """trial folder -> [the state.pt of each of its checkpoint folders, oldest first]."""
    out = {}
    for trial in sorted(p for p in glob.glob(os.path.join(stage_path, "*")) if os.path.isdir(p)):
        out[os.path.basename(trial)] = [torch.load(p, weights_only=True)
                                        for p in sorted(glob.glob(os.path.join(trial, "checkpoint_*", "state.pt")))]
    return out


@pytest.fixture(scope="module")
def planned_sweep(tmp_path_factory, ray_session):
    """The tiny quick variant: its plan on an empty storage, then the real run (default --keep-weights final)."""
    storage = str(tmp_path_factory.mktemp("storage"))
    space = load_space("quick", tiny_overrides())
    options = SweepOptions(storage=storage, name="tiny")
    plan = make_plan(space, options, Experiment(storage, "tiny"))
    assert run_sweep(space, options) == 0
    return Experiment(storage, "tiny"), plan


def test_finished_trials_keep_float16_final_weights_and_no_optimizer_state(planned_sweep):
    exp, _ = planned_sweep
    for stage in (exp.teachers_path, exp.students_path):
        states = checkpoint_states(stage)
        assert states and all(len(s) == 1 for s in states.values()), {k: len(s) for k, s in states.items()}
        for trial, (state,) in states.items():
            assert state["finished"] and state["trainer"] == {"epoch": state["trainer"]["epoch"]}  # no optimizer
            floats = [v for v in state["weights"].values() if v.is_floating_point()]
            assert floats and all(v.dtype == torch.float16 for v in floats), trial
            assert state["weights_epoch"] == state["trainer"]["epoch"]


def test_disk_estimate_is_within_25_percent_of_what_the_run_wrote(planned_sweep):
    exp, plan = planned_sweep
    written = files_size(exp.storage)  # the experiment folder, the snapshot store and the soft labels
    assert abs(plan.total - written) <= 0.25 * written, (plan.disk, written)


def test_keep_weights_best_keeps_the_best_epochs_weights(tmp_path, ray_session):
    space = load_space("quick", tiny_overrides(["kd_epochs=0", "epochs=3"]))  # one CE-only student, no teacher
    assert run_sweep(space, SweepOptions(storage=str(tmp_path), name="k", keep_weights="best")) == 0
    exp = Experiment(str(tmp_path), "k")
    assert SweepOptions.from_record(exp.read_record(), exp.path).keep_weights == "best"  # recorded in sweep.json
    (trial, (*_, state)), = checkpoint_states(exp.students_path).items()
    best = max(trial_results(exp.students_path)[trial], key=lambda r: r["val_acc"])["epoch"]
    assert state["finished"] and "best" not in state and state["weights_epoch"] == best
    assert state["weights"]["fc.weight"].dtype == torch.float16


def test_a_sweep_record_without_keep_weights_still_resumes_with_the_default(tmp_path):
    """sweep.json written before --keep-weights existed: SweepOptions.from_record fills in the default."""
    exp = Experiment(str(tmp_path), "old")
    exp.write_record("quick", {}, SweepOptions(storage=str(tmp_path), name="old").to_record())
    record = exp.read_record()
    del record["options"]["keep_weights"]
    assert SweepOptions.from_record(record, exp.path).keep_weights == "final"


# --- restoring and slimming checkpoints, directly ----------------------------------------------------------------

def _full_checkpoint(folder, epoch):
    from trainables.checkpoints import checkpoint_dir
    from tune_eskd.models import build_model

    model = build_model("resnet8", 10, 0.25)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.zeros(2, 3, 32, 32)).sum().backward()
    opt.step()
    state = {"trainer": {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch}}
    with checkpoint_dir(state) as d:
        shutil.copytree(d, folder)


def test_restore_never_uses_a_newer_checkpoint_than_the_one_tune_names(tmp_path, monkeypatch, caplog):
    """A driver killed after a worker persisted a trial's next checkpoint but before the driver recorded that
    epoch's results restores the trial naming the previous one. Resuming from the newer folder would leave that
    epoch out of the trial's results (the slow fault test caught it: a student's epoch 2 was missing), so the
    named one is used and the epoch rerun."""
    from ray import tune

    from trainables import checkpoints

    _full_checkpoint(tmp_path / "trial" / "checkpoint_000000", epoch=1)
    _full_checkpoint(tmp_path / "trial" / "checkpoint_000001", epoch=2)
    monkeypatch.setattr(checkpoints.tune, "get_checkpoint",
                        lambda: tune.Checkpoint(str(tmp_path / "trial" / "checkpoint_000000")))
    with caplog.at_level("WARNING", logger="tune_eskd"):
        state = checkpoints.restore_state()
    assert state["trainer"]["epoch"] == 1 and caplog.text == ""


def test_slimming_drops_the_optimizer_and_older_weights_and_restore_sees_a_finished_trial(tmp_path,
                                                                                            monkeypatch):
    from ray import tune

    from trainables import checkpoints

    trial = tmp_path / "trial"
    _full_checkpoint(trial / "checkpoint_000000", epoch=1)
    _full_checkpoint(trial / "checkpoint_000001", epoch=2)
    latest = tune.Checkpoint(str(trial / "checkpoint_000001"))
    full = os.path.getsize(trial / "checkpoint_000001" / "state.pt")
    older = checkpoints.slim_trial(latest, "final")
    assert os.path.getsize(trial / "checkpoint_000001" / "state.pt") < full / 2.5  # no momentum, float16
    monkeypatch.setattr(checkpoints.tune, "get_checkpoint", lambda: latest)
    state = checkpoints.restore_state()  # checksum still good
    assert state["finished"] and state["trainer"] == {"epoch": 2} and state["weights_epoch"] == 2
    # The older folder stays, full, until Tune has saved the trial as finished (SlimFinishedTrials deletes it
    # then): a driver killed before that save resumes the trial from it and reruns its last epoch.
    assert [c.path for c in older] == [str(trial / "checkpoint_000000")]
    assert os.path.getsize(trial / "checkpoint_000000" / "state.pt") == full


def test_keep_weights_none_keeps_no_weights(tmp_path):
    from ray import tune

    from trainables import checkpoints

    _full_checkpoint(tmp_path / "trial" / "checkpoint_000000", epoch=3)
    checkpoints.slim_trial(tune.Checkpoint(str(tmp_path / "trial" / "checkpoint_000000")), "none")
    state = torch.load(tmp_path / "trial" / "checkpoint_000000" / "state.pt", weights_only=True)
    assert state == {"trainer": {"epoch": 3}, "finished": True, "keep_weights": "none"}


# --- the plan -------------------------------------------------------------------------------------------------------

def test_dry_run_on_eskd_grid_prints_its_plan_fast_without_ray_or_data(tmp_path):
    """cifar10 is not on this machine: the plan needs neither it nor Ray (ray.init is a tripwire here)."""
    script = ("import sys, ray\n"
              "def tripwire(*a, **k): raise SystemExit('ray.init called')\n"
              "ray.init = tripwire\n"
              "from tune_eskd.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    storage = tmp_path / "storage"
    start = _children_cpu_seconds()
    proc = subprocess.run([sys.executable, "-c", script, "sweep", "--space", "eskd-grid", "--storage", str(storage),
                           "--set", f"data_dir={tmp_path / 'no-data'}", "--dry-run"],
                          capture_output=True, text=True, timeout=120)
    cpu = _children_cpu_seconds() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    space = load_space("eskd-grid")
    teachers, students = space.trial_counts()  # 2 teachers, 651 students
    groups = len(space.axis("teacher_arch")) * len(space.values["snapshots"]) * len(space.axis("seed"))
    assert f"plan: teachers: {teachers} to train" in out, out
    assert f"plan: students: {students} trials, {students * space.values['epochs']} student epochs" in out, out
    assert f"{groups} snapshot x seed groups (0 already cached), {groups * space.max_kd_epochs()} teacher-epochs" in out
    assert "kept weights" in out and "could not know" not in out, out
    assert not storage.exists() and not (tmp_path / "no-data").exists()
    # CPU seconds, not wall time: on two cores shared with other jobs, wall time measures the other jobs.
    assert cpu < 10, f"--dry-run took {cpu:.1f} CPU seconds"


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_dry_run_of_a_file_dataset_reads_it(tmp_path, capsys, no_ray):
    """A file dataset is validated by the dry run: a missing one is the usual one-line error."""
    expect_one_line_error(capsys, ["sweep", "--set", f"dataset=npz:{tmp_path}/missing.npz", "--storage",
                                   str(tmp_path / "s"), "--dry-run"], "does not exist")
    assert not (tmp_path / "s").exists()


def test_too_little_free_space_refuses_in_one_line_before_writing(tmp_path, capsys, monkeypatch, no_ray):
    import collections

    from tune_eskd import plan

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(plan.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    before = tree_digest(tmp_path)
    argv = ["sweep", *[a for v in TINY for a in ("--set", v)], "--storage", str(tmp_path)]
    line = expect_one_line_error(capsys, argv, "free")
    assert "--force" in line and tree_digest(tmp_path) == before


def test_plan_under_asha_without_a_rung_counts_every_epoch(tmp_path):
    """ASHA whose grace period reaches max_t stops nothing: the plan says exactly what runs (it said "at most ...
    (ASHA stops some early)")."""
    space = load_space("quick", tiny_overrides(["epochs=2", "kd_epochs=[0, 2]"]))  # grace 3 -> capped at max_t 2
    lines = make_plan(space, SweepOptions(storage=str(tmp_path), name="x", scheduler="asha"),
                      Experiment(str(tmp_path), "x")).lines()
    assert not any("ASHA" in line or "at most" in line for line in lines), lines
    with_rung = make_plan(load_space("quick", tiny_overrides(["epochs=3"])), SweepOptions(storage=str(tmp_path), name="y",
                                                                           scheduler="asha"),
                          Experiment(str(tmp_path), "y")).lines()
    assert any("(ASHA stops some early)" in line for line in with_rung), with_rung
