"""Reference sweep: tune-eskd against the seed's way of running the same student trials.

    python ../shared/data/unpack.py /tmp/c10-5k --format npz --train 5000 --test 1000
    python bench/reference_sweep.py --data npz:/tmp/c10-5k/cifar10.npz

Baseline, as the seed's run_sweep.py did it: one `tune-eskd train-student` process per config, one after
another, each loading the data itself and running its teacher live, with every core (--threads = all CPUs).
tune-eskd: one `tune-eskd sweep` of the same configs (Ray Tune, one CPU per trial, actors reused, the data
in the object store once, shared soft labels). The teacher snapshots are trained once beforehand (untimed)
and used by both arms, so the comparison covers exactly the student trials: same configs, epochs, data and
machine, measured in one run.
"""
import argparse
import glob
import itertools
import json
import os
import subprocess
import sys
import time

import torch
import yaml

from common import Run, publish, table  # noqa: E402  (bench/common.py puts the repo on sys.path)
from search_spaces import load_space  # noqa: E402

TUNE_ESKD = [sys.executable, "-m", "tune_eskd.cli"]


def run(args: list[str], log) -> float:
    start = time.perf_counter()
    subprocess.run(TUNE_ESKD + args, check=True, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def final_test_acc(metrics_path: str) -> float:
    with open(metrics_path) as f:
        return json.loads(f.read().strip().splitlines()[-1])["test_acc"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset, e.g. npz:/tmp/c10-5k/cifar10.npz (5,000 CIFAR-10 images)")
    ap.add_argument("--workdir", default="/tmp/tune-eskd-reference-sweep")
    ap.add_argument("--teacher", default="resnet34")
    ap.add_argument("--teacher-epochs", type=int, default=2)
    ap.add_argument("--teacher-lr", type=float, default=0.02, help="lower than 0.1 so 2 short epochs learn something")
    ap.add_argument("--snapshots", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--student", default="resnet8")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--kd-epochs", type=int, default=2)
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.9])
    ap.add_argument("--temperatures", type=float, nargs="+", default=[2.0, 4.0])
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to BENCHMARKS.md")
    a = ap.parse_args()
    run_info = Run(torch.device("cpu"))

    os.makedirs(a.workdir, exist_ok=True)
    storage = os.path.join(a.workdir, "storage")
    space = {"description": "reference sweep", "dataset": a.data, "teacher_arch": a.teacher,
             "teacher_epochs": a.teacher_epochs, "teacher_lr": a.teacher_lr, "snapshots": a.snapshots, "student_arch": a.student,
             "epochs": a.epochs, "kd_epochs": a.kd_epochs, "alpha": a.alphas, "temperature": a.temperatures, "seed": 0}
    space_file = os.path.join(a.workdir, "space.yaml")
    with open(space_file, "w") as f:
        yaml.safe_dump(space, f)
    configs = list(itertools.product(a.snapshots, a.alphas, a.temperatures))
    log = open(os.path.join(a.workdir, "log.txt"), "w")

    # Untimed: the teacher snapshots both arms distill from, trained by a warm-up sweep of one short student
    # per snapshot (another seed, so the timed sweep can never reuse its soft labels).
    print("training the teacher snapshots (untimed) ...", flush=True)
    run(["sweep", "--space", space_file, "--storage", storage, "--name", "warmup", "--overwrite", "--cpus-per-trial",
         str(len(os.sched_getaffinity(0))),
         "--set", "alpha=0.5", "--set", "temperature=2", "--set", "epochs=1", "--set", "kd_epochs=1",
         "--set", "seed=99"], log)
    (teacher,) = load_space(space_file).needed_teachers()
    teacher_dir = os.path.join(storage, "snapshots", teacher.teacher_hash())

    print(f"tune-eskd sweep of {len(configs)} students ...", flush=True)
    sweep_s = run(["sweep", "--space", space_file, "--storage", storage, "--name", "timed", "--overwrite"], log)

    print(f"baseline: {len(configs)} sequential train-student processes ...", flush=True)
    threads = len(os.sched_getaffinity(0))
    baseline_s, baseline_acc = 0.0, []
    for i, (snap, alpha, temp) in enumerate(configs):
        out = os.path.join(a.workdir, "baseline", f"{i:03d}")
        subprocess.run(["rm", "-rf", out], check=True)
        baseline_s += run(["train-student", "--model", a.student, "--dataset", a.data, "--epochs", str(a.epochs),
                           "--kd-epochs", str(a.kd_epochs), "--alpha", str(alpha), "--temperature", str(temp),
                           "--seed", "0", "--threads", str(threads), "--out", out, "--teacher-snapshot",
                           os.path.join(teacher_dir, f"epoch_{snap:03d}.pt")], log)
        baseline_acc.append(final_test_acc(os.path.join(out, "metrics.jsonl")))

    sweep_acc = [json.loads(open(p).read().strip().splitlines()[-1])["test_acc"]
                 for p in glob.glob(os.path.join(storage, "timed", "students", "*", "result.json"))]
    n = len(configs)
    body = (f"Trials: {n} x ({a.student} <- {a.teacher} snapshots {a.snapshots} of a {a.teacher_epochs}-epoch teacher "
            f"at lr {a.teacher_lr}, alpha {a.alphas}, T {a.temperatures}, {a.epochs} epochs, KD {a.kd_epochs}) on "
            f"{a.data}.\n\n"
            + table(["arm", "wall seconds", "seconds per trial", "mean final test acc"], [
                [f"baseline: sequential processes, live teacher, {threads} threads", f"{baseline_s:.0f}",
                 f"{baseline_s / n:.1f}", f"{sum(baseline_acc) / n:.4f}"],
                ["tune-eskd sweep (Ray start-up included)", f"{sweep_s:.0f}", f"{sweep_s / n:.1f}",
                 f"{sum(sweep_acc) / max(1, len(sweep_acc)):.4f}"]])
            + f"\n\nSpeed-up (baseline / tune-eskd): **{baseline_s / sweep_s:.2f}x**.")
    publish("reference_sweep", run_info.block("Reference sweep", body), not a.no_record)

if __name__ == "__main__":
    main()
