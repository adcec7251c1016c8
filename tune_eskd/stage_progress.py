"""Console progress for a sweep stage: one line per finished trial, with counts and the best so far."""
import math
import time

from ray import tune

from .progress import describe


class StageProgress(tune.Callback):
    def __init__(self, stage: str, keys: list[str], metric: str = "val_acc"):
        self.stage, self.keys, self.metric = stage, keys, metric
        self.best, self.best_desc = -math.inf, ""
        self.start = time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if isinstance(value, float) and value > self.best:
            self.best, self.best_desc = value, describe(trial.config, self.keys)

    def _line(self, trials, trial, what: str) -> None:
        counts = {}
        for t in trials:  # Tune calls back before it updates the finishing trial's own status
            status = ("ERROR" if what == "ERRORED" else "TERMINATED") if t is trial else t.status
            counts[status] = counts.get(status, 0) + 1
        done = counts.get("TERMINATED", 0) + counts.get("ERROR", 0)
        best = f"best {self.metric} {self.best:.4f} ({self.best_desc})" if self.best > -math.inf else ""
        print(f"[{self.stage} {time.time() - self.start:5.0f}s] {done}/{len(trials)} done, "
              f"{counts.get('RUNNING', 0)} running, {counts.get('PENDING', 0) + counts.get('PAUSED', 0)} pending, "
              f"{counts.get('ERROR', 0)} errored | {describe(trial.config, self.keys)}: {what} | {best}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        value = last.get(self.metric, float("nan"))
        self._line(trials, trial, f"{self.metric} {value:.4f} at epoch {last.get('epoch', '?')}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trials, trial, "ERRORED")
