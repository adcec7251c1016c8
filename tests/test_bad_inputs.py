"""The bad-input catalogue: every malformed input ends with one `tune-eskd: error:` line and exit status 2,
before Ray starts and without changing anything on disk.

Each case is a row of CASES: an id, a setup that writes whatever the input needs under a scratch folder and
returns the command line, and a distinctive substring of the expected message. The test runs the command
through `tune_eskd.cli.main` in-process with `ray.init` replaced by a tripwire, and hashes the whole scratch
folder (the experiment dirs, snapshots, datasets and storage the command points at) before and after.
RELIABILITY.md lists the catalogue with its messages.
"""
import json
import os
import shutil

import numpy as np
import pytest

from sweep_helpers import expect_one_line_error, tree_digest

# --- helpers that build the inputs -----------------------------------------------------------------------------------

SPACE_OK = """\
dataset: synthetic
subset: 400
teacher_arch: resnet8
teacher_epochs: 4
snapshots: [2, 4]
student_arch: resnet8
epochs: 4
kd_epochs: [0, 2]
alpha: [0.5, 0.9]
"""


def sweep(tmp, *extra, space=None):
    """`tune-eskd sweep` into tmp/runs (which must stay untouched), on a small valid space unless given."""
    if space is None:
        space = write(tmp, "space.yaml", SPACE_OK)
    return ["sweep", "--space", space, "--storage", str(tmp / "runs"), "--name", "x", *extra]


def space_file(text):
    """A search-space YAML: the valid base with `text` appended (YAML takes the last value of a repeated key)."""
    return lambda tmp: sweep(tmp, space=write(tmp, "space.yaml", SPACE_OK + text))


def space_only(text):
    """A search-space YAML holding exactly `text`."""
    return lambda tmp: sweep(tmp, space=write(tmp, "space.yaml", text))


def write(tmp, name, text) -> str:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def teacher(tmp, *extra):
    return ["train-teacher", "--model", "resnet8", "--epochs", "2", "--subset", "400", "--device", "cpu",
            "--threads", "1", "--snapshots", "1", "2", "--out", str(tmp / "out"), *extra]


def student(tmp, snapshot, *extra):
    from conftest import TEACHER_DATA

    return ["train-student", "--model", "resnet8", "--epochs", "2", "--kd-epochs", "1", "--dataset",
            TEACHER_DATA["dataset"], "--subset", str(TEACHER_DATA["subset"]), "--val-split",
            str(TEACHER_DATA["val_split"]), "--teacher-snapshot", str(snapshot), "--device", "cpu",
            "--threads", "1", "--out", str(tmp / "out"), *extra]


def copied_snapshot(tmp, teacher_run, damage=None) -> str:
    for ext in (".pt", ".json"):
        shutil.copy(teacher_run.snapshot[:-3] + ext, tmp / f"snap{ext}")
    if damage:
        damage(tmp / "snap.pt", tmp / "snap.json")
    return str(tmp / "snap.pt")


def truncate(pt, meta):
    with open(pt, "r+b") as f:
        f.truncate(os.path.getsize(pt) // 2)


def relabel_arch(arch):
    def damage(pt, meta):
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "arch": arch}))
    return damage


def experiment(tmp, record) -> str:
    """An experiment folder holding a sweep.json with `record` (a dict, or raw text)."""
    path = tmp / "runs" / "exp"
    path.mkdir(parents=True)
    (path / "sweep.json").write_text(record if isinstance(record, str) else json.dumps(record))
    return str(path)


def existing(tmp, name) -> str:
    """A finished-looking experiment STORAGE/name (its sweep.json and a trial file)."""
    path = tmp / "runs" / name
    (path / "students" / "t1").mkdir(parents=True)
    (path / "students" / "t1" / "result.json").write_text('{"epoch": 1}\n')
    (path / "sweep.json").write_text(json.dumps(good_record(tmp)))
    return str(path)


