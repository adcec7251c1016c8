"""The sweep driver: stage 1 trains each unique teacher once, shared soft labels are computed once per
snapshot, seed and epoch, stage 2 runs the student grid. Each stage is a genuine Ray Tune experiment, so an
interrupted sweep resumes where it stopped (`tune-eskd resume`).

By default the stages run at once (pipelined: see pipelining.py): a student starts as soon as its snapshot is in
the store and its soft labels are cached. `--no-pipeline` runs them one after another (teachers, soft labels,
students), as a comparison."""
import dataclasses
import logging
import os
import time
from contextlib import contextmanager

from .asha import PersistentASHA, best_full_run, no_rung_warning
from .cluster import check_reachable, connect_cluster
from .data import BUILTIN_SOURCES, load_splits
from .errors import UsageError
from .experiment import SweepOptions
from .record import Experiment
from .ray_workers import RUNTIME_ENV
from .housekeeping import driver_record, running_driver
from .gpu_plan import local_gpu_bytes, local_gpu_count, plan_gpus
from .plan import make_plan
from .progress import describe, varying_keys
from .stage_progress import StageProgress
from .trial import StudentTrial
from .trial_record import TrialRecord
from .snapshots import SnapshotStore
from .saved_state import stage_trials

INTERRUPTED = 130


def run_sweep(space, options: SweepOptions, overwrite: bool = False, dry_run: bool = False,
              force: bool = False) -> int:
    """Start a new sweep. Everything is validated before Ray starts or anything is written."""
    options.validate()
    check_reachable(options.address, "start that cluster, or drop --address to run on this machine")
    exp = Experiment(options.storage, options.name)
    if exp.exists() and not overwrite:
        raise UsageError(f"experiment {exp.path} already exists: continue it with `tune-eskd resume {exp.path}`, "
                         f"or pick another --name (--overwrite deletes it)")
    _check_schedule(space, options)
    _check_ecosystem(space, options)
    if dry_run:  # a built-in dataset's size is known without reading it; a file dataset is read (validated)
        data = _load_data(space) if space.values["dataset"] not in BUILTIN_SOURCES else None
        print("\n".join(make_plan(space, options, exp, data).lines()), flush=True)
        return 0
    data = _load_data(space)  # a dataset that cannot be read fails here, before anything is written or deleted
    plan = make_plan(space, options, exp, data)
    print("\n".join(plan.lines()), flush=True)
    plan.check_free_space(options.storage, force)
    if options.address:  # a refused token or an unreachable cluster fails here, before anything is written
        connect_cluster(options.address)  # (a cluster's GPUs are planned once connected, in _run)
    else:
        plan_gpus(space, options, data, local_gpu_count(), local_gpu_bytes())
    if overwrite:
        exp.remove()
    asha = dict(zip(("grace_period", "max_t"), asha_bounds(space, options))) if options.scheduler == "asha" else None
    exp.write_record(space.name, space.values, options.to_record(), asha=asha, data_hash=data.content_hash)
    print(f"experiment: {exp.path}", flush=True)
    with driver_record(exp):  # lets `tune-eskd stop` find this process, and `rm` refuse while it runs
        return _run(exp, space, options, data)


def resume_sweep(path: str, address: str | None = None, local: bool = False) -> int:
    """Continue a sweep on the cluster its record names, or on `address`, or (`local`) on a private local Ray."""
    from search_spaces import build_space

    exp = Experiment.at(path)
    driver = running_driver(exp)
    if driver is not None:  # two drivers would both write the stages' state
        raise UsageError(f"experiment {exp.path} is already running (driver pid {driver['pid']} on {driver['host']}): "
                         f"`tune-eskd stop {exp.path}` stops it")
    record = exp.read_record()
    space = build_space(record["space_name"], record["space"])
    options = SweepOptions.from_record(record, exp.path)
    options.pipeline = record["options"].get("pipeline", False)  # a record from before pipelining ran in stages
    if local or address:
        options.address = address
    check_reachable(options.address, f"start it, or continue elsewhere: `tune-eskd resume {exp.path} "
                                     f"--address HOST:PORT` (another cluster) or `--local` (this machine)")
    options.check_local_resources()  # the record may come from a bigger machine
    exp.check_writable()  # a read-only or full folder fails here, not in a Ray traceback
    print(f"resuming experiment: {exp.path}", flush=True)
    _check_schedule(space, options)  # ASHA with no rung is as useless on resume: say so again
    data = _load_data(space)
    _check_same_data(exp, record, data)
    with driver_record(exp):
        return _run(exp, space, options, data)


