"""The checks of a first GPU run, in one process, within a time budget; bench/gpu_check.sh runs this.

1. throughput of every model (training in the engine's precision; inference float32 and bf16);
2. engine's images_per_sec against a synchronized wall clock around whole epochs;
3. the quick sweep packed 4 trials per GPU (--gpus-per-trial 0.25), with each trial's peak memory against the
   per-trial estimate that the packing check uses;
4. one seed-eskd student (ResNet-18 from a ResNet-34 snapshot, alpha 0.9, T 4) against the soft-label cache and
   against a live teacher, with float32 and bf16 teacher passes;
5. --deterministic reruns: two runs with the switch must be bit-identical (and two without it, for comparison);
6. with --cifar NPZ (real CIFAR-10 unpacked by ../shared/data/unpack.py --format npz): seed-eskd cut to one seed,
   packed 4 trials per GPU, with its per-trial test accuracies and wall time.

Every step records its result or its one-line failure; a step that would start past the budget is skipped and
says so. All of it goes into one BENCHMARKS.md section. Usage: bash bench/gpu_check.sh [--budget-s 450]
[--only throughput,sweep,...] [--cifar PATH/cifar10.npz]
"""
import argparse
import dataclasses
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from types import SimpleNamespace

import torch

import common  # noqa: F401  (puts the checkout on sys.path)
from common import ROOT, Run, publish, table
from tune_eskd import gpu
from tune_eskd.config import StudentConfig, TeacherConfig
from tune_eskd.data import load_splits
from tune_eskd.engine import Images, Trainer
from tune_eskd.models import MODELS


def without_eval(data):
    """Time training only: empty validation and test sets."""
    return dataclasses.replace(data, val_x=data.val_x[:0], val_y=data.val_y[:0], test_x=data.test_x[:0],
                               test_y=data.test_y[:0])


def check_throughput(device, budget) -> str:
    import throughput

    data = load_splits("synthetic", val_split=0.0)
    images = Images(data.train_x, data.train_y, data.mean, data.std, device)
    rows = []
    for name in MODELS:
        out = {}
        for infer in gpu.TEACHER_PRECISIONS:
            args = SimpleNamespace(batches=30, seconds=min(1.5, budget()), batch_size=128, infer_batch_size=128,
                                   infer_precision=infer)
            out[infer] = throughput.measure(name, images, data.num_classes, args, device)
        rows.append([name, f"{out['float32']['params_m']:.2f}", f"{out['float32']['train']:.0f}",
                     f"{out['float32']['infer']:.0f}", f"{out['bf16']['infer']:.0f}"])
    precision = gpu.training_precision(device.type, gpu.capability(device))
    return (f"Training in {precision} autocast, channels_last, cudnn.benchmark; batch 128; up to 30 timed batches "
            f"or 1.5 s a measurement.\n\n"
            + table(["model", "params (M)", "train img/s", "inference img/s float32", "inference img/s bf16"], rows))


def check_clock(device, budget) -> str:
    data = without_eval(load_splits("synthetic", subset=5000, val_split=0.0))
    rows = []
    for name in ("resnet8", "resnet18"):
        trainer = Trainer(TeacherConfig(model=name, epochs=4, batch_size=128, subset=5000, val_split=0.0), data,
                          device)
        for _ in range(trainer.cfg.epochs):
            gpu.synchronize(device)
            start = time.perf_counter()
            m = trainer.run_epoch()
            gpu.synchronize(device)
            wall = time.perf_counter() - start
            engine_s = len(trainer.train) / m["images_per_sec"]
            rows.append([name, m["epoch"], f"{engine_s:.3f}", f"{wall:.3f}", f"{engine_s / wall:.3f}"])
    return ("Each epoch of a 5000-image teacher, timed by the engine (images_per_sec) and by a wall clock with "
            "torch.cuda.synchronize() before and after; the engine's share should be close to 1 (its clock leaves "
            "out only the epoch's bookkeeping). Epoch 1 includes cuDNN's autotuning.\n\n"
            + table(["model", "epoch", "engine s", "synchronized wall s", "engine / wall"], rows))


