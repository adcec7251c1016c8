"""Cost per trial of a large sweep: 1,000+ tiny students against a 40-trial sweep, in the same run.

    python bench/large_sweep.py                          # 40 and 1000 trials; 15-45 minutes on 2 cores
    python bench/large_sweep.py --trials 40 300 --env TUNE_GLOBAL_CHECKPOINT_S=60
    python bench/large_sweep.py --trials 300 --tune-storage pyarrow whole-file   # what whole-file writes cost

Each arm is a real `run_sweep` of CE-only students (resnet8 at width 0.25, ~300 synthetic training images, one
epoch, one seed each, so there is no teacher stage) on one local Ray instance started here, so the driver being
measured is this process. Per arm: seconds per trial (the span from the first trial's start to the last one's
end / trials; the sweep's wall time adds a fixed start-up), the orchestration part of it (span x concurrent
trials - the trials' own time_total_s, per trial), driver RSS growth, Ray Tune's
experiment-state syncs (count, forced count, total seconds, timed around Tune's own sync method), the seconds
Tune's syncer thread spent copying the staging folder onto the experiment (upload s), the size of
its experiment_state file, and the wall time of `tune-eskd results` and `tune-eskd report` on the finished
experiment. `--env KEY=VALUE` sets a Ray Tune environment setting for every arm (to compare what it buys).
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

from common import Run, publish, table  # noqa: E402  (bench/common.py puts the repo on sys.path)

STUDENT = {"kd_epochs": 0, "student_width": 0.25, "subset": 333, "epochs": 1}  # 300 train, 33 validation images


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class StateSyncTimer:
    """Times Ray Tune's experiment-state syncs by wrapping its own method (no change to what it does)."""

    def __init__(self):
        from ray.tune.execution.experiment_state import _ExperimentCheckpointManager as manager

        self.manager, self.original = manager, manager.sync_up_experiment_state
        self.count = self.forced = 0
        self.seconds = 0.0
        timer = self

        def timed(self_, save_fn, force=False, wait=False):
            forced = force or self_._should_force_sync_up
            before = self_._last_save_time
            start = time.perf_counter()
            try:
                return timer.original(self_, save_fn, force=force, wait=wait)
            finally:
                if self_._last_save_time != before:  # it saved (else throttled by TUNE_GLOBAL_CHECKPOINT_S)
                    timer.count += 1
                    timer.forced += forced
                    timer.seconds += time.perf_counter() - start

        manager.sync_up_experiment_state = timed

        # The copy onto the experiment folder runs in Tune's syncer thread, mostly after the timed call returns
        from ray.train._internal import storage

        upload = storage._upload_to_fs_path

        def timed_upload(*args, **kwargs):
            start = time.perf_counter()
            try:
                return upload(*args, **kwargs)
            finally:
                timer.upload_seconds += time.perf_counter() - start

        storage._upload_to_fs_path = timed_upload
        self.reset()

    def reset(self) -> None:
        self.count = self.forced = 0
        self.seconds = self.upload_seconds = 0.0