def good_record(tmp) -> dict:
    from search_spaces import load_space
    from tune_eskd.experiment import SweepOptions
    import dataclasses

    space = load_space(write(tmp, "space.yaml", SPACE_OK))
    return {"space_name": space.name, "space": space.values,
            "options": dataclasses.asdict(SweepOptions(storage=str(tmp / "runs"), name="exp")), "versions": {}}


def imagefolder(tmp, train_classes=("a", "b"), test_classes=("a", "b"), images=2, junk=None) -> str:
    from PIL import Image

    root = tmp / "imgs"
    for split, classes in (("train", train_classes), ("test", test_classes)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(images):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / split / c / f"{i}.png")
    if junk:
        (root / "train" / train_classes[0] / junk).write_bytes(b"this is not an image")
    return f"imagefolder:{root}"


def npz(tmp, **arrays) -> str:
    rng = np.random.default_rng(0)
    base = {"x_train": rng.integers(0, 255, (40, 32, 32, 3), dtype=np.uint8), "y_train": np.arange(40) % 4,
            "x_test": rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8), "y_test": np.arange(20) % 4}
    base.update(arrays)
    path = tmp / "data.npz"
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return f"npz:{path}"


def garbage_file(tmp, name) -> str:
    path = tmp / name
    path.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    return str(path)


# --- the catalogue -----------------------------------------------------------------------------------------------------
# (id, setup(tmp) -> argv, expected substring of the one-line error)

SPACE_CASES = [
    ("yaml-syntax", space_only("alpha: [0.5, 0.9\nseed: 0\n"), "is not valid YAML at line"),
    ("yaml-not-mapping", space_only("- alpha\n- 0.9\n"), "expected a mapping of keys to values, got list"),
    ("unknown-key", space_file("alpah: 0.9\n"), "unknown key 'alpah': did you mean 'alpha'?"),
    ("epochs-not-int", space_file("epochs: three\n"), "epochs must be a positive integer, got 'three'"),
    ("epochs-bool", space_file("teacher_epochs: true\n"), "epochs must be a positive integer, got True"),
    ("lr-not-number", space_file("lr: fast\n"), "student: lr must be a number, got 'fast'"),
    ("alpha-bool", space_file("alpha: [0.5, yes]\n"), "alpha must be a number, got True"),
    ("teacher-lr-string", space_file("teacher_lr: '0.1'\n"), "teacher: lr must be a number, got '0.1'"),
    ("empty-list", space_file("alpha: []\n"), "alpha is an empty list"),
    ("distribution-on-teacher-key", space_file("teacher_epochs: {choice: [2, 4]}\n"),
     "teacher_epochs cannot be sampled from choice"),
    ("distribution-on-teacher-seed", space_file("teacher_seed: {randint: [0, 3]}\n"),
     "teacher_seed cannot be sampled from randint"),
    ("not-a-distribution", space_file("alpha: {normal: [0, 1]}\n"), "is not a distribution"),
    ("distribution-not-allowed", space_file("alpha: {loguniform: [0.1, 0.9]}\n"),
     "alpha cannot be sampled from loguniform"),
    ("distribution-one-bound", space_file("lr: {uniform: [0.1]}\n"), "uniform takes a list [low, high]"),
    ("distribution-low-above-high", space_file("lr: {uniform: [0.2, 0.1]}\n"), "needs low < high"),
    ("snapshot-beyond-teacher-epochs", space_file("snapshots: [2, 8]\n"), "snapshot epochs [8] lie outside 1..4"),
    ("snapshots-not-a-list", space_file("snapshots: 3\n"), "snapshots must be a list of epochs"),
    ("snapshots-repeated", space_file("snapshots: [2, 2]\n"), "lists an epoch twice"),
    ("num-samples-without-distribution", space_file("num_samples: 3\n"), "would repeat identical trials"),
    ("num-samples-zero", space_file("num_samples: 0\nlr: {uniform: [0.05, 0.1]}\n"),
     "num_samples must be a positive integer"),
    ("num-samples-list", space_file("num_samples: [1, 2]\n"), "num_samples must be a single value"),
    ("alpha-out-of-range", space_file("alpha: [0.5, 1.5]\n"), "alpha must be in [0, 1]"),
    ("kd-epochs-beyond-epochs", space_file("kd_epochs: [0, 6]\n"), "kd_epochs 6 must be in 0..epochs (4)"),
    ("kd-epochs-distribution-beyond-epochs", space_file("kd_epochs: {randint: [1, 9]}\n"), "kd_epochs 9"),
    ("kd-epochs-distribution-draws-0", space_file("kd_epochs: {randint: [0, 3]}\n"),
     "can draw 0, the CE-only baseline"),
    ("val-split-zero", space_file("val_split: 0\n"), "val_split 0 leaves nothing to select on"),
    ("data-key-as-list", space_file("dataset: [synthetic, cifar10]\n"), "dataset must be a single value"),
    ("unknown-teacher-arch", space_file("teacher_arch: [resnet8, vgg16]\n"), "unknown model 'vgg16'"),
    ("unknown-dataset", space_file("dataset: imagenet\n"), "unknown dataset 'imagenet'"),
    ("missing-space-file", lambda tmp: sweep(tmp, space=str(tmp / "nope.yaml")), "cannot read search space"),
    ("space-file-is-a-folder", lambda tmp: sweep(tmp, space=str((tmp / "dir.yaml").mkdir() or tmp / "dir.yaml")),
     "cannot read search space"),
    ("unknown-preset", lambda tmp: sweep(tmp, space="quik"), "unknown search space 'quik'"),
    ("set-without-equals", lambda tmp: sweep(tmp, "--set", "alpha"), "is not key=value"),
    ("set-bad-yaml", lambda tmp: sweep(tmp, "--set", "alpha=[0.5, 0.9"), "the value is not valid YAML"),
    ("set-unknown-key", lambda tmp: sweep(tmp, "--set", "temprature=2"), "did you mean 'temperature'?"),
]

