"""The Tune callback that keeps each trial's trial.json (see trial_files.py), so that analysis and
`tune-eskd status` read a trial's status and config from tune-eskd's own file instead of Tune's internal state.

It writes into the trial's folder on the driver (trial.local_path), as Tune's own result.json logger does, so
Tune copies both to the experiment's storage together. A resumed trial is written RUNNING again when it starts,
so its record is never left at the status of the run before.
"""
import json
import os
import tempfile

from ray import tune

from .trial_files import TRIAL_FILE


class TrialRecord(tune.Callback):
    def _write(self, trial, status: str) -> None:
        trial.init_local_path()  # Tune's loggers may run after this callback: the folder may not exist yet
        record = {"trial_id": trial.trial_id, "status": status, "config": trial.config,
                  "num_failures": trial.num_failures}
        # Atomic, but the temporary file is made outside the trial folder: Tune uploads that folder in the
        # background, and a temporary file renamed away mid-upload failed its sync with a traceback.
        fd, tmp = tempfile.mkstemp(prefix="trial-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1, default=str)
        target = os.path.join(trial.local_path, TRIAL_FILE)
        try:
            os.replace(tmp, target)
        except OSError:  # another filesystem than the temporary folder's: write in place (readers skip bad JSON)
            with open(target, "w") as f:
                json.dump(record, f, indent=1, default=str)
            os.remove(tmp)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._write(trial, "RUNNING")

    def on_trial_recover(self, iteration, trials, trial, **info):  # crashed; Tune retries it (num_failures + 1)
        self._write(trial, "PENDING")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write(trial, "TERMINATED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(trial, "ERROR")