def _check_same_data(exp: Experiment, record: dict, data) -> None:
    """The trials of a resumed sweep carry the data hash it started with: files changed since then would fail
    every trial, so refuse in one line. (A record from before data hashes were kept is not checked.)"""
    recorded = record.get("data_hash")
    if recorded is not None and recorded != data.content_hash:
        raise UsageError(f"the dataset files of {exp.path} changed since the sweep started (content hash "
                         f"{recorded[:12]} then, {(data.content_hash or 'none')[:12]} now): restore the original "
                         f"files, or start a new sweep on the new ones (`tune-eskd sweep --name NEW ...`)")


def _check_ecosystem(space, options: SweepOptions) -> None:
    """--search optuna, --mlflow and --wandb need their optional libraries (one line naming the extra); a
    teacher_import must be in the store."""
    from .import_teacher import resolve_import
    from .search import check_search
    from .tracking import check_trackers

    check_search(options.search, space)
    check_trackers(options.mlflow, options.wandb)
    resolve_import(space, Experiment(options.storage, options.name).snapshot_root)


def _check_schedule(space, options: SweepOptions) -> None:
    if options.scheduler != "asha":
        return
    grace, max_t = asha_bounds(space, options)
    if grace > max_t:
        raise UsageError(f"ASHA grace period {grace} exceeds max_t {max_t}: pass --grace-period <= {max_t}")
    warning = no_rung_warning(grace, max_t)
    if warning:
        print(warning, flush=True)


def asha_bounds(space, options: SweepOptions) -> tuple[int, int]:
    """(grace period, max_t). By default ASHA first judges a student right after its KD phase: a KD-then-CE
    student starts slower than a CE-only one, and cutting it inside its KD phase would bias ASHA against KD."""
    max_t = options.max_t or max(space.axis("epochs"))
    grace = options.grace_period or min(space.max_kd_epochs() + 1, max_t)
    return grace, max_t


class _WithoutTunesRestoreHint(logging.Filter):
    """Tune's Ctrl-C warning tells users to call Tuner.restore(...) in Python; the CLI prints `tune-eskd resume`
    instead, which also finishes the other stages."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tuner.restore(" not in record.getMessage()


class _RestoreFailed(Exception):
    """Tuner.restore could not read a stage's saved state; `_fit` names the stage."""


