"""Shared helpers of the benchmarks: machine description, markdown tables, recording into BENCHMARKS.md."""
import datetime
import os
import platform
import shlex
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS_MD = os.path.join(ROOT, "BENCHMARKS.md")
sys.path.insert(0, ROOT)  # `python bench/NAME.py` from a checkout works without installing the package

HEADER = """# Benchmarks

Numbers measured with the scripts in `bench/`; each script appends its run (machine, command, date) to its
section below. Re-run them on your hardware with the command shown; add `--no-record` to print only.

- **Throughput** (`bench/throughput.py`): training images/s of every model in `tune_eskd.models.MODELS`
  (forward + backward + SGD step on augmented batches, as `engine.Trainer` runs them) and inference images/s
  (a teacher's forward pass, no grad). Training runs in the engine's precision (float32 on a CPU; on CUDA bf16
  autocast where native, fp16 with a GradScaler on compute capability 7.x, channels_last); inference in
  `--infer-precision` (float32 by default, as teacher passes run; bf16 with channels_last on request).
- **KD cost** (`bench/kd_cost.py`): how much a KD epoch costs relative to a CE epoch for students of a
  ResNet-34 teacher snapshot, over a grid of (alpha x T) student configs, (a) with a live teacher (every
  student's KD epoch runs the teacher forward) and (b) with shared soft labels (`tune_eskd.soft_labels`: one
  `ensure_soft_labels` per snapshot, its cost counted in full, then every student reads the cache).
  ratio = total KD-epoch seconds / total CE-epoch seconds; the target with shared soft labels is <= 1.15.
"""

SECTIONS = {
    "throughput": "## Throughput (bench/throughput.py)",
    "kd_cost": "## KD-epoch cost (bench/kd_cost.py)",
    "reference_sweep": "## Reference sweep: tune-eskd against seed-style sequential runs (bench/reference_sweep.py)",
    "asha_vs_fifo": "## ASHA against FIFO (bench/asha_vs_fifo.py)",
    "gpu_check": "## GPU check (bench/gpu_check.sh)",
    "large_sweep": "## Large sweeps: cost per trial at 1,000+ trials (bench/large_sweep.py)",
    "pipeline": "## Pipelined sweeps and the soft-label pass (bench/pipeline_bench.py)",
}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> str:
    parts = [f"CPU {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} "
             f"({torch.get_num_threads()} threads)"]
    if device.type == "cuda":
        parts.append(f"GPU {torch.cuda.get_device_name(device)}")
    return "; ".join(parts)


def load_average() -> str:
    try:
        return "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "n/a"


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


class Run:
    """What a benchmark run records about itself, taken when it starts (the load average, above all)."""

    def __init__(self, device: torch.device):
        self.started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        self.machine = machine(device)
        self.command = command()
        self.load_start = load_average()

    def block(self, title: str, body: str) -> str:
        """The run's markdown: title, machine, command, load average (other jobs on the cores skew timings)."""
        return (f"### {title}, {self.started}\n\n- Machine: {self.machine}\n- Command: `{self.command}`\n"
                f"- Load average (1/5/15 min) at start {self.load_start}, at end {load_average()}\n\n"
                f"{body.strip()}\n")


def record(section: str, block: str, path: str = BENCHMARKS_MD) -> None:
    """Append a run's block at the end of its section of BENCHMARKS.md (creating file and section if needed)."""
    heading = SECTIONS[section]
    text = open(path).read() if os.path.exists(path) else HEADER + "".join(f"\n{h}\n" for h in SECTIONS.values())
    if heading not in text:
        text = text.rstrip("\n") + f"\n\n{heading}\n"
    start = text.index(heading) + len(heading)
    nxt = text.find("\n## ", start)
    end = len(text) if nxt < 0 else nxt + 1
    before, after = text[:end].rstrip("\n"), text[end:]
    text = f"{before}\n\n{block.rstrip()}\n" + (f"\n{after}" if after else "")
    with open(path, "w") as f:
        f.write(text)
    print(f"recorded in {path}")


def publish(section: str, block: str, record_it: bool) -> None:
    """Print a run's block and, unless --no-record, append it to its section of BENCHMARKS.md."""
    print()
    print(block)
    if record_it:
        record(section, block)
