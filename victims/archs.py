"""Victim architectures: CIFAR-stem networks, a tiny CNN, and their ``VICTIMS`` factories.

The factories return the normalised model (:func:`benchmarks.models.normalized`); build any victim or
surrogate with :func:`benchmarks.models.create_victim`, which also takes ``timm/<any timm model name>``.
These architectures are *not* added to timm's global model registry: importing uebench leaves
``timm.list_models()`` as it was, and the ``VICTIMS`` registry is their one namespace.
"""

from __future__ import annotations

from collections.abc import Callable

import timm
import torch
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from benchmarks.models import normalized
from benchmarks.registry import VICTIMS

__all__ = [
    "WideResNet",
    "resnet18_cifar",
    "resnet50_cifar",
    "resnet_mini_cifar",
    "tiny_cnn",
    "vgg16_bn_cifar",
    "wrn34_10_cifar",
]


def _cifar_resnet(block: type[nn.Module], layers: tuple[int, ...], num_classes: int, in_chans: int) -> ResNet:
    """timm ResNet with the kuangliu/REM CIFAR stem: 3x3 stride-1 conv, no max-pool."""
    # zero_init_last=False: kuangliu keeps PyTorch's default BN init
    model = ResNet(block, layers, num_classes=num_classes, in_chans=in_chans, zero_init_last=False)
    model.conv1 = nn.Conv2d(in_chans, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def resnet18_cifar(num_classes: int = 10, in_chans: int = 3) -> ResNet:
    """ResNet-18 (BasicBlock [2, 2, 2, 2]) with the CIFAR stem."""
    return _cifar_resnet(BasicBlock, (2, 2, 2, 2), num_classes, in_chans)


def resnet_mini_cifar(num_classes: int = 10, in_chans: int = 3) -> ResNet:
    """A small CIFAR-stem ResNet (BasicBlock [1, 1, 1, 1], widths 16-32-64-128, 0.31 M parameters): the ResNet
    shape of the paper's victim at a CPU protocol's cost (a candidate of the protocol study)."""
    # the deep stem's width (2 x 8) sets the 16 channels the first stage starts from; the stem itself is then
    # replaced by the CIFAR one (a 3x3 stride-1 convolution, no max-pool), as in resnet18
    model = ResNet(
        BasicBlock, (1, 1, 1, 1), num_classes=num_classes, in_chans=in_chans, channels=(16, 32, 64, 128),
        stem_type="deep", stem_width=8, zero_init_last=False,
    )  # fmt: skip
    model.conv1 = nn.Conv2d(in_chans, 16, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def resnet50_cifar(num_classes: int = 10, in_chans: int = 3) -> ResNet:
    """ResNet-50 (Bottleneck [3, 4, 6, 3]) with the CIFAR stem."""
    return _cifar_resnet(Bottleneck, (3, 4, 6, 3), num_classes, in_chans)


_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16_bn_cifar(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    """VGG-16 with batch norm, global average pooling and the REM repository's 512-512 dropout MLP head."""
    layers: list[nn.Module] = []
    chans = in_chans
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2, ceil_mode=True))  # ceil_mode keeps 28x28 input at >= 1 pixel
        else:
            layers += [nn.Conv2d(chans, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
            chans = int(v)
    head = [nn.Dropout(0.5), nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(512, 512)]
    model = nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), *head, nn.ReLU(inplace=True), nn.Linear(512, num_classes)
    )
    return model


class _WideBlock(nn.Module):
    """Pre-activation wide basic block, as in the TRADES/Madry WideResNet."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1, self.relu1 = nn.BatchNorm2d(in_planes), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2, self.relu2 = nn.BatchNorm2d(out_planes), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.shortcut = None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.equal_in_out:
            out = self.relu1(self.bn1(x))
        else:
            x = out = self.relu1(self.bn1(x))  # the projection shortcut sees the pre-activated input
        out = self.relu2(self.bn2(self.conv1(out)))
        if self.drop_rate > 0:
            out = nn.functional.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return out + (x if self.shortcut is None else self.shortcut(x))


class WideResNet(nn.Module):
    """Wide-ResNet-``depth``-``widen_factor`` (TRADES/Madry variant) with global average pooling.

    Args:
        depth: Total depth; ``(depth - 4)`` must be divisible by 6.
        widen_factor: Width multiplier for the three groups (16, 32, 64 channels times this).
        num_classes: Number of logits.
        in_chans: Input channels.
        drop_rate: Dropout inside each block.
    """

    def __init__(
        self, depth: int = 34, widen_factor: int = 10, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, stride=1, padding=1, bias=False)
        groups = []
        for i, stride in enumerate((1, 2, 2)):
            ins = [widths[i]] + [widths[i + 1]] * (n - 1)
            strides = [stride] + [1] * (n - 1)
            groups.append(
                nn.Sequential(*(_WideBlock(c, widths[i + 1], s, drop_rate) for c, s in zip(ins, strides, strict=True)))
            )
        self.block1, self.block2, self.block3 = groups
        self.bn1, self.relu = nn.BatchNorm2d(widths[3]), nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(self.relu(self.bn1(out))), 1))


def wrn34_10_cifar(num_classes: int = 10, in_chans: int = 3, depth: int = 34, widen_factor: int = 10) -> WideResNet:
    """Wide-ResNet-34-10; ``depth`` and ``widen_factor`` may be overridden (e.g. for tests)."""
    return WideResNet(depth, widen_factor, num_classes, in_chans)


def tiny_cnn(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    """Two strided convolutions and a linear layer, for tests and CPU smoke runs."""
    return nn.Sequential(
        nn.Conv2d(in_chans, 32, 5, stride=2, padding=2),
        nn.BatchNorm2d(32),
        nn.ReLU(inplace=True),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(64 * 16, num_classes),
    )


def _densenet121(num_classes: int, in_chans: int) -> nn.Module:
    """DenseNet-121 from timm, with its ImageNet stem (as the reference keeps it)."""
    return timm.create_model("densenet121", pretrained=False, num_classes=num_classes, in_chans=in_chans)


def _factory(arch: Callable[[int, int], nn.Module], name: str) -> Callable[[int, int], nn.Module]:
    """``(num_classes, in_chans) -> normalised arch``, registered as the victim ``name``."""

    def factory(num_classes: int, in_chans: int) -> nn.Module:
        return normalized(arch(num_classes, in_chans))

    factory.__name__ = factory.__qualname__ = f"build_{name}"
    factory.__doc__ = f"Normalised ``{name}`` victim: {(arch.__doc__ or '').splitlines()[0]}"
    return factory


for _name, _arch in {
    "resnet18": resnet18_cifar,
    "resnet50": resnet50_cifar,
    "resnet_mini": resnet_mini_cifar,
    "vgg16_bn": vgg16_bn_cifar,
    "wrn34_10": wrn34_10_cifar,
    "densenet121": _densenet121,
    "tiny_cnn": tiny_cnn,
}.items():
    VICTIMS.register(_name)(_factory(_arch, _name))
