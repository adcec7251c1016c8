"""What the threads of a pipelined sweep share, and how an interrupt reaches both Tune runs.

A pipelined sweep runs in one driver process: the teacher Tuner in a background thread, the soft-label
scheduler (soft_label_work.py) in another, and the student Tuner in the main thread, so that Tune's own Ctrl-C
handler (installed only in the main thread) covers the students. PipelineState is their one shared record:
teachers waiting and running (from TeacherWatch), soft-label tasks waiting and running, live students (from the
student searcher, gate.py), the snapshots that have landed and the soft-label groups that are ready.

Priority: teachers first. While a teacher waits for resources, no soft-label task is launched and no student
released. Otherwise every ready soft-label task and student is handed to Ray at once, and Ray's scheduler places
them as CPUs and GPUs free up: counting slots here instead left cores idle, and releasing students one at a time
kept Tune from handing a finished student's actor to the next (a new worker process each, about 10 s on a loaded
CPU). --max-concurrent bounds teachers, soft-label tasks and students together.
"""
import sys
import threading
import time
from contextlib import contextmanager

from ray import tune

_CURRENT = None  # the PipelineState of the sweep this driver runs (one sweep per driver process)


def current():
    return _CURRENT


@contextmanager
def pipeline_running(state: "PipelineState"):
    """Make `state` what the callbacks and the searcher see (they are unpickled by Tuner.restore, so they find
    it here rather than holding it)."""
    global _CURRENT
    _CURRENT = state
    try:
        yield state
    finally:
        _CURRENT = None


class PipelineState:
    def __init__(self, max_concurrent: int | None, teachers_to_run: int):
        self.lock = threading.Lock()
        self.max_concurrent = max_concurrent
        # Until the teacher Tuner's first step says otherwise, every teacher to train counts as waiting.
        self.teachers_waiting, self.teachers_live = teachers_to_run, 0
        self.teachers_done = teachers_to_run == 0
        self.tasks_live, self.students_live = 0, 0
        self.landed: set[tuple[str, int]] = set()           # (teacher hash, snapshot epoch) in the store
        self.ready_groups: set[tuple[str, int, int]] = set()  # (teacher hash, snapshot, seed): all epochs cached
        self.final_scan = False     # the store was scanned after the teachers ended: nothing more will land
        self.interrupted = threading.Event()
        self.teacher_run_started = threading.Event()  # the teacher Tune run got past its set-up (see pipeline)
        if teachers_to_run == 0:
            self.teacher_run_started.set()
        self.failure: BaseException | None = None

    def _busy(self) -> int:
        return self.teachers_live + self.tasks_live + self.students_live

    def stopping(self) -> bool:
        return self.interrupted.is_set() or self.failure is not None

    def may_start(self) -> bool:
        """Whether a soft-label task may be launched or a student released now (one rule for both: see above)."""
        with self.lock:
            return (not self.stopping() and self.teachers_waiting == 0
                    and (not self.max_concurrent or self._busy() < self.max_concurrent))

    def row_ready(self, row: dict) -> bool:
        """A student row can start: its snapshot is in the store and, if it reads shared soft labels, all of
        its group's epochs are cached. A CE-only row needs neither."""
        if row["snapshot_epoch"] is None:
            return True
        if row.get("soft_labels"):
            return (row["teacher_hash"], row["snapshot_epoch"], row["seed"]) in self.ready_groups
        return (row["teacher_hash"], row["snapshot_epoch"]) in self.landed

    def row_blocked(self, row: dict) -> bool:
        """A row that can never start in this run: its teacher ended without writing its snapshot."""
        return (self.final_scan and row["snapshot_epoch"] is not None
                and (row["teacher_hash"], row["snapshot_epoch"]) not in self.landed)

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.failure is None:
                self.failure = exc


def tune_run_event() -> threading.Event | None:
    """The interrupt event of the ray.tune.run call this code runs under (Ray 2.60 keeps it as a local,
    `experiment_interrupted_event`, of tune.run and sets it from its SIGINT handler); None outside one."""
    frame = sys._getframe(1)
    while frame is not None:
        event = frame.f_locals.get("experiment_interrupted_event") if frame.f_code.co_name == "run" else None
        if isinstance(event, threading.Event):
            return event
        frame = frame.f_back
    return None


class Interrupted(Exception):
    """Raised inside the teacher Tune run when its interrupt event cannot be found (another Ray version)."""


class TeacherWatch(tune.Callback):
    """On the teacher Tuner (background thread): tells PipelineState how many teachers wait and run, and ends
    the teacher run the way Ctrl-C ends a main-thread one (its trials saved as unfinished) once the sweep is
    interrupted. Holds no state itself: Tuner.restore unpickles it."""

    def on_step_begin(self, iteration, trials, **info):
        state = current()
        if state is None:
            return
        state.teacher_run_started.set()
        if not trials:  # before its first trial is added, keep counting every teacher as waiting
            return
        waiting = sum(t.status == "PENDING" for t in trials)
        live = sum(t.status in ("RUNNING", "PAUSED") for t in trials)
        with state.lock:
            state.teachers_waiting, state.teachers_live = waiting, live
        if state.stopping():
            event = tune_run_event()
            if event is None:
                raise Interrupted()
            event.set()