FLAG_CASES = [
    ("sweep-name-with-slash", lambda tmp: sweep(tmp, "--name", "a/b"), "must be a plain folder name"),
    ("sweep-name-reserved", lambda tmp: sweep(tmp, "--name", "snapshots"), "is reserved for the shared store"),
    ("sweep-cpus-zero", lambda tmp: sweep(tmp, "--cpus-per-trial", "0"), "--cpus-per-trial must be > 0"),
    ("sweep-cpus-beyond-machine", lambda tmp: sweep(tmp, "--cpus-per-trial", "4096"),
     "--cpus-per-trial 4096 exceeds the"),
    ("sweep-gpus-negative", lambda tmp: sweep(tmp, "--gpus-per-trial", "-1"), "--gpus-per-trial must be >= 0"),
    ("sweep-max-concurrent-zero", lambda tmp: sweep(tmp, "--max-concurrent", "0"), "--max-concurrent must be >= 1"),
    ("sweep-reduction-factor-one", lambda tmp: sweep(tmp, "--reduction-factor", "1"), "--reduction-factor must be > 1"),
    ("sweep-grace-period-zero", lambda tmp: sweep(tmp, "--grace-period", "0"), "--grace-period must be >= 1"),
    ("sweep-grace-beyond-max-t", lambda tmp: sweep(tmp, "--scheduler", "asha", "--grace-period", "9"),
     "ASHA grace period 9 exceeds max_t 4"),
    ("sweep-max-failures-negative", lambda tmp: sweep(tmp, "--max-failures", "-5"), "--max-failures must be"),
    ("sweep-unknown-scheduler", lambda tmp: sweep(tmp, "--scheduler", "hyperband"), "unknown --scheduler 'hyperband': choose one of fifo, asha"),
    ("sweep-cpus-not-a-number", lambda tmp: sweep(tmp, "--cpus-per-trial", "two"), "invalid float value: 'two'"),
    ("sweep-unknown-flag", lambda tmp: sweep(tmp, "--fast"), "unrecognized arguments"),
    ("teacher-epochs-not-int", lambda tmp: teacher(tmp, "--epochs", "ten"), "invalid int value: 'ten'"),
    ("teacher-unknown-device", lambda tmp: teacher(tmp, "--device", "tpu"), "unknown device 'tpu'"),
    ("teacher-snapshot-beyond-epochs", lambda tmp: teacher(tmp, "--snapshots", "1", "5"),
     "snapshot epochs [5] lie outside 1..2"),
    ("teacher-no-out", lambda tmp: [a for a in teacher(tmp) if a not in ("--out", str(tmp / "out"))],
     "the following arguments are required: --out"),
    ("student-no-snapshot-flag", lambda tmp: ["train-student", "--out", str(tmp / "out")],
     "the following arguments are required: --teacher-snapshot"),
    ("status-missing-argument", lambda tmp: ["status"], "the following arguments are required: experiment"),
]

