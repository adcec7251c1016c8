"""Layers: analysis (`results`, `report`) runs with torch and Ray absent, reading teacher soft-label statistics
stored beside the snapshots; the core finds the machine's CPUs without Ray."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tune_eskd.blobs import Blob
from tune_eskd.cpus import local_cpus
from tune_eskd.teacher_stats import META_KEY, soft_label_stats, write_val_logits

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Run first in the child: any import of these raises, so a module that needs them fails the test.
BLOCK = textwrap.dedent("""
    import sys

    class Blocked:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "ray", "sklearn"):
                raise ImportError(f"{name} is blocked: analysis must not need it")

    sys.meta_path.insert(0, Blocked())
    """)
HASH = "a1b2c3d4e5f6"


def _experiment(storage: str) -> str:
    """A finished one-teacher sweep written by hand: snapshot e1 with its validation logits, snapshot e2 from
    before they were stored, and 18 students (2 snapshots x 3 alphas x 3 seeds: enough for the importance section)."""
    snaps = os.path.join(storage, "snapshots", HASH)
    rng = np.random.default_rng(0)
    for epoch in (1, 2):
        meta = {"arch": "resnet8", "width": 1.0, "num_classes": 10, "epoch": epoch, "val_acc": 0.5, "test_acc": 0.5,
                "teacher_hash": HASH, "config": {"model": "resnet8", "seed": 0, "lr": 0.1, "epochs": 2}}
        path = f"{snaps}/epoch_{epoch:03d}.pt"
        if epoch == 1:
            meta[META_KEY] = write_val_logits(path, rng.normal(size=(50, 10)) * 3)["sha256"]
        Blob.at(path).write(b"weights", meta)
    exp = os.path.join(storage, "t")
    os.makedirs(exp)
    with open(os.path.join(exp, "sweep.json"), "w") as f:
        json.dump({"space_name": "quick", "space": {"temperature": 4.0, "dataset": "synthetic"},
                   "options": {"storage": storage, "name": "t", "scheduler": "fifo"}, "versions": {}}, f)
    grid = [(snapshot, alpha, seed) for snapshot in (1, 2) for alpha in (0.5, 0.7, 0.9) for seed in (0, 1, 2)]
    for i, (snapshot, alpha, seed) in enumerate(grid):
        tid = f"abcde_{i:05d}"
        config = {"trial": {"dataset": "synthetic", "student_arch": "resnet8", "student_width": 0.5, "epochs": 2,
                            "lr": 0.1, "seed": seed, "kd_epochs": 1, "alpha": alpha, "temperature": 4.0,
                            "teacher_hash": HASH, "teacher_arch": "resnet8", "snapshot_epoch": snapshot}}
        acc = 0.4 + 0.1 * snapshot + 0.1 * alpha + 0.02 * seed + 0.005 * (i % 4)
        os.makedirs(os.path.join(exp, "students", tid))
        with open(os.path.join(exp, "students", tid, "result.json"), "w") as f:
            for e in (1, 2):
                f.write(json.dumps({"epoch": e, "phase": "kd" if e == 1 else "ce", "lr": 0.1, "train_loss": 1.0,
                                    "train_acc": 0.5, "val_acc": acc + 0.01 * e, "test_acc": acc, "done": e == 2,
                                    "trial_id": tid, "time_total_s": float(e), "time_since_restore": float(e),
                                    "time_this_iter_s": 1.0,
                                    "timestamp": 1_700_000_000 + 3 * i + e, "config": config}) + "\n")
    return exp


def _run_without_torch_and_ray(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def _run_without_ray(code: str, who: str) -> subprocess.CompletedProcess:
    """Run `code` with only Ray blocked (torch allowed); an import of Ray fails naming `who`."""
    only_ray = textwrap.dedent(f"""
        sys.meta_path.pop(0)
        class NoRay:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "ray":
                    raise ImportError(f"{{name}}: {who} must not import Ray")
        sys.meta_path.insert(0, NoRay())
        """)
    return _run_without_torch_and_ray(only_ray + textwrap.dedent(code))


def test_results_and_report_run_with_torch_and_ray_blocked(tmp_path):
    exp = _experiment(str(tmp_path))
    done = _run_without_torch_and_ray(f"""
        import json
        import analysis
        from tune_eskd.cli import main

        assert main(["results", {exp!r}]) == 0
        assert main(["report", {exp!r}]) == 0
        t = analysis.load({exp!r}, write=False)
        print(json.dumps({{"stats": t.teachers[["snapshot_epoch", "max_prob_T1", "entropy_T4"]].values.tolist(),
                          "notes": t.notes}}))
        """)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    (e1, max_prob_t1, entropy_t4), (e2, *missing) = out["stats"]
    logits = np.load(os.path.join(tmp_path, "snapshots", HASH, "epoch_001.val_logits.npy"))
    assert (e1, e2) == (1, 2)
    assert max_prob_t1 == pytest.approx(soft_label_stats(logits, 1.0)["max_prob"], rel=1e-12)
    assert entropy_t4 == pytest.approx(soft_label_stats(logits, 4.0)["entropy"], rel=1e-12)
    assert all(v is None or v != v for v in missing)  # NaN: snapshot e2 was saved before logits were stored
    assert any(f"{HASH} e2" in n and "retrain" in n for n in out["notes"]), out["notes"]
    with open(os.path.join(exp, "report", "report.md")) as f:
        assert "scikit-learn is not installed" in f.read()  # the importance section, skipped with a note


def test_soft_label_stats_match_torch():
    """The numpy statistics analysis computes equal torch's (log_softmax in float64), as analysis used to."""
    torch = pytest.importorskip("torch")
    logits = np.random.default_rng(1).normal(size=(40, 10)).astype(np.float32) * 5
    for t in (1.0, 2.5, 4.0):
        logp = torch.log_softmax(torch.from_numpy(logits).double() / t, dim=1)
        p = logp.exp()
        got = soft_label_stats(logits, t)
        assert got["max_prob"] == pytest.approx(float(p.max(1).values.mean()), rel=1e-12)
        assert got["entropy"] == pytest.approx(float(-(p * logp).sum(1).mean()), rel=1e-12)


