"""Fault injection: a sweep survives SIGKILL of its driver at any point, a killed trial worker, a lost node,
damaged checkpoints, snapshots and soft labels, and unwritable or full storage, and nothing finished is lost.

The end-to-end runs (marked slow) use FAULT, a small space of one teacher and ten students, and compare every
per-epoch metric with one uninterrupted reference sweep of the same space (on CPU a resumed trial reproduces
its epochs exactly, so the comparison is equality). The fast tests (default suite) exercise the recovery code
directly and the read-only / full storage paths. RELIABILITY.md lists every fault with what happened.

Processes: every driver is started by `sweep_helpers.cli` in its own process group; a test SIGKILLs that group
(the driver and the Ray processes it started) and nothing else.
"""
import errno
import json
import os
import re
import shutil
import subprocess
from contextlib import contextmanager
from types import SimpleNamespace

import pytest

from sweep_helpers import CLUSTER_DRIVER, Driver, assert_no_traceback, expect_one_line_error, resume, \
    own_lines, small_mount, store_teacher_snapshots, sweep_args, tree_digest, trial_results, trial_statuses

pytestmark = pytest.mark.fault

# One teacher (4 epochs, snapshots at 2 and 4) and 2 snapshots x 2 alphas x 2 seeds KD students plus one CE-only
# baseline per seed: 10 students of 3 epochs. Two seeds make four soft-label groups, so the soft-label stage
# lasts long enough to be interrupted.
TEACHER_EPOCHS, EPOCHS, SNAPSHOTS = 4, 3, (2, 4)
FAULT = ["subset=400", "teacher_arch=resnet8", "teacher_width=0.5", f"teacher_epochs={TEACHER_EPOCHS}",
         f"snapshots={list(SNAPSHOTS)}", "student_width=0.25", f"epochs={EPOCHS}", "kd_epochs=[0, 2]",
         "alpha=[0.5, 0.9]", "seed=[0, 1]"]
N_STUDENTS = 10
N_SOFT_LABEL_FILES = 8  # 2 snapshots x 2 seeds x 2 KD epochs
METRICS = ("train_loss", "train_acc", "val_acc", "test_acc")  # timing fields differ run to run


# --- reading an experiment -----------------------------------------------------------------------------------------

def per_epoch_metrics(stage_path, key: str, saved_only: bool = False) -> dict:
    """{(trial config, epoch): metrics} over every trial folder of a stage (or only the trials of its latest
    saved state: a fresh stage-1 run that retrains a teacher leaves the old trial's folder beside it).

    Checks on the way that each config has exactly one trial folder (no trial ran twice) and that rows repeated
    by a resume (an epoch rerun after a kill) hold the same metrics as the first time.
    """
    out, folder_of = {}, {}
    saved = trial_statuses(str(stage_path)) if saved_only else None
    for trial, rows in trial_results(str(stage_path)).items():
        if saved is not None and trial not in saved:
            continue
        assert rows, f"trial {trial} in {stage_path} never reported"
        config = json.dumps(rows[0]["config"][key], sort_keys=True)
        assert config not in folder_of, f"one config ran in two trial folders: {folder_of[config]} and {trial}"
        folder_of[config] = trial
        for r in rows:
            metrics = tuple(r[m] for m in METRICS)
            seen = out.setdefault((config, r["epoch"]), metrics)
            assert seen == metrics, f"trial {trial} epoch {r['epoch']} gave {metrics} when rerun, {seen} before"
    return out