DATA_CASES = [
    ("imagefolder-without-train-test", lambda tmp: teacher(tmp, "--dataset", f"imagefolder:{tmp}"),
     "has no train/ or test/"),
    ("imagefolder-no-class-folders",
     lambda tmp: teacher(tmp, "--dataset", imagefolder(tmp, train_classes=(), test_classes=()), "--subset", "10"),
     "has no class folders"),
    ("imagefolder-empty-test-split",
     lambda tmp: teacher(tmp, "--dataset", imagefolder(tmp, test_classes=()), "--subset", "10"),
     "test holds no images"),
    ("imagefolder-unreadable-image",
     lambda tmp: teacher(tmp, "--dataset", imagefolder(tmp, junk="broken.png"), "--subset", "10"),
     "is not an image PIL can read"),
    ("npz-missing", lambda tmp: teacher(tmp, "--dataset", f"npz:{tmp}/none.npz"), "does not exist"),
    ("npz-not-a-zip", lambda tmp: teacher(tmp, "--dataset", "npz:" + garbage_file(tmp, "bad.npz"), "--subset", "10"),
     "is not a readable .npz archive"),
    ("npz-missing-arrays", lambda tmp: teacher(tmp, "--dataset", npz(tmp, y_test=None), "--subset", "10"),
     "lacks arrays ['y_test']"),
    ("npz-pickled-objects",
     lambda tmp: teacher(tmp, "--dataset", npz(tmp, y_train=np.array([{"a": 1}] * 40, dtype=object)),
                         "--subset", "10"),
     "is not a readable .npz archive"),
    ("npz-images-not-4d",
     lambda tmp: teacher(tmp, "--dataset", npz(tmp, x_train=np.zeros((40, 3072), np.uint8)), "--subset", "10"),
     "x_train has shape (40, 3072)"),
    ("npz-label-count-mismatch",
     lambda tmp: teacher(tmp, "--dataset", npz(tmp, y_train=np.arange(39) % 4), "--subset", "10"),
     "40 images but 39 labels"),
    ("npz-negative-labels",
     lambda tmp: teacher(tmp, "--dataset", npz(tmp, y_test=-(np.arange(20) % 4)), "--subset", "10"),
     "labels must be"),
    ("sweep-on-unreadable-npz",
     lambda tmp: sweep(tmp, "--set", "dataset=npz:" + garbage_file(tmp, "bad.npz"), "--set", "subset=null"),
     "is not a readable .npz archive"),
]

SNAPSHOT_CASES = [
    ("snapshot-missing", lambda tmp, t: student(tmp, tmp / "epoch_009.pt"), "has no metadata file"),
    ("snapshot-weights-missing",
     lambda tmp, t: student(tmp, copied_snapshot(tmp, t, lambda pt, meta: os.remove(pt))),
     "snapshot weights"),
    ("snapshot-truncated", lambda tmp, t: student(tmp, copied_snapshot(tmp, t, truncate)), "checksum mismatch"),
    ("snapshot-wrong-arch", lambda tmp, t: student(tmp, copied_snapshot(tmp, t, relabel_arch("resnet20"))),
     "do not fit arch 'resnet20'"),
    ("snapshot-unknown-arch", lambda tmp, t: student(tmp, copied_snapshot(tmp, t, relabel_arch("vgg11"))),
     "unknown arch 'vgg11'"),
    ("snapshot-metadata-not-json",
     lambda tmp, t: student(tmp, copied_snapshot(tmp, t, lambda pt, meta: meta.write_text("{oops"))),
     "is not valid JSON"),
    ("snapshot-other-data", lambda tmp, t: student(tmp, t.snapshot, "--subset", "500"), "was trained on"),
]

