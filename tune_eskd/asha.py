"""ASHA for stage 2: Ray Tune's ASHAScheduler with rung records that survive a resume, the check that its
settings leave it a rung, and the pick of the best student among those it did not stop.

Ray Tune saves no scheduler state with an experiment (ray-project/ray#30838): a restored ASHA starts with empty
rungs, so the first trial to reach a rung after a resume is compared with nobody and let through. PersistentASHA
writes its records (each trial's metric at each rung it reached, and the epoch at which a rung stopped a trial)
to STAGE/asha_rungs.json after every decision that changes them, atomically, and reads them back when a restored
stage adds its first trial. A trial that reruns an epoch it was already judged at (from its checkpoint, after a
kill) gets the decision it got the first time. So, given the same order of results, an interrupted and resumed
sweep stops exactly the trials an uninterrupted one stops.
"""
import json
import math

from pyarrow import fs as pafs
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from .progress import flat_config
from .blobs import read_bytes, write_bytes

RUNG_FILE = "asha_rungs.json"


class PersistentASHA(ASHAScheduler):
    """ASHAScheduler (one bracket) whose rung records are saved with the experiment and restored with it."""

    def __init__(self, time_attr: str, max_t: int, grace_period: int, reduction_factor: float):
        super().__init__(time_attr=time_attr, max_t=max_t, grace_period=grace_period,
                         reduction_factor=reduction_factor, brackets=1)
        self._stopped_at: dict[str, float] = {}  # trial id -> the time_attr value at which a rung stopped it
        self._rung_file = None                   # (filesystem, path): known when the first trial is added

    @property
    def _rungs(self) -> list:
        """[(milestone, {trial id: signed metric})], highest milestone first (Ray's bracket bookkeeping)."""
        return self._brackets[0]._rungs

    def state(self) -> dict:
        return {"rungs": [[milestone, recorded] for milestone, recorded in self._rungs],
                "stopped_at": self._stopped_at}

    def load_state(self, state: dict) -> None:
        saved = [milestone for milestone, _ in state["rungs"]]
        if saved != [milestone for milestone, _ in self._rungs]:
            raise ValueError(f"ASHA rung records for milestones {saved} do not fit this scheduler's "
                             f"{[m for m, _ in self._rungs]}")
        for (_, recorded), (_, saved_records) in zip(self._rungs, state["rungs"]):
            recorded.clear()
            recorded.update(saved_records)
        self._stopped_at = dict(state["stopped_at"])

    def on_trial_add(self, tune_controller, trial):
        if self._rung_file is None:
            storage = trial.storage
            self._rung_file = (storage.storage_filesystem, f"{storage.experiment_fs_path}/{RUNG_FILE}")
            self._load()
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        stopped = self._stopped_at.get(trial.trial_id)
        if stopped is not None and result.get(self._time_attr, -math.inf) >= stopped:
            return TrialScheduler.STOP  # the decision this epoch got before the driver was killed
        before = self._size()
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and result.get(self._time_attr, math.inf) < self._max_t:
            self._stopped_at[trial.trial_id] = result[self._time_attr]
        self._save_if_changed(before)
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict):
        before = self._size()
        super().on_trial_complete(tune_controller, trial, result)
        self._save_if_changed(before)

    def _size(self) -> int:
        """Records are only ever added (Ray's rungs never forget or change one), so a count tells a change."""
        return sum(len(recorded) for _, recorded in self._rungs) + len(self._stopped_at)

    def _save_if_changed(self, before: int) -> None:
        if self._size() != before and self._rung_file is not None:
            fsys, path = self._rung_file
            write_bytes(fsys, path, json.dumps(self.state()).encode())

    def _load(self) -> None:
        fsys, path = self._rung_file
        if fsys.get_file_info(path).type == pafs.FileType.NotFound:
            return
        try:
            self.load_state(json.loads(read_bytes(fsys, path)))
        except (ValueError, KeyError, TypeError) as exc:  # written atomically: only outside damage gets here
            print(f"warning: ASHA's rung records {path} are unreadable ({exc}): ASHA goes on with empty rungs, "
                  f"so it may let through trials it would have stopped", flush=True)


def no_rung_warning(grace: int, max_t: int) -> str | None:
    """One line when ASHA's settings leave it no rung before max_t (where every trial ends anyway)."""
    if grace < max_t:
        return None
    return (f"warning: ASHA's grace period {grace} equals max_t {max_t}, so it has no rung before the last epoch "
            f"and cannot stop any trial: pass --grace-period below {max_t}, or use more epochs than the longest "
            f"KD phase + 1")


def ran_all_epochs(metrics: dict, config: dict, max_t: int | None = None) -> bool:
    """Whether a student trained all its epochs (up to ASHA's max_t), i.e. no rung stopped it early."""
    epochs = flat_config(config)["epochs"]
    return metrics.get("epoch") == min(epochs, max_t or epochs)


def best_full_run(results, max_t: int | None = None):
    """The result with the highest final val_acc among trials that ran all their epochs, or None. A trial that
    ASHA stopped is scored at an earlier epoch, so it is not comparable with the others."""
    full = [r for r in results if r.error is None and r.metrics and ran_all_epochs(r.metrics, r.config, max_t)
            and not math.isnan(r.metrics.get("val_acc", math.nan))]
    return max(full, key=lambda r: r.metrics["val_acc"], default=None)