class _NoRestartAfterAFailedRestore(logging.Filter):
    """When Tuner.restore cannot read a stage's saved state, Tune logs "Failed to restore the run state" and
    starts the stage afresh from its pickled Tuner, which holds no param space: trials with an empty config (a
    teacher trial failed with KeyError 'teacher'), or every student again. Stop there instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Failed to restore the run state"):
            cause = record.exc_info[1] if record.exc_info else None
            raise _RestoreFailed(f"{type(cause).__name__}: {cause}")
        return True


def _start_ray(address: str | None) -> bool:
    """Connect to Ray; True when this call started a private local instance (which the sweep then stops)."""
    import ray

    # The legacy output engine honours verbose=0, so StageProgress's lines are the whole console output.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Per-epoch checkpoints with num_to_keep force a state snapshot each epoch, on purpose: don't warn about it.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    for logger, log_filter in (("ray.tune.tune", _WithoutTunesRestoreHint),
                               ("ray.tune.execution.tune_controller", _NoRestartAfterAFailedRestore)):
        log = logging.getLogger(logger)
        if not any(isinstance(f, log_filter) for f in log.filters):
            log.addFilter(log_filter())
    if ray.is_initialized():
        return False
    if address:
        connect_cluster(address)
        return False
    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING,  # private; no dashboard
             runtime_env=RUNTIME_ENV)
    return True


def _load_data(space):
    d = space.values
    data = load_splits(d["dataset"], data_dir=d["data_dir"], val_split=d["val_split"], split_seed=d["split_seed"],
                       subset=d["subset"])
    space.data_hash = data.content_hash  # teacher hashes and soft-label keys then follow the files' content
    return data


def _run(exp: Experiment, space, options: SweepOptions, data) -> int:
    import ray

    started = time.time()
    own_ray = _start_ray(options.address)
    try:
        if options.gpus_per_trial is None:  # on a cluster, or resumed without the flag: ask Ray for the GPUs
            plan_gpus(space, options, data, int(ray.cluster_resources().get("GPU", 0)), local_gpu_bytes())
        if options.pipeline:
            code = _run_pipelined(exp, space, options, data)
        else:
            code = _teacher_stage(exp, space, options, data)
            if code == 0:
                _soft_label_stage(exp, space, options, data)
                code = _student_stage(exp, space, options, data)
    except KeyboardInterrupt:  # Ctrl-C outside Tune's own handler (e.g. during the soft-label stage)
        code = INTERRUPTED
    finally:
        if own_ray:
            ray.shutdown()
    minutes = (time.time() - started) / 60
    if code == INTERRUPTED:
        print(f"\ninterrupted after {minutes:.1f} min; nothing finished is lost. Continue with:\n"
              f"  tune-eskd resume {exp.path}", flush=True)
    elif code == 0:
        print(f"\nsweep finished in {minutes:.1f} min. Results: {exp.path}\n"
              f"  tune-eskd status {exp.path}\n  tune-eskd results {exp.path}\n  tune-eskd report {exp.path}", flush=True)
    return code


def _run_pipelined(exp: Experiment, space, options: SweepOptions, data) -> int:
    """Teachers (a Tuner in a background thread), soft-label tasks (a scheduler thread) and students (a Tuner in
    the main thread, so Tune's Ctrl-C handler covers it) at once; see pipelining.py and gate.py."""
    import threading

    from .pipelining import Interrupted, PipelineState, TeacherWatch, pipeline_running
    from .soft_label_work import SoftLabelWork

    teachers = _teacher_plan(exp, space, options)
    rows = mark_soft_labels(space.trials(), options)
    state = PipelineState(options.max_concurrent, len(teachers.rows) if teachers else 0)
    work = SoftLabelWork(exp, space, options, data, rows, state)
    teacher_code = []

    def train_teachers():
        try:
            teacher_code.append(_train_teachers(exp, options, data, teachers, callbacks=[TeacherWatch()]))
        except Interrupted:
            teacher_code.append(INTERRUPTED)
        except BaseException as exc:  # noqa: BLE001 (re-raised in the main thread)
            state.fail(exc)
        finally:
            with state.lock:
                state.teachers_waiting = state.teachers_live = 0
                state.teachers_done = True
            state.teacher_run_started.set()

    threads = [threading.Thread(target=work.run, name="soft-labels", daemon=True)]
    if teachers:
        threads.append(threading.Thread(target=train_teachers, name="teachers", daemon=True))
    with pipeline_running(state):
        for t in threads:
            t.start()
        try:
            # Two Tune runs set up at once race in Ray's global trainable registry ("dictionary changed size
            # during iteration"): the students' starts once the teachers' is past its set-up.
            while not state.teacher_run_started.wait(0.5) and not state.teachers_done:
                pass
            student_code = _student_stage(exp, space, options, data, rows)
            if student_code == INTERRUPTED:  # Tune saw the Ctrl-C first: pass it on
                state.interrupted.set()
        except BaseException:
            state.interrupted.set()  # stop the teacher run and the soft-label tasks before leaving
            raise
        finally:
            _join(threads, state)
    if state.failure is not None:
        raise state.failure
    if work.computed:
        print(work.summary(), flush=True)
    if state.interrupted.is_set() or INTERRUPTED in (student_code, *teacher_code):
        return INTERRUPTED
    return max([*teacher_code, student_code])


def _join(threads, state) -> None:
    """Wait for the pipeline's threads; a Ctrl-C while waiting (Tune's handler is gone) interrupts them."""
    for t in threads:
        while t.is_alive():
            try:
                t.join(0.5)
            except KeyboardInterrupt:
                state.interrupted.set()


def trial_dirname(trial) -> str:
    """Short trial folders (Ray's default packs the whole config into the name)."""
    return trial.trial_id


def _tune_configs(options: SweepOptions, stage: str, keys: list[str], scheduler=None, max_concurrent=None,
                  callbacks=()):
    from ray import tune

    from trainables.checkpoints import SlimFinishedTrials
    from trainables.divergence import NoRetryOnDivergence

    from .tracking import tracker_callbacks

    tune_config = tune.TuneConfig(metric="val_acc", mode="max", scheduler=scheduler, reuse_actors=True,
                                  max_concurrent_trials=max_concurrent, trial_dirname_creator=trial_dirname)
    run_config = tune.RunConfig(
        name=stage, storage_path=None, verbose=0,
        callbacks=[StageProgress(stage, keys), TrialRecord(), SlimFinishedTrials(options.keep_weights),
                   NoRetryOnDivergence(), *callbacks,
                   *tracker_callbacks(options.mlflow, options.wandb, f"{options.name}/{stage}")],
        # Two, not one: Tune forces a full experiment-state save whenever a trial has written num_to_keep
        # checkpoints since the last save, so num_to_keep=1 rewrites the whole state (about 20 KiB a trial) after
        # every epoch of every trial, a cost that grows with the sweep (BENCHMARKS.md, large sweeps). A finished
        # trial still keeps one slim checkpoint (SlimFinishedTrials).
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=options.max_failures))
    return tune_config, run_config