EXPERIMENT_CASES = [
    ("resume-not-an-experiment", lambda tmp: ["resume", str((tmp / "plain").mkdir() or tmp / "plain")],
     "is not a tune-eskd experiment (no sweep.json)"),
    ("resume-missing-folder", lambda tmp: ["resume", str(tmp / "nowhere")], "is not a tune-eskd experiment"),
    ("resume-sweep-json-not-json", lambda tmp: ["resume", experiment(tmp, '{"space_name": "x", "sp')],
     "sweep.json is not valid JSON"),
    ("resume-sweep-json-empty-object", lambda tmp: ["resume", experiment(tmp, {})], "sweep.json is damaged"),
    ("resume-sweep-json-a-list", lambda tmp: ["resume", experiment(tmp, [1, 2])], "sweep.json is damaged"),
    ("resume-sweep-json-unknown-option",
     lambda tmp: ["resume", experiment(tmp, {**good_record(tmp),
                                             "options": {**good_record(tmp)["options"], "bogus": 1}})],
     "sweep.json is damaged"),
    ("resume-sweep-json-invalid-space",
     lambda tmp: ["resume", experiment(tmp, {**good_record(tmp), "space": {**good_record(tmp)["space"], "alpha": 7}})],
     "alpha must be in [0, 1]"),
    ("status-not-an-experiment", lambda tmp: ["status", str(tmp)], "is not a tune-eskd experiment"),
    ("status-sweep-json-not-json", lambda tmp: ["status", experiment(tmp, "not json")], "is not valid JSON"),
    ("status-sweep-json-empty-object", lambda tmp: ["status", experiment(tmp, {})], "sweep.json is damaged"),
    ("sweep-over-existing-experiment", lambda tmp: sweep(tmp) if existing(tmp, "x") else None,
     "already exists: continue it with `tune-eskd resume"),
    ("sweep-storage-below-a-file", lambda tmp: ["sweep", "--space", write(tmp, "s.yaml", SPACE_OK), "--storage",
                                                write(tmp, "afile", "x") + "/runs", "--name", "x"],
     "cannot write to storage"),
]


def _ids(cases):
    return [c[0] for c in cases]


def _run_case(tmp_path, capsys, setup, needle, *setup_args):
    scratch = tmp_path / "case"
    scratch.mkdir()
    argv = setup(scratch, *setup_args)
    before = tree_digest(tmp_path)
    line = expect_one_line_error(capsys, argv, needle)
    assert tree_digest(tmp_path) == before, "a refused input changed files on disk"
    return line


@pytest.mark.parametrize("case,setup,needle", SPACE_CASES + FLAG_CASES + DATA_CASES + EXPERIMENT_CASES,
                         ids=_ids(SPACE_CASES + FLAG_CASES + DATA_CASES + EXPERIMENT_CASES))
def test_bad_input_is_refused_with_one_line(tmp_path, capsys, no_ray, case, setup, needle):
    _run_case(tmp_path, capsys, setup, needle)


@pytest.mark.parametrize("case,setup,needle", SNAPSHOT_CASES, ids=_ids(SNAPSHOT_CASES))
def test_bad_snapshot_is_refused_with_one_line(tmp_path, capsys, no_ray, teacher_run, case, setup, needle):
    _run_case(tmp_path, capsys, setup, needle, teacher_run)


def test_gpus_asked_for_on_a_machine_without_gpus_is_refused(tmp_path, capsys, no_ray):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    _run_case(tmp_path, capsys, lambda tmp: sweep(tmp, "--gpus-per-trial", "0.5"), "no GPU")


