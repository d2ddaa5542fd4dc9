"""The one model factory: ``create_victim(name, num_classes, in_chans)`` for victims and surrogates alike.

A name is a registered victim (``VICTIMS``: ``resnet18``, ``tiny_cnn``, ...; the ``victims`` package
registers them) or ``timm/<any timm model name>``. Every model takes float input in [0, 1] of shape
``(N, C, H, W)`` and normalises inside with mean 0.5 and std 1.0, as the REM/SEM reference code does.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from benchmarks.registry import VICTIMS, UnknownNameError

TIMM_PREFIX = "timm/"


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` with scalar or per-channel constants stored as buffers."""

    def __init__(self, mean: float | tuple[float, ...] = 0.5, std: float | tuple[float, ...] = 1.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def normalized(model: nn.Module) -> nn.Sequential:
    """``model`` behind the reference's input normalisation: ``Sequential(Normalize(0.5, 1), model)``."""
    return nn.Sequential(Normalize(mean=0.5, std=1.0), model)


def accepted() -> str:
    return f"{', '.join(VICTIMS.accepted())}, {TIMM_PREFIX}<timm model name>"


def victim_exists(name: str) -> bool:
    """Whether :func:`create_victim` accepts ``name`` (without building it)."""
    if name.startswith(TIMM_PREFIX):
        return bool(timm.is_model(name[len(TIMM_PREFIX) :]))
    return name in VICTIMS


def check_victim(name: str, what: str = "victim") -> None:
    """Raise :class:`UnknownNameError` naming the accepted models unless ``name`` is one."""
    if victim_exists(name):
        return
    if name.startswith(TIMM_PREFIX):
        raise UnknownNameError(
            f"unknown {what} {name!r}: {name[len(TIMM_PREFIX) :]!r} is not a timm model (see timm.list_models()); "
            f"accepted: {accepted()}"
        )
    raise UnknownNameError(f"unknown {what} {name!r}; accepted: {accepted()}")


def create_victim(name: str, num_classes: int, in_chans: int) -> nn.Module:
    """The normalised model called ``name``, freshly initialised from torch's global RNG.

    Raises:
        UnknownNameError: ``name`` is neither registered nor a timm model.
    """
    check_victim(name)
    if name.startswith(TIMM_PREFIX):
        net = timm.create_model(name[len(TIMM_PREFIX) :], pretrained=False, num_classes=num_classes, in_chans=in_chans)
        return normalized(net)
    return VICTIMS.get(name)(num_classes, in_chans)