def _fit(path: str, exp: Experiment, trainable, param_space: dict, options: SweepOptions, stage: str,
         keys: list[str], scheduler=None, fresh: bool = False, search=None, max_concurrent=None, callbacks=()):
    """Run a stage: restore it if it was started before (unless `fresh`), else start it. `search`:
    (search_alg, num_samples) from search.student_search or gate.student_searcher, or None for Ray Tune's grid.
    Tune.restore brings back the callbacks and searcher the stage was started with."""
    from ray import tune
    from trainables.checkpoints import stand_in_for_lost_checkpoints

    from .tune_storage import tune_storage

    fsys, fs_path = tune_storage(path)
    if not fresh and exp.stage_started(path) and tune.Tuner.can_restore(fs_path, storage_filesystem=fsys):
        for line in stand_in_for_lost_checkpoints(path):
            print(f"{stage}: {line}", flush=True)
        tuner = tune.Tuner.restore(fs_path, trainable, resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=fsys)
    else:
        tune_config, run_config = _tune_configs(options, stage, keys, scheduler, max_concurrent, callbacks)
        run_config.storage_filesystem, run_config.storage_path = fsys, os.path.dirname(fs_path)
        if search:  # Tuner.restore brings the searcher back with its saved state
            tune_config.search_alg, tune_config.num_samples = search
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)
    try:
        grid = tuner.fit()
    except _RestoreFailed as exc:
        raise UsageError(f"Ray Tune cannot restore stage {stage} from its saved state in {path} ({exc})",
                         "nothing was changed; a damaged state file there (experiment_state-*, *-state-*) is the "
                         "usual cause: put back a good copy and resume") from None
    # After Ctrl-C, Tune ends the in-memory trials but saves them as unfinished: the saved state is the truth.
    saved = stage_trials(path)
    unfinished = sum(t.status not in ("TERMINATED", "ERROR") for t in saved)
    return grid, unfinished


# Tune lets a custom searcher keep 1 trial pending, and then (seen with reuse_actors) starts no second trial
# while the first runs. The gate releases every ready student (teachers first), so let them all be pending.
PENDING_STUDENTS = 64


@contextmanager
def _pending_trials(limit: int | None):
    """Tune's TUNE_MAX_PENDING_TRIALS_PG while a Tune run sets up (unless the user set it)."""
    if limit is None or "TUNE_MAX_PENDING_TRIALS_PG" in os.environ:
        yield
        return
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(limit)
    try:
        yield
    finally:
        os.environ.pop("TUNE_MAX_PENDING_TRIALS_PG", None)


def _resources(trainable, options: SweepOptions):
    from ray import tune

    return tune.with_resources(trainable, {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial or 0})


@dataclasses.dataclass
class TeacherPlan:
    rows: list[dict]     # the teacher configs stage 1 runs
    fresh: bool          # in a fresh Tune run, not by restoring stage 1 (see _teacher_plan)
    teachers: list       # every teacher the students need (TeacherConfig)


def _teacher_stage(exp: Experiment, space, options: SweepOptions, data) -> int:
    plan = _teacher_plan(exp, space, options)
    return 0 if plan is None else _train_teachers(exp, options, data, plan)


