"""Stage 2's search algorithm: `--search grid` (Ray Tune's own: every grid row's distributions drawn at random,
num_samples times) or `--search optuna` (Optuna's TPE through Ray Tune's OptunaSearch).

The grid axes stay a grid under Optuna: each grid cell (a teacher x snapshot x seed x every other list-valued
key) gets its own OptunaSearch, with the cell's num_samples trials as its budget. TPE therefore tunes alpha,
temperature, lr and kd_epochs separately inside every cell, and every cell gets the same budget, so comparing
snapshot epochs (the point of an ESKD study) stays fair: one categorical study over the cells would spend its
budget on the best-looking snapshot and compare snapshots tuned unequally, and would tune the seed as if it were
a knob. With ASHA, a stopped trial reports its last validation accuracy to its cell's TPE, as in Ray Tune's usual
TPE + ASHA setup. Suggestions go to the cells in turn, so each cell's TPE has seen its earlier trials finish
wherever the concurrency allows. The searcher's state is saved with the experiment and restored on resume.
"""
import json
import pickle

from ray.tune.search import Searcher

from .errors import UsageError

SEARCHES = ("grid", "optuna")
TPE_STARTUP_DEFAULT = 10  # Optuna's TPESampler default


def require_optuna() -> None:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise UsageError("--search optuna needs Optuna, which is not installed: "
                         "pip install 'tune-eskd[optuna]'") from None


def check_search(search: str, space) -> None:
    """Refuse an unknown --search, a missing Optuna, or Optuna without a distribution to tune, up front."""
    if search not in SEARCHES:
        raise UsageError(f"--search must be one of {', '.join(SEARCHES)}, got {search!r}")
    if search == "optuna":
        require_optuna()
        if not space.distributions():
            raise UsageError(f"--search optuna tunes distribution keys, but search space {space.name} has none: "
                             f"give one, e.g. --set 'alpha={{uniform: [0.1, 0.9]}}', or use --search grid")


def startup_trials(budget: int) -> int:
    """Random trials before TPE models a cell: a quarter of its budget (at least 2, at most Optuna's 10), so a
    cell's TPE gets to work within the small budgets a per-cell grid affords."""
    return max(2, min(TPE_STARTUP_DEFAULT, budget // 4))


def cells_of(rows: list[dict]) -> list[tuple[dict, int]]:
    """(row, budget) per grid cell: trial_rows() repeats a sampling row num_samples times, in order."""
    cells: dict[str, list] = {}
    for row in rows:
        key = json.dumps(row, sort_keys=True, default=str)
        cells.setdefault(key, [row, 0])[1] += 1
    return [(row, n) for row, n in cells.values()]


class PerCellOptuna(Searcher):
    """One Ray Tune OptunaSearch (TPE) per grid cell; a trial's config is {"trial": row with sampled values},
    the same shape as the grid search gives the trainable."""

    def __init__(self, rows: list[dict], metric: str = "val_acc", mode: str = "max", seed: int = 0):
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        from .pipeline import student_param_space

        super().__init__(metric=metric, mode=mode)
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per cell's new in-memory study
        self._cells = []  # [fixed values, OptunaSearch or None (nothing to sample), budget, suggested]
        for i, (row, budget) in enumerate(cells_of(rows)):
            tune_row = student_param_space([row])["trial"]["grid_search"][0]  # distributions as Tune domains
            fixed = {k: v for k, v in tune_row.items() if k not in _sampled(row)}
            domains = {k: tune_row[k] for k in _sampled(row)}
            searcher = None
            if domains:
                sampler = optuna.samplers.TPESampler(seed=seed + i, n_startup_trials=startup_trials(budget))
                searcher = OptunaSearch(space=OptunaSearch.convert_search_space(domains), metric=metric, mode=mode,
                                        sampler=sampler)
            self._cells.append([fixed, searcher, budget, 0])
        self._cell_of: dict[str, int] = {}

    @property
    def total(self) -> int:
        return sum(cell[2] for cell in self._cells)

    def open_cells(self) -> list[dict]:
        """The fixed values of the cells with budget left."""
        return [cell[0] for cell in self._cells if cell[3] < cell[2]]

    def suggest(self, trial_id: str, ready=None):
        """`ready(fixed values) -> bool`: only those cells may suggest now (None while none may)."""
        left = [i for i, cell in enumerate(self._cells) if cell[3] < cell[2]]
        if not left:
            return Searcher.FINISHED
        open_cells = [i for i in left if ready is None or ready(self._cells[i][0])]
        if not open_cells:
            return None
        i = min(open_cells, key=lambda j: (self._cells[j][3] / self._cells[j][2], j))  # round robin by share used
        fixed, searcher, _, _ = self._cells[i]
        sampled = searcher.suggest(trial_id) if searcher else {}
        self._cells[i][3] += 1
        self._cell_of[trial_id] = i
        return {"trial": {**fixed, **sampled}}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        searcher = self._searcher(trial_id)
        if searcher and self.metric in result:
            searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        searcher = self._searcher(trial_id)
        if searcher:
            searcher.on_trial_complete(trial_id, result=result, error=error)

    def _searcher(self, trial_id: str):
        i = self._cell_of.get(trial_id)
        return None if i is None else self._cells[i][1]

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))

    def studies(self) -> list[tuple[dict, object]]:
        """(the cell's fixed values, its Optuna study or None when it samples nothing), in grid order."""
        return [(fixed, searcher._ot_study if searcher else None) for fixed, searcher, _, _ in self._cells]


def _sampled(row: dict) -> list[str]:
    from search_spaces import is_distribution

    return [k for k, v in row.items() if is_distribution(v)]


def student_search(search: str, rows: list[dict]):
    """(search_alg, num_samples) for stage 2's Tuner (its param_space is then empty: the searcher hands out every
    config); None for Ray Tune's own grid search."""
    if search != "optuna":
        return None
    searcher = PerCellOptuna(rows)
    return searcher, searcher.total
