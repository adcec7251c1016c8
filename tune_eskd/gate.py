"""The student side of a pipelined sweep: a Tune searcher that releases each student trial once its snapshot is
in the store and its shared soft labels are cached, and no teacher waits for resources (pipelining.PipelineState
decides).

- StudentRows (`--search grid`): hands out the marked rows of space.trials() (pipeline.mark_soft_labels), one trial each, drawing any distributions with
  Tune's domains as the grid search does. Returns None while nothing may start, and Searcher.FINISHED once every
  row is out.
- GatedCells (`--search optuna`): search.PerCellOptuna, asked only for cells that may start.
- GatedSearch: the SearchGenerator around either. Whether the search is finished is decided live, never restored:
  a run that ended with rows it could not start (their teacher failed) hands them out after `resume`.

Resume: the saved experiment state is the truth. On its first suggestion in a driver process the searcher reads
the stage's saved trials (ExperimentAnalysis) and takes their rows as handed out, matching each trial to a row by
its trial id (from the searcher's saved state) or else by its config. So a trial Tune recorded is never handed
out twice, and a row whose trial Tune never recorded (the driver died first) is handed out again.
"""
import json
import logging

from ray.tune.search import SearchGenerator, Searcher

from . import pipelining

log = logging.getLogger("tune_eskd")
SAMPLERS = ("uniform", "loguniform", "choice", "randint")


def with_domains(row: dict) -> dict:
    """The row with each distribution {kind: args} as a Ray Tune domain."""
    from ray import tune

    from search_spaces import is_distribution

    samplers = {"uniform": tune.uniform, "loguniform": tune.loguniform, "choice": tune.choice,
                "randint": lambda lo, hi: tune.randint(lo, hi + 1)}  # Tune excludes hi; a space includes it

    def domain(dist: dict):
        (kind, args), = dist.items()
        return samplers[kind](args) if kind == "choice" else samplers[kind](*args)

    return {k: domain(v) if is_distribution(v) else v for k, v in row.items()}


def _draw(row: dict) -> dict:
    from ray.tune.search.sample import Domain

    return {k: v.sample() if isinstance(v, Domain) else v for k, v in with_domains(row).items()}


def _matches(config_row: dict, row: dict) -> bool:
    """A saved trial's row is this space row: equal on every key the row fixes (distributions were drawn)."""
    from search_spaces import is_distribution

    return all(config_row.get(k) == v for k, v in row.items() if not is_distribution(v))


class _Gated(Searcher):
    """Bookkeeping shared by both searchers: the live trials, and the one-time sync with the saved trials."""

    def __init__(self, stage_path: str):
        super().__init__(metric="val_acc", mode="max")
        self.stage_path = stage_path
        self.live: set[str] = set()
        self._synced = False  # per driver process: never saved (see __getstate__)

    def __getstate__(self):
        return {**self.__dict__, "_synced": False}

    def _sync(self) -> None:
        """Once per process, before the first suggestion: take the saved experiment state as the truth."""
        if self._synced:
            return
        self._synced = True
        from .saved_state import stage_trials  # Tune's view: trial.json lags it (see saved_state.py)

        try:
            saved = stage_trials(self.stage_path)
        except Exception:  # noqa: BLE001 (a new stage has no state yet)
            saved = []
        self.live = {t.trial_id for t in saved if t.status != "TERMINATED"}  # restored (errored ones retried)
        self._take(saved)
        self._count()

    def _take(self, saved: list) -> None:
        """Mark the rows of the saved trials as handed out."""

    def _count(self) -> None:
        state = pipelining.current()
        if state is not None:
            with state.lock:
                state.students_live = len(self.live)

    def may_start(self) -> bool:
        state = pipelining.current()
        return state is None or state.may_start()

    def ready(self, row: dict) -> bool:
        state = pipelining.current()
        return state is None or state.row_ready(row)

    def stopped(self, rows_left: list[dict]) -> bool:
        """Nothing more will start in this run: interrupted, failed, or every row left is blocked."""
        state = pipelining.current()
        return state is not None and (state.stopping() or (bool(rows_left) and all(map(state.row_blocked, rows_left))))

    def _started(self, trial_id: str) -> None:
        self.live.add(trial_id)
        self._count()

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.live.discard(trial_id)
        self._count()