def cli_seconds(args: list[str], log) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tune_eskd.cli", *args], check=True, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def arm(storage: str, trials: int, keep_weights: str, timer: StateSyncTimer, log, tune_storage: str) -> dict:
    import tune_eskd.tune_storage as module
    from search_spaces import load_space
    from tune_eskd.experiment import SweepOptions
    from tune_eskd.record import Experiment
    from tune_eskd.pipeline import run_sweep

    space = load_space("quick", {**STUDENT, "seed": list(range(trials))})
    name = f"students-{trials}-{tune_storage}"
    whole_file = module.tune_storage
    if tune_storage == "pyarrow":  # Ray's own choice, what the sweep used before whole-file writes
        module.tune_storage = lambda path: (None, path)
    rss_before = rss_mib()
    timer.reset()
    start = time.perf_counter()
    try:
        assert run_sweep(space, SweepOptions(storage=storage, name=name, keep_weights=keep_weights)) == 0
    finally:
        module.tune_storage = whole_file
    wall = time.perf_counter() - start
    exp = Experiment(storage, name)
    rows = [json.loads(line) for p in glob.glob(f"{exp.students_path}/*/result.json") for line in open(p)]
    assert len(rows) == trials, f"{len(rows)} results for {trials} trials"
    concurrency = os.cpu_count()  # Ray was started with every CPU; a trial takes one
    inside = sum(r["time_total_s"] for r in rows)
    state_files = glob.glob(f"{exp.students_path}/experiment_state-*.json")
    # The stage's span, first trial start to last trial end: the sweep's wall time less its fixed start-up
    span = max(r["timestamp"] for r in rows) - min(r["timestamp"] - r["time_total_s"] for r in rows)
    out = {"trials": trials, "tune_storage": tune_storage, "wall_s": wall, "span_s": span, "per_trial_s": span / trials,
           "orchestration_s": (span * concurrency - inside) / trials,
           "rss_before_mib": rss_before, "rss_growth_mib": rss_mib() - rss_before,
           "syncs": timer.count, "forced_syncs": timer.forced, "sync_s": timer.seconds,
           "upload_s": timer.upload_seconds,
           "state_mib": sum(os.path.getsize(p) for p in state_files) / 2**20}
    out["results_s"] = cli_seconds(["results", exp.path], log)
    out["report_s"] = cli_seconds(["report", exp.path], log)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, nargs="+", default=[40, 1000])
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="a Ray Tune setting, e.g. "
                    "TUNE_GLOBAL_CHECKPOINT_S=60 (repeatable)")
    ap.add_argument("--tune-storage", nargs="+", default=["whole-file"], choices=["whole-file", "pyarrow"],
                    help="the filesystem Tune writes the experiment through: the sweep's whole-file writes, or "
                         "pyarrow's local filesystem (Ray's default); each trial count runs once per choice")
    ap.add_argument("--keep-weights", default="final")
    ap.add_argument("--num-to-keep", type=int, default=None, help="override the sweep's CheckpointConfig("
                    "num_to_keep) (0: None, keep all), to measure what Tune's forced state saves cost")
    ap.add_argument("--storage", default=None, help="default: a temporary folder, deleted at the end")
    ap.add_argument("--no-record", action="store_true")
    a = ap.parse_args()
    for kv in a.env:
        key, _, value = kv.partition("=")
        os.environ[key] = value
    run = Run(torch.device("cpu"))
    import ray
    from ray import tune

    if a.num_to_keep is not None:  # the pipeline builds tune.CheckpointConfig(num_to_keep=1) when a stage starts
        config_class = tune.CheckpointConfig
        tune.CheckpointConfig = lambda **kw: config_class(**{**kw, "num_to_keep": a.num_to_keep or None})

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
    timer = StateSyncTimer()
    storage = a.storage or tempfile.mkdtemp(prefix="large-sweep-")
    os.makedirs(storage, exist_ok=True)
    results = []
    with open(os.path.join(storage, "bench.log"), "a") as log:
        for n in a.trials:
            for choice in a.tune_storage:
                results.append(arm(storage, n, a.keep_weights, timer, log, choice))
            print(json.dumps(results[-1]), flush=True)
    ray.shutdown()
    if not a.storage:
        shutil.rmtree(storage, ignore_errors=True)
    base = results[0]
    rows = [[r["trials"], r["tune_storage"], f"{r['wall_s']:.0f}", f"{r['span_s']:.0f}", f"{r['per_trial_s']:.3f}",
             f"{r['orchestration_s']:.3f} ({r['orchestration_s'] / base['orchestration_s']:.2f}x)",
             f"{r['rss_before_mib']:.0f} + {r['rss_growth_mib']:.0f}",
             f"{r['syncs']} ({r['forced_syncs']} forced), {r['sync_s']:.1f} s", f"{r['upload_s']:.1f}",
             f"{r['state_mib']:.1f}",
             f"{r['results_s']:.1f}", f"{r['report_s']:.1f}"] for r in results]
    keep = "" if a.num_to_keep is None else f"; CheckpointConfig(num_to_keep={a.num_to_keep or None})"
    body = (f"Settings: {', '.join(a.env) or 'Ray Tune defaults'}{keep}; --keep-weights {a.keep_weights}; "
            f"{os.cpu_count()} trials at a time.\n\n"
            + table(["trials", "Tune writes through", "sweep wall s", "trials' span s", "span / trial s", "orchestration s / trial (vs first)", "driver RSS MiB",
                     "state syncs", "upload s", "state file MiB", "results s", "report s"], rows))
    publish("large_sweep", run.block(f"Large sweep, {' vs '.join(str(n) for n in a.trials)} trials", body),
            not a.no_record)


if __name__ == "__main__":
    main()
