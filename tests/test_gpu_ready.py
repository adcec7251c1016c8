"""The CUDA path, checked on a CPU before the first GPU run (issue 15, and the GPU default of issue 16).

The training math runs for real on the CPU, where bf16/fp16 autocast and channels_last exist too. Only the
questions a GPU answers (is CUDA there, how many GPUs, which compute capability, the memory-cap and
synchronize calls) are patched, to drive the decisions a GPU machine would take.
"""
import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from sweep_helpers import own_lines
from tune_eskd import gpu
from tune_eskd.config import StudentConfig, TeacherConfig
from tune_eskd.data import load_splits
from tune_eskd.engine import Images, Trainer, live_teacher, pick_device
from tune_eskd.errors import UsageError
from tune_eskd.models import build_model
from tune_eskd.soft_labels import SoftLabelCache, cache_key, compute_epoch_logits, ensure_soft_labels
from tune_eskd.teachers import save_teacher_snapshot

CPU = torch.device("cpu")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = dict(dataset="synthetic", subset=300, val_split=0.1)


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and far faster when other jobs share the cores
    full = load_splits("synthetic", subset=300, val_split=0.1)
    return dataclasses.replace(full, test_x=full.test_x[:100], test_y=full.test_y[:100])  # cheap evaluation


@pytest.fixture(autouse=True)
def restore_backends():
    """configure_backends changes process-wide flags: put them back for the other tests."""
    flags = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags[0], flags[1]
    torch.use_deterministic_algorithms(flags[2])
    if flags[3] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def tiny_student(**kw) -> StudentConfig:
    return StudentConfig(**{"model": "resnet8", "width": 0.25, "epochs": 2, "kd_epochs": 1, "batch_size": 64,
                            "seed": 0, **DATA, **kw})


# --- 1. the epoch clock waits for the device ---------------------------------------------------------------------

def test_epoch_clock_is_read_after_the_device_finishes(data, monkeypatch):
    """On CUDA the loop only queues kernels; the clock must stop once they ran. A device that still needs 0.4 s
    when the loop ends must show in images_per_sec (before: the clock stopped at the end of the loop)."""
    waited = []

    def device_still_busy(device):
        time.sleep(0.4)
        waited.append(device)

    monkeypatch.setattr(gpu, "synchronize", device_still_busy)
    trainer = Trainer(tiny_student(kd_epochs=0), data, CPU)
    m = trainer.run_epoch()
    assert waited == [CPU]
    assert len(trainer.train) / m["images_per_sec"] >= 0.4


