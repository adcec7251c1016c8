"""An experiment's results as pandas tables, written as parquet under EXPERIMENT/tables/.

`load(EXPERIMENT)` reads plain files (no Ray): every student trial folder's trial.json
for its status and config and its result.json for the epochs (tune_eskd.trial_files, which also reads experiments
written before trial.json), and the snapshot store's JSON metadata. It works on a finished, running or interrupted experiment, on a local path or a
URI (s3://...). Rows that a resume repeats are dropped, keeping the last report of each (trial_id, epoch).
Loading again re-reads only the trial folders whose result.json, trial.json or error file changed in size or
modification time since the previous load (tables/manifest.json records them).

The teachers' soft-label statistics come from the validation logits stored beside each snapshot
(tune_eskd.teacher_stats): no torch is needed.
Tables (accuracies are fractions in [0, 1]; epochs are 1-based; an empty cell is NA/NaN; every table ends with an
`experiment` column, the experiment's folder name):

teachers: one row per teacher snapshot
    teacher_hash      str       id of the teacher config (shared snapshot store key)
    teacher_config    str       id of the teacher config without its seed (statistics pool teacher seeds on it)
    arch              category  teacher model, e.g. resnet14
    width             float     channel width multiplier
    seed              Int64     teacher seed
    lr                float     teacher learning rate
    teacher_epochs    Int64     epochs the teacher trains in all
    snapshot_epoch    Int64     epoch of this snapshot
    val_acc, test_acc float     the snapshot's accuracy on the validation / test split
    max_prob_T<t>     float     mean over the validation images of the snapshot's largest softmax(logits / t)
                                probability, for t = 1 and each temperature of the sweep (t=2.5 is written T2_5)
    entropy_T<t>      float     mean entropy (nats) of softmax(logits / t) over the validation images
    snapshot_path     str       the snapshot's weights (.pt)

teacher_epochs: one row per teacher and epoch (the teacher's training curve)
    teacher_hash str; arch category; epoch Int64; phase category; lr, train_loss, train_acc, val_acc, test_acc,
    epoch_seconds, images_per_sec float; is_snapshot bool (a snapshot was saved at this epoch)

trials: one row per student trial
    trial_id          str       Ray Tune trial id
    status            category  TERMINATED | ERROR | RUNNING (unfinished) | PENDING (being retried)
    method            category  "KD" (kd_epochs > 0: KD for kd_epochs epochs, then CE) | "CE-only" (kd_epochs 0)
    teacher_arch      category  teacher model; NA for CE-only trials
    teacher_hash      str       teacher id (joins teachers.teacher_hash); NA for CE-only
    teacher_config    str       teacher config without its seed (joins teachers.teacher_config); NA for CE-only
    teacher_seed      Int64     the teacher's seed; NA for CE-only
    snapshot_epoch    Int64     teacher snapshot the student distills from; NA for CE-only
    kd_epochs         Int64     KD phase length in epochs (0 = CE-only baseline)
    alpha             float     weight of the KD term; NaN for CE-only
    temperature       float     KD temperature; NaN for CE-only
    seed              Int64     student seed (init, data order, augmentation)
    student_arch      category  student model
    student_width     float     student channel width multiplier
    epochs            Int64     epochs the student is configured to train
    lr, ...                     every other key of the trial config ("trial/" prefix dropped; sampled keys too):
                                dataset, subset (Int64), val_split, split_seed, batch_size, momentum,
                                weight_decay, nesterov, schedule, gamma, data_dir, soft_labels
    epochs_run        Int64     last epoch reported (0 when none yet)
    stopped_by_asha   bool      TERMINATED with epochs_run < epochs in an ASHA sweep
    config_complete   bool      every seed of the trial's config ran all its epochs (statistics use only these)
    final_val_acc     float     validation accuracy at epoch epochs_run
    final_test_acc    float     test accuracy at epoch epochs_run
    best_val_acc      float     best validation accuracy over the epochs run
    best_epoch        Int64     epoch of best_val_acc (the earliest if tied)
    best_test_acc     float     test accuracy at best_epoch (chosen on validation, never on test)
    snapshot_val_acc  float     the teacher snapshot's validation accuracy; NaN for CE-only
    snapshot_test_acc float     the teacher snapshot's test accuracy; NaN for CE-only
    wall_seconds      float     Ray's time_total_s at the last epoch (training time, resumes included)
    num_failures      Int64     times the trial crashed and was retried
    trial_dir         str       the trial's folder under EXPERIMENT/students/
    val_images, test_images Int64  images the validation / test accuracy is measured on (read off the accuracies)

epochs: one row per student trial and epoch
    trial_id          str       joins trials.trial_id
    epoch             Int64     1-based student epoch
    phase             category  "kd" (distillation) | "ce" (cross-entropy only)
    lr                float     learning rate during the epoch
    train_loss        float     mean training loss (KD loss in the kd phase)
    train_acc         float     accuracy on the augmented training batches
    val_acc, test_acc float     accuracy on the validation / test split after the epoch
    epoch_seconds     float     wall time of the epoch (training + evaluation)
    images_per_sec    float     training throughput
    node_id           str       Ray node that ran the epoch
    training_iteration, iterations_since_restore, pid, timestamp (Int64); time_total_s, time_this_iter_s,
    time_since_restore (float); done, should_checkpoint (boolean); date, hostname, node_ip,
    checkpoint_dir_name (str): Ray Tune's own fields, as reported
"""
import hashlib
import io
import json
import math
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from tune_eskd.errors import UsageError
from tune_eskd.trial import flat_config
from tune_eskd.blobs import BlobError, filesystem, write_bytes
from tune_eskd.record import Experiment
from tune_eskd.teacher_stats import read_val_logits, soft_label_stats
from tune_eskd.trial_files import (ERROR_FILES, RESULT_FILE, TRIAL_FILE, read_json, read_results, read_trial,
                                   trial_folders)