class StudentRows(_Gated):
    """One trial per marked row (pipeline.mark_soft_labels), each released when ready."""

    def __init__(self, rows: list[dict], stage_path: str):
        super().__init__(stage_path)
        self.rows = rows
        self.row_of: dict[str, int] = {}  # trial id -> row index

    def _take(self, saved: list) -> None:
        ids = {t.trial_id for t in saved}
        self.row_of = {tid: i for tid, i in self.row_of.items() if tid in ids}  # a trial never recorded: rerun
        taken = set(self.row_of.values())
        for t in saved:
            if t.trial_id in self.row_of:
                continue
            config_row = t.config.get("trial") or {}
            i = next((i for i, row in enumerate(self.rows) if i not in taken and _matches(config_row, row)), None)
            if i is None:
                log.warning("student trial %s matches no row of the search space: left as it is", t.trial_id)
                continue
            self.row_of[t.trial_id] = i
            taken.add(i)

    def _left(self) -> list[int]:
        taken = set(self.row_of.values())
        return [i for i in range(len(self.rows)) if i not in taken]

    def suggest(self, trial_id: str):
        self._sync()
        left = self._left()
        if not left:
            return Searcher.FINISHED
        if not self.may_start():
            return None
        i = next((i for i in left if self.ready(self.rows[i])), None)
        if i is None:
            return None
        self.row_of[trial_id] = i
        self._started(trial_id)
        return {"trial": _draw(self.rows[i])}

    def finished(self) -> bool:
        left = self._left()
        return not left or self.stopped([self.rows[i] for i in left])

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w") as f:
            json.dump({"row_of": self.row_of}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            self.row_of = {tid: int(i) for tid, i in json.load(f)["row_of"].items()}
        self._synced = False


class GatedCells(_Gated):
    """search.PerCellOptuna (one TPE per grid cell), asked only for the cells whose snapshot and soft labels are
    ready; its own state (the studies, each cell's count) is saved and restored with it."""

    def __init__(self, cells, stage_path: str):
        super().__init__(stage_path)
        self.cells = cells

    @property
    def total(self) -> int:
        return self.cells.total

    def suggest(self, trial_id: str):
        self._sync()
        if not self.cells.open_cells():
            return Searcher.FINISHED
        if not self.may_start():
            return None
        config = self.cells.suggest(trial_id, ready=self.ready)
        if config is not None and config != Searcher.FINISHED:
            self._started(trial_id)
        return config

    def finished(self) -> bool:
        left = self.cells.open_cells()
        return not left or self.stopped(left)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.cells.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        super().on_trial_complete(trial_id, result, error)
        self.cells.on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        self.cells.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.cells.restore(checkpoint_path)
        self._synced = False


class GatedSearch(SearchGenerator):
    """Tune's SearchGenerator around a gated searcher, finished exactly when the searcher says so now.

    Tune saves SearchGenerator's own `finished` flag and trial counter and would restore them: a run that ended
    with rows it could not start would then never hand them out on resume. Here neither decides anything. In
    the main thread it also passes a Ctrl-C (Tune's interrupt event) on to the rest of the pipeline, also while
    Tune blocks waiting for the next trial (it polls next_trial once a second, up to 10 minutes)."""

    def __init__(self, searcher: _Gated):
        super().__init__(searcher)

    def next_trial(self):
        self._watch_interrupt()
        return super().next_trial()

    def is_finished(self) -> bool:
        self._watch_interrupt()
        return self.searcher.finished()

    def _watch_interrupt(self) -> None:
        state = pipelining.current()
        if state is not None and not state.interrupted.is_set():
            event = pipelining.tune_run_event()
            if event is not None and event.is_set():
                state.interrupted.set()


def student_searcher(search: str, rows: list[dict], stage_path: str):
    """(GatedSearch, num_samples) for a pipelined student Tuner (its param_space is empty)."""
    if search == "optuna":
        from .search import PerCellOptuna

        searcher = GatedCells(PerCellOptuna(rows), stage_path)
        return GatedSearch(searcher), searcher.total
    return GatedSearch(StudentRows(rows, stage_path)), len(rows)