def test_synchronize_waits_for_cuda_only(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    gpu.synchronize(CPU)
    gpu.synchronize(torch.device("cuda", 0))
    assert calls == [torch.device("cuda", 0)]


# --- 2 and 4. cudnn.benchmark, or the determinism switch ---------------------------------------------------------

def test_backends_benchmark_by_default_deterministic_on_request(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    gpu.configure_backends(deterministic=False)
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    assert not torch.are_deterministic_algorithms_enabled()
    gpu.configure_backends(deterministic=True)
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert torch.are_deterministic_algorithms_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_single_runs_set_the_backends(tmp_path):
    """train-teacher sets cudnn.benchmark (before: never set), and --deterministic switches to deterministic
    kernels; a whole teacher then trains under use_deterministic_algorithms(True) (no op of ours lacks one)."""
    from tune_eskd.single_run import train_teacher

    torch.backends.cudnn.benchmark = False
    cfg = TeacherConfig(model="resnet8", width=0.25, epochs=1, batch_size=64, snapshots=[1], **DATA)
    train_teacher(cfg, str(tmp_path / "a"), device="cpu", threads=1)
    assert torch.backends.cudnn.benchmark
    first = json.loads(open(tmp_path / "a" / "metrics.jsonl").readline())
    train_teacher(cfg, str(tmp_path / "b"), device="cpu", threads=1, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    second = json.loads(open(tmp_path / "b" / "metrics.jsonl").readline())
    timing = ("epoch_seconds", "images_per_sec")
    assert {k: v for k, v in first.items() if k not in timing} == {k: v for k, v in second.items() if k not in timing}


@pytest.mark.parametrize("name", ["resnet8", "resnet50"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_mean_pool_is_bit_identical_to_adaptive_avg_pool(name, channels_last):
    """The pool is now a mean over H and W (AdaptiveAvgPool2d's CUDA backward has no deterministic kernel): the
    CPU outputs and every gradient are bit-identical to the old module's."""
    torch.manual_seed(0)
    model = build_model(name, 10, 0.25)
    x = torch.randn(16, 3, 32, 32)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)

    def old_forward(m, inputs):
        return m.fc(torch.flatten(nn.AdaptiveAvgPool2d(1)(m.stages(m.stem(inputs))), 1))

    grads = []
    for forward in (old_forward, lambda m, inputs: m(inputs)):
        model.zero_grad()
        out = forward(model, x)
        (out.square().sum()).backward()
        grads.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    (old_out, old_grads), (new_out, new_grads) = grads
    assert torch.equal(old_out, new_out)
    assert all(torch.equal(a, b) for a, b in zip(old_grads, new_grads))


# --- 3. memory: a cap per trial, and a packing that cannot fit refused before the run -----------------------------

def test_a_trial_sharing_a_gpu_caps_its_memory(monkeypatch):
    """torch wants a device index: a Ray worker's bare "cuda" device means the current GPU (passing the device
    itself made every fractional-GPU trial fail at its start on the first GPU run, BENCHMARKS.md)."""
    calls = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d=None: calls.append((f, d)))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    gpu.cap_memory(torch.device("cuda"), 0.25)
    gpu.cap_memory(torch.device("cuda", 3), 0.5)
    gpu.cap_memory(torch.device("cuda", 0), 1.0)  # a whole GPU: no cap
    gpu.cap_memory(CPU, 0.25)
    assert calls == [(pytest.approx(0.25 * 0.95), 0), (pytest.approx(0.5 * 0.95), 3)]


def test_trials_and_soft_label_tasks_on_a_shared_gpu_set_up_their_device(monkeypatch):
    """What trainables.runtime.worker_device does in a trial or task holding 0.25 of GPU 0: the backends as the
    sweep asks, expandable segments, the memory cap, and a fresh peak-memory count (the actor may be reused)."""
    import ray

    from trainables.runtime import worker_device

    calls = []
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [0])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d=None: calls.append(("cap", f)))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d=None: calls.append(("reset", d)))
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    device = worker_device(0.25, gpu.DeviceSettings(deterministic=True))
    assert device == torch.device("cuda") and torch.are_deterministic_algorithms_enabled()
    assert calls == [("cap", pytest.approx(0.2375)), ("reset", device)]
    assert os.environ.pop("PYTORCH_CUDA_ALLOC_CONF") == "expandable_segments:True"


def _space(**values):
    from search_spaces import load_space, parse_overrides

    overrides = ["subset=300", "teacher_epochs=1", "snapshots=[1]", "epochs=1", "kd_epochs=1"]
    return load_space("quick", parse_overrides(overrides + [f"{k}={v}" for k, v in values.items()]))


def _options(tmp_path, **kw):
    from tune_eskd.experiment import SweepOptions

    return SweepOptions(storage=str(tmp_path / "runs"), name="gpu", **kw)


