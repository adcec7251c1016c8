"""A sweep's GPU plan, made before the run: the default --gpus-per-trial, and a packing that cannot fit refused.

Trials that share a GPU each keep a CUDA context, the data set and their own caching allocator: a packing whose
trials do not fit in their share ends in out-of-memory errors mid-sweep. The estimate (gpu.trial_bytes) is
taken for the sweep's biggest trial, teacher or student.
"""
import shutil
import subprocess

from . import gpu
from .errors import UsageError
from .models import activations_per_image, build_model, count_params


def largest_trial_bytes(space, data) -> tuple[int, str]:
    """(estimated GPU bytes, "model xWIDTH") of the sweep's trial with the largest estimate."""
    batch = int(space.values["batch_size"])
    data_bytes = sum(int(a.nbytes) for a in (data.train_x, data.val_x, data.test_x))
    image_size = int(data.train_x.shape[-1])
    teachers = sorted({(t.model, float(t.width)) for t in space.needed_teachers()})
    students = sorted({(r["student_arch"], float(r["student_width"])) for r in space.student_rows()})

    def size(name, width):
        model = build_model(name, data.num_classes, width)
        return count_params(model), activations_per_image(model, image_size)

    sizes = {m: size(*m) for m in set(teachers) | set(students)}
    teacher_params = max((sizes[t][0] for t in teachers), default=0)  # a live teacher (or repair) in a student
    trials = [(gpu.trial_bytes(*sizes[t], batch, data_bytes), t) for t in teachers]
    trials += [(gpu.trial_bytes(*sizes[s], batch, data_bytes, teacher_params), s) for s in students]
    estimate, (name, width) = max(trials)
    return estimate, f"{name} x{width:g}"


def local_gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def local_gpu_bytes() -> int | None:
    """The memory of this machine's smallest visible GPU, from nvidia-smi (asking torch would open a CUDA context
    in the driver, which would hold about 0.5 GB of GPU 0 for the whole sweep); None when unknown."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
        mib = [int(v) for v in out.split() if v.strip().isdigit()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return min(mib) * 2**20 if mib else None


def plan_gpus(space, options, data, gpu_count: int, gpu_bytes: int | None) -> None:
    """Set options.gpus_per_trial when it was not given (0 without GPUs; with GPUs the smallest of 0.25, 0.5, 1
    that fits the largest trial, said in one line), then refuse a packing whose trials cannot fit their share."""
    if options.gpus_per_trial is None and gpu_count == 0:
        options.gpus_per_trial = 0
        return
    if options.gpus_per_trial == 0:
        return  # --gpus-per-trial 0: the CPU
    estimate, which = largest_trial_bytes(space, data)
    if options.gpus_per_trial is None:
        options.gpus_per_trial = gpu.default_gpus_per_trial(estimate, gpu_bytes or gpu.ASSUMED_GPU_BYTES)
        memory = gpu.gib(gpu_bytes) if gpu_bytes else f"an assumed {gpu.gib(gpu.ASSUMED_GPU_BYTES)}"
        print(f"GPUs: {gpu_count} found, --gpus-per-trial not given: using {options.gpus_per_trial:g} per trial "
              f"({gpu.trials_per_gpu(options.gpus_per_trial)} per GPU; the largest trial, {which}, needs about "
              f"{gpu.gib(estimate)} of {memory}); --gpus-per-trial 0 trains on the CPU", flush=True)
    if gpu_bytes and not gpu.fits(estimate, options.gpus_per_trial, gpu_bytes):
        share = min(options.gpus_per_trial, 1.0) * gpu.MEMORY_FRACTION_HEADROOM * gpu_bytes
        fitting = gpu.default_gpus_per_trial(estimate, gpu_bytes)
        fix = (f"use --gpus-per-trial {fitting:g}" if gpu.fits(estimate, fitting, gpu_bytes)
               else "lower batch_size or the model width")
        raise UsageError(f"--gpus-per-trial {options.gpus_per_trial:g} cannot fit: the largest trial ({which}) needs "
                         f"about {gpu.gib(estimate)} of GPU memory but its share is {gpu.gib(int(share))} of a "
                         f"{gpu.gib(gpu_bytes)} GPU: {fix}")