def check_packed_sweep(device, budget) -> str:
    try:
        import ray  # noqa: F401
    except ImportError:
        return "skipped: ray is not installed in this Python (carry its wheels; see README, GPU)."
    from search_spaces import load_space
    from tune_eskd.gpu_plan import largest_trial_bytes

    space = load_space("quick")
    v = space.values
    data = load_splits(v["dataset"], val_split=v["val_split"], split_seed=v["split_seed"], subset=v["subset"])
    estimate, which = largest_trial_bytes(space, data)
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as storage:
        cmd = [sys.executable, "-m", "tune_eskd.cli", "sweep", "--space", "quick", "--gpus-per-trial", "0.25",
               "--storage", storage, "--name", "packed"]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=max(30, budget() - 15), cwd=ROOT)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
            return f"the sweep failed (exit {done.returncode}) after {seconds:.0f} s: {' | '.join(tail)}"
        peaks = {}
        for stage in ("teachers", "students"):
            for path in glob.glob(os.path.join(storage, "packed", stage, "*", "result.json")):
                rows = [json.loads(line) for line in open(path) if line.strip()]
                peaks.setdefault(stage, []).append(max(r.get("gpu_peak_mb", 0) for r in rows))
    rows = [[stage, len(p), f"{statistics.median(p):.0f}", f"{max(p):.0f}"] for stage, p in peaks.items()]
    return (f"`tune-eskd sweep --space quick --gpus-per-trial 0.25` (4 trials per GPU): {seconds:.0f} s. Peak "
            f"memory per trial is torch.cuda.max_memory_allocated (the CUDA context, about 0.5 GB a process, "
            f"comes on top); the packing check's estimate for the largest trial ({which}) is "
            f"{gpu.gib(estimate)} with the context.\n\n"
            + table(["stage", "trials", "median peak MB", "max peak MB"], rows))


def check_seed_student(device, budget) -> str:
    import kd_cost

    args = SimpleNamespace(teacher="resnet34", teacher_epochs=0, batch_size=128, subset=5000, seed=0, alphas="0.9",
                           temperatures="4", repeats=1, dtype="float32", teacher_precision="float32")
    data = without_eval(load_splits("synthetic", val_split=0.0, subset=args.subset))
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as workdir:
        snapshot, _, _ = kd_cost.make_snapshot(args, data, device, workdir)
        for precision in gpu.TEACHER_PRECISIONS:
            args.teacher_precision = precision
            r = kd_cost.bench_student("resnet18", args, data, device, snapshot, os.path.join(workdir, precision))
            rows.append([precision, f"{r['ce']:.2f}", f"{r['live']:.2f}", f"{r['ensure']:.2f}", f"{r['cached']:.2f}",
                         f"{r['ratio_live']:.2f}", f"{r['ratio_cache_only']:.2f}", f"{r['loss_diff']:.1e}"])
    return ("seed-eskd's student (ResNet-18, alpha 0.9, T 4, batch 128) from a random-init ResNet-34 snapshot, "
            "5000 synthetic images, one KD epoch each way (bench/kd_cost.py's measurement); soft labels stored "
            "float32.\n\n"
            + table(["teacher pass", "CE epoch s", "KD live s", "soft-label pass s", "KD cached s",
                     "live / CE", "cached / CE", "rel. loss diff live vs cached"], rows))


def check_determinism(device, budget) -> str:
    def run(out, deterministic):
        cmd = [sys.executable, "-m", "tune_eskd.cli", "train-teacher", "--model", "resnet18", "--width", "0.5",
               "--epochs", "2", "--subset", "5000", "--snapshots", "2", "--device", str(device), "--out", out]
        subprocess.run(cmd + (["--deterministic"] if deterministic else []), check=True, capture_output=True,
                       timeout=max(30, budget() / 4), cwd=ROOT)
        metrics = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
        weights = json.load(open(os.path.join(out, "snapshots", "epoch_002.json")))["sha256"]
        return [{k: v for k, v in m.items() if k not in ("epoch_seconds", "images_per_sec", "gpu_peak_mb")}
                for m in metrics], weights

    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        for deterministic in (True, False):
            a = run(os.path.join(tmp, f"{deterministic}-a"), deterministic)
            b = run(os.path.join(tmp, f"{deterministic}-b"), deterministic)
            rows.append(["--deterministic" if deterministic else "default (cudnn.benchmark)",
                         "yes" if a[0] == b[0] else "no", "yes" if a[1] == b[1] else "no",
                         f"{a[0][-1]['train_loss']:.6f} / {b[0][-1]['train_loss']:.6f}"])
    return ("`tune-eskd train-teacher --model resnet18 --width 0.5 --epochs 2 --subset 5000 --device cuda`, run "
            "twice in fresh processes, with and without --deterministic.\n\n"
            + table(["mode", "metrics equal", "weights equal (sha256)", "final train loss a / b"], rows))