def test_default_gpus_per_trial_from_the_largest_trial(data, tmp_path, capsys):
    """Issue 16: with GPUs and no --gpus-per-trial, trials use them, packed by model size, said in one line;
    without GPUs, or with --gpus-per-trial 0, trials run on the CPU (before: always 0, the CPU)."""
    from tune_eskd.gpu_plan import plan_gpus

    gib = 2**30
    small = _options(tmp_path)
    plan_gpus(_space(), small, data, gpu_count=2, gpu_bytes=80 * gib)
    line = capsys.readouterr().out.strip()
    assert small.gpus_per_trial == 0.25 and "\n" not in line
    assert "2 found" in line and "using 0.25 per trial (4 per GPU" in line and "--gpus-per-trial 0" in line

    big = _options(tmp_path)  # resnet50 at batch 512 needs more than 0.25 and 0.5 of an 16 GB GPU
    plan_gpus(_space(teacher_arch="resnet50", student_arch="resnet50", student_width=1.0, batch_size=512),
              big, data, gpu_count=1, gpu_bytes=16 * gib)
    assert big.gpus_per_trial == 1.0 and "using 1 per trial" in capsys.readouterr().out

    for options, count in ((_options(tmp_path), 0), (_options(tmp_path, gpus_per_trial=0), 4)):
        plan_gpus(_space(), options, data, gpu_count=count, gpu_bytes=80 * gib)
        assert options.gpus_per_trial == 0
    assert capsys.readouterr().out == ""


def test_packing_that_cannot_fit_is_refused_before_the_run(tmp_path, monkeypatch):
    """Four resnet50 trials at batch 512 on one 16 GB GPU: one line naming the estimate and the fix, before Ray
    starts or anything is written."""
    import ray

    from tune_eskd import pipeline

    def ray_started(*args, **kwargs):  # a tripwire: other tests of the session may have Ray running already
        raise AssertionError("the sweep started Ray before refusing the packing")

    monkeypatch.setattr(ray, "init", ray_started)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(pipeline, "local_gpu_bytes", lambda: 16 * 2**30)
    space = _space(teacher_arch="resnet50", student_arch="resnet50", student_width=1.0, batch_size=512)
    with pytest.raises(UsageError) as err:
        pipeline.run_sweep(space, _options(tmp_path, gpus_per_trial=0.25))
    msg = str(err.value)
    assert "\n" not in msg and "--gpus-per-trial 0.25 cannot fit" in msg and "resnet50" in msg
    assert "use --gpus-per-trial 1" in msg
    assert not os.path.exists(tmp_path / "runs" / "gpu")


def test_memory_estimate_grows_with_model_and_batch():
    from tune_eskd.models import activations_per_image, count_params

    def estimate(name, batch):
        m = build_model(name, 10)
        return gpu.trial_bytes(count_params(m), activations_per_image(m), batch, 184 * 2**20)

    assert gpu.CUDA_CONTEXT_BYTES < estimate("resnet8", 128) < estimate("resnet18", 128) < estimate("resnet50", 128)
    assert estimate("resnet50", 256) > estimate("resnet50", 128)
    assert 1 * 2**30 < estimate("resnet50", 128) < 8 * 2**30  # "activations that reach GBs for a ResNet-50"


# --- 5. the classifier head in float32 ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_logits_are_float32_under_autocast(dtype):
    """Before: the final Linear ran under autocast, so logits (and the KD loss, and val_acc's argmax) were bf16."""
    model = build_model("resnet8", 10, 0.25)
    with torch.autocast("cpu", dtype=dtype):
        logits = model(torch.randn(4, 3, 32, 32))
    assert logits.dtype == torch.float32


def test_bf16_training_runs_and_says_so(data):
    trainer = Trainer(tiny_student(kd_epochs=0), data, CPU, precision="bf16")
    m = trainer.run_epoch()
    assert m["precision"] == "bf16" and m["train_loss"] > 0 and 0 <= m["val_acc"] <= 1
    assert Trainer(tiny_student(kd_epochs=0), data, CPU).run_epoch()["precision"] == "float32"


# --- 6. the soft-label cache keys the teacher pass's precision and device ----------------------------------------