def _teacher_plan(exp: Experiment, space, options: SweepOptions) -> TeacherPlan | None:
    """What stage 1 has to run (None: nothing), after discarding damaged snapshots so that their teachers
    count as pending (and no student or soft-label task ever reads one)."""
    store = SnapshotStore(exp.snapshot_root)
    teachers = space.needed_teachers()
    if not teachers:
        print("stage 1: no student distills from a teacher (all kd_epochs are 0): skipped", flush=True)
        return None
    _discard_damaged_snapshots(store, teachers)
    pending = [t for t in teachers if store.missing(t.teacher_hash(), t.snapshots)]
    saved = _saved_trials(exp.teachers_path) if exp.stage_started(exp.teachers_path) else []
    # A driver killed after a teacher wrote its last snapshot but before Tune marked the trial finished leaves
    # it unfinished in stage 1's state: restore the stage to finish it (from its last checkpoint, so at most
    # its last epoch reruns) rather than skip it, so that every trial ends finished.
    interrupted = [config for status, config in saved if status not in ("TERMINATED", "ERROR")]
    if not pending and not interrupted:
        print(f"stage 1: all {len(teachers)} teachers already have their snapshots in {store.root}: skipped", flush=True)
        return None
    rows = [dataclasses.asdict(t) for t in pending]
    # A teacher this experiment already finished whose snapshots have since gone (damaged and discarded, or
    # deleted) would not be rerun by restoring stage 1 (Tune never restarts a finished trial): train those in a
    # fresh stage-1 run instead, in the same folder (its newer state file supersedes the old one).
    fresh = any(status == "TERMINATED" and config in rows for status, config in saved)
    if fresh:
        print(f"stage 1: retraining {len(pending)} teacher(s) whose snapshots are missing", flush=True)
    elif pending:
        print(f"stage 1: training {len(pending)} of {len(teachers)} teachers", flush=True)
    else:
        print(f"stage 1: finishing {len(interrupted)} teacher trial(s) interrupted after their last snapshot",
              flush=True)
        rows = interrupted
    return TeacherPlan(rows, fresh, teachers)


def _train_teachers(exp: Experiment, options: SweepOptions, data, plan: TeacherPlan, callbacks=()) -> int:
    from ray import tune

    from trainables import train_teacher

    store = SnapshotStore(exp.snapshot_root)
    trainable = _resources(tune.with_parameters(train_teacher, data=data, store_root=store.root,
                                                settings=options.device_settings(),
                                                keep_weights=options.keep_weights), options)
    grid, unfinished = _fit(exp.teachers_path, exp, trainable, {"teacher": tune.grid_search(plan.rows)}, options,
                            "teachers", varying_keys(plan.rows) or ["model"], fresh=plan.fresh,
                            max_concurrent=options.max_concurrent, callbacks=callbacks)
    if unfinished:
        return INTERRUPTED
    failed = [t for t in plan.teachers if store.missing(t.teacher_hash(), t.snapshots)]
    if failed:
        errors = "; ".join(f"{r.config['teacher']['model']}: {error_line(r.error)}" for r in grid if r.error)
        print(f"stage 1 failed for {len(failed)} teacher(s) ({errors}). Their students cannot run; fix the cause "
              f"and `tune-eskd resume {exp.path}` retries them.", flush=True)
        return 1
    return 0


def error_line(error: BaseException) -> str:
    """A trial's error in one line: the trainable's own exception (Ray wraps it in a RayTaskError whose `cause`
    it is), by type and message."""
    cause = getattr(error, "cause", None) or error
    message = str(cause).strip()
    return f"{type(cause).__name__}: {message}" if message else type(cause).__name__


def _discard_damaged_snapshots(store: SnapshotStore, teachers) -> None:
    """Warn about and remove stored snapshots that fail their checksum, so their teachers count as pending and
    are retrained; a damaged snapshot must never be distilled from (or skip its teacher)."""
    for t in teachers:
        for epoch in store.damaged(t.teacher_hash(), t.snapshots):
            print(f"warning: snapshot {store.path(t.teacher_hash(), epoch)} is truncated or corrupted (checksum "
                  f"mismatch): discarding it and retraining its teacher", flush=True)
            store.discard(t.teacher_hash(), epoch)


