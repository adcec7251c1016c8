"""Soft-label storage: float32 by default (a cached student is the live-teacher student, bit for bit on CPU);
float16 is opt-in, and an entry whose logits overflow float16 falls back to float32 with a one-line warning."""
import logging

import pytest
import torch

from tune_eskd.config import StudentConfig, TeacherConfig
from tune_eskd.data import load_splits
from tune_eskd.engine import Trainer, live_teacher
from tune_eskd.snapshots import read_metadata
from tune_eskd.soft_labels import SoftLabelCache, cached_teacher, ensure_soft_labels
from tune_eskd.teachers import load_teacher, save_teacher_snapshot

CPU = torch.device("cpu")
DATA = dict(dataset="synthetic", subset=300)
TINY = dict(model="resnet8", width=0.25, batch_size=64, **DATA)


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory):
    """A 1-epoch teacher snapshot, and the same weights with the classifier scaled up until its logits overflow
    float16 (as an early snapshot of a deep teacher trained on little data can), and the data."""
    data = load_splits("synthetic", subset=300)
    tcfg = TeacherConfig(epochs=1, snapshots=[1], **TINY)
    trainer = Trainer(tcfg, data, CPU)
    metrics = trainer.run_epoch()
    root = tmp_path_factory.mktemp("snapshots")
    plain = str(root / "plain" / "epoch_001.pt")
    save_teacher_snapshot(plain, tcfg, trainer.model, metrics, data)
    with torch.no_grad():
        trainer.model.fc.weight.mul_(1e7)
        trainer.model.fc.bias.mul_(1e7)
    huge = str(root / "huge" / "epoch_001.pt")
    save_teacher_snapshot(huge, tcfg, trainer.model, metrics, data)
    return plain, huge, data


def _student(**kw):
    return StudentConfig(epochs=1, kd_epochs=1, alpha=0.9, temperature=4.0, **TINY, **kw)


def _train(cfg, data, teacher_logits):
    trainer = Trainer(cfg, data, CPU, teacher_logits=teacher_logits)
    m = trainer.run_epoch()
    return {k: m[k] for k in ("train_loss", "train_acc", "val_acc", "test_acc")}, trainer.model.state_dict()


def _live_and_cached(snapshot, cfg, data, cache):
    model, _ = load_teacher(snapshot, cfg, data.num_classes, CPU)
    meta = read_metadata(snapshot)
    return (_train(cfg, data, live_teacher(model)),
            _train(cfg, data, cached_teacher(cache, meta["teacher_hash"], meta["epoch"], cfg, CPU)))


def _stored(cache, snapshot, cfg):
    meta = read_metadata(snapshot)
    return (cache.load(meta["teacher_hash"], meta["epoch"], cfg, 1),
            cache.metadata(meta["teacher_hash"], meta["epoch"], cfg, 1))


def test_default_storage_is_float32_and_the_cached_student_is_the_live_one(snapshots, tmp_path):
    plain, _, data = snapshots
    cfg = _student()
    cache = SoftLabelCache(str(tmp_path / "soft"))
    assert ensure_soft_labels(cache, plain, cfg, data, [1], CPU) == [1]  # no dtype: the default
    assert _stored(cache, plain, cfg)[0].dtype == torch.float32
    (live, live_state), (cached, cached_state) = _live_and_cached(plain, cfg, data, cache)
    assert cached == live
    assert all(torch.equal(live_state[k], cached_state[k]) for k in live_state)


def test_float16_is_opt_in_and_close(snapshots, tmp_path):
    plain, _, data = snapshots
    cfg = _student()
    cache = SoftLabelCache(str(tmp_path / "soft"))
    ensure_soft_labels(cache, plain, cfg, data, [1], CPU, dtype=torch.float16)
    assert _stored(cache, plain, cfg)[0].dtype == torch.float16
    (live, _), (cached, _) = _live_and_cached(plain, cfg, data, cache)
    assert cached["train_loss"] == pytest.approx(live["train_loss"], rel=1e-2)


def test_float16_overflow_falls_back_to_float32_with_one_warning(snapshots, tmp_path, caplog):
    _, huge, data = snapshots
    cfg = _student()
    cache = SoftLabelCache(str(tmp_path / "soft"))
    with caplog.at_level(logging.WARNING, logger="tune_eskd"):
        assert ensure_soft_labels(cache, huge, cfg, data, [1], CPU, dtype=torch.float16) == [1]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "beyond float16: stored as float32" in warnings[0], warnings
    assert "\n" not in warnings[0]
    stored, meta = _stored(cache, huge, cfg)
    assert stored.dtype == torch.float32 and stored.abs().max() > 65504
    assert meta["dtype"] == "float32" and meta["requested_dtype"] == "float16"
    # the fallback entry serves later float16 requests (a resumed sweep does not recompute it) ...
    assert ensure_soft_labels(cache, huge, cfg, data, [1], CPU, dtype=torch.float16) == []
    # ... and, stored exactly, it trains the same student as the live teacher
    (live, live_state), (cached, cached_state) = _live_and_cached(huge, cfg, data, cache)
    assert cached == live
    assert all(torch.equal(live_state[k], cached_state[k]) for k in live_state)
