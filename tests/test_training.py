"""Training: snapshots, a teacher that learns, and students that are reproducible and resume exactly."""
import io
import json
import os
import shutil

import pytest
import torch

from tune_eskd.config import StudentConfig, TeacherConfig
from tune_eskd.data import load_splits
from tune_eskd.engine import Images, Trainer, accuracy, live_teacher, set_threads
from tune_eskd.models import build_model
from tune_eskd.record import library_versions
from tune_eskd.snapshots import SnapshotError, load_snapshot, read_metadata
from tune_eskd.teachers import load_teacher

CPU = torch.device("cpu")
TIMING = ("epoch_seconds", "images_per_sec")


def _strip_timing(history):
    return [{k: v for k, v in m.items() if k not in TIMING} for m in history]


@pytest.fixture(scope="module")
def data_key(teacher_run):
    """dataset, subset, val_split, split_seed of the session teacher, which its students must share."""
    return teacher_run.cfg.data_key()


@pytest.fixture(scope="module")
def data(data_key):
    set_threads(2)
    return load_splits(data_key["dataset"], subset=data_key["subset"], val_split=data_key["val_split"],
                       split_seed=data_key["split_seed"])


# --- teacher snapshots -----------------------------------------------------------------------------------------

def test_snapshots_written_at_exactly_the_listed_epochs(teacher_run):
    assert sorted(os.listdir(teacher_run.snapshot_dir)) == [
        "epoch_001.json", "epoch_001.pt", "epoch_001.val_logits.json", "epoch_001.val_logits.npy",
        "epoch_003.json", "epoch_003.pt", "epoch_003.val_logits.json", "epoch_003.val_logits.npy"]  # no epoch 2, no temp files
    assert [m["epoch"] for m in teacher_run.history] == [1, 2, 3]
    with open(os.path.join(teacher_run.out, "metrics.jsonl")) as f:
        assert [json.loads(line) for line in f] == teacher_run.history
    with open(os.path.join(teacher_run.out, "config.json")) as f:
        assert json.load(f)["snapshots"] == [1, 3]


@pytest.mark.parametrize("epoch", [1, 3])
def test_snapshot_loads_with_metadata(teacher_run, data, epoch):
    path = os.path.join(teacher_run.snapshot_dir, f"epoch_{epoch:03d}.pt")
    state, meta = load_snapshot(path)
    metrics = teacher_run.history[epoch - 1]
    assert meta["arch"] == "resnet8" and meta["width"] == 1.0 and meta["num_classes"] == 10
    assert meta["epoch"] == epoch
    assert meta["val_acc"] == metrics["val_acc"] and meta["test_acc"] == metrics["test_acc"]
    assert meta["teacher_hash"] == teacher_run.cfg.teacher_hash()
    assert meta["data"] == teacher_run.cfg.data_key()
    assert meta["config"]["seed"] == 0 and meta["config"]["model"] == "resnet8"
    assert meta["versions"] == library_versions()
    assert meta["versions"]["torch"] == torch.__version__
    assert len(meta["sha256"]) == 64
    assert read_metadata(path) == meta
    # The weights are those of that epoch: they reproduce its validation accuracy.
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    model = build_model("resnet8", 10)
    model.load_state_dict(state)
    val = Images(data.val_x, data.val_y, data.mean, data.std, CPU)
    assert accuracy(model, val) == pytest.approx(meta["val_acc"], abs=1e-6)


def test_snapshots_of_different_epochs_differ(teacher_run):
    first, _ = load_snapshot(os.path.join(teacher_run.snapshot_dir, "epoch_001.pt"))
    last, _ = load_snapshot(teacher_run.snapshot)
    assert first.keys() == last.keys()
    assert any(not torch.equal(first[k], last[k]) for k in first)


def _copy_snapshot(teacher_run, tmp_path):
    for ext in (".pt", ".json"):
        shutil.copy(teacher_run.snapshot[:-3] + ext, tmp_path / f"snap{ext}")
    return str(tmp_path / "snap.pt")


def test_damaged_snapshots_are_refused(teacher_run, tmp_path):
    path = _copy_snapshot(teacher_run, tmp_path)
    blob = bytearray(open(path, "rb").read())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte, same length
    open(path, "wb").write(bytes(blob))
    with pytest.raises(SnapshotError, match="checksum mismatch"):
        load_snapshot(path)
    os.remove(path)
    with pytest.raises(SnapshotError, match="missing"):
        load_snapshot(path)
    os.remove(str(tmp_path / "snap.json"))
    with pytest.raises(SnapshotError, match="no metadata"):
        load_snapshot(path)


def _record_call(marker):  # what a malicious pickle would run
    os.mkdir(marker)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return _record_call, (self.marker,)


