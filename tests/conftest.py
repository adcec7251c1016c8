"""Shared fixtures: one small teacher per test session, reused by the training and CLI tests."""
import os
from types import SimpleNamespace

import pytest

# The data settings every test student shares with the session teacher (snapshots check they match).
TEACHER_DATA = dict(dataset="synthetic", subset=600, val_split=0.1, split_seed=0)


@pytest.fixture(scope="session")
def teacher_run(tmp_path_factory):
    """A resnet8 teacher trained 3 epochs on 600 synthetic images, snapshotted at epochs 1 and 3.

    Tests must not modify its files: copy a snapshot into tmp_path before damaging it.
    """
    from tune_eskd.config import TeacherConfig
    from tune_eskd.single_run import train_teacher

    cfg = TeacherConfig(model="resnet8", epochs=3, batch_size=64, snapshots=[1, 3], seed=0, **TEACHER_DATA)
    out = str(tmp_path_factory.mktemp("teacher") / "run")
    history = train_teacher(cfg, out, device="cpu", threads=2)
    snap_dir = os.path.join(out, "snapshots")
    return SimpleNamespace(cfg=cfg, out=out, history=history, snapshot_dir=snap_dir,
                           snapshot=os.path.join(snap_dir, "epoch_003.pt"))


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for every in-process sweep of the test session (sweeps leave it running)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()
