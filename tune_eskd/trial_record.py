"""The Tune callback that keeps each trial's trial.json (see trial_files.py), so that analysis and
`tune-eskd status` read a trial's status and config from tune-eskd's own file instead of Tune's internal state.

It writes into the trial's folder on the driver (trial.local_path), as Tune's own result.json logger does, so
Tune copies both to the experiment's storage together. A resumed trial is written RUNNING again when it starts,
so its record is never left at the status of the run before.
"""
from ray import tune

from .blobs import filesystem
from .trial_files import write_trial_record


class TrialRecord(tune.Callback):
    def _write(self, trial, status: str) -> None:
        trial.init_local_path()  # Tune's loggers may run after this callback: the folder may not exist yet
        write_trial_record(*filesystem(trial.local_path), trial.trial_id, status, trial.config, trial.num_failures)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._write(trial, "RUNNING")

    def on_trial_recover(self, iteration, trials, trial, **info):  # crashed; Tune retries it (num_failures + 1)
        self._write(trial, "PENDING")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write(trial, "TERMINATED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(trial, "ERROR")