def check_cifar_seed_eskd(device, budget, npz: str) -> str:
    """seed-eskd on real CIFAR-10, one seed, 4 trials per GPU: whatever finishes within the budget is reported."""
    import analysis

    with tempfile.TemporaryDirectory(prefix="gpu_check-") as storage:
        cmd = [sys.executable, "-m", "tune_eskd.cli", "sweep", "--space", "seed-eskd", "--set", "seed=0",
               "--set", f"dataset=npz:{os.path.abspath(npz)}", "--gpus-per-trial", "0.25", "--storage", storage,
               "--name", "seed-eskd-cifar"]
        start = time.perf_counter()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=max(30, budget() - 20), cwd=ROOT)
            outcome = f"exit {done.returncode}"
            log = done.stdout + done.stderr
        except subprocess.TimeoutExpired as exc:
            outcome = "stopped at the time budget (the table holds what had finished)"
            log = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        seconds = time.perf_counter() - start
        print(log[-4000:], flush=True)
        path = os.path.join(storage, "seed-eskd-cifar")
        # `tune-eskd status` draws EXP/timeline.png; on a lent device machine it travels back through $OUT
        subprocess.run([sys.executable, "-m", "tune_eskd.cli", "status", path], cwd=ROOT, capture_output=True,
                       timeout=120)
        if os.environ.get("OUT") and os.path.exists(os.path.join(path, "timeline.png")):
            shutil.copy(os.path.join(path, "timeline.png"), os.path.join(os.environ["OUT"], "cifar-timeline.png"))
        try:
            t = analysis.load(path, write=False, teacher_stats=False)
        except Exception as exc:  # nothing finished yet: say so
            return f"`{' '.join(cmd[2:])}`: {outcome} after {seconds:.0f} s; no table ({type(exc).__name__}: {exc})"
        cols = ["teacher_arch", "snapshot_epoch", "kd_epochs", "status", "epochs_run", "best_val_acc",
                "best_test_acc", "final_test_acc"]
        rows = t.trials.sort_values(["teacher_arch", "snapshot_epoch"], na_position="first")[cols]
        snaps = t.teachers[["arch", "snapshot_epoch", "val_acc", "test_acc"]]
        extra = "\n\nTeacher snapshots:\n\n" + table(list(snaps.columns), snaps.astype(str).values.tolist())
    return (f"`tune-eskd {' '.join(cmd[3:])}` on CIFAR-10 (JPEG copy, 45,000 train / 5,000 validation / 10,000 "
            f"test): {outcome} after {seconds:.0f} s.\n\n"
            + table(cols, rows.astype(str).values.tolist()) + extra)


# In order of priority: a check starts only while the budget lasts (the CIFAR-10 study gets what is left).
CHECKS = [("throughput", "Throughput of every model", check_throughput, 90),
          ("sweep", "Quick sweep packed 4 trials per GPU", check_packed_sweep, 150),
          ("cifar", "seed-eskd on CIFAR-10, one seed, 4 trials per GPU", check_cifar_seed_eskd, 120),
          ("clock", "images_per_sec against a synchronized wall clock", check_clock, 30),
          ("student", "One seed-eskd student: soft-label cache against a live teacher", check_seed_student, 60),
          ("determinism", "--deterministic reruns", check_determinism, 90)]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-s", type=float, default=450, help="stop starting checks after this long (default 450)")
    p.add_argument("--no-record", action="store_true", help="print only; do not append to BENCHMARKS.md")
    p.add_argument("--only", default=None, help=f"comma-separated checks to run, of {', '.join(c[0] for c in CHECKS)}")
    p.add_argument("--cifar", default=None, metavar="NPZ",
                   help="cifar10.npz from ../shared/data/unpack.py --format npz: adds the seed-eskd CIFAR-10 check")
    args = p.parse_args(argv)
    known = {c[0] for c in CHECKS}
    only = set(args.only.split(",")) if args.only else known - ({"cifar"} if not args.cifar else set())
    if only - known:
        p.error(f"unknown check(s) {', '.join(sorted(only - known))}: pick from {', '.join(sorted(known))}")
    if "cifar" in only and not args.cifar:
        p.error("the cifar check needs --cifar PATH/cifar10.npz (python ../shared/data/unpack.py DIR --format npz)")
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here (torch.cuda.is_available() is False): nothing to check")
        return
    device = torch.device("cuda")
    gpu.configure_backends(deterministic=False)
    run, t0 = Run(device), time.perf_counter()

    def budget() -> float:
        return args.budget_s - (time.perf_counter() - t0)

    capability = ".".join(map(str, gpu.capability(device)))
    parts = [f"Compute capability {capability}; training precision "
             f"{gpu.training_precision(device.type, gpu.capability(device))}; "
             f"{gpu.gib(torch.cuda.get_device_properties(device).total_memory)} of GPU memory."]
    for key, title, check, needs in CHECKS:
        if key not in only:
            continue
        if budget() < needs:
            body = f"skipped: {budget():.0f} s of the {args.budget_s:.0f} s budget left, the check needs about {needs} s."
        else:
            start = time.perf_counter()
            try:
                body = check(device, budget, args.cifar) if key == "cifar" else check(device, budget)
            except Exception as exc:  # one failing check must not cost the others' results
                traceback.print_exc()
                body = f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            body += f"\n\n({time.perf_counter() - start:.0f} s)"
        print(f"gpu_check: {title}: done at {time.perf_counter() - t0:.0f} s", flush=True)
        parts.append(f"#### {title}\n\n{body}")
    block = run.block("GPU check", "\n\n".join(parts) + f"\n\nWhole run {time.perf_counter() - t0:.0f} s.")
    publish("gpu_check", block, not args.no_record)


if __name__ == "__main__":
    main()