def stored_sums(root) -> dict:
    """{relative path: sha256 recorded in its metadata} for the blobs under root: the snapshots and their
    validation logits, or the soft labels."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(".json") and f != "teacher.json":
                with open(os.path.join(d, f)) as fh:
                    out[os.path.relpath(os.path.join(d, f), root)] = json.load(fh)["sha256"]
    return out


def snapshots_written(root) -> list[str]:
    """The snapshots under root whose metadata (written last, after their weights and validation logits) exists."""
    return [f for _, _, files in os.walk(root) for f in files if re.fullmatch(r"epoch_\d+\.json", f)]


def finished_trials(stage_path) -> dict:
    """{trial folder: its rows} for the trials the saved experiment state says are TERMINATED."""
    if not os.path.isdir(stage_path) or not any(f.startswith("experiment_state") for f in os.listdir(stage_path)):
        return {}
    statuses = trial_statuses(str(stage_path))
    rows = trial_results(str(stage_path))
    return {t: rows[t] for t, s in statuses.items() if s == "TERMINATED"}


def stage_started(stage_path) -> bool:
    return os.path.isdir(stage_path) and any(f.startswith("experiment_state") for f in os.listdir(stage_path))


def last_epochs(stage_path) -> dict:
    """{trial folder: last reported epoch} (0 for a folder with no result yet)."""
    return {t: (rows[-1]["epoch"] if rows else 0) for t, rows in trial_results(str(stage_path)).items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted FAULT sweep: the metrics every interrupted sweep must reproduce."""
    storage = tmp_path_factory.mktemp("reference")
    d = Driver(sweep_args(storage, "ref", FAULT))
    code = d.finish()
    assert code == 0, d.output[-5000:]
    exp = storage / "ref"
    ref = SimpleNamespace(storage=storage, path=exp,
                          teachers=per_epoch_metrics(exp / "teachers", "teacher"),
                          students=per_epoch_metrics(exp / "students", "trial"),
                          snapshots=stored_sums(storage / "snapshots"),
                          soft_labels=stored_sums(storage / "soft_labels"))
    assert len({c for c, _ in ref.students}) == N_STUDENTS and len(ref.soft_labels) == N_SOFT_LABEL_FILES
    assert len(snapshots_written(storage / "snapshots")) == len(SNAPSHOTS)
    return ref


def assert_matches_reference(exp, reference, resumed_output: str, retrained: bool = False):
    """Every trial of both stages finished exactly once, with the reference's metrics, snapshots, soft labels."""
    assert_no_traceback(resumed_output)
    for stage in ("teachers", "students"):
        assert set(trial_statuses(str(exp / stage)).values()) == {"TERMINATED"}, stage
    teachers = per_epoch_metrics(exp / "teachers", "teacher", saved_only=retrained)
    students = per_epoch_metrics(exp / "students", "trial")
    assert teachers == reference.teachers
    assert len(trial_results(str(exp / "students"))) == N_STUDENTS
    assert students.keys() == reference.students.keys()
    for key, metrics in reference.students.items():
        assert students[key] == metrics, f"student {key[0]} epoch {key[1]}: {students[key]} != {metrics}"
    assert stored_sums(exp.parent / "snapshots") == reference.snapshots
    assert stored_sums(exp.parent / "soft_labels") == reference.soft_labels


# --- kill points ----------------------------------------------------------------------------------------------------

def _teacher_midway(exp):
    ends = last_epochs(exp / "teachers")
    return ends and all(1 <= e <= TEACHER_EPOCHS - 2 for e in ends.values())


def _teachers_done(exp):
    store = exp.parent / "snapshots"
    return (len(snapshots_written(store)) == len(SNAPSHOTS)
            and any(os.path.exists(os.path.join(d, "teacher.json")) for d, _, _ in os.walk(store)))


def _soft_labels_started(exp):
    root = exp.parent / "soft_labels"
    return root.is_dir() and any(files for _, _, files in os.walk(root))


def _students_midway(exp):
    ends = last_epochs(exp / "students")
    finished = [t for t, e in ends.items() if e == EPOCHS]
    midway = [t for t, e in ends.items() if 1 <= e < EPOCHS]
    return len(finished) >= 2 and midway


def _kd_student_midway_with_two_checkpoints(exp):
    """A KD student two epochs in (so it has an earlier checkpoint to fall back to, and its soft labels exist)
    while most students have not started. (Pipelined, the CE-only students run before any soft labels.) Read from
    Tune's saved state, which the resume goes by, not from result.json: Tune copies both in one save, in no set
    order, and a fresh-clone CI run once found the state not yet naming the student's checkpoint."""
    results = trial_results(str(exp / "students"))
    if len(results) > N_STUDENTS - 3 or not any(  # cheap checks first: this is polled while students train
            rows and rows[-1]["epoch"] == EPOCHS - 1 and rows[-1]["config"]["trial"]["kd_epochs"] > 0
            for rows in results.values()):
        return False
    return any(t.config["trial"]["kd_epochs"] > 0 and not path.endswith("checkpoint_000000")
               for t, path in _saved_checkpoints(exp / "students"))


KILL_POINTS = {
    # point: (predicate on the experiment, what it means, whether stage 2 must have started when it holds)
    "stage-1": (_teacher_midway, "the teacher reported 1 or 2 of its 4 epochs", False),
    "teachers-done": (_teachers_done, "the teacher wrote its last snapshot and its curve", False),
    "soft-labels": (_soft_labels_started, "the soft-label stage began writing", False),
    "stage-2": (_students_midway, "two students finished and another is midway", True),
}


