"""Seeded augmentation: pad-4 random crop + horizontal flip as a pure function of (seed, role, epoch, index).

Every random choice comes from a generator keyed by (seed, role, stream, epoch) (see seeds.py), drawn for the
whole training set at once, so sample i's view at epoch e is the same whatever batch it lands in. That lets
any model (a teacher computing cached soft labels, say) be run on exactly the view a student saw: pass the
student's seed and role "student".
"""
import numpy as np
import torch
import torch.nn.functional as F

from .seeds import CROP, FLIP, ORDER, generator

PAD = 4


def epoch_order(seed: int, role: str, epoch: int, n: int) -> np.ndarray:
    """The order in which the n training samples are visited in this epoch."""
    return generator(seed, role, ORDER, epoch).permutation(n)


def epoch_views(seed: int, role: str, epoch: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop offsets (n, 2) in [0, 2*PAD] and flip flags (n,) of every training sample in this epoch."""
    # Separate streams, so sample i's crop and flip do not depend on the size of the training set.
    offsets = generator(seed, role, CROP, epoch).integers(0, 2 * PAD + 1, size=(n, 2))
    flips = generator(seed, role, FLIP, epoch).random(n) < 0.5
    return offsets, flips


def crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Crop each (C, H, W) image of a batch from its zero-padded copy at offsets, mirrored where flips is set.

    One gather on whatever device the batch lives on (CPU or GPU); dtype is kept (uint8 in, uint8 out).
    """
    b, c, h, w = images.shape
    padded = F.pad(images, (PAD, PAD, PAD, PAD))
    dev = images.device
    offsets, flips = offsets.to(dev), flips.to(dev)
    ar_h, ar_w = torch.arange(h, device=dev), torch.arange(w, device=dev)
    rows = offsets[:, 0, None] + ar_h
    cols = offsets[:, 1, None] + torch.where(flips[:, None], w - 1 - ar_w, ar_w)
    return padded[torch.arange(b, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]
