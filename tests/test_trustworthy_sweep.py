"""Every announced student trial runs with its own sample, kd_epochs distributions are read as documented, the
printed best student ran all its epochs, ASHA says when it cannot stop anything, and ASHA's rungs survive a
resume (issue 9: items 1, 3, 4, 9, 13, 14)."""
import json
import pickle

import pytest

from search_spaces import load_space, parse_overrides
from sweep_helpers import assert_no_traceback, resume, sweep_args, tiny_overrides, trial_results
from tune_eskd.errors import UsageError
from tune_eskd.experiment import SweepOptions
from tune_eskd.record import Experiment
from tune_eskd.pipeline import asha_bounds, mark_soft_labels, run_sweep, student_param_space


# --- item 1: num_samples ---------------------------------------------------------------------------------------------

def test_num_samples_runs_every_announced_trial_with_its_own_sample(tmp_path, ray_session, capsys):
    # CE-only students (no teacher stage): 2 seeds x 2 samples of lr = 4 trials; the old driver ran 2.
    space = load_space("quick", tiny_overrides(["kd_epochs=0", "epochs=1", "seed=[0, 1]",
                                                "lr={uniform: [0.05, 0.2]}", "num_samples=2"]))
    assert run_sweep(space, SweepOptions(storage=str(tmp_path), name="samples")) == 0
    assert "stage 2: 4 student trials" in capsys.readouterr().out
    results = trial_results(Experiment(str(tmp_path), "samples").students_path)
    assert len(results) == 4
    configs = [rows[-1]["config"]["trial"] for rows in results.values()]
    lrs = [c["lr"] for c in configs]
    assert len(set(lrs)) == 4 and all(0.05 <= lr <= 0.2 for lr in lrs)  # each trial drew its own lr
    assert sorted(c["seed"] for c in configs) == [0, 0, 1, 1]


def test_rows_that_sample_nothing_run_once_and_each_row_draws_its_own_values():
    from ray.tune.search.variant_generator import generate_variants

    # temperature is no knob of the CE-only baseline: 12 KD rows x 3 samples, and the baseline once (not 3 twins).
    space = load_space("quick", parse_overrides(["temperature={uniform: [1, 8]}", "num_samples=3"]))
    assert space.trial_counts() == (2, 12 * 3 + 1)
    # A list may mix grid values and a distribution: lr 0.1 once, the sampled lr 3 times, for each of 2 seeds.
    space = load_space("quick", parse_overrides(["kd_epochs=0", "lr=[0.1, {loguniform: [0.01, 0.05]}]",
                                                 "seed=[0, 1]", "num_samples=3"]))
    rows = mark_soft_labels(space.trials(), SweepOptions(storage="/x", name="x"))
    assert len(rows) == 2 + 6
    drawn = [variant["trial"] for _, variant in generate_variants(student_param_space(rows))]
    lrs = [t["lr"] for t in drawn]
    assert len(drawn) == 8 and lrs.count(0.1) == 2
    assert len({lr for lr in lrs if lr != 0.1}) == 6 and all(0.01 <= lr <= 0.05 for lr in lrs if lr != 0.1)


# --- items 3 and 4: kd_epochs distributions --------------------------------------------------------------------------

def test_randint_kd_epochs_include_their_high_end():
    # Tune draws randint [1, 3] from 1, 2, 3: the longest KD phase is 3 (was 2), so soft labels are precomputed
    # for epoch 3 and ASHA's default grace period ends after it.
    space = load_space("quick", parse_overrides(["epochs=5", "kd_epochs={randint: [1, 3]}"]))
    assert space.max_kd_epochs() == 3
    assert asha_bounds(space, SweepOptions(storage="/x", name="x", scheduler="asha")) == (4, 5)
    space = load_space("quick", parse_overrides(["epochs=5", "kd_epochs=[0, {choice: [2, 4]}]"]))
    assert space.max_kd_epochs() == 4


@pytest.mark.parametrize("value, fix", [
    ("{randint: [0, 3]}", "[0, {randint: [1, 3]}]"),
    ("{choice: [0, 2, 3]}", "[0, {choice: [2, 3]}]"),
    ("[0, {choice: [0, 2]}]", "[0, 2]"),
])
def test_kd_epochs_distribution_that_can_draw_0_is_refused_with_a_fix_that_works(value, fix):
    with pytest.raises(UsageError) as exc:
        load_space("quick", parse_overrides([f"kd_epochs={value}"]))
    message = str(exc.value)
    assert "\n" not in message and "can draw 0, the CE-only baseline" in message
    assert message.endswith(f"kd_epochs: {fix}")
    fixed = load_space("quick", parse_overrides([f"kd_epochs={fix}"]))  # the suggested space is valid
    baselines = [r for r in fixed.trial_rows() if r["kd_epochs"] == 0]
    assert len(baselines) == 1 and baselines[0]["teacher_hash"] is None


# --- item 9: the printed best student ----------------------------------------------------------------------------------

