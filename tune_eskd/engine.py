"""The training engine: one epoch at a time, resumable from a state_dict, the same on CPU and CUDA.

A `Trainer` trains a teacher (CE) or a student (KD for epochs 1..kd_epochs, then CE). Its state_dict holds
everything needed to continue bit-for-bit on CPU, because batch order and augmentation are functions of
(seed, role, epoch) alone. Students get teacher logits from a `teacher_logits(epoch, indices, inputs)` callable:
a live teacher model, or the shared soft-label cache.
"""
import logging
import math
import time
import warnings
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import gpu
from .augment import crop_flip, epoch_order, epoch_views
from .config import StudentConfig, TrainConfig
from .data import Splits
from .errors import UsageError
from .losses import kd_loss
from .models import build_model
from .seeds import init_seed

TeacherLogits = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]
log = logging.getLogger("tune_eskd")


class DivergedError(RuntimeError):
    """The training loss stopped being finite."""


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} asked for but CUDA is not available here: use --device cpu or auto")
    gpu.check_cuda_index(device, torch.cuda.device_count() if device.type == "cuda" else 0)
    return device


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(max(1, int(threads)))


def as_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A tensor view of a (possibly read-only, object-store backed) array; it is only ever read."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(array).to(device)


class Images:
    """A uint8 image set on a device, with its normalization (and channels_last on CUDA)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, mean, std, device: torch.device):
        self.x, self.y = as_tensor(x, device), as_tensor(y, device)
        self.device = device
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.y)

    def normalize(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        x = (batch_uint8.float() / 255 - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else x

    def views(self, seed: int, role: str, epoch: int, batch_size: int, shuffle: bool = True):
        """Yield (indices, normalized augmented batch) for one epoch; sample i's view depends on (seed, role,
        epoch, i)."""
        n = len(self)
        offsets, flips = epoch_views(seed, role, epoch, n)
        offsets, flips = torch.from_numpy(offsets).to(self.device), torch.from_numpy(flips).to(self.device)
        order = torch.from_numpy(epoch_order(seed, role, epoch, n) if shuffle else np.arange(n)).to(self.device)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            yield idx, self.normalize(crop_flip(self.x[idx], offsets[idx], flips[idx]))


@torch.no_grad()
def predict(model: torch.nn.Module, images: Images, batch_size: int = 1000,
            precision: str = "float32") -> torch.Tensor:
    """Float32 logits of the un-augmented images, in order."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        with gpu.autocast(images.device, precision):
            out.append(model(images.normalize(images.x[start:start + batch_size])).float())
    return torch.cat(out) if out else torch.empty(0)


def accuracy(model: torch.nn.Module, images: Images, precision: str = "float32") -> float:
    if len(images) == 0:
        return float("nan")
    return (predict(model, images, precision=precision).argmax(1) == images.y).float().mean().item()


def live_teacher(model: torch.nn.Module, precision: str = "float32") -> TeacherLogits:
    """Teacher logits computed on the fly, on exactly the student's batch, in `precision` (see gpu.py): float32,
    or bf16 autocast with channels_last (which the CPU's bf16 kernels need to be fast)."""
    model.eval()
    channels_last = precision == "bf16" or next(model.parameters()).device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def logits(epoch: int, indices: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with gpu.autocast(inputs.device, precision):
            return model(inputs).float()

    return logits


class Trainer:
    def __init__(self, cfg: TrainConfig, data: Splits, device: torch.device,
                 teacher_logits: TeacherLogits | None = None, precision: str | None = None):
        """precision: the autocast precision to train in (see gpu.py); default: what the device runs natively."""
        cfg.check_data(data)  # e.g. a resumed sweep whose npz file was rewritten meanwhile
        self.cfg, self.device = cfg, device
        self.precision = precision or gpu.training_precision(device.type, gpu.capability(device))
        # fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none.
        self.scaler = torch.amp.GradScaler(device.type) if self.precision == "fp16" else None
        self.kd_epochs = cfg.kd_epochs if isinstance(cfg, StudentConfig) else 0
        if self.kd_epochs and teacher_logits is None:
            raise ValueError("a student with kd_epochs > 0 needs teacher logits")
        self.teacher_logits = teacher_logits
        self.train = Images(data.train_x, data.train_y, data.mean, data.std, device)
        self.val = Images(data.val_x, data.val_y, data.mean, data.std, device)
        self.test = Images(data.test_x, data.test_y, data.mean, data.std, device)
        torch.manual_seed(init_seed(cfg.seed, cfg.role))  # a student never starts from its teacher's init
        self.model = build_model(cfg.model, data.num_classes, cfg.width).to(device)
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
        if cfg.schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=cfg.epochs)
        else:
            self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, cfg.lr_milestones(), cfg.gamma)
        self.epoch = 0  # epochs finished

    @property
    def done(self) -> bool:
        return self.epoch >= self.cfg.epochs

    def phase(self, epoch: int) -> str:
        return "kd" if epoch <= self.kd_epochs else "ce"

    def run_epoch(self, progress: Callable[[int], None] | None = None) -> dict:
        """Train one epoch, evaluate, and return its metrics."""
        epoch = self.epoch + 1
        phase = self.phase(epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        self.model.train()
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for idx, inputs in self.train.views(self.cfg.seed, self.cfg.role, epoch, self.cfg.batch_size):
            targets = self.train.y[idx]
            with gpu.autocast(self.device, self.precision):
                logits = self.model(inputs)
            if phase == "kd":
                loss = kd_loss(logits, self.teacher_logits(epoch, idx, inputs), targets,
                               alpha=self.cfg.alpha, temperature=self.cfg.temperature)
            else:
                loss = F.cross_entropy(logits.float(), targets)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is None:
                loss.backward()
                self.optimizer.step()
            else:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(1) == targets).sum()
            if progress:
                progress(len(idx))
        gpu.synchronize(self.device)  # on CUDA the loop only queued the kernels: time their running
        train_seconds = time.perf_counter() - start
        n = len(self.train)
        train_loss = loss_sum.item() / n
        if not math.isfinite(train_loss):
            raise DivergedError(f"training loss became {train_loss} in epoch {epoch} at lr {lr:g}: lower the lr")
        self.scheduler.step()
        self.epoch = epoch
        metrics = {
            "epoch": epoch, "phase": phase, "lr": lr, "train_loss": train_loss,
            "train_acc": correct.item() / n, "val_acc": accuracy(self.model, self.val, self.precision),
            "test_acc": accuracy(self.model, self.test, self.precision), "epoch_seconds": time.perf_counter() - start,
            "images_per_sec": n / train_seconds, "precision": self.precision,
        }
        if self.device.type == "cuda":
            metrics["gpu_peak_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        return metrics

    def state_dict(self) -> dict:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "epoch": self.epoch,
                 "threads": torch.get_num_threads()}  # CPU results are bit-identical only at a fixed thread count
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        threads = state.get("threads")
        if threads and threads != torch.get_num_threads():
            log.warning("resuming with the %d torch threads this run started with (not %d): CPU results are "
                        "bit-identical only at a fixed thread count", threads, torch.get_num_threads())
            torch.set_num_threads(threads)
