"""``random``: uniform noise in the L-inf ball, sample-wise or class-wise (the EM paper's baseline).

Random noise of the same budget is the control every protective method must beat: it should leave
the victim's accuracy close to the clean baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from benchmarks.noise import Meter, NoiseMethod
from benchmarks.pgd import uniform_like
from benchmarks.registry import METHODS
from benchmarks.types import Budget, Context, ImageSet


@METHODS.register("random")
class RandomNoise(NoiseMethod):
    """i.i.d. uniform noise in ``[-eps, eps]`` per pixel.

    Example:
        >>> RandomNoise(classwise=True).classwise
        True
    """

    name = "random"
    citation = "Huang et al., Unlearnable Examples, ICLR 2021 (random-noise baseline)"
    url = "https://arxiv.org/abs/2101.04898"  # the EM paper, which introduced this baseline

    @dataclass(frozen=True)
    class Config:
        classwise: bool = False  # one pattern per class instead of one per image

    def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
        shape = (train.num_classes, *train.shape) if self.classwise else tuple(train.x.shape)
        return uniform_like(torch.empty(shape, device=ctx.device), budget.eps, ctx.generator(self.name))
