"""The model registry: output shapes, exact parameter counts, width multiplier, MACs."""
import pytest
import torch

from tune_eskd.errors import UsageError
from tune_eskd.models import MODELS, build_model, count_macs, count_params

# Exact parameter counts at 10 classes, width 1 (resnet18 is the seed study's 11,173,962).
PARAMS_10 = {
    "resnet8": 78_042,
    "resnet14": 175_258,
    "resnet20": 272_474,
    "resnet32": 466_906,
    "resnet56": 855_770,
    "resnet18": 11_173_962,
    "resnet34": 21_282_122,
    "resnet50": 23_520_842,
}
# Same at width 0.5.
PARAMS_10_HALF = {
    "resnet8": 19_954,
    "resnet14": 44_370,
    "resnet20": 68_786,
    "resnet32": 117_618,
    "resnet56": 215_282,
    "resnet18": 2_797_610,
    "resnet34": 5_326_506,
    "resnet50": 5_899_050,
}
# The final linear layer's input features (its weight is features x classes).
FC_FEATURES = {"resnet50": 2048, **{n: 512 for n in ("resnet18", "resnet34")},
               **{n: 64 for n in ("resnet8", "resnet14", "resnet20", "resnet32", "resnet56")}}


def test_registry_holds_exactly_the_documented_models():
    assert set(MODELS) == set(PARAMS_10)


@pytest.fixture(scope="module")
def models():
    """Every registered model at 10 classes, width 1, built once for this module."""
    torch.manual_seed(0)
    return {name: build_model(name, num_classes=10).eval() for name in MODELS}


@pytest.mark.parametrize("name", list(PARAMS_10))
def test_output_shape_and_parameter_count(models, name):
    model = models[name]
    with torch.no_grad():
        out = model(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()
    assert count_params(model) == PARAMS_10[name]
    assert model.fc.in_features == FC_FEATURES[name]
    assert count_params(build_model(name, num_classes=10, width=0.5)) == PARAMS_10_HALF[name]


@pytest.mark.parametrize("name", ["resnet8", "resnet18", "resnet50"])
def test_num_classes_changes_only_the_head(name):
    small10, small100 = (build_model(name, num_classes=c, width=0.25).eval() for c in (10, 100))
    with torch.no_grad():
        assert small100(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    # 90 more classes add 90 * (features + 1) head parameters and nothing else.
    assert small100.fc.in_features == FC_FEATURES[name] // 4
    assert count_params(small100) - count_params(small10) == 90 * (small100.fc.in_features + 1)


def test_width_multiplier_scales_channels():
    base = count_params(build_model("resnet20"))
    wide = build_model("resnet20", width=2.0)
    assert count_params(wide) > 3 * base  # conv parameters grow ~ width^2
    assert wide.fc.in_features == 128
    assert count_params(build_model("resnet20", width=0.5)) < base / 3
    assert count_macs(wide) > count_macs(build_model("resnet20"))


def test_other_input_sizes_work():
    model = build_model("resnet8").eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_count_macs_positive_and_increasing_with_depth(models):
    macs = {name: count_macs(m) for name, m in models.items()}
    assert all(m > 0 for m in macs.values())
    cifar = [macs[n] for n in ("resnet8", "resnet14", "resnet20", "resnet32", "resnet56")]
    imagenet = [macs[n] for n in ("resnet18", "resnet34", "resnet50")]
    assert cifar == sorted(cifar) and len(set(cifar)) == len(cifar)
    assert imagenet == sorted(imagenet) and len(set(imagenet)) == len(imagenet)
    # He et al.'s CIFAR ResNets: each extra 3-block group of two 3x3 convs costs the same.
    steps = [b - a for a, b in zip(cifar[:3], cifar[1:3])]
    assert steps[0] == steps[1]


def test_count_macs_exact_for_resnet8():
    # stem 32*32*16*(3*9); stage1 2 convs 32*32*16*(16*9); stage2 16*16*32*(16*9) + 16*16*32*(32*9)
    # + downsample 16*16*32*16; stage3 8*8*64*(32*9) + 8*8*64*(64*9) + 8*8*64*32; fc 64*10
    expected = (32 * 32 * 16 * 27 + 2 * 32 * 32 * 16 * 144
                + 16 * 16 * 32 * 144 + 16 * 16 * 32 * 288 + 16 * 16 * 32 * 16
                + 8 * 8 * 64 * 288 + 8 * 8 * 64 * 576 + 8 * 8 * 64 * 32 + 640)
    assert count_macs(build_model("resnet8")) == expected == 12_501_632


def test_count_macs_leaves_model_untouched():
    model = build_model("resnet8").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_macs(model)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN stats not updated
    assert not any(m._forward_hooks for m in model.modules())  # its counting hooks are removed


def test_same_seed_same_init():
    torch.manual_seed(3)
    a = build_model("resnet8").state_dict()
    torch.manual_seed(3)
    b = build_model("resnet8").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(name="resnet9"), "unknown model 'resnet9'"),
    (dict(name="resnet8", width=0.0), "width must be > 0"),
])
def test_bad_model_arguments(kwargs, needle):
    with pytest.raises(UsageError, match=needle):
        build_model(**kwargs)


def test_models_command_prints_the_readme_table(capsys):
    """`tune-eskd models` shows what README's Models table shows: name, params, MACs and family."""
    import os
    import re

    from tune_eskd.cli import main

    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    table = readme.split("| model | params | MACs / image | family |", 1)[1].split("\n\n", 1)[0]
    documented = [[c.strip() for c in row.strip("|").split("|")] for row in table.strip().splitlines()[1:]]
    assert main(["models"]) == 0
    printed = [re.split(r"\s{2,}", line.strip())
               for line in capsys.readouterr().out.splitlines()[1:]]
    assert printed == documented

