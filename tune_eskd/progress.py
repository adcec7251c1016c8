"""Console progress for a sweep stage: one line per finished trial, with counts and the best so far."""
import math
import time

from ray import tune

TEACHER_ONLY = ("teacher_hash", "teacher_arch", "snapshot_epoch", "alpha", "temperature")


def flat_config(config: dict) -> dict:
    """A trial's row ("trial" or "teacher") merged with its sampled keys."""
    row = config.get("trial") or config.get("teacher") or {}
    return {**row, **{k: v for k, v in config.items() if k not in ("trial", "teacher")}}


def varying_keys(rows: list[dict], sampled=()) -> list[str]:
    """The keys that tell trials apart: those whose values differ between rows, plus sampled ones."""
    keys = [k for k in rows[0] if len({repr(r.get(k)) for r in rows}) > 1 and k not in ("teacher_hash", "soft_labels")]
    return keys + [k for k in sampled if k not in keys]


def describe(config: dict, keys: list[str]) -> str:
    """A short summary of a trial's config in terms of the keys that vary in its sweep."""
    row = flat_config(config)
    if row.get("kd_epochs") == 0:
        keys = [k for k in keys if k not in TEACHER_ONLY + ("kd_epochs",)]
        return " ".join(["CE-only", *(_pair(k, row.get(k)) for k in keys)])
    return " ".join(_pair(k, row.get(k)) for k in keys)


def _pair(key: str, value) -> str:
    return f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"


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
