"""A Tune stage's trials, read from their folders: tune-eskd's own trial.json and Tune's public per-trial files.
No Ray, no torch: analysis and `tune-eskd status` read a stage through this module.

    STAGE/<trial id>/trial.json    {"trial_id", "status", "config", "num_failures"}: written by the sweep
                                   (trial_record.TrialRecord) when the trial starts (RUNNING), is retried after a
                                   crash (PENDING), finishes (TERMINATED) or fails for good (ERROR)
    STAGE/<trial id>/params.json   the trial's config (Tune)
    STAGE/<trial id>/result.json   one JSON line per report (Tune)
    STAGE/<trial id>/error.txt     the trial's error, once it failed (Tune; also error.pkl)

An experiment written before trial.json existed is read from the other files: the config from params.json, the
status from result.json (a `done` report, or a report of the last configured epoch: TERMINATED; Tune marks the
last report `done` only sometimes), else from an error file (ERROR), else unfinished (RUNNING). A trial whose driver was killed keeps RUNNING in trial.json: unfinished either way. A trial Tune has
added but not started has no folder yet, so it is not listed here.
"""
import json
import re
from dataclasses import dataclass, field

from pyarrow import fs as pafs

from .blobs import filesystem, read_bytes
from .trial import flat_config

TRIAL_FILE = "trial.json"
PARAMS_FILE = "params.json"
RESULT_FILE = "result.json"
ERROR_FILES = ("error.txt", "error.pkl")
UNFINISHED = "RUNNING"  # what a trial without a final report or error reads as
TRIAL_ID = re.compile(r"([0-9a-f]{5}_\d{5})")  # a grid trial's id, inside a folder name from before trial_dirname


@dataclass
class StageTrial:
    trial_id: str
    status: str
    config: dict
    num_failures: int
    folder: str                                    # the folder name under the stage
    results: list = field(default_factory=list)    # result.json rows, one per epoch (see read_results)

    @property
    def last_result(self) -> dict:
        return self.results[-1] if self.results else {}


def read_json(fsys: pafs.FileSystem, path: str):
    """A JSON file's content; None when it is missing or unreadable."""
    try:
        return json.loads(read_bytes(fsys, path))
    except (FileNotFoundError, OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def read_trial_record(fsys: pafs.FileSystem, folder: str) -> dict | None:
    """FOLDER/trial.json when present and well formed, else None."""
    record = read_json(fsys, f"{folder}/{TRIAL_FILE}")
    if not isinstance(record, dict) or not isinstance(record.get("trial_id"), str) \
            or not isinstance(record.get("status"), str) or not isinstance(record.get("config"), dict):
        return None
    return record


def read_results(fsys: pafs.FileSystem, path: str) -> list[dict]:
    """The JSON lines of a result.json (a line cut off by a running writer is skipped), de-duplicated on
    epoch keeping the last report (a resumed trial repeats the epochs after its checkpoint)."""
    try:
        text = read_bytes(fsys, path).decode(errors="replace")
    except (FileNotFoundError, OSError):
        return []
    by_epoch = {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(row, dict) or row.get("epoch") is None:
            continue
        by_epoch.pop(row["epoch"], None)  # keep the last, in report order
        by_epoch[row["epoch"]] = row
    return sorted(by_epoch.values(), key=lambda r: r["epoch"])


def has_error_file(fsys: pafs.FileSystem, folder: str) -> bool:
    infos = fsys.get_file_info([f"{folder}/{name}" for name in ERROR_FILES])
    return any(i.type == pafs.FileType.File for i in infos)


def derived_status(config: dict, results: list[dict], errored: bool) -> str:
    """The status of a trial without trial.json: TERMINATED after a `done` report or one of its last configured
    epoch, ERROR with an error file, else unfinished."""
    last = results[-1] if results else {}
    epochs = flat_config(config).get("epochs")
    if last.get("done") or (isinstance(epochs, int) and epochs > 0 and (last.get("epoch") or 0) >= epochs):
        return "TERMINATED"
    return "ERROR" if errored else UNFINISHED


def trial_folders(fsys: pafs.FileSystem, stage_path: str) -> list[str]:
    """The folder names under a stage (one per trial Tune started); empty when the stage does not exist."""
    try:
        infos = fsys.get_file_info(pafs.FileSelector(stage_path, allow_not_found=True))
    except OSError:
        return []
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def read_trial(fsys: pafs.FileSystem, stage_path: str, folder: str) -> StageTrial | None:
    """One trial folder as a StageTrial; None for a folder that names no trial (no trial.json, no reports and
    no params.json)."""
    path = f"{stage_path}/{folder}"
    results = read_results(fsys, f"{path}/{RESULT_FILE}")
    record = read_trial_record(fsys, path)
    if record is not None:
        return StageTrial(record["trial_id"], record["status"], record["config"],
                          int(record.get("num_failures") or 0), folder, results)
    config = read_json(fsys, f"{path}/{PARAMS_FILE}")
    if not results and not isinstance(config, dict):
        return None
    named = TRIAL_ID.search(folder)  # else the folder is named by the id itself (pipeline.trial_dirname)
    trial_id = (results[-1].get("trial_id") if results else None) or (named.group(1) if named else folder)
    if not isinstance(config, dict):
        config = results[-1].get("config") or {}
    return StageTrial(trial_id, derived_status(config, results, has_error_file(fsys, path)), config, 0, folder,
                      results)


def stage_trials(stage_path: str) -> list[StageTrial]:
    """Every trial of a stage (a local path or URI) that has a folder, by folder name."""
    fsys, root = filesystem(stage_path)
    trials = (read_trial(fsys, root, folder) for folder in trial_folders(fsys, root))
    return [t for t in trials if t is not None]