def test_best_student_is_chosen_among_trials_that_ran_all_their_epochs(tmp_path):
    from ray.tune import Result

    from tune_eskd.asha import best_full_run

    def result(epoch, val_acc, epochs=4):
        return Result(metrics={"epoch": epoch, "val_acc": val_acc, "config": {"trial": {"epochs": epochs}}},
                      checkpoint=None, error=None, path=str(tmp_path))

    stopped = result(2, 0.70)  # ASHA stopped it at epoch 2, where it looked best
    full = [result(4, 0.65), result(4, 0.68)]
    assert max([stopped, *full], key=lambda r: r.metrics["val_acc"]) is stopped  # what scope="last" picked
    assert best_full_run([stopped, *full]) is full[1]
    assert best_full_run([stopped, *full], max_t=2) is stopped  # --max-t 2 ends every trial at epoch 2
    assert best_full_run([stopped]) is None


# --- item 13: ASHA without a rung --------------------------------------------------------------------------------------

def test_asha_without_a_rung_before_max_t_says_so_when_the_sweep_starts(tmp_path, capsys):
    space = load_space("quick", parse_overrides(["kd_epochs=[0, 3]"]))  # grace period 4 = max_t 4
    options = SweepOptions(storage=str(tmp_path), name="x", scheduler="asha")
    assert run_sweep(space, options, dry_run=True) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert lines == ["warning: ASHA's grace period 4 equals max_t 4, so it has no rung before the last epoch and "
                     "cannot stop any trial: pass --grace-period below 4, or use more epochs than the longest KD "
                     "phase + 1"]
    assert run_sweep(load_space("quick"), SweepOptions(storage=str(tmp_path), name="y", scheduler="asha"),
                     dry_run=True) == 0
    assert "cannot stop any trial" not in capsys.readouterr().out


def test_asha_without_a_rung_says_so_again_on_resume(tmp_path, capsys, monkeypatch):
    import tune_eskd.pipeline as pipeline
    from tune_eskd.record import Experiment

    space = load_space("quick", parse_overrides(["kd_epochs=[0, 3]"]))  # grace period 4 = max_t 4
    exp = Experiment(str(tmp_path), "x")
    exp.write_record("quick", space.values, SweepOptions(storage=str(tmp_path), name="x", scheduler="asha").to_record())
    monkeypatch.setattr(pipeline, "_run", lambda *args: 0)  # the warning comes before any work
    monkeypatch.setattr(pipeline, "_load_data", lambda space: None)
    assert pipeline.resume_sweep(exp.path) == 0
    assert "cannot stop any trial" in capsys.readouterr().out


@pytest.mark.parametrize("preset", ["quick", "seed-eskd", "eskd-grid"])
def test_presets_leave_asha_a_rung(preset):
    space = load_space(preset)
    grace, max_t = asha_bounds(space, SweepOptions(storage="/x", name="x", scheduler="asha"))
    assert grace < max_t


# --- item 14: ASHA's rungs across a resume -----------------------------------------------------------------------------

# (trial, val_acc at epochs 1..3); trials run one after another, as with --max-concurrent 1.
CURVES = [("t0", [0.50, 0.60, 0.70]), ("t1", [0.60, 0.70, 0.80]), ("t2", [0.55, 0.58, 0.75]),
          ("t3", [0.10, 0.15, 0.20]), ("t4", [0.20, 0.25, 0.30]), ("t5", [0.65, 0.75, 0.85])]


def _trials(storage):
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial

    context = StorageContext(storage_path=str(storage), experiment_dir_name="students")
    return {tid: Trial("student", trial_id=tid, storage=context, stub=True) for tid, _ in CURVES}


def _new_scheduler(asha_class):
    """What Tuner(...) pickles into tuner.pkl and Tuner.restore unpickles: a scheduler with empty rungs."""
    scheduler = asha_class(time_attr="epoch", max_t=3, grace_period=1, reduction_factor=2)
    scheduler.set_search_properties("val_acc", "max")  # as TuneConfig(metric=..., mode=...) does
    return pickle.loads(pickle.dumps(scheduler))


def _run(scheduler, trials, steps):
    """Feed results the way Tune's controller does (a stopped trial is completed and reports no more); the
    decisions, as (trial, epoch, decision)."""
    for trial in trials.values():
        scheduler.on_trial_add(None, trial)
    decisions, stopped = [], set()
    for tid, epoch, acc in steps:
        if tid in stopped:
            continue
        result = {"epoch": epoch, "val_acc": acc}
        decision = scheduler.on_trial_result(None, trials[tid], result)
        decisions.append((tid, epoch, decision))
        if decision == "STOP":
            scheduler.on_trial_complete(None, trials[tid], result)
            stopped.add(tid)
    return decisions


