"""Model registry: CIFAR ResNets built from torchvision's residual blocks.

Two families, both with a 3x3 stride-1 stem and no max-pool (32x32 inputs):
- resnet18/34/50: the ImageNet widths (64-128-256-512), as the seed study used.
- resnet8/14/20/32/56: He et al.'s CIFAR ResNets (16-32-64 channels, depth 6n+2), the usual small students.
`width` multiplies every channel count of either family.

The global average pool is a mean over H and W (AdaptiveAvgPool2d's CUDA backward has no deterministic
kernel; on CPU the mean gives bit-identical outputs and gradients), and the classifier head runs in float32
even under autocast, so logits (and the KD loss, and argmax ties in val_acc) are never rounded to bf16/fp16.
"""
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from .errors import UsageError


@dataclass(frozen=True)
class ModelSpec:
    block: type
    layers: tuple[int, ...]
    widths: tuple[int, ...]


MODELS: dict[str, ModelSpec] = {
    "resnet8": ModelSpec(BasicBlock, (1, 1, 1), (16, 32, 64)),
    "resnet14": ModelSpec(BasicBlock, (2, 2, 2), (16, 32, 64)),
    "resnet20": ModelSpec(BasicBlock, (3, 3, 3), (16, 32, 64)),
    "resnet32": ModelSpec(BasicBlock, (5, 5, 5), (16, 32, 64)),
    "resnet56": ModelSpec(BasicBlock, (9, 9, 9), (16, 32, 64)),
    "resnet18": ModelSpec(BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512)),
    "resnet34": ModelSpec(BasicBlock, (3, 4, 6, 3), (64, 128, 256, 512)),
    "resnet50": ModelSpec(Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512)),
}


class CifarResNet(nn.Module):
    def __init__(self, spec: ModelSpec, num_classes: int, width: float = 1.0):
        super().__init__()
        widths = [max(1, int(round(w * width))) for w in spec.widths]
        self.inplanes = widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(3, self.inplanes, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(self.inplanes),
            nn.ReLU(inplace=True),
        )
        stages = [self._stage(spec.block, w, n, stride=1 if i == 0 else 2)
                  for i, (w, n) in enumerate(zip(widths, spec.layers))]
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(self.inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _stage(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stages(self.stem(x)).mean(dim=(2, 3))
        with torch.autocast(x.device.type, enabled=False):
            return self.fc(features.float())


def build_model(name: str, num_classes: int = 10, width: float = 1.0) -> nn.Module:
    if name not in MODELS:
        raise UsageError(f"unknown model {name!r}: choose one of {', '.join(MODELS)} (see `tune-eskd models`)")
    if width <= 0:
        raise UsageError(f"model width must be > 0, got {width}: use e.g. --width 1.0")
    return CifarResNet(MODELS[name], num_classes, width)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def activations_per_image(model: nn.Module, image_size: int = 32) -> int:
    """Elements of the conv and BatchNorm outputs of one forward pass on one image: what training keeps for
    backward, near enough (ReLUs run in place, and the residual sums are a small share)."""
    total = 0

    def hook(m, inputs, out):
        nonlocal total
        total += out[0].numel()

    _forward_with_hooks(model, {nn.Conv2d: hook, nn.BatchNorm2d: hook}, image_size)
    return total


def count_macs(model: nn.Module, image_size: int = 32) -> int:
    """Multiply-accumulates of one forward pass on one image, counted over conv and linear layers."""
    total = 0

    def conv_hook(m, inputs, out):
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, inputs, out):
        nonlocal total
        total += m.in_features * m.out_features

    _forward_with_hooks(model, {nn.Conv2d: conv_hook, nn.Linear: linear_hook}, image_size)
    return total


def _forward_with_hooks(model: nn.Module, hooks: dict, image_size: int) -> None:
    """One eval-mode forward pass of a blank image, with a forward hook on every layer of each given type."""
    handles = [m.register_forward_hook(fn) for m in model.modules() for kind, fn in hooks.items()
               if isinstance(m, kind)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
