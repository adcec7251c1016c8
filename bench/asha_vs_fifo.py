"""ASHA against FIFO on the same student grid, and the orchestration overhead of a sweep.

    python bench/asha_vs_fifo.py                 # synthetic data, a 27-student grid, a few minutes each arm

Both arms run the same search space on the same storage; the teachers are trained once beforehand (untimed).
Reported per arm: wall seconds, student trial-epochs spent, the best config on final validation accuracy
among students that ran to the end, and whether both arms found the same one. Orchestration overhead per
trial: inside the trainable, Ray's time_total_s minus the engine's epoch_seconds (model set-up, checkpoints,
reports); outside it, the stage's wall time x concurrent slots minus the trials' time_total_s (scheduling,
actor reuse, result handling).
"""
import argparse
import os
import subprocess
import sys
import time

from common import cpu_model, load_average  # noqa: E402  (bench/common.py puts the repo on sys.path)

GRID = ["epochs=6", "snapshots=[2, 4]", "lr=[0.2, 0.05, 0.01]", "alpha=[0.5, 0.9]", "kd_epochs=[0, 2]"]


def sweep(storage: str, name: str, scheduler: str, log, extra=()) -> float:
    args = [sys.executable, "-m", "tune_eskd.cli", "sweep", "--space", "quick", "--storage", storage, "--name", name,
            "--scheduler", scheduler, "--overwrite", *[x for s in GRID + list(extra) for x in ("--set", s)]]
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/tune-eskd-asha-vs-fifo")
    a = ap.parse_args()
    from analysis.tables import load

    storage = os.path.join(a.workdir, "storage")
    os.makedirs(a.workdir, exist_ok=True)
    log = open(os.path.join(a.workdir, "log.txt"), "w")
    # Untimed warm-up: train the teachers (one short student each, another seed), so both arms time students only.
    sweep(storage, "warmup", "fifo", log, ["epochs=1", "kd_epochs=1", "alpha=0.5", "lr=0.1", "seed=99"])
    rows, best = [], {}
    slots = len(os.sched_getaffinity(0))
    for scheduler in ("fifo", "asha"):
        wall = sweep(storage, scheduler, scheduler, log)
        t = load(os.path.join(storage, scheduler), teacher_stats=False)
        trials, epochs = t.trials, t.epochs
        done = trials[~trials.stopped_by_asha]
        top = done.sort_values("final_val_acc", ascending=False).iloc[0]
        keys = ["teacher_arch", "snapshot_epoch", "kd_epochs", "alpha", "lr"]
        best[scheduler] = tuple(str(top[k]) for k in keys)
        inside = (trials.wall_seconds.sum() - epochs.epoch_seconds.sum()) / len(trials)
        rows.append((scheduler, wall, int(trials.epochs_run.sum()), int(trials.stopped_by_asha.sum()), len(trials),
                     ", ".join(f"{k} {v}" for k, v in zip(keys, best[scheduler])), top.final_val_acc,
                     top.final_test_acc, inside, epochs.epoch_seconds.sum() / len(trials)))
    print(f"\nmachine: CPU {cpu_model()}, {os.cpu_count()} cores; {slots} trials at a time; "
          f"load average at the end {load_average()}")
    print(f"grid: quick preset with {' '.join(GRID)}\n")
    print("| scheduler | sweep wall s | student trial-epochs | stopped early | trials | best config (final val acc) "
          "| its val acc | its test acc | overhead in trainable s/trial | training s/trial |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.0f} | {r[2]} | {r[3]} | {r[4]} | {r[5]} | {r[6]:.4f} | {r[7]:.4f} | {r[8]:.2f} | {r[9]:.2f} |")
    print(f"\nsame best config: {best['fifo'] == best['asha']}")


if __name__ == "__main__":
    main()