@pytest.mark.parametrize("asha", ["persistent", "ray"])
def test_asha_rungs_are_saved_and_restored_so_a_resume_decides_as_before(tmp_path, asha):
    from ray.tune.schedulers import ASHAScheduler

    from tune_eskd.asha import RUNG_FILE, PersistentASHA

    asha_class = PersistentASHA if asha == "persistent" else ASHAScheduler
    steps = [(tid, epoch, acc) for tid, accs in CURVES for epoch, acc in enumerate(accs, 1)]
    reference = _run(_new_scheduler(asha_class), _trials(tmp_path / "ref"), steps)
    stopped = {tid: epoch for tid, epoch, d in reference if d == "STOP" and epoch < 3}
    assert stopped == {"t2": 2, "t3": 1, "t4": 1}

    # The driver is killed right after ASHA stopped t3 at epoch 1, before Tune saved that: after the resume
    # (a new scheduler, as unpickled from tuner.pkl), t3 reruns epoch 1 from its checkpoint, then t4 and t5 run.
    cut = steps.index(("t3", 1, 0.10)) + 1
    before = _run(_new_scheduler(asha_class), _trials(tmp_path / "killed"), steps[:cut])
    resumed = _run(_new_scheduler(asha_class), _trials(tmp_path / "killed"), steps[cut - 1:])
    if asha == "ray":  # Ray Tune's own ASHA forgets its rungs: t3 and t4 are let through
        assert [d for d in resumed if d[2] == "STOP" and d[1] < 3] == []
        return
    assert resumed[0] == before[-1] == ("t3", 1, "STOP")  # the rerun epoch gets the decision it got before
    assert before + resumed[1:] == reference
    saved = json.loads((tmp_path / "killed" / "students" / RUNG_FILE).read_text())
    assert saved["stopped_at"] == stopped
    assert saved["rungs"][1] == [1, {tid: accs[0] for tid, accs in CURVES}]


# CE-only students (no teacher stage), one at a time so results reach ASHA in the same order in every run: three
# at lr 0.1, then three at lr 1e-5, which ASHA stops at its rungs (epochs 1 and 2) after seeing the first three.
ASHA_SPACE = ["subset=600", "kd_epochs=0", "epochs=3", "student_width=0.25", "lr=[0.1, 0.00001]", "seed=[0, 1, 2]"]
ASHA_FLAGS = ["--scheduler", "asha", "--grace-period", "1", "--max-concurrent", "1"]


def _curves(stage_path) -> dict:
    """{student config: {epoch: val_acc}} (rows repeated by a resume collapse onto their epoch)."""
    return {json.dumps(rows[0]["config"]["trial"], sort_keys=True): {r["epoch"]: r["val_acc"] for r in rows}
            for rows in trial_results(str(stage_path)).values() if rows}


@pytest.mark.slow
def test_a_sweep_killed_in_stage_2_and_resumed_stops_the_trials_an_uninterrupted_one_stops(tmp_path, drivers):
    from tune_eskd.asha import RUNG_FILE

    ref = drivers(sweep_args(tmp_path, "ref", ASHA_SPACE, *ASHA_FLAGS))
    assert ref.finish() == 0, ref.output[-5000:]
    reference = _curves(tmp_path / "ref" / "students")
    assert len(reference) == 6
    stopped = {c for c, curve in reference.items() if max(curve) < 3}
    # Trials judged after the kill below must include a stopped one, or the comparison proves nothing.
    assert {c for c in stopped if json.loads(c)["lr"] == 0.00001}, reference
    best = next(line for line in ref.output.splitlines() if line.startswith("best student"))
    assert " at epoch 3 (" in best, best  # item 9: picked among the students that ran all their epochs

    exp = tmp_path / "killed"
    d = drivers(sweep_args(tmp_path, "killed", ASHA_SPACE, *ASHA_FLAGS))
    # The kill lands right after the fourth student's first result: the fifth and sixth are judged after resume.
    d.wait_for(lambda: sum(rows != [] for rows in trial_results(str(exp / "students")).values()) >= 4,
               "the fourth student's first result")
    d.kill_group()
    # A trial takes about a second, so the next student may report before the kill lands: 4 or 5 have results,
    # and the last one or two are judged after the resume.
    assert (exp / "students" / RUNG_FILE).exists() and len(_curves(exp / "students")) in (4, 5)
    out = resume(drivers, exp)
    assert_no_traceback(out)
    assert _curves(exp / "students") == reference  # the same trials stopped at the same epochs, same metrics


def test_damaged_asha_rung_records_warn_and_asha_goes_on_with_empty_rungs(tmp_path, capsys):
    from tune_eskd.asha import RUNG_FILE, PersistentASHA

    trials = _trials(tmp_path)
    (tmp_path / "students" / RUNG_FILE).write_text('{"rungs": [[2, {}]')  # cut short
    scheduler = _new_scheduler(PersistentASHA)
    scheduler.on_trial_add(None, trials["t0"])
    out = capsys.readouterr().out
    assert out.startswith("warning: ASHA's rung records") and "goes on with empty rungs" in out and out.count("\n") == 1
    assert scheduler.state() == {"rungs": [[2, {}], [1, {}]], "stopped_at": {}}
