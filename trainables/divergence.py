"""A diverged trial (its training loss became NaN or infinite) ends errored at once, without retries.

Training is deterministic, so rerunning a diverged trial from its checkpoint diverges again, the same way. Ray
Tune retries every trial error up to FailureConfig(max_failures) and has no per-exception opt-out: it decides in
the driver, from the trial's own retry budget. So the trainable first reports a marker result (no `epoch`, so
ASHA and the analysis tables skip it), then raises; the driver's `NoRetryOnDivergence` callback sees the marker
before the error arrives (the trainable's report blocks until the driver has processed it) and sets that trial's
budget to 0.
"""
from ray import tune

from tune_eskd.engine import DivergedError

DIVERGED = "diverged"


def run_epoch(trainer) -> dict:
    """trainer.run_epoch(); on divergence, tell the driver that this trial must not be retried, then raise."""
    try:
        return trainer.run_epoch()
    except DivergedError as exc:
        tune.report({"val_acc": float("nan"), DIVERGED: str(exc)})  # Tune requires its metric in every result
        raise


class NoRetryOnDivergence(tune.Callback):
    def on_trial_result(self, iteration, trials, trial, result, **info):
        if DIVERGED in result:
            trial.max_failures = 0