@pytest.fixture(scope="module")
def snapshot(data, tmp_path_factory):
    tcfg = TeacherConfig(model="resnet8", width=0.5, epochs=1, batch_size=64, snapshots=[1], **DATA)
    trainer = Trainer(tcfg, data, CPU)
    metrics = trainer.run_epoch()
    path = str(tmp_path_factory.mktemp("snap") / tcfg.teacher_hash() / "epoch_001.pt")
    save_teacher_snapshot(path, tcfg, trainer.model, metrics, data)
    return path


def test_cache_key_names_precision_and_device():
    cfg = tiny_student()
    keys = {cache_key(cfg), cache_key(cfg, "bf16", "cpu"), cache_key(cfg, "float32", "cuda"),
            cache_key(cfg, "bf16", "cuda")}
    assert len(keys) == 4 and cache_key(cfg) == cache_key(cfg, "float32", "cpu")


def test_bf16_teacher_pass_is_its_own_cache_entry(snapshot, data, tmp_path):
    """A float32 cache on shared storage is never served to a bf16 teacher pass (before: one key for both)."""
    cfg = tiny_student()
    root = str(tmp_path / "soft")
    exact, fast = SoftLabelCache(root), SoftLabelCache(root, "bf16", "cpu")
    assert ensure_soft_labels(exact, snapshot, cfg, data, [1], CPU, dtype=torch.float32) == [1]
    assert ensure_soft_labels(fast, snapshot, cfg, data, [1], CPU, dtype=torch.float32) == [1]  # not reused
    from tune_eskd.snapshots import read_metadata

    meta = read_metadata(snapshot)
    a = exact.load(meta["teacher_hash"], 1, cfg, 1)
    b = fast.load(meta["teacher_hash"], 1, cfg, 1)
    assert not torch.equal(a, b) and torch.allclose(a, b, rtol=0.05, atol=0.05 * a.abs().max().item())
    assert exact.metadata(meta["teacher_hash"], 1, cfg, 1)["precision"] == "float32"
    assert fast.metadata(meta["teacher_hash"], 1, cfg, 1)["precision"] == "bf16"
    with pytest.raises(ValueError, match="cuda teacher passes cannot be filled on cpu"):
        ensure_soft_labels(SoftLabelCache(root, "float32", "cuda"), snapshot, cfg, data, [2], CPU)


def test_bf16_teacher_pass_matches_the_live_bf16_teacher(snapshot, data):
    """The bf16 teacher pass (autocast + channels_last on CPU) gives, row for row, what a live bf16 teacher
    gives on the student's own batches: a student reads the same logits from the cache as live."""
    from tune_eskd.teachers import load_teacher

    cfg = tiny_student()
    model, _ = load_teacher(snapshot, cfg, data.num_classes, CPU)
    images = Images(data.train_x, data.train_y, data.mean, data.std, CPU)
    table = compute_epoch_logits(model, images, cfg.seed, 2, cfg.batch_size, "bf16")
    model, _ = load_teacher(snapshot, cfg, data.num_classes, CPU)
    teacher = live_teacher(model, "bf16")
    assert model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)  # the fast CPU bf16 layout
    for idx, inputs in images.views(cfg.seed, "student", 2, cfg.batch_size):
        assert torch.equal(table[idx], teacher(2, idx, inputs))


def test_teacher_precision_decisions():
    assert gpu.DeviceSettings().teacher_precision(CPU) == "float32"  # the exact default
    assert gpu.DeviceSettings(soft_label_precision="bf16").teacher_precision(CPU) == "bf16"
    assert gpu.teacher_precision("bf16", "cuda", (9, 0)) == "bf16"
    assert gpu.teacher_precision("bf16", "cuda", (7, 5)) == "float32"  # emulated bf16 on a T4: not used
    assert gpu.teacher_precision("float32", "cuda", (9, 0)) == "float32"


# --- 7. cuda:N checked against the GPUs there are ----------------------------------------------------------------

