"""Shared teacher soft labels: a student trained from the cache matches one trained with the live teacher."""
import dataclasses
import os

import pytest
import torch

from tune_eskd.config import StudentConfig, TeacherConfig
from tune_eskd.data import load_splits
from tune_eskd.engine import Images, Trainer, live_teacher
from tune_eskd.snapshots import read_metadata
from tune_eskd.soft_labels import (SoftLabelCache, SoftLabelError, cache_key, cached_teacher, compute_epoch_logits,
                                   ensure_soft_labels, epochs_to_compute)
from tune_eskd.teachers import load_teacher, save_teacher_snapshot

CPU = torch.device("cpu")
DATA = dict(dataset="synthetic", subset=600)
TIMING_KEYS = ("epoch_seconds", "images_per_sec")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A resnet8 teacher trained 1 epoch on 600 synthetic images, saved as a snapshot, and the data."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and far faster when other jobs share the cores
    tcfg = TeacherConfig(model="resnet8", epochs=1, batch_size=64, snapshots=[1], **DATA)
    data = load_splits("synthetic", val_split=tcfg.val_split, split_seed=tcfg.split_seed, subset=tcfg.subset)
    data = dataclasses.replace(data, test_x=data.test_x[:200], test_y=data.test_y[:200])  # keep evaluation cheap
    trainer = Trainer(tcfg, data, CPU)
    metrics = trainer.run_epoch()
    path = str(tmp_path_factory.mktemp("snapshots") / tcfg.teacher_hash() / "epoch_001.pt")
    save_teacher_snapshot(path, tcfg, trainer.model, metrics, data)
    yield path, data
    torch.set_num_threads(threads)


def student(**kw) -> StudentConfig:
    return StudentConfig(**{"model": "resnet8", "epochs": 2, "kd_epochs": 2, "batch_size": 64, "alpha": 0.9,
                            "temperature": 4.0, "seed": 0, **DATA, **kw})


def train(cfg, data, teacher_logits):
    trainer = Trainer(cfg, data, CPU, teacher_logits=teacher_logits)
    history = [trainer.run_epoch() for _ in range(cfg.epochs)]
    return [{k: v for k, v in m.items() if k not in TIMING_KEYS} for m in history], trainer.model.state_dict()


def live(path, cfg, data):
    model, _ = load_teacher(path, cfg, data.num_classes, CPU)
    return live_teacher(model)


def from_cache(cache, path, cfg):
    meta = read_metadata(path)
    return cached_teacher(cache, meta["teacher_hash"], meta["epoch"], cfg, CPU)


def test_float32_cache_gives_bit_identical_student(setup, tmp_path):
    path, data = setup
    cfg = student()
    cache = SoftLabelCache(str(tmp_path / "soft"))
    assert ensure_soft_labels(cache, path, cfg, data, [1, 2], CPU, dtype=torch.float32) == [1, 2]
    live_hist, live_state = train(cfg, data, live(path, cfg, data))
    cached_hist, cached_state = train(cfg, data, from_cache(cache, path, cfg))
    assert [m["phase"] for m in cached_hist] == ["kd", "kd"]
    assert cached_hist == live_hist
    assert all(torch.equal(live_state[k], cached_state[k]) for k in live_state)


def test_float16_cache_is_close_and_small(setup, tmp_path):
    path, data = setup
    cfg = student(alpha=0.5, temperature=2.0)  # another (alpha, T): same key, same soft labels
    cache = SoftLabelCache(str(tmp_path / "soft"))
    ensure_soft_labels(cache, path, cfg, data, [1, 2], CPU, dtype=torch.float16)  # opt-in
    meta = read_metadata(path)
    stored = cache.load(meta["teacher_hash"], meta["epoch"], cfg, 1)
    assert stored.dtype == torch.float16 and tuple(stored.shape) == (len(data.train_y), data.num_classes)
    live_hist, _ = train(cfg, data, live(path, cfg, data))
    cached_hist, _ = train(cfg, data, from_cache(cache, path, cfg))
    for a, b in zip(live_hist, cached_hist):
        for k in ("train_acc", "val_acc", "test_acc"):
            assert abs(a[k] - b[k]) <= 0.02, (k, a, b)
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-2)


def test_cached_rows_equal_live_teacher_on_each_batch(setup):
    path, data = setup
    cfg = student(batch_size=100)  # the last batch is partial
    model, _ = load_teacher(path, cfg, data.num_classes, CPU)
    images = Images(data.train_x, data.train_y, data.mean, data.std, CPU)
    table = compute_epoch_logits(model, images, cfg.seed, 3, cfg.batch_size)
    teacher = live_teacher(model)
    for idx, inputs in images.views(cfg.seed, "student", 3, cfg.batch_size):
        assert torch.equal(table[idx], teacher(3, idx, inputs))