from . import stats

TABLES_DIR = "tables"
MANIFEST = "manifest.json"
MANIFEST_VERSION = 2  # 2: a folder's stamp covers trial.json and the error files, and its entry holds the status
STAMPED = (RESULT_FILE, TRIAL_FILE, *ERROR_FILES)  # the files whose change makes a load re-read a trial folder
METRIC_ORDER = ["trial_id", "epoch", "phase", "lr", "train_loss", "train_acc", "val_acc", "test_acc",
                "epoch_seconds", "images_per_sec", "node_id"]
EPOCH_INTS = ["epoch", "training_iteration", "iterations_since_restore", "pid", "timestamp"]
EPOCH_BOOLS = ["done", "should_checkpoint"]
CONFIG_ORDER = ["teacher_arch", "teacher_hash", "teacher_config", "teacher_seed", "snapshot_epoch", "kd_epochs", "alpha", "temperature", "seed",
                "student_arch", "student_width", "epochs", "lr"]
TRIAL_INTS = ["snapshot_epoch", "kd_epochs", "seed", "teacher_seed", "val_images", "test_images", "epochs", "subset", "split_seed", "batch_size",
              "epochs_run", "best_epoch", "num_failures"]
TRIAL_FLOATS = ["alpha", "temperature", "student_width", "lr", "val_split", "momentum", "weight_decay", "gamma"]
STATUS = ["TERMINATED", "ERROR", "RUNNING", "PAUSED", "PENDING"]
# Text columns: pandas' own string dtype ("str" from pandas 3, missing values kept as NaN; "string" before).
TEXT = "str" if int(pd.__version__.split(".")[0]) >= 3 else "string"


@dataclass
class Tables:
    """The tables of one experiment (see the module docstring for every column)."""
    path: str
    sweep: dict
    teachers: pd.DataFrame
    trials: pd.DataFrame
    epochs: pd.DataFrame
    teacher_epochs: pd.DataFrame
    notes: list = field(default_factory=list)     # what could not be read or computed, in words
    reread: list = field(default_factory=list)    # student trial folders whose result.json this load read
    sweeps: dict = field(default_factory=dict)    # experiment name -> its sweep.json (several when loaded together)

    @property
    def scheduler(self) -> str:
        return self.sweep.get("options", {}).get("scheduler", "fifo")

    @property
    def temperatures(self) -> list:
        return sweep_temperatures(self.sweep.get("space", {}))


