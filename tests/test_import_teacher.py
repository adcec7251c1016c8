"""Bring your own teacher: checkpoints in other layouts are imported into the snapshot store with their accuracy
measured, a sweep distills from them without training a teacher, and bad checkpoints are refused in one line."""
import json
import os

import pytest
import torch

from sweep_helpers import own_lines, trial_results
from tune_eskd.cli import main

# The session teacher's data (conftest.TEACHER_DATA) as CLI flags: an import must be measured on the same split.
DATA_FLAGS = ["--dataset", "synthetic", "--subset", "600", "--val-split", "0.1"]


def _torchvision_layout(state: dict) -> dict:
    """tune-eskd's key names -> torchvision's / the CIFAR scripts' (conv1, bn1, layerN, shortcut, linear)."""
    out = {}
    for key, value in state.items():
        key = key.replace("stem.0.", "conv1.").replace("stem.1.", "bn1.").replace("fc.", "linear.")
        if key.startswith("stages."):
            _, stage, rest = key.split(".", 2)
            key = f"layer{int(stage) + 1}.{rest.replace('downsample.', 'shortcut.')}"
        out[key] = value
    return out


def _snapshot(teacher_run, epoch: int) -> dict:
    return torch.load(os.path.join(teacher_run.snapshot_dir, f"epoch_{epoch:03d}.pt"), weights_only=True)


def _import(tmp_path, args: list[str], capsys) -> tuple[int, str, str]:
    code = main(["import-teacher", *DATA_FLAGS, "--storage", str(tmp_path / "runs"), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_import_then_sweep_distills_from_the_imported_snapshots(teacher_run, tmp_path, capsys, ray_session):
    e1 = {"state_dict": {f"module.{k}": v for k, v in _torchvision_layout(_snapshot(teacher_run, 1)).items()}}
    torch.save(e1, tmp_path / "teacher_e1.pth")
    torch.save({"model": _snapshot(teacher_run, 3)}, tmp_path / "teacher_e3.pth")
    code, out, err = _import(tmp_path, ["--arch", "resnet8", "--name", "mine", "--epochs", "1", "3",
                                        str(tmp_path / "teacher_e1.pth"), str(tmp_path / "teacher_e3.pth")], capsys)
    assert code == 0, err
    # Measured at import on the same validation and test split: the accuracies the teacher had when trained.
    trained = {m["epoch"]: m for m in teacher_run.history}
    for epoch in (1, 3):
        line, = [x for x in out.splitlines() if x.startswith(f"epoch {epoch}:")]
        assert f"val_acc {trained[epoch]['val_acc']:.4f} test_acc {trained[epoch]['test_acc']:.4f}" in line
    assert "teacher_import: mine" in out

    from search_spaces import load_space, parse_overrides
    from tune_eskd.experiment import SweepOptions
    from tune_eskd.pipeline import run_sweep

    space = load_space("quick", parse_overrides(["teacher_import=mine", "snapshots=[1, 3]", "teacher_epochs=3",
                                                 "subset=600", "epochs=2", "kd_epochs=1", "alpha=0.5",
                                                 "student_width=0.25"]))
    assert run_sweep(space, SweepOptions(storage=str(tmp_path / "runs"), name="byo")) == 0
    out = capsys.readouterr().out
    assert "stage 1: all 1 teachers already have their snapshots" in out
    assert not os.path.exists(tmp_path / "runs" / "byo" / "teachers")  # no teacher trial ran
    configs = [rows[-1]["config"]["trial"] for rows in trial_results(str(tmp_path / "runs" / "byo" / "students")).values()]
    assert sorted(c["snapshot_epoch"] for c in configs) == [1, 3]
    meta = json.loads((tmp_path / "runs" / "snapshots" / configs[0]["teacher_hash"] / "epoch_003.json").read_text())
    assert {c["teacher_arch"] for c in configs} == {"resnet8"} and meta["imported"]["name"] == "mine"


class Payload:  # a pickled object of an arbitrary class: weights_only=True must refuse it, never construct it
    def __init__(self):
        self.note = "unpickling me would run code"


@pytest.mark.parametrize("case, expected", [
    ("arch", "does not fit resnet14"),
    ("classes", "predicts 5 classes but the dataset has 10"),
    ("pickle", "holds pickled Python objects"),
])
def test_bad_checkpoints_are_refused_in_one_line(teacher_run, tmp_path, capsys, case, expected):
    state = _snapshot(teacher_run, 3)
    arch = "resnet14" if case == "arch" else "resnet8"
    if case == "classes":
        state = {**state, "fc.weight": state["fc.weight"][:5], "fc.bias": state["fc.bias"][:5]}
    torch.save({"model": Payload()} if case == "pickle" else state, tmp_path / "bad.pt")
    code, _, err = _import(tmp_path, ["--arch", arch, "--epochs", "3", str(tmp_path / "bad.pt")], capsys)
    lines = own_lines(err)
    assert code == 2 and len(lines) == 1 and expected in lines[0], err
    assert not (tmp_path / "runs").exists()  # nothing written
