"""ASHA against FIFO on the same student grid, and the orchestration overhead of a sweep.

    python bench/asha_vs_fifo.py                 # synthetic data, a 27-student grid, about 10 minutes

Both arms run the same search space on the same storage; the teachers are trained once beforehand (untimed),
and each arm computes its shared soft labels itself (the cache is cleared before each). Reported per arm: wall
seconds, student trial-epochs spent, the best config on final validation accuracy among students that ran to
the end (overall, and among KD students), and whether both arms found the same ones. Orchestration overhead
per trial: inside the trainable, Ray's time_total_s minus the engine's epoch_seconds (model set-up, checkpoints,
reports); outside it, the student stage's span x concurrent slots minus the trials' time_total_s (scheduling,
actor start and reuse, result handling), both divided by the number of trials.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

import torch

from common import Run, publish, table  # noqa: E402  (bench/common.py puts the repo on sys.path)

GRID = ["epochs=6", "snapshots=[2, 4]", "lr=[0.2, 0.05, 0.01]", "alpha=[0.5, 0.9]", "kd_epochs=[0, 2]"]


def sweep(storage: str, name: str, scheduler: str, log, extra=()) -> float:
    args = [sys.executable, "-m", "tune_eskd.cli", "sweep", "--space", "quick", "--storage", storage, "--name", name,
            "--scheduler", scheduler, "--overwrite", *[x for s in GRID + list(extra) for x in ("--set", s)]]
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def describe(row) -> str:
    if row.kd_epochs == 0:
        return f"CE-only, lr {row.lr}"
    return f"{row.teacher_arch} e{row.snapshot_epoch}, kd {row.kd_epochs}, alpha {row.alpha}, lr {row.lr}"


def best(trials):
    """The best student that ran to the end, by final validation accuracy: overall and among KD students."""
    done = trials[~trials.stopped_by_asha].sort_values("final_val_acc", ascending=False)
    return done.iloc[0], done[done.kd_epochs > 0].iloc[0]


def outside_overhead(epochs, n_trials: int, slots: int) -> float:
    """Seconds per trial the student stage's slots spent outside any trainable."""
    last = epochs.sort_values("epoch").groupby("trial_id").tail(1)
    span = last.timestamp.max() - (last.timestamp - last.time_total_s).min()
    return (span * slots - last.time_total_s.sum()) / n_trials


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/tune-eskd-asha-vs-fifo")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to BENCHMARKS.md")
    a = ap.parse_args()
    from analysis.tables import load

    run = Run(torch.device("cpu"))
    storage = os.path.join(a.workdir, "storage")
    os.makedirs(a.workdir, exist_ok=True)
    log = open(os.path.join(a.workdir, "log.txt"), "w")
    # Untimed warm-up: train the teachers (one short student each, another seed), so both arms time students only.
    sweep(storage, "warmup", "fifo", log, ["epochs=1", "kd_epochs=1", "alpha=0.5", "lr=0.1", "seed=99"])
    rows, found = [], {}
    slots = len(os.sched_getaffinity(0))
    for scheduler in ("fifo", "asha"):
        shutil.rmtree(os.path.join(storage, "soft_labels"), ignore_errors=True)  # each arm pays for its own
        wall = sweep(storage, scheduler, scheduler, log)
        t = load(os.path.join(storage, scheduler), teacher_stats=False)
        top, top_kd = best(t.trials)
        found[scheduler] = (describe(top), describe(top_kd))
        rows.append([scheduler, f"{wall:.0f}", int(t.trials.epochs_run.sum()), int(t.trials.stopped_by_asha.sum()),
                     len(t.trials), f"{describe(top)} ({top.final_val_acc:.4f})",
                     f"{describe(top_kd)} ({top_kd.final_val_acc:.4f})",
                     f"{(t.trials.wall_seconds.sum() - t.epochs.epoch_seconds.sum()) / len(t.trials):.2f}",
                     f"{outside_overhead(t.epochs, len(t.trials), slots):.2f}",
                     f"{t.epochs.epoch_seconds.sum() / len(t.trials):.2f}"])
    body = (f"Grid: the quick preset with `{' '.join(GRID)}` (27 students after CE-only de-duplication), "
            f"{slots} trials at a time.\n\n"
            + table(["scheduler", "sweep wall s", "student trial-epochs", "stopped early", "trials",
                     "best config (final val acc)", "best KD config (final val acc)",
                     "overhead in trainable s/trial", "overhead outside s/trial", "training s/trial"], rows)
            + f"\n\nSame best config: {found['fifo'][0] == found['asha'][0]}; "
              f"same best KD config: {found['fifo'][1] == found['asha'][1]}.")
    publish("asha_vs_fifo", run.block("ASHA against FIFO", body), not a.no_record)


if __name__ == "__main__":
    main()