def _kill_at(drivers, tmp_path, point):
    predicate, what, in_stage_two = KILL_POINTS[point]
    exp = tmp_path / "killed"
    d = drivers(sweep_args(tmp_path, "killed", FAULT))
    d.wait_for(lambda: predicate(exp), what)
    d.kill_group()
    # Pipelined, students may start before the teacher ends: only the stage-2 point says they must have.
    assert stage_started(exp / "students") or not in_stage_two, f"the kill missed its point ({what})"
    if point == "stage-1":
        assert len(snapshots_written(tmp_path / "snapshots")) < len(SNAPSHOTS), "the teacher finished before the kill"
    return exp, d


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_driver_sigkill_then_resume_reproduces_the_uninterrupted_sweep(point, reference, tmp_path, drivers):
    exp, _ = _kill_at(drivers, tmp_path, point)
    finished = {stage: finished_trials(exp / stage) for stage in ("teachers", "students")}
    out = resume(drivers, exp)
    assert_matches_reference(exp, reference, out)
    for stage, trials in finished.items():  # a trial Tune had recorded as finished is never rerun
        after = trial_results(str(exp / stage))
        for trial, rows in trials.items():
            assert after[trial] == rows, f"finished {stage} trial {trial} was rerun"
    if point != "stage-1":
        assert "stage 1: all 1 teachers already have their snapshots" in out or "stage 1: finishing" in out


def _saved_checkpoints(stage_path) -> list:
    """(trial, checkpoint path) for each trial that Tune's saved state records as unfinished with a checkpoint."""
    from tune_eskd.saved_state import stage_trials

    if not stage_started(stage_path):
        return []
    try:
        trials = stage_trials(str(stage_path))
    except (ValueError, OSError):  # the state file mid-write
        return []
    return [(t, t.checkpoint.path) for t in trials if t.status != "TERMINATED" and t.checkpoint is not None]


def _saved_teacher_checkpoint(exp):
    """The checkpoint the teacher's saved state names while Tune records the teacher as unfinished, else None."""
    named = [path for _, path in _saved_checkpoints(exp / "teachers")]
    return named[0] if named else None


@pytest.mark.slow
def test_resume_when_tune_deleted_the_checkpoint_its_saved_state_names(reference, tmp_path, drivers):
    """Tune deletes a checkpoint beyond num_to_keep as soon as a newer one registers and saves the state naming
    the newer one a moment later; a kill in between (CI hit it) left a saved state naming a deleted checkpoint,
    and the resumed teacher errored ("does not exist on storage anymore"). Now it restarts from epoch 0.

    The teacher's worker is suspended (SIGSTOP) two epochs before its end, so it cannot finish while the test
    waits for Tune's saved state to name one of its checkpoints; then the driver is killed and that checkpoint
    and the older one are deleted, which is what the race leaves."""
    import ray  # noqa: F401 (Ray puts the psutil it bundles on sys.path)
    import psutil

    exp = tmp_path / "killed"
    d = drivers(sweep_args(tmp_path, "killed", FAULT))

    def teacher_worker():
        for rows in trial_results(str(exp / "teachers")).values():
            if rows and rows[-1]["epoch"] <= TEACHER_EPOCHS - 2:
                return rows[-1]["pid"]
        return None

    worker = psutil.Process(d.wait_for(teacher_worker, "the teacher to report an epoch, two before its last"))
    assert d.proc.pid in {p.pid for p in worker.parents()} or os.getpgid(worker.pid) == d.proc.pid, \
        "the teacher's worker is not a process of this test's driver"
    worker.suspend()
    d.wait_for(lambda: _saved_teacher_checkpoint(exp), "Tune's saved state to name the teacher's checkpoint")
    d.kill_group()
    try:
        worker.kill()  # in case it was not in the driver's process group
    except psutil.NoSuchProcess:
        pass
    named = _saved_teacher_checkpoint(exp)
    assert named, "the saved state names no checkpoint of the unfinished teacher"
    folder = os.path.dirname(named)
    for name in os.listdir(folder):
        if name.startswith("checkpoint_") and name <= os.path.basename(named):
            shutil.rmtree(os.path.join(folder, name))
    out = resume(drivers, exp)
    assert f"its saved checkpoint {named} was deleted by Tune" in out, out[-5000:]
    assert "restarting it from epoch 0" in out
    assert_matches_reference(exp, reference, out)


