"""``random``: uniform noise in the L-inf ball, sample-wise or class-wise (the EM paper's baseline).

Random noise of the same budget is the control every protective method must beat: it should leave
the victim's accuracy close to the clean baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from benchmarks.noise import Meter, NoiseMethod, quantize
from benchmarks.pgd import uniform_like
from benchmarks.registry import METHODS
from benchmarks.types import Budget, Context, ImageSet, row_chunks


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
        """Drawn and quantised a chunk of images at a time into an int8 bank where the images live.

        On the CPU the draws equal one draw of the whole bank (the generator's stream is consumed in order).
        """
        rows = train.num_classes if self.classwise else len(train)
        bank = torch.empty((rows, *train.shape), dtype=torch.int8, device=train.x.device)
        g = ctx.generator(self.name)
        for chunk in row_chunks(rows, 4 * math.prod(train.shape)):
            draw = uniform_like(torch.empty(bank[chunk].shape, device=ctx.device), budget.eps, g)
            bank[chunk] = quantize(draw, budget, None if self.classwise else train.x[chunk])
        return bank
