"""GPU decisions and settings in one place: precision, backend flags, memory caps and per-trial memory.

The decisions are small pure functions of what the device reports (its compute capability, its memory), so
they are tested on a CPU-only machine; the functions that apply them take a torch.device.

Precision. CUDA trains under bf16 autocast only where bf16 is native (compute capability >= 8: Ampere and
newer). `torch.cuda.is_bf16_supported()` also says True on older GPUs, where bf16 is emulated and slow; there
Volta and Turing (7.x, fp16 tensor cores) train under fp16 autocast with a GradScaler, and older GPUs in
float32. The CPU trains in float32. Teacher passes (live teachers and soft labels) run in float32 unless
`--soft-label-precision bf16` asks for bf16, which is used on the CPU (with channels_last) and on GPUs where it
is native.
"""
import math
import os
from dataclasses import dataclass

import torch

TEACHER_PRECISIONS = ("float32", "bf16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

CUDA_CONTEXT_BYTES = 512 * 2**20  # one process's CUDA context with cuDNN and cuBLAS loaded (about 0.5 GB)
MEMORY_FRACTION_HEADROOM = 0.95   # a trial with g GPUs may allocate g * 0.95 of one GPU's memory
PACKINGS = (0.25, 0.5, 1.0)       # the --gpus-per-trial values the default picks from
ASSUMED_GPU_BYTES = 16 * 2**30    # when the driver has no GPU to ask (a cluster's head node): a 16 GB GPU


def training_precision(device_type: str, capability: tuple[int, int] | None) -> str:
    """The autocast precision a device trains in: bf16 where native, fp16 (with a GradScaler) on 7.x, else float32."""
    if device_type != "cuda" or capability is None:
        return "float32"
    if tuple(capability) >= (8, 0):
        return "bf16"
    if tuple(capability) >= (7, 0):
        return "fp16"
    return "float32"


def teacher_precision(requested: str, device_type: str, capability: tuple[int, int] | None) -> str:
    """The precision a teacher pass runs in: bf16 when asked for and native to the device, else float32."""
    if requested == "bf16" and (device_type == "cpu" or training_precision(device_type, capability) == "bf16"):
        return "bf16"
    return "float32"


def capability(device: torch.device) -> tuple[int, int] | None:
    return tuple(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None


def autocast(device: torch.device, precision: str):
    """Autocast to the precision's dtype (a no-op context for float32)."""
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES.get(precision, torch.bfloat16),
                          enabled=precision in AUTOCAST_DTYPES)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels: read a clock only after this, or it times the queueing."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def configure_backends(deterministic: bool = False) -> None:
    """cudnn.benchmark picks the fastest convolution algorithms for the sweep's fixed batch shapes. The
    determinism switch instead makes cuDNN and cuBLAS pick deterministic kernels, and makes torch raise on any
    op that has none (CUBLAS_WORKSPACE_CONFIG must be set before cuBLAS starts: call this before the first
    CUDA op of the process)."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.use_deterministic_algorithms(deterministic)


def memory_fraction(gpus_per_trial: float) -> float | None:
    """The share of one GPU's memory a trial may allocate, or None for a whole GPU (no cap)."""
    return gpus_per_trial * MEMORY_FRACTION_HEADROOM if 0 < gpus_per_trial < 1 else None


def cap_memory(device: torch.device, gpus_per_trial: float) -> None:
    """Keep a trial that shares a GPU inside its share: each process's caching allocator otherwise keeps what it
    once used and never returns it to the other trials on the GPU."""
    fraction = memory_fraction(gpus_per_trial)
    if device.type == "cuda" and fraction is not None:
        # torch wants an index: a bare "cuda" device (what a Ray worker gets) means the current one
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.set_per_process_memory_fraction(fraction, index)


def check_cuda_index(device: torch.device, device_count: int) -> None:
    """Refuse cuda:N when this machine has no GPU N (torch only fails at the first .to(), with a traceback)."""
    from .errors import UsageError

    if device.type == "cuda" and device.index is not None and device.index >= device_count:
        raise UsageError(f"device {device} asked for but this machine has {device_count} GPU(s) "
                         f"(cuda:0..cuda:{device_count - 1}): pick one of those, or use --device cuda")


def trial_bytes(param_count: int, activations_per_image: int, batch_size: int, data_bytes: int,
                teacher_param_count: int = 0) -> int:
    """An upper estimate of one trial's GPU memory (see README, GPU): the CUDA context; the data set twice (a
    soft-label repair inside a student uploads the training set again); weights, gradients, SGD momentum and
    autocast's weight copies (4 x 4 bytes a parameter); a teacher's float32 weights; and the activations kept
    for backward, counted in float32 for the whole batch."""
    return (CUDA_CONTEXT_BYTES + 2 * data_bytes + 16 * param_count + 4 * teacher_param_count
            + 4 * activations_per_image * batch_size)


def fits(estimate_bytes: int, gpus_per_trial: float, gpu_bytes: int) -> bool:
    return estimate_bytes <= min(gpus_per_trial, 1.0) * MEMORY_FRACTION_HEADROOM * gpu_bytes


def default_gpus_per_trial(estimate_bytes: int, gpu_bytes: int) -> float:
    """The smallest of 0.25, 0.5 and 1 GPUs a trial whose estimate fits in (1 when none does)."""
    return next((g for g in PACKINGS if fits(estimate_bytes, g, gpu_bytes)), 1.0)


def gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def trials_per_gpu(gpus_per_trial: float) -> int:
    return max(1, math.floor(1 / gpus_per_trial + 1e-9))


@dataclass(frozen=True)
class DeviceSettings:
    """The sweep-wide device settings every trial and soft-label task applies."""
    deterministic: bool = False
    soft_label_precision: str = "float32"  # asked for; teacher_precision() says what a device runs

    def teacher_precision(self, device: torch.device) -> str:
        return teacher_precision(self.soft_label_precision, device.type, capability(device))