def test_second_ensure_computes_nothing(setup, tmp_path):
    path, data = setup
    cache = SoftLabelCache(f"file://{tmp_path}/soft")  # through pyarrow's URI filesystem, as with s3://
    cfg = student()
    assert ensure_soft_labels(cache, path, cfg, data, [1, 2], CPU) == [1, 2]
    meta = read_metadata(path)
    pt = cache.path(meta["teacher_hash"], meta["epoch"], cfg, 1)[len("file://"):]
    assert pt.startswith(str(tmp_path)) and os.path.exists(pt) and os.path.exists(pt[:-3] + ".json")
    before = os.stat(pt).st_mtime_ns
    # a student of another arch, alpha, T and kd_epochs shares the entries
    other = student(model="resnet14", alpha=0.3, temperature=8.0, kd_epochs=1)
    assert ensure_soft_labels(cache, path, other, data, [1], CPU) == []
    assert ensure_soft_labels(cache, path, cfg, data, [2, 1, 3], CPU) == [3]
    assert os.stat(pt).st_mtime_ns == before
    assert ensure_soft_labels(cache, path, cfg, data, [1], CPU, dtype=torch.float16) == [1]  # other dtype: redone


def test_retrained_teacher_invalidates_its_entries(setup, tmp_path):
    """A snapshot rewritten with other weights (its teacher retrained, e.g. on a GPU) must not be served the old
    teacher's logits: the sweep's pre-check and ensure_soft_labels both see the entries as stale."""
    path, data = setup
    cfg = student()
    cache = SoftLabelCache(str(tmp_path / "soft"))
    ensure_soft_labels(cache, path, cfg, data, [1, 2], CPU)
    retrained = str(tmp_path / "snap" / "epoch_001.pt")
    tcfg = TeacherConfig(model="resnet8", epochs=1, batch_size=64, snapshots=[1], **DATA)
    model, meta = load_teacher(path, cfg, data.num_classes, CPU)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    save_teacher_snapshot(retrained, tcfg, model, {"epoch": 1, "val_acc": 0.0, "test_acc": 0.0}, data)
    assert read_metadata(retrained)["teacher_hash"] == meta["teacher_hash"]
    assert epochs_to_compute(cache, path, cfg, [1, 2]) == []
    assert epochs_to_compute(cache, retrained, cfg, [1, 2]) == [1, 2]
    assert ensure_soft_labels(cache, retrained, cfg, data, [1, 2], CPU) == [1, 2]
    assert epochs_to_compute(cache, retrained, cfg, [1, 2]) == []


def test_corrupted_file_is_detected(setup, tmp_path):
    path, data = setup
    cfg = student()
    cache = SoftLabelCache(str(tmp_path / "soft"))
    ensure_soft_labels(cache, path, cfg, data, [1], CPU)
    meta = read_metadata(path)
    pt = cache.path(meta["teacher_hash"], meta["epoch"], cfg, 1)
    blob = bytearray(open(pt, "rb").read())
    blob[-20] ^= 0xFF
    open(pt, "wb").write(bytes(blob))
    with pytest.raises(SoftLabelError, match="corrupted"):
        cache.load(meta["teacher_hash"], meta["epoch"], cfg, 1)
    teacher = from_cache(cache, path, cfg)
    with pytest.raises(SoftLabelError, match="corrupted"):
        Trainer(cfg, data, CPU, teacher_logits=teacher).run_epoch()
    with open(pt, "wb") as f:
        f.write(bytes(blob[:100]))  # truncated
    with pytest.raises(SoftLabelError, match="truncated"):
        cache.load(meta["teacher_hash"], meta["epoch"], cfg, 1)


def test_missing_epoch_says_what_to_run(setup, tmp_path):
    path, data = setup
    cfg = student()
    teacher = from_cache(SoftLabelCache(str(tmp_path / "empty")), path, cfg)
    with pytest.raises(SoftLabelError, match="ensure_soft_labels"):
        Trainer(cfg, data, CPU, teacher_logits=teacher).run_epoch()


def test_key_separates_seeds_batch_sizes_and_data(setup, tmp_path):
    path, data = setup
    base = student()
    assert cache_key(student(seed=1)) != cache_key(base)
    assert cache_key(student(batch_size=32)) != cache_key(base)
    assert cache_key(student(subset=500)) != cache_key(base)
    assert cache_key(dataclasses.replace(base, model="resnet20", alpha=0.1, temperature=1.0, kd_epochs=1,
                                         lr=0.05, epochs=7)) == cache_key(base)
    cache = SoftLabelCache(str(tmp_path / "soft"))
    assert ensure_soft_labels(cache, path, base, data, [1], CPU) == [1]
    assert ensure_soft_labels(cache, path, student(seed=1), data, [1], CPU) == [1]
    meta = read_metadata(path)
    seed0 = cache.load(meta["teacher_hash"], meta["epoch"], base, 1)
    seed1 = cache.load(meta["teacher_hash"], meta["epoch"], student(seed=1), 1)
    assert not torch.equal(seed0, seed1)  # different crops and flips, so different teacher logits


def test_non_finite_logits_are_refused(tmp_path):
    cache = SoftLabelCache(str(tmp_path / "soft"))
    with pytest.raises(SoftLabelError, match="check the snapshot"):
        cache.save("abc", 3, student(), 1, torch.tensor([[float("nan"), 0.0]]))
    cache.save("abc", 3, student(), 1, torch.tensor([[1e6, 0.0]]), dtype=torch.float16)  # overflows: float32
    assert cache.load("abc", 3, student(), 1).tolist() == [[1e6, 0.0]]
    assert cache.missing_epochs("abc", 3, student(), [1, 2]) == [2]
