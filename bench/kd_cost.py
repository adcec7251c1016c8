"""KD-epoch cost over CE-epoch cost, with a live teacher vs shared soft labels (tune_eskd.soft_labels).

A ResNet-34 teacher snapshot (random-init weights by default, or trained --teacher-epochs on the subset) and,
for each student arch, a grid of (alpha x T) student configs, all with the same seed and batch size, so they
share one soft-label entry. For every config, side by side in this one process:
  CE epoch       a student with kd_epochs=0 trains epoch 1
  KD live        the same student with kd_epochs=1: each step runs the teacher forward on the batch
  KD cached      the same, reading the shared soft labels
plus, once per student arch (a fresh cache each, so it is counted in full for every arch), the
ensure_soft_labels call that computes the snapshot's soft labels for epoch 1.
  ratio live   = sum(KD live) / sum(CE)
  ratio shared = (ensure + sum(KD cached)) / sum(CE)       target <= 1.15
Times are the training loop's wall time (engine's images_per_sec; the validation and test sets are empty),
after one untimed warm-up epoch of each kind; with --repeats k each is the fastest of k runs, which filters out
other jobs' bursts on a shared machine (the load average is recorded with the results). Usage:

    python bench/kd_cost.py                                    # CPU, 2 threads, ~256 images, 3x3 grid
    python bench/kd_cost.py --device cuda --subset 5000 --teacher-epochs 1

The teacher's weights do not change what an epoch costs. Random init is the default because a teacher trained
1 epoch on a few hundred images has BatchNorm running statistics from two batches: its eval-mode logits reach
~1e4, the softmax saturates, and the live-vs-cached loss check becomes vacuous (the table shows max |logit|).
"""
import argparse
import dataclasses
import itertools
import os
import tempfile
import time

import numpy as np
import torch

import common  # noqa: F401  (puts the checkout on sys.path)
from common import Run, publish, table
from tune_eskd.config import StudentConfig, TeacherConfig
from tune_eskd.data import load_splits
from tune_eskd import gpu
from tune_eskd.engine import Trainer, live_teacher, pick_device, set_threads
from tune_eskd.snapshots import read_metadata
from tune_eskd.soft_labels import DTYPES, SoftLabelCache, cached_teacher, ensure_soft_labels
from tune_eskd.teachers import load_teacher, save_teacher_snapshot


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def make_snapshot(args, data, device, workdir) -> tuple[str, TeacherConfig, float]:
    """A teacher snapshot: random init (--teacher-epochs 0) or trained that many epochs. Returns (path, cfg, s)."""
    epochs = max(1, args.teacher_epochs)
    tcfg = TeacherConfig(model=args.teacher, epochs=epochs, batch_size=args.batch_size, subset=args.subset,
                         val_split=0.0, seed=args.seed, snapshots=[epochs])
    trainer = Trainer(tcfg, data, device)
    start = time.perf_counter()
    metrics = {"epoch": 0, "val_acc": None, "test_acc": None}
    for _ in range(args.teacher_epochs):
        metrics = trainer.run_epoch()
    path = os.path.join(workdir, "snapshots", tcfg.teacher_hash(), f"epoch_{metrics['epoch']:03d}.pt")
    save_teacher_snapshot(path, tcfg, trainer.model, metrics, data)
    return path, tcfg, time.perf_counter() - start


def epoch_seconds(cfg: StudentConfig, data, device, teacher_logits=None) -> tuple[float, dict]:
    """Wall seconds of a fresh student's epoch 1 (the training loop only, from engine's images/s), and metrics."""
    trainer = Trainer(cfg, data, device, teacher_logits=teacher_logits)
    m = trainer.run_epoch()
    return len(trainer.train) / m["images_per_sec"], m