def test_cuda_index_beyond_the_gpus_fails_in_one_line(tmp_path, monkeypatch, capsys):
    from tune_eskd.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device("cuda:0") == torch.device("cuda", 0)
    out = tmp_path / "run"
    assert main(["train-teacher", "--model", "resnet8", "--device", "cuda:5", "--out", str(out)]) == 2
    err, = own_lines(capsys.readouterr().err)
    assert "cuda:5" in err and "1 GPU(s)" in err and "cuda:0..cuda:0" in err
    assert not out.exists()


# --- 8. bf16 only where native: fp16 with a GradScaler, or float32 ------------------------------------------------

@pytest.mark.parametrize("device_type, capability, expected", [
    ("cuda", (9, 0), "bf16"), ("cuda", (8, 0), "bf16"), ("cuda", (8, 6), "bf16"),
    ("cuda", (7, 5), "fp16"), ("cuda", (7, 0), "fp16"), ("cuda", (6, 1), "float32"), ("cpu", None, "float32")])
def test_training_precision_by_compute_capability(device_type, capability, expected):
    assert gpu.training_precision(device_type, capability) == expected


def test_fp16_training_uses_a_grad_scaler_and_resumes_exactly(data):
    """The fp16 path (Volta/Turing) trains with a GradScaler, whose state resumes with the trainer."""
    cfg = tiny_student(kd_epochs=0)
    data = dataclasses.replace(data, train_x=data.train_x[:64], train_y=data.train_y[:64])  # fp16 is slow on CPU
    full = Trainer(cfg, data, CPU, precision="fp16")
    history = [full.run_epoch() for _ in range(2)]
    assert full.scaler is not None and [m["precision"] for m in history] == ["fp16", "fp16"]
    assert all(m["train_loss"] > 0 for m in history)

    first = Trainer(cfg, data, CPU, precision="fp16")
    first.run_epoch()
    state = first.state_dict()
    assert "scaler" in state
    resumed = Trainer(cfg, data, CPU, precision="fp16")
    resumed.load_state_dict(state)
    last = resumed.run_epoch()
    timing = ("epoch_seconds", "images_per_sec")
    assert {k: v for k, v in last.items() if k not in timing} == {k: v for k, v in history[1].items() if k not in timing}


# --- a sweep carries the settings into its trials and soft-label tasks -------------------------------------------

def test_sweep_passes_determinism_and_teacher_precision_to_its_workers(tmp_path, ray_session):
    from search_spaces import load_space

    from tests.sweep_helpers import tiny_overrides, trial_results
    from tune_eskd.record import Experiment
    from tune_eskd.pipeline import run_sweep

    space = load_space("quick", tiny_overrides(["teacher_arch=resnet8", "snapshots=[2]", "kd_epochs=1"]))
    options = _options(tmp_path, deterministic=True, soft_label_precision="bf16")
    assert run_sweep(space, options) == 0
    exp = Experiment(options.storage, options.name)
    record = json.load(open(os.path.join(exp.path, "sweep.json")))["options"]
    assert record["deterministic"] and record["soft_label_precision"] == "bf16" and record["gpus_per_trial"] == 0
    metas = [json.load(open(os.path.join(d, f))) for d, _, files in os.walk(exp.soft_label_root) for f in files
             if f.endswith(".json")]
    assert metas and {(m["precision"], m["device_kind"]) for m in metas} == {("bf16", "cpu")}
    rows = [r for rows in trial_results(exp.students_path).values() for r in rows]
    assert rows and {r["precision"] for r in rows} == {"float32"}


# --- 9. bench/gpu_check.sh without a GPU -------------------------------------------------------------------------

def test_gpu_check_without_a_gpu_says_so_in_one_line_and_exits_0():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    before = open(os.path.join(ROOT, "BENCHMARKS.md")).read()
    done = subprocess.run(["bash", os.path.join(ROOT, "bench", "gpu_check.sh")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0]
    assert open(os.path.join(ROOT, "BENCHMARKS.md")).read() == before  # nothing recorded