def test_snapshot_loading_never_unpickles_code(teacher_run, tmp_path):
    """load_snapshot uses weights_only=True: a .pt with a valid checksum but arbitrary objects is not executed."""
    import hashlib

    path = _copy_snapshot(teacher_run, tmp_path)
    marker = str(tmp_path / "executed")
    buf = io.BytesIO()
    torch.save({"fc.weight": _Evil(marker)}, buf)
    open(path, "wb").write(buf.getvalue())
    meta = json.load(open(tmp_path / "snap.json"))
    meta["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    json.dump(meta, open(tmp_path / "snap.json", "w"))
    with pytest.raises(Exception):
        load_snapshot(path)
    assert not os.path.exists(marker)


def test_load_teacher_checks_the_student_data(teacher_run, data_key):
    student = StudentConfig(model="resnet8", **data_key)
    model, meta = load_teacher(teacher_run.snapshot, student, 10, CPU)
    assert not model.training and meta["epoch"] == 3
    other = StudentConfig(model="resnet8", **{**data_key, "subset": 700})
    with pytest.raises(SnapshotError, match="trained on"):
        load_teacher(teacher_run.snapshot, other, 10, CPU)
    with pytest.raises(SnapshotError, match="classes"):
        load_teacher(teacher_run.snapshot, student, 100, CPU)


# --- a teacher learns ------------------------------------------------------------------------------------------

def test_teacher_learns_the_synthetic_set():
    set_threads(2)
    cfg = TeacherConfig(model="resnet8", dataset="synthetic", subset=1500, epochs=3, batch_size=64, seed=0)
    trainer = Trainer(cfg, load_splits("synthetic", subset=1500), CPU)
    history = [trainer.run_epoch() for _ in range(3)]
    assert trainer.done
    assert [m["phase"] for m in history] == ["ce"] * 3
    assert [m["lr"] for m in history] == pytest.approx([0.1, 0.1, 0.01])  # default milestones: round(1.5), round(2.25)
    assert history[-1]["train_loss"] < 0.75 * history[0]["train_loss"]
    assert history[-1]["val_acc"] > 0.4  # chance is 0.1
    assert history[-1]["test_acc"] > 0.4


# --- students --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def teacher_model(teacher_run, data_key):
    model, _ = load_teacher(teacher_run.snapshot, StudentConfig(model="resnet8", **data_key), 10, CPU)
    return model


def _student_cfg(data_key, **kw):
    values = dict(model="resnet8", epochs=3, kd_epochs=2, alpha=0.9, temperature=4.0, batch_size=64, seed=0,
                  **data_key)
    values.update(kw)
    cfg = StudentConfig(**values)
    cfg.validate()
    return cfg


def _run_student(cfg, data, teacher_model, epochs=None):
    trainer = Trainer(cfg, data, CPU, live_teacher(teacher_model))
    history = [trainer.run_epoch() for _ in range(epochs or cfg.epochs)]
    return trainer, history


@pytest.fixture(scope="module")
def reference_student(data, teacher_model, data_key):
    """A 3-epoch student (KD for epochs 1-2, CE for 3, lr drop after epoch 2), seed 0, uninterrupted."""
    set_threads(2)
    return _run_student(_student_cfg(data_key), data, teacher_model)


def test_student_phases_and_schedule(reference_student):
    _, history = reference_student
    assert [m["epoch"] for m in history] == [1, 2, 3]
    assert [m["phase"] for m in history] == ["kd", "kd", "ce"]
    assert [m["lr"] for m in history] == pytest.approx([0.1, 0.1, 0.01])
    for m in history:
        assert set(m) == {"epoch", "phase", "lr", "train_loss", "train_acc", "val_acc", "test_acc", "precision",
                          *TIMING}
        assert m["precision"] == "float32"  # the CPU trains in float32 (see tune_eskd.gpu)
        assert 0 <= m["val_acc"] <= 1 and 0 <= m["train_acc"] <= 1 and m["train_loss"] > 0


def test_same_seed_gives_identical_metrics(reference_student, data, teacher_model, data_key):
    ref_trainer, ref = reference_student
    trainer, again = _run_student(_student_cfg(data_key), data, teacher_model)
    assert _strip_timing(again) == _strip_timing(ref)
    ref_state, state = ref_trainer.model.state_dict(), trainer.model.state_dict()
    assert all(torch.equal(ref_state[k], state[k]) for k in ref_state)


def test_different_seed_gives_different_metrics(reference_student, data, teacher_model, data_key):
    _, ref = reference_student
    _, other = _run_student(_student_cfg(data_key, seed=1), data, teacher_model, epochs=1)
    assert other[0]["train_loss"] != ref[0]["train_loss"]
    assert _strip_timing(other)[0] != _strip_timing(ref)[0]


def test_resume_from_state_dict_matches_uninterrupted_run(reference_student, data, teacher_model, data_key):
    ref_trainer, ref = reference_student
    first, history = _run_student(_student_cfg(data_key), data, teacher_model, epochs=1)
    assert _strip_timing(history) == _strip_timing(ref[:1])
    # a checkpoint as a trial would write it, then a fresh trainer (e.g. on another worker) restores it
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    del first
    torch.manual_seed(12345)  # the global RNG state at restore time must not matter
    resumed = Trainer(_student_cfg(data_key), data, CPU, live_teacher(teacher_model))
    resumed.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=False))
    assert resumed.epoch == 1 and not resumed.done
    rest = []
    while not resumed.done:
        rest.append(resumed.run_epoch())
    assert _strip_timing(rest) == _strip_timing(ref[1:])
    ref_state, state = ref_trainer.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(ref_state[k], state[k]) for k in ref_state)


def test_alpha_zero_student_trains_like_the_ce_baseline(reference_student, data, teacher_model, data_key):
    """With alpha=0 the KD phase is plain CE on the same batches; with alpha>0 the teacher changes training."""
    _, kd = _run_student(_student_cfg(data_key, alpha=0.0), data, teacher_model, epochs=1)
    baseline = Trainer(_student_cfg(data_key, kd_epochs=0), data, CPU)  # CE-only students need no teacher
    ce = baseline.run_epoch()
    assert kd[0]["phase"] == "kd" and ce["phase"] == "ce"
    assert {**_strip_timing(kd)[0], "phase": "ce"} == _strip_timing([ce])[0]
    assert reference_student[1][0]["train_loss"] != ce["train_loss"]


def test_kd_student_needs_teacher_logits(data, data_key):
    with pytest.raises(ValueError, match="teacher logits"):
        Trainer(_student_cfg(data_key), data, CPU)
