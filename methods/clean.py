"""``clean``: no noise. The baseline row of every results matrix, run through the same code path."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from benchmarks.noise import Meter, NoiseMethod
from benchmarks.registry import METHODS
from benchmarks.types import Budget, Context, ImageSet


@METHODS.register("clean")
class Clean(NoiseMethod):
    """Zero noise: victims trained on the unprotected data."""

    name = "clean"
    norms = ("linf", "l2")

    @dataclass(frozen=True)
    class Config:
        pass

    def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
        return torch.zeros(train.x.shape, dtype=torch.int8, device=train.x.device)  # 1 byte per pixel