def load(*experiment_paths, write: bool = True, teacher_stats: bool = True) -> Tables:
    """Read the experiment at STORAGE/NAME into tables and (with write=True) save them as parquet under
    STORAGE/NAME/tables/. teacher_stats=False leaves the soft-label statistics out (read from the validation
    logits stored beside each snapshot).

    Several experiments (load(A, B) or load([A, B])) give one set of tables, each row carrying its
    `experiment` (the folder name, or the full path where two names are the same)."""
    paths = [p for arg in experiment_paths for p in ([arg] if isinstance(arg, str) else list(arg))]
    if not paths:
        raise UsageError("name an experiment to load, e.g. load('/path/to/storage/my-study')")
    parts = [_load_one(p, write, teacher_stats) for p in paths]
    if len(parts) == 1:
        return parts[0]
    names = [_experiment_name(t.path) for t in parts]
    if len(set(names)) < len(names):
        names = [t.path for t in parts]
    frames = {}
    for name in ("teachers", "trials", "epochs", "teacher_epochs"):
        frames[name] = _concat([getattr(t, name).assign(experiment=n) for t, n in zip(parts, names)])
    return Tables(" + ".join(t.path for t in parts), parts[0].sweep, **frames,
                  notes=[f"{n}: {note}" for t, n in zip(parts, names) for note in t.notes],
                  reread=[r for t in parts for r in t.reread],
                  sweeps={n: t.sweep for t, n in zip(parts, names)})


def _experiment_name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _concat(frames: list) -> pd.DataFrame:
    """Stack the same table of several experiments, keeping categorical columns categorical."""
    out = pd.concat(frames, ignore_index=True)
    for c in out.columns:
        if any(isinstance(f[c].dtype, pd.CategoricalDtype) for f in frames if c in f) \
                and not isinstance(out[c].dtype, pd.CategoricalDtype):
            out[c] = out[c].astype("category")
    return out


def _load_one(experiment_path: str, write: bool, teacher_stats: bool) -> Tables:
    exp = Experiment.at(experiment_path)
    record = exp.read_record()
    fsys, root = filesystem(exp.path)
    tables_dir = f"{root}/{TABLES_DIR}"
    notes = []
    manifest = read_json(fsys, f"{tables_dir}/{MANIFEST}") or {}
    if manifest.get("version") != MANIFEST_VERSION:
        manifest = {}
    cached_epochs = None
    if manifest:
        cached_epochs = _read_parquet(fsys, f"{tables_dir}/epochs.parquet")
        if cached_epochs is None:
            manifest = {}
        else:  # the experiment column is added after the rows are read: the cache holds rows as read
            cached_epochs = cached_epochs.drop(columns="experiment", errors="ignore")

    stage = _read_stage(fsys, f"{root}/students", manifest.get("students", {}), cached_epochs, notes)
    epochs = _type_epochs(stage.rows)
    hashes = _teacher_hashes(fsys, root, stage)
    snapshots = _read_snapshots(exp, hashes, notes)
    trials = _trials(stage, epochs, record, snapshots)
    teacher_epochs = _teacher_epochs(fsys, exp, hashes, notes)
    teachers = _teachers(snapshots, record, _soft_label_stats(snapshots, record, notes) if teacher_stats else {})
    name = _experiment_name(exp.path)
    teachers, trials, epochs, teacher_epochs = (df.assign(experiment=pd.Series(name, index=df.index, dtype=TEXT))
                                                for df in (teachers, trials, epochs, teacher_epochs))
    tables = Tables(exp.path, record, teachers, trials, epochs, teacher_epochs, notes, stage.reread,
                    {name: record})
    if write:
        try:
            for name in ("teachers", "trials", "epochs", "teacher_epochs"):
                _write_parquet(fsys, f"{tables_dir}/{name}.parquet", getattr(tables, name))
            # The manifest goes last: it vouches for the epochs.parquet written just before it.
            write_bytes(fsys, f"{tables_dir}/{MANIFEST}",
                        json.dumps({"version": MANIFEST_VERSION, "students": stage.manifest}, indent=1).encode())
        except OSError as exc:
            notes.append(f"could not write the tables under {exp.path}/{TABLES_DIR} ({exc}); they were read, not saved")
    return tables