@pytest.mark.slow
def test_damaged_checkpoint_and_soft_labels_after_a_kill_are_detected_and_redone(reference, tmp_path, drivers):
    """Kill the driver in stage 2, then truncate the latest checkpoint of a running KD student and every soft-label
    file written so far: the resume warns, falls back to the earlier checkpoint (Tune keeps two per running
    trial), so the student reruns its last KD epoch, recomputes the damaged soft labels it needs, and the sweep
    still reproduces the reference exactly."""
    from ray.tune import ExperimentAnalysis

    exp = tmp_path / "killed"
    d = drivers(sweep_args(tmp_path, "killed", FAULT))
    d.wait_for(lambda: _kd_student_midway_with_two_checkpoints(exp), "a KD student two epochs in, most not started")
    d.kill_group()

    trials = ExperimentAnalysis(str(exp / "students")).trials
    damaged_checkpoint = None
    for t in trials:
        ckpt = t.checkpoint
        if (t.status != "TERMINATED" and t.config["trial"]["kd_epochs"] > 0 and ckpt is not None
                and not ckpt.path.endswith("checkpoint_000000")):
            with open(os.path.join(ckpt.path, "state.pt"), "r+b") as f:
                f.truncate(100)
            damaged_checkpoint = ckpt.path
            break
    assert damaged_checkpoint, [(t.status, t.checkpoint) for t in trials]

    soft = [os.path.join(folder, f) for folder, _, files in os.walk(tmp_path / "soft_labels") for f in files
            if f.endswith(".pt")]
    assert soft, "no soft labels written before the kill"
    for path in soft:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)

    out = resume(drivers, exp)
    assert "fails its checksum" in out and "resuming the trial from the earlier checkpoint" in out, out[-5000:]
    assert "truncated or corrupted (checksum mismatch)" in out and "recomputing it from the teacher snapshot" in out
    assert_matches_reference(exp, reference, out)


