"""Datasets: the synthetic set, stratified validation splits, imagefolder:/npz: loading, bad sources."""
import hashlib

import numpy as np
import pytest
from PIL import Image

from tune_eskd.data import check_source, load_splits, stratified_split
from tune_eskd.errors import UsageError
from tune_eskd.synthetic import CLASSES, TEST_SIZE, TRAIN_SIZE, make_synthetic


def _hashes(x: np.ndarray) -> set:
    return {hashlib.sha1(img.tobytes()).hexdigest() for img in x}


# --- synthetic -------------------------------------------------------------------------------------------------

def test_synthetic_is_deterministic_per_seed():
    a = make_synthetic(seed=3, train_size=200, test_size=50)
    b = make_synthetic(seed=3, train_size=200, test_size=50)
    for u, v in zip(a[:4], b[:4]):
        np.testing.assert_array_equal(u, v)
    c = make_synthetic(seed=4, train_size=200, test_size=50)
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[1], c[1])


def test_synthetic_shapes_and_class_balance():
    train_x, train_y, test_x, test_y, classes = make_synthetic(seed=0)
    assert classes == CLASSES and len(classes) == 10
    assert train_x.shape == (TRAIN_SIZE, 3, 32, 32) and test_x.shape == (TEST_SIZE, 3, 32, 32)
    assert train_x.dtype == np.uint8 and train_y.dtype == np.int64
    assert np.bincount(train_y, minlength=10).tolist() == [TRAIN_SIZE // 10] * 10
    assert np.bincount(test_y, minlength=10).tolist() == [TEST_SIZE // 10] * 10
    # labels are shuffled, not sorted or cycled
    assert not np.array_equal(train_y, np.sort(train_y))
    assert not np.array_equal(train_y, np.arange(TRAIN_SIZE) % 10)
    # images are not trivial: they use the uint8 range and differ between classes
    assert train_x.min() < 40 and train_x.max() > 215
    means = np.stack([train_x[train_y == c].mean(axis=0) for c in range(10)])
    assert np.abs(means[0] - means[2]).mean() > 5
    # train and test images are different draws
    assert not _hashes(train_x) & _hashes(test_x)


# --- stratified splits -----------------------------------------------------------------------------------------

def test_stratified_split_indices():
    labels = np.repeat(np.arange(5), 40)
    np.random.default_rng(0).shuffle(labels)
    keep, held = stratified_split(labels, 0.25, seed=1)
    assert not set(keep) & set(held)
    np.testing.assert_array_equal(np.sort(np.concatenate([keep, held])), np.arange(200))
    assert np.bincount(labels[held], minlength=5).tolist() == [10] * 5
    assert list(held) == sorted(held) and list(keep) == sorted(keep)
    keep2, held2 = stratified_split(labels, 0.25, seed=1)
    np.testing.assert_array_equal(held, held2)
    _, held3 = stratified_split(labels, 0.25, seed=2)
    assert not np.array_equal(held, held3)
    keep0, held0 = stratified_split(labels, 0.0, seed=1)
    assert len(held0) == 0 and len(keep0) == 200


@pytest.fixture(scope="module")
def splits():
    return load_splits("synthetic", subset=1000, val_split=0.2, split_seed=0)


def test_subset_and_validation_split_are_stratified(splits):
    assert splits.num_classes == 10 and splits.classes == CLASSES
    assert splits.train_x.shape == (800, 3, 32, 32) and splits.val_x.shape == (200, 3, 32, 32)
    assert np.bincount(splits.train_y, minlength=10).tolist() == [80] * 10
    assert np.bincount(splits.val_y, minlength=10).tolist() == [20] * 10
    assert splits.test_x.shape == (TEST_SIZE, 3, 32, 32)  # test is never subset
    assert splits.train_x.dtype == np.uint8 and splits.train_y.dtype == np.int64


def test_validation_is_disjoint_from_train(splits):
    assert not _hashes(splits.train_x) & _hashes(splits.val_x)
    # both come from the full training set, with their labels attached correctly
    full_x, full_y, *_ = make_synthetic(seed=0)
    label_of = {hashlib.sha1(img.tobytes()).hexdigest(): y for img, y in zip(full_x, full_y)}
    for x, y in ((splits.train_x, splits.train_y), (splits.val_x, splits.val_y)):
        assert [label_of[hashlib.sha1(img.tobytes()).hexdigest()] for img in x] == y.tolist()


def test_split_is_the_same_across_calls_and_seeded(splits):
    again = load_splits("synthetic", subset=1000, val_split=0.2, split_seed=0)
    for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        np.testing.assert_array_equal(getattr(splits, name), getattr(again, name), err_msg=name)
    assert again.mean == splits.mean and again.std == splits.std
    other = load_splits("synthetic", subset=1000, val_split=0.2, split_seed=1)
    assert _hashes(other.val_x) != _hashes(splits.val_x)


def test_normalization_stats_come_from_train(splits):
    scaled = splits.train_x.astype(np.float64) / 255
    np.testing.assert_allclose(splits.mean, scaled.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(splits.std, scaled.std(axis=(0, 2, 3)), rtol=1e-4)


def test_val_split_zero_keeps_everything_for_training():
    s = load_splits("synthetic", subset=500, val_split=0.0)
    assert len(s.train_y) == 500 and len(s.val_y) == 0
    assert s.val_x.shape[1:] == (3, 32, 32)
    assert np.bincount(s.train_y, minlength=10).tolist() == [50] * 10


@pytest.mark.parametrize("kwargs,needle", [
    (dict(val_split=1.0), "val_split must be in"),
    (dict(val_split=-0.1), "val_split must be in"),
    (dict(subset=7000), "subset 7000 exceeds"),
])
def test_bad_split_arguments(kwargs, needle):
    with pytest.raises(UsageError, match=needle):
        load_splits("synthetic", **kwargs)


# --- imagefolder: and npz: -------------------------------------------------------------------------------------

COLORS = {"cat": (255, 0, 0), "dog": (0, 0, 255), "emu": (0, 255, 0)}


def _write_tree(root, per_class=(3, 2)):
    for split, n in zip(("train", "test"), per_class):
        for name, color in COLORS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                size = (40 + 8 * i, 24 + 4 * i)  # not 32x32: the loader resizes
                Image.new("RGB", size, color).save(folder / f"{i}.png")
    # a grayscale image is converted to RGB
    Image.new("L", (32, 32), 128).save(root / "train" / "cat" / "gray.png")


def test_imagefolder_loading(tmp_path):
    _write_tree(tmp_path)
    s = load_splits(f"imagefolder:{tmp_path}", val_split=0.0)
    assert s.classes == ["cat", "dog", "emu"]  # sorted folder names
    assert s.train_x.shape == (10, 3, 32, 32) and s.train_x.dtype == np.uint8
    assert s.test_x.shape == (6, 3, 32, 32)
    assert np.bincount(s.train_y).tolist() == [4, 3, 3]
    assert np.bincount(s.test_y).tolist() == [2, 2, 2]
    for x, y in zip(s.train_x, s.train_y):
        name = s.classes[y]
        pixel = x[:, 16, 16].tolist()  # channels first: (C, H, W)
        assert pixel == list(COLORS[name]) or pixel == [128, 128, 128]
        assert (x == x[:, :1, :1]).all()  # a solid image stays solid after the resize
    assert sum(x[:, 0, 0].tolist() == [128, 128, 128] for x in s.train_x) == 1


def test_imagefolder_with_validation_split(tmp_path):
    _write_tree(tmp_path, per_class=(10, 2))
    s = load_splits(f"imagefolder:{tmp_path}", val_split=0.2)
    assert np.bincount(s.val_y).tolist() == [2, 2, 2]
    assert len(s.train_y) == 31 - 6


@pytest.mark.parametrize("make,needle", [
    (lambda root: None, "has no train/ or test/"),
    (lambda root: (root / "train" / "a").mkdir(parents=True), "has no test/"),
    (lambda root: (root / "test" / "a").mkdir(parents=True), "has no train/"),
])
def test_imagefolder_without_train_and_test_is_a_usage_error(tmp_path, make, needle):
    make(tmp_path)
    with pytest.raises(UsageError, match=needle):
        load_splits(f"imagefolder:{tmp_path}")
    with pytest.raises(UsageError):
        check_source(f"imagefolder:{tmp_path}")


def test_imagefolder_with_empty_class_folders_is_a_usage_error(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    with pytest.raises(UsageError, match="no class folders"):
        load_splits(f"imagefolder:{tmp_path}")


def _arrays(seed=0, n_train=40, n_test=10):
    rng = np.random.default_rng(seed)
    return {"x_train": rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8),
            "y_train": np.arange(n_train) % 4,
            "x_test": rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8),
            "y_test": np.arange(n_test) % 4}


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_npz_loading(tmp_path, layout):
    arrays = _arrays()
    stored = dict(arrays)
    if layout == "nhwc":
        stored["x_train"] = arrays["x_train"].transpose(0, 2, 3, 1)
        stored["x_test"] = arrays["x_test"].transpose(0, 2, 3, 1)
    path = tmp_path / "d.npz"
    np.savez(path, classes=np.array(["w", "x", "y", "z"]), **stored)
    s = load_splits(f"npz:{path}", val_split=0.0)
    assert s.classes == ["w", "x", "y", "z"]
    np.testing.assert_array_equal(s.train_x, arrays["x_train"])
    np.testing.assert_array_equal(s.train_y, arrays["y_train"])
    np.testing.assert_array_equal(s.test_x, arrays["x_test"])
    np.testing.assert_array_equal(s.test_y, arrays["y_test"])
    assert s.train_y.dtype == np.int64


def test_npz_without_classes_names_them_by_index(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, **_arrays())
    s = load_splits(f"npz:{path}", val_split=0.3)
    assert s.classes == ["0", "1", "2", "3"]
    assert np.bincount(s.val_y).tolist() == [3, 3, 3, 3]  # 0.3 of the 10 images of each class


def test_npz_missing_arrays_or_file(tmp_path):
    path = tmp_path / "d.npz"
    arrays = _arrays()
    del arrays["y_test"]
    np.savez(path, **arrays)
    with pytest.raises(UsageError, match="y_test"):
        load_splits(f"npz:{path}")
    with pytest.raises(UsageError, match="does not exist"):
        load_splits(f"npz:{tmp_path / 'nope.npz'}")


@pytest.mark.parametrize("source", ["bogus", "cifar", "imagefolder", "npz", "Synthetic"])
def test_unknown_dataset_is_a_usage_error(source):
    with pytest.raises(UsageError):
        load_splits(source)