def test_the_core_imports_no_ray():
    done = _run_without_ray("""
        import tune_eskd.record, tune_eskd.blobs, tune_eskd.snapshots, tune_eskd.soft_labels, tune_eskd.teachers
        import tune_eskd.single_run, tune_eskd.experiment, tune_eskd.engine, tune_eskd.config, tune_eskd.cpus
        import tune_eskd.trial_files, tune_eskd.status
        """, "the core")
    assert done.returncode == 0, done.stderr[-3000:]


def test_status_runs_with_ray_blocked(tmp_path):
    """`tune-eskd status` reads trial folders (trial_files), not Tune's state: no Ray needed (torch is: the
    space is validated, which builds its teachers)."""
    exp = _experiment(str(tmp_path))
    with open(os.path.join(exp, "students", "experiment_state-2026-01-01_00-00-00.json"), "w") as f:
        f.write("{}")  # the stage has started; status only checks that this file exists, never reads it
    done = _run_without_ray(f"""
        from tune_eskd.cli import main

        assert main(["status", {exp!r}]) == 0
        """, "status")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "students: 18 trials: 18 terminated; 0 left to run" in done.stdout, done.stdout
    assert "best so far: val_acc" in done.stdout, done.stdout


def test_local_cpus_matches_rays_count():
    from ray._private.utils import get_num_cpus

    assert local_cpus() == int(get_num_cpus())


@pytest.mark.parametrize("files, expected", [
    ({"cpu.max": "150000 100000"}, 1),                     # cgroup v2 quota of 1.5 CPUs: whole CPUs only
    ({"cpu.max": "400000 100000", "cpuset/cpuset.cpus": "0-2"}, 3),   # the smaller of quota and cpuset
    ({"cpu/cpu.cfs_quota_us": "200000", "cpu/cpu.cfs_period_us": "100000"}, 2),   # cgroup v1
    ({"cpuset/cpuset.cpus": "0-3,6"}, 5),
    ({"cpu.max": "50000 100000"}, 1),                      # under one CPU still runs one trial
])
def test_local_cpus_reads_cgroup_limits(tmp_path, monkeypatch, files, expected):
    monkeypatch.delenv("RAY_USE_MULTIPROCESSING_CPU_COUNT", raising=False)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text + "\n")
    assert local_cpus(str(tmp_path)) == expected


def test_local_cpus_without_limits_is_the_cpu_count(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_USE_MULTIPROCESSING_CPU_COUNT", raising=False)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert local_cpus(str(tmp_path)) == os.cpu_count()