def _saved_trials(stage_path: str) -> list[tuple[str, dict]]:
    """(status, teacher row) of each trial in stage 1's saved state; empty when it cannot be read."""
    try:
        trials = stage_trials(stage_path)
    except Exception:  # no readable state: nothing to compare with, restore as usual
        return []
    return [(t.status, t.config.get("teacher")) for t in trials]


def mark_soft_labels(trials: list[StudentTrial], options: SweepOptions) -> list[dict]:
    """The rows of `trials` (one per trial: space.trials()), each with "soft_labels": whether it reads shared
    teacher logits (its (snapshot, seed) group has two or more students)."""
    from .soft_label_work import soft_label_groups

    groups = soft_label_groups([t.row() for t in trials])
    shared = lambda t: (t.snapshot_epoch is not None and options.soft_label_cache
                        and len(groups[(t.teacher_hash, t.snapshot_epoch, t.seed)]) > 1)
    return [dataclasses.replace(t, soft_labels=shared(t)).row() for t in trials]


def student_param_space(rows: list[dict]) -> dict:
    """The barrier run's stage-2 param space: one grid row per trial; Ray Tune draws each row's distributions."""
    from ray import tune

    from .gate import with_domains

    return {"trial": tune.grid_search([with_domains(row) for row in rows])}


def _soft_label_stage(exp: Experiment, space, options: SweepOptions, data) -> None:
    """--no-pipeline: compute every shared snapshot x seed's teacher logits, one Ray task per (snapshot, seed,
    epoch), after the teachers and before the students."""
    from .pipelining import PipelineState
    from .soft_label_work import POLL_SECONDS, SoftLabelWork

    state = PipelineState(options.max_concurrent, 0)
    work = SoftLabelWork(exp, space, options, data, mark_soft_labels(space.trials(), options), state)
    if not work.configs:
        return
    try:
        while work.poll():
            time.sleep(POLL_SECONDS)
    finally:
        work.cancel()
    print(work.summary() if work.computed else "soft labels: all shared teacher logits already cached", flush=True)


def _student_stage(exp: Experiment, space, options: SweepOptions, data, rows: list[dict] | None = None) -> int:
    """Stage 2. Pipelined, `rows` come marked and a gate.GatedSearch releases them as they become ready."""
    from ray import tune

    from trainables import train_student

    from .gate import student_searcher
    from .search import student_search

    scheduler, max_t = None, None
    if options.scheduler == "asha":
        grace, max_t = asha_bounds(space, options)
        scheduler = PersistentASHA(time_attr="epoch", max_t=max_t, grace_period=grace,
                                   reduction_factor=options.reduction_factor)
        print(f"stage 2: ASHA on val_acc, grace period {grace} epochs, max_t {max_t}, "
              f"reduction factor {options.reduction_factor:g}", flush=True)
    rows = rows if rows is not None else mark_soft_labels(space.trials(), options)
    print(f"stage 2: {len(rows)} student trials", flush=True)
    trainable = _resources(tune.with_parameters(train_student, data=data, store_root=exp.snapshot_root,
                                                settings=options.device_settings(),
                                                soft_label_root=exp.soft_label_root,
                                                keep_weights=options.keep_weights), options)
    keys = varying_keys(rows, space.distributions()) or ["student_arch"]
    if options.pipeline:  # the gate counts teachers, soft-label tasks and students against --max-concurrent
        search, max_concurrent = student_searcher(options.search, rows, exp.students_path), None
    else:
        search, max_concurrent = student_search(options.search, rows), options.max_concurrent
    param_space = {} if search else student_param_space(rows)  # a searcher hands out every config itself
    with _pending_trials(PENDING_STUDENTS if options.pipeline else None):
        grid, unfinished = _fit(exp.students_path, exp, trainable, param_space, options, "students", keys,
                                scheduler, search=search, max_concurrent=max_concurrent)
    if unfinished:
        return INTERRUPTED
    print(f"stage 2: {grid.num_terminated} finished, {grid.num_errors} errored", flush=True)
    best = best_full_run(grid, max_t)  # never an ASHA-stopped trial, scored at an earlier epoch
    if best is not None:
        print(f"best student (final val_acc): val_acc {best.metrics['val_acc']:.4f} test_acc {best.metrics['test_acc']:.4f} "
              f"at epoch {best.metrics['epoch']} ({describe(best.config, keys)})", flush=True)
    return 0
