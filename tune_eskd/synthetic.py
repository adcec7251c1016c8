"""The built-in offline dataset: CIFAR-shaped (32x32x3 uint8, 10 classes), deterministic from its seed.

Classes come in related pairs (0-1, 2-3, ...): both members of a pair share a smooth base pattern and differ by
a smaller class-specific one. Every image mixes its class's prototype with a random share of its partner's,
then is shifted, contrast-jittered and noised. So a teacher's soft labels carry what a hard label cannot (how
much of the partner class an image holds, and which class is the partner), a small ResNet learns the set well
above chance in a few CPU epochs, and the ambiguous mixtures keep it off 100%.
"""
import numpy as np
import torch
import torch.nn.functional as F

CLASSES = [f"pair{p}-{m}" for p in range(5) for m in "ab"]
TRAIN_SIZE, TEST_SIZE = 6000, 1000


def _smooth_patterns(rng: np.random.Generator, n: int, coarse: int) -> torch.Tensor:
    """n random (3, 32, 32) patterns in about [-1, 1], smooth at the scale of 32 / coarse pixels."""
    low = torch.from_numpy(rng.standard_normal((n, 3, coarse, coarse)).astype(np.float32))
    return torch.tanh(F.interpolate(low, size=(32, 32), mode="bicubic", align_corners=False))


def _images(rng: np.random.Generator, protos: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    n = len(labels)
    mix = torch.from_numpy(rng.uniform(0.0, 0.5, size=(n, 1, 1, 1)).astype(np.float32))
    own, partner = protos[labels], protos[labels ^ 1]
    x = (1 - mix) * own + mix * partner
    contrast = torch.from_numpy(rng.uniform(0.6, 1.4, size=(n, 1, 1, 1)).astype(np.float32))
    brightness = torch.from_numpy(rng.uniform(-0.3, 0.3, size=(n, 3, 1, 1)).astype(np.float32))
    x = x * contrast + brightness + torch.from_numpy(rng.normal(0, 0.35, size=x.shape).astype(np.float32))
    shifts = rng.integers(-3, 4, size=(n, 2))
    x = torch.stack([torch.roll(img, (int(dy), int(dx)), dims=(1, 2)) for img, (dy, dx) in zip(x, shifts)])
    return ((x.clamp(-2, 2) + 2) * (255 / 4)).round().to(torch.uint8).numpy()


def make_synthetic(seed: int = 0, train_size: int = TRAIN_SIZE, test_size: int = TEST_SIZE):
    """(train_x, train_y, test_x, test_y, classes) with x as (N, 3, 32, 32) uint8 and balanced classes."""
    rng = np.random.default_rng([seed, 2024])
    n_classes = len(CLASSES)
    protos = _smooth_patterns(rng, n_classes // 2, 6).repeat_interleave(2, dim=0)
    protos = protos + 0.7 * _smooth_patterns(rng, n_classes, 8)
    out = []
    for size in (train_size, test_size):
        labels = rng.permutation(np.arange(size) % n_classes).astype(np.int64)
        out += [_images(rng, protos, labels), labels]
    return (*out, list(CLASSES))