def read_saved(experiment_path: str) -> Tables:
    """The tables as the last `load` saved them (no re-reading of the experiment)."""
    exp = Experiment.at(experiment_path)
    fsys, root = filesystem(exp.path)
    frames = {n: _read_parquet(fsys, f"{root}/{TABLES_DIR}/{n}.parquet")
              for n in ("teachers", "trials", "epochs", "teacher_epochs")}
    missing = [n for n, f in frames.items() if f is None]
    if missing:
        raise UsageError(f"{exp.path} has no saved tables ({', '.join(missing)}): run `tune-eskd results {exp.path}` first")
    record = exp.read_record()
    return Tables(exp.path, record, **frames, sweeps={_experiment_name(exp.path): record})


# ---------------------------------------------------------------------------------------------------------------
# reading a Ray Tune stage from plain files
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class _Stage:
    trials: dict                # trial_id -> {status, config, num_failures, folder}
    rows: list                  # raw epoch rows (dicts) of every trial, deduplicated
    manifest: dict              # folder -> {stamp, trial_id, status, config, num_failures}
    reread: list


def _read_parquet(fsys, path) -> pd.DataFrame | None:
    try:
        with fsys.open_input_file(path) as f:
            return pq.read_table(f).to_pandas()
    except (FileNotFoundError, OSError, pa.ArrowInvalid):
        return None


def _write_parquet(fsys, path: str, df: pd.DataFrame) -> None:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    write_bytes(fsys, path, buf.getvalue())


def _list_dir(fsys, path) -> list:
    try:
        return fsys.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except (FileNotFoundError, OSError):
        return []


def _read_stage(fsys, stage_path: str, old_manifest: dict, cached: pd.DataFrame | None, notes: list) -> _Stage:
    """Every trial folder of the stage: unchanged ones (same stamp as in the manifest) from the manifest and the
    cached epochs, the others re-read (tune_eskd.trial_files.read_trial)."""
    folders = trial_folders(fsys, stage_path)
    infos = fsys.get_file_info([f"{stage_path}/{d}/{name}" for d in folders for name in STAMPED]) if folders else []
    trials, manifest, reread, rows, keep_cached = {}, {}, [], [], set()
    for n, folder in enumerate(folders):
        files = infos[n * len(STAMPED):(n + 1) * len(STAMPED)]
        stamp = [[i.size, i.mtime_ns] if i.type == pafs.FileType.File else None for i in files]
        old = old_manifest.get(folder)
        if old and old.get("stamp") == stamp and old.get("trial_id"):
            entry = old
            keep_cached.add(old["trial_id"])
        else:
            trial = read_trial(fsys, stage_path, folder)
            if trial is None:
                if stamp[0] is not None:  # reports that name no trial (a folder without any is not one yet)
                    notes.append(f"students/{folder}: cannot tell which trial it belongs to; skipped")
                continue
            reread.append(folder)
            entry = {"stamp": stamp, "trial_id": trial.trial_id, "status": trial.status, "config": trial.config,
                     "num_failures": trial.num_failures}
            rows += [{**{k: v for k, v in r.items() if k != "config"}, "trial_id": trial.trial_id}
                     for r in trial.results]
        manifest[folder] = entry
        trials[entry["trial_id"]] = {**entry, "folder": folder}
    if cached is not None and keep_cached and "trial_id" in cached:
        old_rows = cached[cached["trial_id"].isin(keep_cached)]
        rows = old_rows.astype("object").where(old_rows.notna(), None).to_dict("records") + rows
    return _Stage(trials, rows, manifest, reread)


