"""Victim architectures: CIFAR-stem networks registered with timm, and the ``VICTIMS`` factories.

Every victim takes float input in [0, 1] of shape (N, C, H, W) and normalises inside with mean 0.5 and
std 1.0, as the REM/SEM reference code does. ``build_victim`` accepts a registered name or
``timm/<any timm model name>``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import timm
import torch
from timm.models import register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from benchmarks.registry import VICTIMS, UnknownNameError

__all__ = ["Normalize", "WideResNet", "build_victim", "victim_exists"]

# Keyword arguments timm.create_model passes to every entrypoint that these models do not use.
_TIMM_ONLY = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "pretrained_model_args")


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` with scalar or per-channel constants stored as buffers."""

    def __init__(self, mean: float | tuple[float, ...] = 0.5, std: float | tuple[float, ...] = 1.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _finish(model: nn.Module, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    """Refuse pretrained weights, then apply timm's optional ``device``/``dtype`` arguments."""
    if pretrained:
        raise ValueError(f"{type(model).__name__}: no pretrained weights exist for the CIFAR-stem variants")
    device, dtype = kwargs.get("device"), kwargs.get("dtype")
    return model.to(device=device, dtype=dtype) if device is not None or dtype is not None else model


def _strip(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` without timm's bookkeeping entries."""
    return {k: v for k, v in kwargs.items() if k not in _TIMM_ONLY}


def _cifar_resnet(block: type[nn.Module], layers: tuple[int, ...], pretrained: bool, **kwargs: Any) -> ResNet:
    """timm ResNet with the kuangliu/REM CIFAR stem: 3x3 stride-1 conv, no max-pool."""
    kwargs = _strip(kwargs)
    kwargs.setdefault("num_classes", 10)
    kwargs.setdefault("zero_init_last", False)  # kuangliu keeps PyTorch's default BN init
    model = ResNet(block, layers, **kwargs)
    model.conv1 = nn.Conv2d(kwargs.get("in_chans", 3), 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return _finish(model, pretrained, kwargs)


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 (BasicBlock [2, 2, 2, 2]) with the CIFAR stem."""
    return _cifar_resnet(BasicBlock, (2, 2, 2, 2), pretrained, **kwargs)


@register_model
def resnet50_cifar(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50 (Bottleneck [3, 4, 6, 3]) with the CIFAR stem."""
    return _cifar_resnet(Bottleneck, (3, 4, 6, 3), pretrained, **kwargs)


_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


@register_model
def vgg16_bn_cifar(pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> nn.Module:
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
    return _finish(model, pretrained, _strip(kwargs))


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


@register_model
def wrn34_10_cifar(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """Wide-ResNet-34-10; ``depth`` and ``widen_factor`` may be overridden (e.g. for tests)."""
    kwargs = _strip(kwargs)
    extra = {k: kwargs.pop(k) for k in ("device", "dtype") if k in kwargs}
    return _finish(WideResNet(**kwargs), pretrained, extra)


@register_model
def tiny_cnn(pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """Two strided convolutions and a linear layer, for tests and CPU smoke runs."""
    model = nn.Sequential(
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
    return _finish(model, pretrained, _strip(kwargs))


def _timm_victim(model_name: str) -> Callable[[int, int], nn.Module]:
    """Factory ``(num_classes, in_chans) -> Normalize + timm.create_model(model_name)``."""

    def factory(num_classes: int, in_chans: int) -> nn.Module:
        net = timm.create_model(model_name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
        return nn.Sequential(Normalize(mean=0.5, std=1.0), net)

    factory.__name__ = factory.__qualname__ = f"build_{model_name}"
    factory.__doc__ = f"Normalised timm ``{model_name}`` victim."
    return factory


for _name, _timm_name in {
    "resnet18": "resnet18_cifar",
    "resnet50": "resnet50_cifar",
    "vgg16_bn": "vgg16_bn_cifar",
    "wrn34_10": "wrn34_10_cifar",
    "densenet121": "densenet121",  # the reference keeps the ImageNet stem
    "tiny_cnn": "tiny_cnn",
}.items():
    VICTIMS.register(_name)(_timm_victim(_timm_name))


def build_victim(name: str, num_classes: int, in_chans: int) -> nn.Module:
    """The normalised victim model for a registered name or ``timm/<timm model name>``.

    Args:
        name: A ``VICTIMS`` name (``resnet18``, ...) or ``timm/<x>`` for any timm model ``x``.
        num_classes: Number of logits.
        in_chans: Input channels.

    Returns:
        A module mapping [0, 1] images (N, in_chans, H, W) to (N, num_classes) logits.

    Raises:
        UnknownNameError: ``name`` is neither registered nor a timm model.
    """
    if name.startswith("timm/"):
        model_name = name[len("timm/") :]
        if not timm.is_model(model_name):
            raise UnknownNameError(
                f"victim {name!r}: {model_name!r} is not a timm model (see timm.list_models()); "
                f"accepted: {', '.join(VICTIMS.accepted())}, timm/<timm model name>"
            )
        return _timm_victim(model_name)(num_classes, in_chans)
    try:
        factory = VICTIMS.get(name)
    except UnknownNameError as err:
        raise UnknownNameError(f"{err}, timm/<timm model name>") from None
    return factory(num_classes, in_chans)


def victim_exists(name: str) -> bool:
    """Whether ``build_victim`` accepts ``name`` (without building it)."""
    if name.startswith("timm/"):
        return bool(timm.is_model(name[len("timm/") :]))
    return name in VICTIMS