@pytest.mark.slow
def test_damaged_snapshot_is_discarded_and_its_teacher_retrained_on_resume(reference, tmp_path, drivers):
    """A finished sweep whose snapshot got truncated: resume refuses to use it, retrains the teacher (Tune would
    never rerun the finished teacher trial), and the retrained snapshot is the same bits as before."""
    storage = tmp_path / "storage"
    shutil.copytree(reference.storage, storage)
    exp = storage / "ref"
    students_before = trial_results(str(exp / "students"))
    snap = next(p for p in (storage / "snapshots").rglob("epoch_002.pt"))
    with open(snap, "r+b") as f:
        f.truncate(os.path.getsize(snap) // 2)

    out = resume(drivers, exp)
    assert f"warning: snapshot {snap} is truncated or corrupted (checksum mismatch)" in out, out[-5000:]
    assert "stage 1: retraining 1 teacher(s) whose snapshots are missing" in out
    assert_matches_reference(exp, reference, out, retrained=True)
    assert len(trial_results(str(exp / "teachers"))) == 2  # the first teacher's folder is kept beside the retrain
    assert trial_results(str(exp / "students")) == students_before  # finished students are not rerun
    assert not re.search(r"^soft labels: \d+ teacher epochs", out, re.M)  # same weights: no logits recomputed


@pytest.mark.slow
def test_resume_stops_in_one_line_when_tune_cannot_read_a_stages_saved_state(reference, tmp_path, drivers):
    """A damaged Tune state file (here the students' searcher state, cut in half): Tune itself would log the
    failure and start the stage afresh from an empty config. Resume stops in one line instead, changing nothing."""
    storage = tmp_path / "storage"
    shutil.copytree(reference.storage, storage)
    exp = storage / "ref"
    state = max((exp / "students").glob("search_gen_state-*.json"))
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    before = {p: tree_digest(exp / p) for p in ("teachers", "students")}

    d = drivers(["resume", str(exp)])
    assert d.finish() == 2, d.output[-5000:]
    errors = [line for line in d.output.splitlines() if line.startswith("tune-eskd: error:")]
    assert len(errors) == 1 and "Ray Tune cannot restore stage students from its saved state" in errors[0], d.output[-5000:]
    assert_no_traceback(d.output)
    assert {p: tree_digest(exp / p) for p in ("teachers", "students")} == before


@pytest.mark.slow
def test_driver_sigkill_during_report_then_report_again(reference, tmp_path, drivers):
    from tune_eskd.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    if "report" not in sub.choices:
        pytest.skip("`tune-eskd report` is not available yet (analysis/ registers no report subcommand)")
    import pandas as pd

    storage = tmp_path / "storage"
    shutil.copytree(reference.storage, storage)
    exp = storage / "ref"
    results_before = {p: tree_digest(exp / p) for p in ("teachers", "students")}
    d = drivers(["report", str(exp)])
    d.wait_for(lambda: (exp / "tables").exists() or (exp / "report").exists(), "the report to start writing")
    d.kill_group()

    d = drivers(["report", str(exp)])
    assert d.finish() == 0, d.output[-5000:]
    assert (exp / "report" / "report.html").stat().st_size > 0 and (exp / "report" / "report.md").stat().st_size > 0
    assert {p: tree_digest(exp / p) for p in ("teachers", "students")} == results_before

    clean = tmp_path / "clean"  # the same report, never interrupted
    shutil.copytree(reference.storage, clean)
    d = drivers(["report", str(clean / "ref")])
    assert d.finish() == 0, d.output[-5000:]
    def table(storage, name):  # paths name the storage they were read from: compare them relative to it
        return pd.read_parquet(storage / "ref" / "tables" / f"{name}.parquet").replace(
            regex={re.escape(str(storage)): "STORAGE"})

    for name in ("trials", "epochs", "teachers"):
        pd.testing.assert_frame_equal(table(storage, name), table(clean, name), check_like=True)


# --- a killed trial worker ---------------------------------------------------------------------------------------

WORKER = ["subset=1000", "kd_epochs=0", "epochs=5", "student_width=0.5", "seed=0"]  # one CE-only student


@pytest.mark.slow
def test_sigkill_of_a_trial_worker_retries_the_trial_from_its_checkpoint(tmp_path, drivers):
    import ray  # noqa: F401 (Ray puts the psutil it bundles on sys.path)
    import psutil

    exp = tmp_path / "w"
    d = drivers(sweep_args(tmp_path, "w", WORKER))

    def running_worker():
        for rows in trial_results(str(exp / "students")).values():
            if rows and 1 <= rows[-1]["epoch"] <= 3:
                return rows[-1]["pid"]
        return None

    pid = d.wait_for(running_worker, "the student to report its first epoch")
    worker = psutil.Process(pid)
    assert d.proc.pid in {p.pid for p in worker.parents()} or os.getpgid(pid) == d.proc.pid, \
        "the trial's worker is not a process of this test's driver"
    worker.kill()  # SIGKILL, mid-trial
    assert d.finish() == 0, d.output[-5000:]

    students = str(exp / "students")
    from ray.tune import ExperimentAnalysis

    (trial,) = ExperimentAnalysis(students).trials
    assert trial.status == "TERMINATED" and trial.num_failures == 1, (trial.status, trial.num_failures)
    (rows,) = per_trial_rows(students)
    epochs = [r["epoch"] for r in rows]
    assert sorted(set(epochs)) == [1, 2, 3, 4, 5] and epochs.count(1) == 1, epochs  # from its checkpoint
    assert len({r["pid"] for r in rows}) == 2  # the retry ran in a new worker
    per_epoch_metrics(students, "trial")  # a rerun epoch (if any) reproduced its metrics


def per_trial_rows(stage_path) -> list:
    return list(trial_results(str(stage_path)).values())


# --- a lost node ---------------------------------------------------------------------------------------------------

CLUSTER = ["subset=400", "kd_epochs=0", "epochs=5", "student_width=0.5", "seed=[0, 1, 2, 3]"]  # 4 CE-only


@pytest.mark.slow
def test_losing_a_worker_node_reschedules_its_trials_on_the_head(tmp_path, drivers, monkeypatch):
    monkeypatch.setenv("REMOVE_WORKER_NODE_BEFORE_EPOCH", "5")
    d = drivers(sweep_args(tmp_path, "c", CLUSTER), script=CLUSTER_DRIVER)
    code = d.finish()
    out = d.output
    assert code == 0, out[-5000:]
    removed = [line for line in out.splitlines() if line.startswith("REMOVED worker node")]
    assert removed, out[-5000:]
    lost_node, moved_trial = removed[0].split()[3], removed[0].split()[5]

    students = str(tmp_path / "c" / "students")
    assert set(trial_statuses(students).values()) == {"TERMINATED"} and len(trial_statuses(students)) == 4
    rows = trial_results(students)[moved_trial]
    epochs = [r["epoch"] for r in rows]
    assert sorted(set(epochs)) == [1, 2, 3, 4, 5] and epochs.count(1) == 1, epochs  # resumed, not restarted
    assert rows[0]["node_id"] == lost_node and rows[-1]["node_id"] != lost_node  # finished on the head
    per_epoch_metrics(students, "trial")


# --- damaged files, directly ------------------------------------------------------------------------------------

def _checkpoints(tmp_path, epochs):
    """A trial folder with one checkpoint_NNNNNN per epoch, as trainables.checkpoints writes them."""
    from ray import tune

    from trainables.checkpoints import checkpoint_dir

    trial = tmp_path / "trial"
    for i, epoch in enumerate(epochs):
        with checkpoint_dir({"trainer": {"epoch": epoch}, "history": [epoch]}) as d:
            shutil.copytree(d, trial / f"checkpoint_{i:06d}")
    return trial, tune.Checkpoint(str(trial / f"checkpoint_{len(epochs) - 1:06d}"))


@pytest.mark.parametrize("damage", ["truncated", "flipped-byte", "no-metadata"])
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, monkeypatch, caplog, damage):
    from trainables import checkpoints

    trial, latest = _checkpoints(tmp_path, [1, 2])
    pt = trial / "checkpoint_000001" / "state.pt"
    if damage == "truncated":
        pt.write_bytes(pt.read_bytes()[:50])
    elif damage == "flipped-byte":
        blob = bytearray(pt.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        pt.write_bytes(bytes(blob))
    else:
        os.remove(trial / "checkpoint_000001" / "state.json")
    monkeypatch.setattr(checkpoints.tune, "get_checkpoint", lambda: latest)
    with caplog.at_level("WARNING", logger="tune_eskd"):
        state = checkpoints.restore_state()
    assert state["trainer"]["epoch"] == 1 and state["history"] == [1]
    assert "not using it" in caplog.text and "earlier checkpoint" in caplog.text


def test_no_good_checkpoint_restarts_the_trial_with_a_warning(tmp_path, monkeypatch, caplog):
    from trainables import checkpoints

    trial, latest = _checkpoints(tmp_path, [1, 2])
    for name in ("checkpoint_000000", "checkpoint_000001"):
        (trial / name / "state.pt").write_bytes(b"garbage")
    monkeypatch.setattr(checkpoints.tune, "get_checkpoint", lambda: latest)
    with caplog.at_level("WARNING", logger="tune_eskd"):
        assert checkpoints.restore_state() is None
    assert "restarting it from epoch 0" in caplog.text


def test_good_latest_checkpoint_is_used_as_is(tmp_path, monkeypatch, caplog):
    from trainables import checkpoints

    _, latest = _checkpoints(tmp_path, [1, 2])
    monkeypatch.setattr(checkpoints.tune, "get_checkpoint", lambda: latest)
    with caplog.at_level("WARNING", logger="tune_eskd"):
        assert checkpoints.restore_state()["trainer"]["epoch"] == 2
    assert caplog.text == ""


@pytest.mark.parametrize("damage", ["truncated", "weights-missing", "metadata-not-json"])
def test_damaged_stored_snapshot_is_discarded_so_its_teacher_is_retrained(tmp_path, capsys, teacher_run, damage):
    from tune_eskd.pipeline import _discard_damaged_snapshots
    from tune_eskd.snapshots import SnapshotStore

    store = SnapshotStore(str(tmp_path / "snapshots"))
    h = teacher_run.cfg.teacher_hash()
    for epoch in (1, 3):
        for ext in (".pt", ".json"):
            os.makedirs(os.path.dirname(store.path(h, epoch)), exist_ok=True)
            shutil.copy(os.path.join(teacher_run.snapshot_dir, f"epoch_{epoch:03d}{ext}"), store.path(h, epoch)[:-3] + ext)
    assert store.damaged(h, [1, 3]) == [] and store.missing(h, [1, 3]) == []
    pt = store.path(h, 3)
    if damage == "truncated":
        with open(pt, "r+b") as f:
            f.truncate(os.path.getsize(pt) - 10)
    elif damage == "weights-missing":
        os.remove(pt)
    else:
        with open(pt[:-3] + ".json", "w") as f:
            f.write("{")
    assert store.damaged(h, [1, 3]) == [3]
    _discard_damaged_snapshots(store, [teacher_run.cfg])
    assert f"warning: snapshot {pt} is truncated or corrupted" in capsys.readouterr().out
    assert store.missing(h, [1, 3]) == [3] and not os.path.exists(pt)  # pending: its teacher trains again
    assert store.damaged(h, [1, 3]) == []
    _discard_damaged_snapshots(store, [teacher_run.cfg])  # nothing left to discard: no second warning
    assert capsys.readouterr().out == ""


@pytest.fixture(scope="module")
def teacher_data():
    """The session teacher's data splits, loaded once for this module."""
    from tune_eskd.data import load_splits

    from conftest import TEACHER_DATA

    return load_splits(**{k: v for k, v in TEACHER_DATA.items() if k != "dataset"}, source=TEACHER_DATA["dataset"])


@pytest.mark.parametrize("damage", ["truncated", "flipped-byte", "metadata-not-json"])
def test_damaged_shared_soft_labels_are_detected_and_recomputed_identically(tmp_path, caplog, teacher_run,
                                                                            teacher_data, damage):
    import torch

    from search_spaces import student_config
    from tune_eskd.soft_labels import SoftLabelCache, SoftLabelError, cached_teacher, ensure_soft_labels, \
        repair_soft_labels

    from conftest import TEACHER_DATA

    cfg = student_config({**TEACHER_DATA, "model": "resnet8", "epochs": 2, "kd_epochs": 1, "batch_size": 64,
                          "seed": 0})
    data = teacher_data
    cache = SoftLabelCache(str(tmp_path / "soft"))
    cpu = torch.device("cpu")
    assert ensure_soft_labels(cache, teacher_run.snapshot, cfg, data, [1], cpu) == [1]
    h, snap = teacher_run.cfg.teacher_hash(), 3
    good = cache.load(h, snap, cfg, 1)
    pt = cache.path(h, snap, cfg, 1)
    if damage == "truncated":
        with open(pt, "r+b") as f:
            f.truncate(os.path.getsize(pt) // 2)
    elif damage == "flipped-byte":
        blob = bytearray(open(pt, "rb").read())
        blob[-20] ^= 0x01
        open(pt, "wb").write(bytes(blob))
    else:
        open(pt[:-3] + ".json", "w").write("not json")
    with pytest.raises(SoftLabelError):  # without a repair hook a damaged entry is an error, never used
        cached_teacher(cache, h, snap, cfg, cpu)(1, torch.arange(4), None)
    calls = []

    def repair(epoch):
        calls.append(epoch)
        repair_soft_labels(cache, teacher_run.snapshot, cfg, data, epoch, cpu)

    idx = torch.arange(len(good))
    with caplog.at_level("WARNING", logger="tune_eskd"):
        logits = cached_teacher(cache, h, snap, cfg, cpu, repair=repair)(1, idx, None)
    assert calls == [1] and "recomputing it from the teacher snapshot" in caplog.text
    assert torch.equal(logits, good.float()) and torch.equal(cache.load(h, snap, cfg, 1), good)


# --- unwritable or full storage ----------------------------------------------------------------------------------

@contextmanager
def read_only(path):
    """Make a folder tree unwritable: chmod for a normal user; as root (who ignores modes) chattr +i."""
    path = str(path)
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("running as root without chattr: cannot make a folder read-only")
        done = subprocess.run(["chattr", "-R", "+i", path], capture_output=True, text=True)
        if done.returncode:
            subprocess.run(["chattr", "-R", "-i", path], capture_output=True)
            pytest.skip(f"chattr +i is not supported here: {done.stderr.strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-R", "-i", path], check=True)
    else:
        modes = {}
        for d, dirs, files in os.walk(path):
            for p in [d] + [os.path.join(d, f) for f in files]:
                modes[p] = os.stat(p).st_mode
                os.chmod(p, modes[p] & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes.items():
                os.chmod(p, mode)


SMALL = ["subset=200", "kd_epochs=0", "epochs=1", "student_width=0.25", "seed=0"]  # one CE-only student


@pytest.fixture(scope="module")
def small_finished(tmp_path_factory, ray_session):
    from search_spaces import load_space, parse_overrides
    from tune_eskd.experiment import SweepOptions
    from tune_eskd.pipeline import run_sweep

    storage = tmp_path_factory.mktemp("readonly")
    assert run_sweep(load_space("quick", parse_overrides(SMALL)), SweepOptions(storage=str(storage), name="done")) == 0
    return storage / "done"


def _subcommands():
    from tune_eskd.cli import build_parser

    return next(a for a in build_parser()._actions if a.dest == "command").choices


def test_read_only_experiment_resume_fails_cleanly_and_nothing_changes(small_finished, capsys):
    from tune_eskd.cli import main

    before = tree_digest(small_finished.parent)
    with read_only(small_finished.parent):
        expect_one_line_error(capsys, ["resume", str(small_finished)], "cannot write to experiment")
        assert main(["status", str(small_finished)]) == 0  # reading needs no write access
        assert "students: 1 trials: 1 terminated" in capsys.readouterr().out
        if "results" in _subcommands():  # analysis/: reads the results even where it cannot save its tables
            code = main(["results", str(small_finished)])
            captured = capsys.readouterr()
            assert code == 0 and "Traceback" not in captured.err, captured.err
            assert "note: could not write the tables under" in captured.out, captured.out  # as RELIABILITY.md says
        if "report" in _subcommands():
            code = main(["report", str(small_finished)])
            captured = capsys.readouterr()
            assert code == 2 and len(own_lines(captured.err)) == 1, captured.err
            assert captured.err.startswith("tune-eskd: error: ")
    assert tree_digest(small_finished.parent) == before


def test_storage_under_a_read_only_folder_fails_before_ray_starts(tmp_path, capsys, no_ray):
    parent = tmp_path / "locked"
    parent.mkdir()
    with read_only(parent):
        expect_one_line_error(capsys, sweep_args(parent / "runs", "x", SMALL), "cannot write to storage")
    assert tree_digest(parent) == {"./": None}


def test_full_storage_fails_with_one_line_before_ray_starts(tmp_path, capsys, monkeypatch, no_ray):
    from tune_eskd import record as experiment

    def full(fsys, path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(experiment, "write_bytes", full)
    line = expect_one_line_error(capsys, sweep_args(tmp_path / "runs", "x", SMALL), "cannot write to storage")
    assert "No space left on device" in line
    assert not (tmp_path / "runs").exists()


def test_full_experiment_folder_fails_resume_with_one_line(small_finished, capsys, monkeypatch):
    from tune_eskd import record as experiment

    class FullDisk:
        """A pyarrow filesystem whose new files fail with ENOSPC (reads go through)."""

        def __init__(self, fsys):
            self.fsys = fsys

        def __getattr__(self, name):
            return getattr(self.fsys, name)

        def open_output_stream(self, path, *args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    real = experiment.filesystem
    monkeypatch.setattr(experiment, "filesystem", lambda root: (FullDisk(real(root)[0]), real(root)[1]))
    before = tree_digest(small_finished)
    line = expect_one_line_error(capsys, ["resume", str(small_finished)], "cannot write to experiment")
    assert "No space left on device" in line
    assert tree_digest(small_finished) == before


def test_storage_refusing_writes_with_erofs_or_enospc_fails_report_with_one_line(tmp_path, capsys, small_finished):
    """The CLI's storage-errno row on a real read-only (EROFS) and a real full (ENOSPC) file system."""
    storage = tmp_path / "mnt"
    with small_mount(storage):
        shutil.copytree(small_finished, storage / "s")  # a finished sweep (no report yet) on the small file system
        subprocess.run(["mount", "-o", "remount,ro", str(storage)], check=True)
        try:
            line = expect_one_line_error(capsys, ["report", str(storage / "s")], "the storage refused a write")
            assert "Read-only file system" in line
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(storage)], check=True)
        with open(storage / "filler", "wb", buffering=0) as f:  # fill the file system to its last block
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        line = expect_one_line_error(capsys, ["report", str(storage / "s")], "the storage refused a write")
        assert "No space left on device" in line


def test_snapshot_damaged_during_the_soft_label_stage_ends_with_one_line(tmp_path, teacher_run, ray_session):
    """A snapshot that goes bad after stage 1 checked it (so only a soft-label task meets it): the task's
    SnapshotError reaches the driver as one line, not a RayTaskError traceback."""
    from search_spaces import load_space, parse_overrides
    from tune_eskd.errors import UsageError
    from tune_eskd.experiment import SweepOptions
    from tune_eskd.record import Experiment
    from tune_eskd.pipeline import _load_data, _soft_label_stage
    from tune_eskd.snapshots import SnapshotStore

    from conftest import TEACHER_DATA

    c = teacher_run.cfg  # a space whose one teacher is the session teacher, so its snapshots can stand in
    space = load_space("quick", parse_overrides([
        f"subset={TEACHER_DATA['subset']}", f"batch_size={c.batch_size}", f"teacher_arch={c.model}",
        f"teacher_width={c.width}", f"teacher_epochs={c.epochs}", f"snapshots={list(c.snapshots)}",
        "student_width=0.25", "epochs=1", "kd_epochs=1", "alpha=[0.5, 0.9]"]))
    (teacher,) = space.needed_teachers()
    assert teacher.teacher_hash() == c.teacher_hash()
    exp = Experiment(str(tmp_path), "s")
    store = SnapshotStore(exp.snapshot_root)
    store_teacher_snapshots(store, teacher_run)
    with open(store.path(c.teacher_hash(), 3), "r+b") as f:
        f.truncate(1000)
    with pytest.raises(UsageError) as err:
        _soft_label_stage(exp, space, SweepOptions(storage=str(tmp_path), name="s"), _load_data(space))
    message = str(err.value)
    assert "\n" not in message and "checksum mismatch" in message and "epoch_003.pt" in message, message
