"""Shared fixtures: one small teacher and one local Ray per test session, drivers in their own process group,
and a tripwire that fails a test if Ray starts. (Plain helpers live in sweep_helpers.py.)"""
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

    from tune_eskd.ray_workers import RUNTIME_ENV

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING",
                 runtime_env=RUNTIME_ENV)  # as the sweep's own ray.init
    yield
    ray.shutdown()


@pytest.fixture
def drivers():
    """Start drivers with drivers(args[, script]); every one still alive at the end of the test is SIGKILLed (by
    process group: the driver and the Ray processes it started, nothing else)."""
    from sweep_helpers import Driver

    started: list[Driver] = []

    def start(args, script=None) -> Driver:
        d = Driver(args, script)
        started.append(d)
        return d

    yield start
    for d in started:
        d.kill_group()


@pytest.fixture
def no_ray(monkeypatch):
    """ray.init replaced by a tripwire (bad input must be refused before Ray starts); Ray's state, running or
    not (other tests of the session may have started it), must not change."""
    import ray

    def tripwire(*args, **kwargs):
        raise AssertionError("bad input must be refused before Ray starts")

    before = ray.is_initialized()
    monkeypatch.setattr(ray, "init", tripwire)
    yield
    assert ray.is_initialized() == before


# A slow test runs whole sweeps in subprocesses, each wait bounded by sweep_helpers.DRIVER_TIMEOUT (15 minutes), and
# the first one of test_faults also pays for its module's reference sweep: pyproject's 10-minute default is too
# short for them on busy cores. A hung one still fails, after 30 minutes.
SLOW_TEST_TIMEOUT = 1800


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TEST_TIMEOUT))
