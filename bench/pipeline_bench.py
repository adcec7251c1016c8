"""The pipelined sweep against today's barriers (--no-pipeline), and the soft-label pass, measured side by side.

    python bench/pipeline_bench.py grid       # (a) 9 students of one resnet56 snapshot: live teacher vs cache
    python bench/pipeline_bench.py teachers   # (b) a resnet8 and a resnet56 teacher and their students
    python bench/pipeline_bench.py cluster    # (c) seed-eskd's shape, tiny models, a local Ray with 8 CPUs

Every arm is one `tune-eskd sweep` in its own process, on synthetic data, run one after the other in this one
run. Per arm: wall seconds of the whole command (Ray start-up included), the CPU seconds of its process tree
(the driver, Ray and every worker, sampled from /proc) over wall x the cores it may use, and, from the
experiment's own files (analysis.timeline), the makespan from the first trial's start to the last report, the
critical-path lower bound (the longest chain teacher epochs -> that snapshot's soft-label task -> student, with
the measured durations: what the sweep would take with unlimited slots) and how busy the worker slots were.

(a) The teacher snapshot is trained beforehand by a one-student sweep (untimed, another seed so it computes no
    shared soft labels); each cached arm starts from an empty soft-label cache, so it pays for the whole pass.
(b), (c) Each arm trains its teachers itself, on its own storage (a shared one would hand the second arm the
    first arm's snapshots).
(c) Ray gets 8 CPUs (ray.init(num_cpus=8)) on however many cores this machine has: 8 one-thread trials share
    them, so every duration stretches alike, and the makespan is compared with a critical path made of the same
    stretched durations.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import torch
import yaml

from common import ROOT, Run, publish, table  # noqa: E402  (bench/common.py puts the repo on sys.path)
from analysis.timeline import read_timeline, timeline_figure  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
# A driver on a local Ray of a chosen size: tune-eskd's sweep uses a Ray that is already initialized.
WRAPPER = ("import logging, sys, ray; ray.init(num_cpus=int(sys.argv[1]), include_dashboard=False, "
           "logging_level=logging.WARNING); from tune_eskd.cli import main; sys.exit(main(sys.argv[2:]))")


class TreeCPU(threading.Thread):
    """CPU seconds used by a process and all its descendants, from /proc every half second (a process that ends
    between two samples loses at most its last half second; Ray's workers live as long as the sweep)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.root, self.ticks, self.done = pid, {}, threading.Event()

    @staticmethod
    def _stats() -> dict:
        out = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                # after "(comm)": state ppid ... utime(12) stime(13) ... starttime(20)
                out[int(name)] = (int(fields[1]), int(fields[11]) + int(fields[12]), fields[19])
        return out

    def sample(self) -> None:
        stats = self._stats()
        children: dict = {}
        for pid, (ppid, _, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        todo = [self.root]
        while todo:
            pid = todo.pop()
            if pid in stats:
                key = (pid, stats[pid][2])  # pid and start time: a reused pid is another process
                self.ticks[key] = max(self.ticks.get(key, 0), stats[pid][1])
                todo += children.get(pid, [])

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.sample()

    @property
    def seconds(self) -> float:
        return sum(self.ticks.values()) / CLK_TCK


def sweep(storage: str, name: str, space_file: str, flags: list[str], log, num_cpus: int | None = None) -> dict:
    """Run one arm; its wall seconds, CPU seconds, cores, and timeline."""
    args = ["sweep", "--space", space_file, "--storage", storage, "--name", name, "--overwrite", *flags]
    cmd = ([sys.executable, "-c", WRAPPER, str(num_cpus), *args] if num_cpus
           else [sys.executable, "-m", "tune_eskd.cli", *args])
    print(f"  {name}: tune-eskd sweep {' '.join(flags)}" + (f" on ray.init(num_cpus={num_cpus})" if num_cpus else ""),
          flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    cpu = TreeCPU(proc.pid)
    cpu.start()
    code = proc.wait()
    wall = time.perf_counter() - start
    cpu.done.set()
    cpu.join()
    if code:
        raise SystemExit(f"arm {name} failed (exit {code}): see {log.name}")
    exp = os.path.join(storage, name)
    cores = len(os.sched_getaffinity(0))
    timeline = read_timeline(exp)
    soft = [json.loads(line) for line in open(os.path.join(exp, "soft_labels.jsonl"))] \
        if os.path.exists(os.path.join(exp, "soft_labels.jsonl")) else []
    computed = [t for t in soft if not t.get("cached")]
    arm = {"name": name, "wall": wall, "cpu": cpu.seconds, "cores": cores, "timeline": timeline, "exp": exp,
           "soft_tasks": len(computed),
           "soft_span": (max(t["end"] for t in computed) - min(t["start"] for t in computed)) if computed else 0.0,
           "soft_busy": sum(t["end"] - t["start"] for t in computed)}
    print(f"    {wall:.1f} s wall, {cpu.seconds:.0f} CPU s, makespan {timeline.makespan_s:.1f} s, "
          f"critical path {timeline.critical_path_s:.1f} s", flush=True)
    return arm


def write_space(path: str, values: dict) -> str:
    with open(path, "w") as f:
        yaml.safe_dump(values, f)
    return path


def cpu_util(arm: dict) -> str:
    return f"{arm['cpu'] / (arm['wall'] * arm['cores']):.0%}"


def arm_row(label: str, arm: dict) -> list:
    t = arm["timeline"]
    return [label, f"{arm['wall']:.1f}", f"{t.makespan_s:.1f}", f"{t.critical_path_s:.1f}",
            f"{t.makespan_s / t.critical_path_s:.2f}x", f"{arm['cpu']:.0f}", cpu_util(arm),
            f"{sum(t.lanes.values())} slots, {t.busy_fraction:.0%}"]


ARM_HEADERS = ["arm", "wall s", "makespan s", "critical path s", "makespan / critical path", "CPU s",
               "CPU utilisation", "worker slots busy"]


def bench_grid(a, workdir: str, log) -> tuple[str, str]:
    storage = os.path.join(workdir, "storage")
    space = {"description": "pipeline bench (a): 9 students of one resnet56 snapshot", "dataset": "synthetic",
             "subset": a.subset, "batch_size": 64, "teacher_arch": "resnet56", "teacher_epochs": 1, "snapshots": [1],
             "student_arch": "resnet8", "student_width": 0.5, "epochs": a.epochs, "kd_epochs": a.epochs,
             "alpha": [0.5, 0.7, 0.9], "temperature": [2, 4, 8], "seed": 0}
    space_file = write_space(os.path.join(workdir, "grid.yaml"), space)
    print("training the resnet56 snapshot (untimed) ...", flush=True)
    sweep(storage, "warmup", space_file, ["--set", "alpha=0.5", "--set", "temperature=2", "--set", "seed=99",
                                          "--set", "epochs=1", "--set", "kd_epochs=1"], log)
    arms = []
    for name, flags, label in (
            ("live", ["--no-soft-label-cache"], "live teacher in every student"),
            ("cached-no-pipeline", ["--no-pipeline"], "soft-label cache, --no-pipeline (the stages in turn)"),
            ("cached", [], "soft-label cache, pipelined"),
            ("cached-bf16", ["--soft-label-precision", "bf16"], "soft-label cache, pipelined, bf16 teacher pass")):
        shutil.rmtree(os.path.join(storage, "soft_labels"), ignore_errors=True)  # every cached arm pays in full
        arms.append((label, sweep(storage, name, space_file, flags, log)))
    live = arms[0][1]["wall"]
    rows = [[label, f"{arm['wall']:.1f}", f"**{live / arm['wall']:.2f}x**",
             f"{arm['soft_tasks']} tasks, {arm['soft_span']:.1f} s span, {arm['soft_busy']:.1f} task-s"
             if arm["soft_tasks"] else "-", f"{arm['cpu']:.0f}", cpu_util(arm)] for label, arm in arms]
    body = (f"9 students (alpha 0.5/0.7/0.9 x T 2/4/8) of one resnet56 snapshot (1 epoch, trained beforehand, "
            f"untimed), resnet8 students at width 0.5, {a.epochs} epochs all KD, synthetic data, subset {a.subset}, "
            f"batch 64, one CPU per trial, float32 unless said.\n\n"
            + table(["arm", "wall s", "speed-up over live", "soft-label pass", "CPU s", "CPU utilisation"], rows)
            + "\n\nWall seconds are the whole `tune-eskd sweep` command (Ray start-up included); the soft-label pass "
              "is read from the experiment's soft_labels.jsonl (first task start to last task end; task-s: the sum "
              "of the tasks' durations, so task-s / span is how many cores it kept busy). Target: >= 2.5x.")
    return "Soft-label grid: live teacher against the soft-label cache", body


def bench_teachers(a, workdir: str, log) -> tuple[str, str]:
    space = {"description": "pipeline bench (b): a fast and a slow teacher", "dataset": "synthetic",
             "subset": a.subset, "batch_size": 64, "teacher_arch": ["resnet8", "resnet56"],
             "teacher_epochs": a.teacher_epochs, "snapshots": [1, a.teacher_epochs], "student_arch": "resnet8",
             "student_width": 0.5, "epochs": a.epochs, "kd_epochs": [0, a.epochs], "alpha": [0.5, 0.9],
             "temperature": 4, "seed": 0}
    space_file = write_space(os.path.join(workdir, "teachers.yaml"), space)
    arms = []
    for name, flags in (("no-pipeline", ["--no-pipeline"]), ("pipeline", [])):
        arms.append(("`--no-pipeline`" if flags else "pipelined", sweep(
            os.path.join(workdir, name), name, space_file, flags, log)))
    png = draw(arms[1][1], a, "teachers")
    speedup = arms[0][1]["wall"] / arms[1][1]["wall"]
    body = (f"Teachers resnet8 and resnet56 ({a.teacher_epochs} epochs, snapshots 1 and {a.teacher_epochs}), "
            f"9 resnet8 students at width 0.5 ({a.epochs} epochs: CE only, or all KD at alpha 0.5/0.9 from each "
            f"snapshot), synthetic data, subset {a.subset}, one CPU per trial, the machine's own local Ray.\n\n"
            + table(ARM_HEADERS, [arm_row(label, arm) for label, arm in arms])
            + f"\n\nPipelined over `--no-pipeline`: **{speedup:.2f}x** wall time. " + _notes() + png)
    return "Fast and slow teacher: pipelined against --no-pipeline", body


def bench_cluster(a, workdir: str, log) -> tuple[str, str]:
    space = {"description": "pipeline bench (c): seed-eskd's shape with tiny models", "dataset": "synthetic",
             "subset": a.subset, "batch_size": 64, "teacher_arch": ["resnet8", "resnet14"], "teacher_width": 0.25,
             "teacher_epochs": 10, "snapshots": [3, 6, 9, 10], "student_arch": "resnet8", "student_width": 0.25,
             "epochs": 10, "kd_epochs": [0, 5], "alpha": 0.9, "temperature": 4, "seed": [0, 1, 2]}
    space_file = write_space(os.path.join(workdir, "cluster.yaml"), space)
    arms = []
    for name, flags in (("no-pipeline", ["--no-pipeline"]), ("pipeline", [])):
        arms.append(("`--no-pipeline`" if flags else "pipelined", sweep(
            os.path.join(workdir, name), name, space_file, flags, log, num_cpus=8)))
    png = draw(arms[1][1], a, "cluster")
    body = (f"seed-eskd's shape: 2 teachers (resnet8, resnet14 at width 0.25; 10 epochs, snapshots 3/6/9/10) and "
            f"27 students (resnet8 at width 0.25, 10 epochs, KD 5 epochs at alpha 0.9 T 4 from each snapshot, "
            f"plus the CE baseline, seeds 0/1/2), synthetic data, subset {a.subset}, one CPU per trial, on a local "
            f"Ray started with ray.init(num_cpus=8) on this machine's {len(os.sched_getaffinity(0))} cores.\n\n"
            + table(ARM_HEADERS, [arm_row(label, arm) for label, arm in arms])
            + f"\n\nPipelined over `--no-pipeline`: **{arms[0][1]['wall'] / arms[1][1]['wall']:.2f}x** wall time, "
              f"makespan {arms[1][1]['timeline'].makespan_s:.0f} s against a critical-path lower bound of "
              f"{arms[1][1]['timeline'].critical_path_s:.0f} s. 8 one-thread trials share the cores, so every "
              f"duration (and the critical path built from them) is stretched alike. " + _notes() + png)
    return "Simulated 8-slot cluster: seed-eskd's shape", body


def _notes() -> str:
    return ("Makespan: first trial start to last report (analysis.timeline, from the experiments' files); wall: the "
            "whole command. CPU utilisation: the sweep's process tree's CPU seconds over wall x cores (other jobs on "
            "the machine do not count). Worker slots busy: the timeline's lanes, busy time over slots x makespan.")


def draw(arm: dict, a, what: str) -> str:
    """The pipelined arm's timeline, next to BENCHMARKS.md when recording (the README shows one)."""
    if a.no_record:
        return ""
    rel = f"docs/timeline-{what}.png"
    timeline_figure(arm["exp"], os.path.join(ROOT, rel))
    return f"\n\n![timeline of the pipelined arm]({rel})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", choices=["grid", "teachers", "cluster"])
    ap.add_argument("--workdir", default="/tmp/tune-eskd-pipeline-bench")
    ap.add_argument("--subset", type=int, default=None,
                    help="synthetic training images (default: grid 1500, teachers 1000, cluster 400)")
    ap.add_argument("--epochs", type=int, default=2, help="student epochs (grid, teachers; default 2)")
    ap.add_argument("--teacher-epochs", type=int, default=3, help="teachers bench (default 3)")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to BENCHMARKS.md")
    a = ap.parse_args()
    a.subset = a.subset or {"grid": 1500, "teachers": 1000, "cluster": 400}[a.bench]
    run = Run(torch.device("cpu"))
    workdir = os.path.join(a.workdir, a.bench)
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    with open(os.path.join(workdir, "log.txt"), "w") as log:
        title, body = {"grid": bench_grid, "teachers": bench_teachers, "cluster": bench_cluster}[a.bench](a, workdir, log)
    publish("pipeline", run.block(title, body), not a.no_record)


if __name__ == "__main__":
    main()