# --- security: untrusted files are data, never code ------------------------------------------------------------------
# Cheap static checks over every module of the installed packages, plus one look at how a sweep starts Ray.

PACKAGES = ("tune_eskd", "trainables", "search_spaces", "analysis")


def _package_trees():
    import ast

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for package in PACKAGES:
        for d, _, files in os.walk(os.path.join(root, package)):
            for f in sorted(files):
                if f.endswith(".py"):
                    path = os.path.join(d, f)
                    with open(path) as fh:
                        yield os.path.relpath(path, root), ast.parse(fh.read(), path)


def _calls(tree):
    import ast

    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _dotted(node) -> str:
    import ast

    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def _keyword(call, name):
    import ast

    kw = next((k for k in call.keywords if k.arg == name), None)
    return kw.value.value if kw is not None and isinstance(kw.value, ast.Constant) else "<missing or not a constant>"


def test_every_torch_load_passes_weights_only_true():
    import ast

    loads, aliases = [], []
    for path, tree in _package_trees():
        loads += [(path, call.lineno, _keyword(call, "weights_only")) for call in _calls(tree)
                  if _dotted(call.func) == "torch.load"]
        aliases += [(path, node.lineno) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                    and (node.module or "").startswith("torch") and any(a.name == "load" for a in node.names)]
    assert loads, "found no torch.load at all: the check is looking in the wrong place"
    assert aliases == [], "torch.load imported under another name escapes this check"
    assert [load for load in loads if load[2] is not True] == [], loads


def test_yaml_is_parsed_with_safe_load_only():
    allowed = {"yaml.safe_load", "yaml.safe_load_all", "yaml.safe_dump", "yaml.YAMLError"}
    used = []
    for path, tree in _package_trees():
        import ast

        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _dotted(node).startswith("yaml."):
                used.append((path, node.lineno, _dotted(node)))
            if isinstance(node, ast.ImportFrom) and node.module == "yaml":
                used.append((path, node.lineno, "from yaml import ..."))
    assert any(u[2] == "yaml.safe_load" for u in used)
    assert [u for u in used if u[2] not in allowed] == []


def test_no_eval_exec_or_pickle_on_config_strings():
    import ast

    bad = []
    for path, tree in _package_trees():
        for call in _calls(tree):
            name = _dotted(call.func)
            if name in ("eval", "exec", "compile", "__import__", "pd.eval", "pandas.eval"):
                bad.append((path, call.lineno, name))
            # DataFrame.eval/.query evaluate strings: only the --query expression the user typed may reach one
            if name.endswith((".eval", ".query")) and call.args and path != os.path.join("analysis", "results.py"):
                bad.append((path, call.lineno, name))
        # A serializer may be imported only for its exception class (to name a refused pickle payload), and by
        # the Optuna searcher, whose studies Tune checkpoints as pickles like every searcher's state (resuming
        # an experiment already trusts its folder: Tune itself unpickles the experiment state there).
        if path == os.path.join("tune_eskd", "search.py"):
            continue
        serializers = ("pickle", "cloudpickle", "marshal", "shelve", "dill")
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported = [a.name for a in node.names if a.name.split(".")[0] in serializers]
                uses = [_dotted(n) for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                        and _dotted(n).split(".")[0] in imported]
                bad += [(path, node.lineno, u) for u in uses if not u.endswith(".UnpicklingError")]
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in serializers:
                bad += [(path, node.lineno, a.name) for a in node.names if a.name != "UnpicklingError"]
    assert bad == []


def test_numpy_arrays_are_loaded_without_pickle():
    loads = [(path, call.lineno, _keyword(call, "allow_pickle")) for path, tree in _package_trees()
             for call in _calls(tree) if _dotted(call.func) in ("np.load", "numpy.load")]
    assert loads and all(l[2] is False for l in loads), loads


def test_the_local_ray_a_sweep_starts_has_no_dashboard(monkeypatch):
    import ray

    from tune_eskd import pipeline

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    assert pipeline._start_ray(None) is True
    assert calls == [{**calls[0], "address": "local", "include_dashboard": False}]