def _missing(v) -> bool:
    return v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _type_epochs(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for c in METRIC_ORDER[:8]:  # trial_id, epoch, phase, lr, losses and accuracies: always there
        if c not in df:
            df[c] = pd.Series([None] * len(df), dtype="object")
    df = df[[c for c in METRIC_ORDER if c in df] + sorted(c for c in df if c not in METRIC_ORDER)]
    for c in EPOCH_INTS:
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce").round().astype("Int64")
    for c in EPOCH_BOOLS:
        if c in df:
            df[c] = df[c].astype("boolean")
    df["phase"] = pd.Categorical(df["phase"] if "phase" in df else [], categories=["kd", "ce"])
    for c in ("lr", "train_loss", "train_acc", "val_acc", "test_acc", "epoch_seconds", "images_per_sec",
              "time_total_s", "time_this_iter_s", "time_since_restore"):
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in df.columns:
        if df[c].dtype == object or pd.api.types.is_string_dtype(df[c].dtype) and not isinstance(df[c].dtype, pd.CategoricalDtype):
            df[c] = df[c].map(lambda v: v if v is None or isinstance(v, str) or _missing(v) else json.dumps(v)).astype(TEXT)
    df = df.drop_duplicates(["trial_id", "epoch"], keep="last")
    return df.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------------------
# the trials table
# ---------------------------------------------------------------------------------------------------------------

def _per_trial(epochs: pd.DataFrame) -> dict:
    """trial_id -> final/best accuracies and epochs, from the (sorted, de-duplicated) epochs table."""
    if epochs.empty:
        return {}
    last = epochs.groupby("trial_id", sort=False).tail(1).set_index("trial_id")
    ranked = epochs.assign(_v=epochs["val_acc"].fillna(-math.inf))
    best = epochs.loc[ranked.groupby("trial_id", sort=False)["_v"].idxmax()].set_index("trial_id")
    wall = last["time_total_s"] if "time_total_s" in last else pd.Series(math.nan, index=last.index)
    frame = pd.DataFrame({
        "epochs_run": last["epoch"].astype("int64"), "final_val_acc": last["val_acc"],
        "final_test_acc": last["test_acc"], "best_val_acc": best["val_acc"], "best_epoch": best["epoch"],
        "best_test_acc": best["test_acc"], "wall_seconds": wall})
    return frame.to_dict("index")


def _trials(stage: _Stage, epochs: pd.DataFrame, record: dict, snapshots: dict) -> pd.DataFrame:
    asha = record.get("options", {}).get("scheduler") == "asha"
    per = _per_trial(epochs)
    rows = []
    for tid, s in sorted(stage.trials.items()):
        row = {"trial_id": tid, **flat_config(s["config"]), "status": s["status"]}
        row.update(per.get(tid) or {"epochs_run": 0})
        row["num_failures"] = s["num_failures"]
        row["trial_dir"] = s["folder"]
        snap = snapshots.get((row.get("teacher_hash"), row.get("snapshot_epoch"))) or {}
        row["snapshot_val_acc"], row["snapshot_test_acc"] = snap.get("val_acc"), snap.get("test_acc")
        if row.get("teacher_hash"):
            row["teacher_seed"] = (snap.get("config") or {}).get("seed")
            row["teacher_config"] = teacher_config_id(snap) if snap else row["teacher_hash"]
        rows.append(row)
    df = pd.DataFrame(rows)
    results = ["epochs_run", "stopped_by_asha", "config_complete", "final_val_acc", "final_test_acc", "best_val_acc", "best_epoch",
               "best_test_acc", "snapshot_val_acc", "snapshot_test_acc", "wall_seconds", "num_failures", "trial_dir"]
    for c in results + CONFIG_ORDER:
        if c not in df and c not in ("stopped_by_asha", "config_complete"):
            df[c] = pd.Series([None] * len(df), dtype="object")
    if "trial_id" not in df:
        df["trial_id"] = pd.Series([], dtype="object")
        df["status"] = pd.Series([], dtype="object")
    for c in TRIAL_INTS:
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce").round().astype("Int64")
    for c in TRIAL_FLOATS + ["final_val_acc", "final_test_acc", "best_val_acc", "best_test_acc",
                             "snapshot_val_acc", "snapshot_test_acc", "wall_seconds"]:
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    df["epochs_run"] = df["epochs_run"].fillna(0)
    df["stopped_by_asha"] = (asha & (df["status"] == "TERMINATED")
                             & (df["epochs_run"] < df["epochs"]).fillna(False)).astype(bool)
    df["method"] = pd.Categorical(np.where(df["kd_epochs"].fillna(0) > 0, "KD", "CE-only"), categories=["KD", "CE-only"])
    known = set(STATUS) | set(df["status"].dropna())
    df["status"] = pd.Categorical(df["status"], categories=[s for s in STATUS if s in known] + sorted(known - set(STATUS)))
    for c in ("teacher_arch", "student_arch"):
        df[c] = df[c].astype("category")
    for c in df.columns:
        if df[c].dtype == object or pd.api.types.is_string_dtype(df[c].dtype) and not isinstance(df[c].dtype, pd.CategoricalDtype):
            values = df[c].dropna()
            if len(values) and all(isinstance(v, bool) for v in values):
                df[c] = df[c].astype("boolean")
            elif all(isinstance(v, str) for v in values):
                df[c] = df[c].astype(TEXT)
            else:
                df[c] = df[c].map(lambda v: v if v is None or _missing(v) else json.dumps(v)).astype(TEXT)
    for split in ("val", "test"):
        df[f"{split}_images"] = _eval_images(df, epochs, f"{split}_acc")
    results += ["val_images", "test_images"]
    # judged once every config column is typed, over the whole sweep (a filtered table keeps the verdict)
    df["config_complete"] = stats.config_complete(df).to_numpy()
    head = ["trial_id", "status", "method"] + CONFIG_ORDER
    rest = [c for c in df.columns if c not in head and c not in results]
    return df[head + rest + results].sort_values("trial_id", kind="stable").reset_index(drop=True)


DATA_KEYS = ["dataset", "subset", "val_split", "split_seed"]


def eval_image_count(values, max_n: int = 100_000) -> int | None:
    """The number of images a set of accuracies was measured on: the smallest N that makes every value a whole
    count out of N (an accuracy is correct / N; stored as float32, hence the tolerance). None when none fits."""
    v = np.unique(np.asarray(pd.Series(values, dtype="float64").dropna(), dtype=float))
    if not len(v):
        return None
    cand = np.arange(1, max_n + 1, dtype=float)
    for x in v:
        counts = cand * x
        cand = cand[np.abs(counts - np.round(counts)) <= 1e-6 + 1e-7 * cand]
        if not len(cand):
            return None
    return int(cand[0])


def _eval_images(trials: pd.DataFrame, epochs: pd.DataFrame, metric: str) -> pd.Series:
    """Per trial, the images of its `metric` split, read off the accuracies every trial of the same data reported."""
    out = pd.Series(pd.NA, index=trials.index, dtype="Int64")
    if epochs.empty or metric not in epochs:
        return out
    keys = [k for k in DATA_KEYS if k in trials]
    data = trials[keys].astype("object").map(repr).agg("|".join, axis=1) if keys else pd.Series("", index=trials.index)
    by_trial = epochs.groupby("trial_id")[metric].apply(list)
    for _, idx in data.groupby(data, sort=False).groups.items():
        values = [v for tid in trials.loc[idx, "trial_id"] for v in by_trial.get(tid, [])]
        n = eval_image_count(values)
        if n is not None:
            out.loc[idx] = n
    return out


def teacher_config_id(snapshot_meta: dict) -> str:
    """A short id of a teacher's config without its seed: the students of teachers that differ only in their
    seed share it, so that statistics can pool teacher seeds."""
    cfg = {k: v for k, v in (snapshot_meta.get("config") or {}).items() if k not in ("seed", "snapshots", "data_dir")}
    cfg["arch"] = snapshot_meta.get("arch")
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------------------------
# teachers: snapshot metadata, training curves, soft-label statistics
# ---------------------------------------------------------------------------------------------------------------

def _teacher_hashes(fsys, exp_root: str, stage: _Stage) -> list:
    """The sweep's teachers: those its student trials name; before any student started, those the teachers
    stage has reported."""
    hashes = {flat_config(s["config"]).get("teacher_hash") for s in stage.trials.values()}
    if not any(hashes):
        for info in _list_dir(fsys, f"{exp_root}/teachers"):
            if info.type == pafs.FileType.Directory:
                hashes |= {r.get("teacher_hash") for r in read_results(fsys, f"{info.path}/result.json")}
    return sorted(h for h in hashes if h)


def _read_snapshots(exp: Experiment, hashes: list, notes: list) -> dict:
    """(teacher_hash, epoch) -> snapshot metadata (+ "path"), for every teacher of the sweep."""
    fsys, root = filesystem(exp.snapshot_root)
    out = {}
    for h in hashes:
        for info in _list_dir(fsys, f"{root}/{h}"):
            m = re.fullmatch(r"epoch_(\d+)\.json", info.base_name)
            if not m:
                continue
            meta = read_json(fsys, info.path)
            if meta is None:
                notes.append(f"snapshot metadata {exp.snapshot_root}/{h}/{info.base_name} is unreadable; skipped")
                continue
            meta["path"] = f"{exp.snapshot_root}/{h}/epoch_{int(m.group(1)):03d}.pt"
            out[(h, int(m.group(1)))] = meta
    return out


def _teacher_epochs(fsys_exp, exp: Experiment, hashes: list, notes: list) -> pd.DataFrame:
    """Each teacher's per-epoch curve: its teacher.json, or the teachers stage's reports while it trains."""
    fsys, root = filesystem(exp.snapshot_root)
    rows, missing = [], []
    for h in hashes:
        rec = read_json(fsys, f"{root}/{h}/teacher.json")
        if rec is None:
            missing.append(h)
            continue
        arch = rec.get("config", {}).get("model")
        snaps = set(rec.get("config", {}).get("snapshots") or [])
        for m in rec.get("history", []):
            rows.append({"teacher_hash": h, "arch": arch, **m, "is_snapshot": m.get("epoch") in snaps})
    if missing:  # still training (teacher.json is written at the end): use the teachers stage's reports
        _, exp_root = filesystem(exp.path)
        stage = f"{exp_root}/teachers"
        for info in _list_dir(fsys_exp, stage):
            if info.type != pafs.FileType.Directory:
                continue
            found = read_results(fsys_exp, f"{info.path}/result.json")
            if not found or found[-1].get("teacher_hash") not in missing:
                continue
            cfg = (found[-1].get("config") or {}).get("teacher", {})
            for r in found:
                m = {k: v for k, v in r.items() if k in ("epoch", "phase", "lr", "train_loss", "train_acc",
                                                          "val_acc", "test_acc", "epoch_seconds", "images_per_sec")}
                rows.append({"teacher_hash": r["teacher_hash"], "arch": cfg.get("model"), **m,
                             "is_snapshot": m.get("epoch") in set(cfg.get("snapshots") or [])})
    cols = ["teacher_hash", "arch", "epoch", "phase", "lr", "train_loss", "train_acc", "val_acc", "test_acc",
            "epoch_seconds", "images_per_sec", "is_snapshot"]
    df = pd.DataFrame(rows, columns=cols)
    df["teacher_hash"] = df["teacher_hash"].astype(TEXT)
    df["arch"] = df["arch"].astype("category")
    df["epoch"] = pd.to_numeric(df["epoch"], errors="coerce").astype("Int64")
    df["phase"] = pd.Categorical(df["phase"], categories=["kd", "ce"])
    for c in cols[4:-1]:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    df["is_snapshot"] = df["is_snapshot"].astype(bool)
    return df.drop_duplicates(["teacher_hash", "epoch"], keep="last").sort_values(
        ["teacher_hash", "epoch"], kind="stable").reset_index(drop=True)


def sweep_temperatures(space: dict) -> list[float]:
    """1 (the plain softmax) and every temperature the sweep uses (a distribution: its bounds or choices)."""
    v = space.get("temperature", 4.0)
    if isinstance(v, dict) and len(v) == 1:
        (kind, args), = v.items()
        values = list(args) if kind == "choice" else [args[0], args[-1]]
    else:
        values = v if isinstance(v, list) else [v]
    out = {1.0}
    for t in values:
        try:
            if float(t) > 0:
                out.add(float(t))
        except (TypeError, ValueError):
            pass
    return sorted(out)


def temperature_label(t: float) -> str:
    """4.0 -> "4", 2.5 -> "2_5" (column-name safe)."""
    return f"{t:g}".replace(".", "_").replace("-", "m")


def _soft_label_stats(snapshots: dict, record: dict, notes: list) -> dict:
    """(teacher_hash, epoch) -> {temperature label: {max_prob, entropy}} at every sweep temperature, from the
    validation logits stored beside each snapshot. A snapshot without them gets NaN statistics and a note."""
    temps = sweep_temperatures(record.get("space", {}))
    out, lacking = {}, []
    for (h, e), meta in sorted(snapshots.items()):
        try:
            logits = read_val_logits(meta["path"], meta)
        except (BlobError, OSError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, BlobError) else exc
            notes.append(f"teacher {h} snapshot e{e}: its validation logits are unusable ({reason}); "
                         f"its soft-label statistics are left empty")
            continue
        if logits is None:
            lacking.append(f"{h} e{e}")
            continue
        out[(h, e)] = {temperature_label(t): soft_label_stats(logits, t) for t in temps}
    if lacking:
        notes.append(f"teacher soft-label statistics are empty for {len(lacking)} snapshot(s) ({', '.join(lacking)}): "
                     f"they were saved (or imported) before tune-eskd stored validation logits beside snapshots; "
                     f"retrain those teachers to get them")
    return out


def _teachers(snapshots: dict, record: dict, stats: dict) -> pd.DataFrame:
    temps = sweep_temperatures(record.get("space", {}))
    rows = []
    for (h, e), meta in sorted(snapshots.items()):
        cfg = meta.get("config", {})
        row = {"teacher_hash": h, "teacher_config": teacher_config_id(meta), "arch": meta.get("arch"),
               "width": meta.get("width"), "seed": cfg.get("seed"), "lr": cfg.get("lr"), "teacher_epochs": cfg.get("epochs"), "snapshot_epoch": e,
               "val_acc": meta.get("val_acc"), "test_acc": meta.get("test_acc")}
        cached = stats.get((h, e), {})
        for t in temps:
            s = cached.get(temperature_label(t), {})
            row[f"max_prob_T{temperature_label(t)}"] = s.get("max_prob", math.nan)
        for t in temps:
            s = cached.get(temperature_label(t), {})
            row[f"entropy_T{temperature_label(t)}"] = s.get("entropy", math.nan)
        row["snapshot_path"] = meta["path"]
        rows.append(row)
    cols = ["teacher_hash", "teacher_config", "arch", "width", "seed", "lr", "teacher_epochs", "snapshot_epoch",
            "val_acc", "test_acc",
            *[f"max_prob_T{temperature_label(t)}" for t in temps], *[f"entropy_T{temperature_label(t)}" for t in temps],
            "snapshot_path"]
    df = pd.DataFrame(rows, columns=cols)
    df["teacher_hash"] = df["teacher_hash"].astype(TEXT)
    df["teacher_config"] = df["teacher_config"].astype(TEXT)
    df["snapshot_path"] = df["snapshot_path"].astype(TEXT)
    df["arch"] = df["arch"].astype("category")
    for c in ("seed", "teacher_epochs", "snapshot_epoch"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    for c in cols[8:-1] + ["width", "lr"]:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    return df