def bench_student(arch: str, args, data, device, snapshot: str, workdir: str) -> dict:
    grid = list(itertools.product(floats(args.alphas), floats(args.temperatures)))
    base = StudentConfig(model=arch, epochs=1, kd_epochs=1, batch_size=args.batch_size, subset=args.subset,
                         val_split=0.0, seed=args.seed)
    meta = read_metadata(snapshot)
    teacher, _ = load_teacher(snapshot, base, data.num_classes, device)
    precision = gpu.teacher_precision(args.teacher_precision, device.type, gpu.capability(device))
    live = live_teacher(teacher, precision)
    # warm-up (untimed): one CE and one live-KD epoch, so no arm pays for first-call setup
    epoch_seconds(dataclasses.replace(base, kd_epochs=0), data, device)
    epoch_seconds(base, data, device, live)

    ensure_s = []
    for r in range(args.repeats):  # a fresh cache each time, so every repeat computes the soft labels
        cache = SoftLabelCache(os.path.join(workdir, f"soft-labels-{arch}-{r}"), precision, device.type)
        start = time.perf_counter()
        computed = ensure_soft_labels(cache, snapshot, base, data, [1], device, dtype=DTYPES[args.dtype])
        ensure_s.append(time.perf_counter() - start)
        assert computed == [1]
    ensure = min(ensure_s)
    max_logit = cache.load(meta["teacher_hash"], meta["epoch"], base, 1).float().abs().max().item()

    ce, kd_live, kd_cached, loss_diff = [], [], [], []
    for i, (alpha, t) in enumerate(grid):
        cfg = dataclasses.replace(base, alpha=alpha, temperature=t)
        arms = [("ce", dataclasses.replace(cfg, kd_epochs=0), None), ("live", cfg, live),
                ("cached", cfg, cached_teacher(cache, meta["teacher_hash"], meta["epoch"], cfg, device))]
        best, metrics = {}, {}
        for r in range(args.repeats):
            k = (i + r) % 3
            for name, c, tl in arms[k:] + arms[:k]:  # rotate the order, so no arm always runs first
                seconds, metrics[name] = epoch_seconds(c, data, device, tl)
                best[name] = min(seconds, best.get(name, float("inf")))
        ce.append(best["ce"])
        kd_live.append(best["live"])
        kd_cached.append(best["cached"])
        live_loss = metrics["live"]["train_loss"]
        loss_diff.append(abs(live_loss - metrics["cached"]["train_loss"]) / abs(live_loss))
        print(f"  {arch} alpha={alpha:g} T={t:g}: CE {ce[-1]:.2f}s  KD live {kd_live[-1]:.2f}s  "
              f"KD cached {kd_cached[-1]:.2f}s", flush=True)
    n_cfg, ce_s = len(grid), sum(ce)
    spare = (1.15 * ce_s - sum(kd_cached)) / n_cfg  # per-config time left for the ensure share at ratio 1.15
    return {"arch": arch, "configs": n_cfg, "ce": ce_s, "live": sum(kd_live), "ensure": ensure,
            "cached": sum(kd_cached), "ratio_live": sum(kd_live) / ce_s,
            "ratio_shared": (ensure + sum(kd_cached)) / ce_s, "ratio_cache_only": sum(kd_cached) / ce_s,
            "break_even": int(np.ceil(ensure / spare)) if spare > 0 else None,
            "loss_diff": max(loss_diff), "max_logit": max_logit}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, auto (default cpu)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--subset", type=int, default=256, help="training images (synthetic, stratified; default 256)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--teacher", default="resnet34")
    p.add_argument("--teacher-epochs", type=int, default=0,
                   help="epochs the teacher trains before its snapshot (default 0: random-init weights)")
    p.add_argument("--students", default="resnet8,resnet18")
    p.add_argument("--alphas", default="0.5,0.7,0.9")
    p.add_argument("--temperatures", default="2,4,8")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES),
                   help="soft-label storage dtype (float32, exact, is the library's default; float16 is opt-in)")
    p.add_argument("--teacher-precision", choices=gpu.TEACHER_PRECISIONS, default="float32",
                   help="teacher passes, live and cached (default float32; bf16 as --soft-label-precision bf16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1,
                   help="time every (config, arm) this many times and keep the fastest (robust to other jobs)")
    p.add_argument("--no-record", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = p.parse_args(argv)
    device = pick_device(args.device)
    set_threads(args.threads)
    gpu.configure_backends(deterministic=False)  # cudnn.benchmark, as trials run
    run = Run(device)
    t0 = time.perf_counter()
    data = load_splits("synthetic", val_split=0.0, subset=args.subset)
    empty = dict(val_x=data.val_x[:0], val_y=data.val_y[:0], test_x=data.test_x[:0], test_y=data.test_y[:0])
    data = dataclasses.replace(data, **empty)  # time training only: no evaluation
    with tempfile.TemporaryDirectory(prefix="kd_cost-") as workdir:
        snapshot, tcfg, teacher_s = make_snapshot(args, data, device, workdir)
        how = (f"trained {args.teacher_epochs} epoch(s) ({teacher_s:.0f} s)" if args.teacher_epochs
               else "random-init weights saved as a snapshot")
        print(f"teacher {args.teacher}: {how}; {len(data.train_y)} training images", flush=True)
        results = [bench_student(a.strip(), args, data, device, snapshot, workdir)
                   for a in args.students.split(",") if a.strip()]
    rows = [[r["arch"], r["configs"], f"{r['ce']:.1f}", f"{r['live']:.1f}", f"{r['ensure']:.1f}",
             f"{r['cached']:.1f}", f"**{r['ratio_live']:.2f}**", f"**{r['ratio_shared']:.2f}**",
             f"{r['ratio_cache_only']:.2f}", r["break_even"] if r["break_even"] is not None else "never",
             f"{r['loss_diff']:.1e}", f"{r['max_logit']:.3g}"] for r in results]
    body = (f"Device `{device}`, {torch.get_num_threads()} threads; teacher {args.teacher} ({how}); "
            f"{len(data.train_y)} synthetic training images, batch {args.batch_size}, one epoch per measurement; "
            f"grid alpha {args.alphas} x T {args.temperatures}; teacher passes in "
            f"{gpu.teacher_precision(args.teacher_precision, device.type, gpu.capability(device))}, soft labels "
            f"stored as {args.dtype}; "
            f"whole run {time.perf_counter() - t0:.0f} s.\n\n"
            + table(["student", "configs", "CE s", "KD live s", "ensure s", "KD cached s", "ratio live",
                     "ratio shared", "ratio cache only", "configs for ratio <= 1.15", "max rel. train-loss diff",
                     "teacher max abs logit"], rows)
            + "\n\nSeconds are totals over the configs of the training loop's wall time (engine's images/s)"
            + (f", each the fastest of {args.repeats} repeats" if args.repeats > 1 else "") + ". ratio shared counts the whole ensure_soft_labels pass; "
              "'configs for ratio <= 1.15' is how many students must share one soft-label entry for that. "
              "rel. train-loss diff: |live - cached| / live epoch train loss of the same config (0 on CPU with float32 "
              "storage; with float16, its rounding amplified by the steps after the first).")
    block = run.block(f"{device.type.upper()} KD-epoch cost", body)
    publish("kd_cost", block, not args.no_record)


if __name__ == "__main__":
    main()
