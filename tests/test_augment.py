"""Seeded augmentation: views and order are pure functions of (seed, role, epoch, sample index)."""
import numpy as np
import pytest
import torch

from tune_eskd.augment import PAD, crop_flip, epoch_order, epoch_views
from tune_eskd.engine import Images


def _images(n=12, c=3, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (n, c, h, w), generator=g, dtype=torch.uint8)


def test_epoch_views_same_for_same_seed_and_epoch():
    o1, f1 = epoch_views(5, "student", 3, 1000)
    o2, f2 = epoch_views(5, "student", 3, 1000)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(f1, f2)


@pytest.mark.parametrize("other", [(6, "student", 3), (5, "student", 4), (5, "teacher", 3)])
def test_epoch_views_differ_across_seed_role_or_epoch(other):
    o1, f1 = epoch_views(5, "student", 3, 1000)
    o2, f2 = epoch_views(*other, 1000)
    assert not np.array_equal(o1, o2)
    assert not np.array_equal(f1, f2)


def test_epoch_views_ranges():
    offsets, flips = epoch_views(0, "student", 1, 5000)
    assert offsets.shape == (5000, 2) and flips.shape == (5000,) and flips.dtype == bool
    assert offsets.min() == 0 and offsets.max() == 2 * PAD  # every offset 0..8 is reachable
    assert len(np.unique(offsets)) == 2 * PAD + 1
    assert 0.45 < flips.mean() < 0.55


def test_epoch_order_is_seeded_permutation():
    a = epoch_order(7, "student", 1, 500)
    np.testing.assert_array_equal(np.sort(a), np.arange(500))
    np.testing.assert_array_equal(a, epoch_order(7, "student", 1, 500))
    assert not np.array_equal(a, epoch_order(8, "student", 1, 500))
    assert not np.array_equal(a, epoch_order(7, "student", 2, 500))
    assert not np.array_equal(a, epoch_order(7, "teacher", 1, 500))
    assert not np.array_equal(a, np.arange(500))


def test_order_and_views_are_independent_streams():
    """Order and augmentation do not draw from the same generator state."""
    order = epoch_order(0, "student", 1, 9)
    offsets, _ = epoch_views(0, "student", 1, 9)
    assert not np.array_equal(order, offsets[:, 0])


def test_center_crop_without_flip_is_identity():
    x = _images()
    out = crop_flip(x, torch.full((len(x), 2), PAD), torch.zeros(len(x), dtype=torch.bool))
    assert out.dtype == torch.uint8
    assert torch.equal(out, x)


def test_flip_mirrors_width():
    x = _images()
    out = crop_flip(x, torch.full((len(x), 2), PAD), torch.ones(len(x), dtype=torch.bool))
    assert torch.equal(out, torch.flip(x, dims=[3]))
    assert not torch.equal(out, x)


def test_offset_shifts_with_zero_padding():
    x = _images(n=2)
    out = crop_flip(x, torch.tensor([[0, 0], [8, 8]]), torch.zeros(2, dtype=torch.bool))
    # offset (0, 0): the image moves down-right by PAD, zeros enter at the top-left.
    assert torch.equal(out[0, :, PAD:, PAD:], x[0, :, :-PAD, :-PAD])
    assert (out[0, :, :PAD, :] == 0).all() and (out[0, :, :, :PAD] == 0).all()
    # offset (8, 8): moves up-left, zeros enter at the bottom-right.
    assert torch.equal(out[1, :, :-PAD, :-PAD], x[1, :, PAD:, PAD:])
    assert (out[1, :, -PAD:, :] == 0).all() and (out[1, :, :, -PAD:] == 0).all()
    # rows and columns are not swapped
    out_rows = crop_flip(x[:1], torch.tensor([[0, PAD]]), torch.zeros(1, dtype=torch.bool))
    assert torch.equal(out_rows[0, :, PAD:, :], x[0, :, :-PAD, :])


def test_crop_flip_matches_a_reference_implementation():
    x = _images(n=16, h=10, w=12)
    offsets, flips = (torch.from_numpy(a) for a in epoch_views(3, "student", 1, len(x)))
    out = crop_flip(x, offsets, flips)
    padded = torch.nn.functional.pad(x, (PAD, PAD, PAD, PAD))
    for i in range(len(x)):
        r, c = offsets[i].tolist()
        ref = padded[i, :, r:r + 10, c:c + 12]
        if flips[i]:
            ref = torch.flip(ref, dims=[2])
        assert torch.equal(out[i], ref), i


def test_view_of_a_sample_does_not_depend_on_its_batch():
    x = _images(n=20)
    offsets, flips = (torch.from_numpy(a) for a in epoch_views(11, "student", 2, len(x)))
    whole = crop_flip(x, offsets, flips)
    for i in range(len(x)):
        alone = crop_flip(x[i:i + 1], offsets[i:i + 1], flips[i:i + 1])
        assert torch.equal(alone[0], whole[i]), i
    # and in an arbitrary other batch composition
    idx = torch.tensor([17, 3, 9])
    assert torch.equal(crop_flip(x[idx], offsets[idx], flips[idx]), whole[idx])


def test_engine_views_depend_only_on_seed_epoch_and_index():
    """The trainer's batches: any batch size yields the same view of sample i, in the epoch's order."""
    x = _images(n=50).numpy()
    y = np.arange(50) % 10
    images = Images(x, y, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.device("cpu"))

    def by_index(batch_size, seed=4, epoch=2):
        views, order = {}, []
        for idx, batch in images.views(seed, "student", epoch, batch_size):
            for i, v in zip(idx.tolist(), batch):
                views[i] = v
            order += idx.tolist()
        return views, order

    v7, order7 = by_index(7)
    v64, order64 = by_index(64)
    assert order7 == order64 == epoch_order(4, "student", 2, 50).tolist()
    assert all(torch.equal(v7[i], v64[i]) for i in range(50))
    v_other, _ = by_index(7, epoch=3)
    assert any(not torch.equal(v7[i], v_other[i]) for i in range(50))
    # the views are the normalized crop_flip of the raw sample
    offsets, flips = (torch.from_numpy(a) for a in epoch_views(4, "student", 2, 50))
    raw = crop_flip(torch.from_numpy(x[5:6]), offsets[5:6], flips[5:6])[0]
    assert torch.allclose(v7[5], (raw.float() / 255 - 0.5) / 0.25)
