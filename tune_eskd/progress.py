"""Console progress for a sweep stage: one line per finished trial, with counts and the best so far."""
import math
import time

from ray import tune


def describe(config: dict) -> str:
    """A short, human summary of a trial's config."""
    row = config.get("trial") or config.get("teacher") or {}
    row = {**row, **{k: v for k, v in config.items() if k not in ("trial", "teacher")}}
    if "teacher" in config:
        return f"{row.get('model')} seed {row.get('seed')}"
    if row.get("snapshot_epoch") is None:
        return f"{row.get('student_arch')} CE-only seed {row.get('seed')}"
    return (f"{row.get('student_arch')} <- {row.get('teacher_arch')}@e{row.get('snapshot_epoch')} "
            f"alpha {row.get('alpha')} T {row.get('temperature')} kd {row.get('kd_epochs')} seed {row.get('seed')}")


class StageProgress(tune.Callback):
    def __init__(self, stage: str, metric: str = "val_acc"):
        self.stage, self.metric = stage, metric
        self.best, self.best_desc = -math.inf, ""
        self.start = time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if isinstance(value, float) and value > self.best:
            self.best, self.best_desc = value, describe(trial.config)

    def _line(self, trials, trial, what: str) -> None:
        counts = {}
        for t in trials:
            counts[t.status] = counts.get(t.status, 0) + 1
        done = counts.get("TERMINATED", 0) + counts.get("ERROR", 0)
        best = f"best {self.metric} {self.best:.4f} ({self.best_desc})" if self.best > -math.inf else ""
        print(f"[{self.stage} {time.time() - self.start:6.0f}s] {done}/{len(trials)} done, "
              f"{counts.get('RUNNING', 0)} running, {counts.get('PENDING', 0) + counts.get('PAUSED', 0)} pending, "
              f"{counts.get('ERROR', 0)} errored | {what}: {describe(trial.config)} | {best}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        epochs = last.get("epoch", "?")
        self._line(trials, trial, f"finished at epoch {epochs} {self.metric} {last.get(self.metric, float('nan')):.4f}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trials, trial, "ERRORED")
