"""``ops``: one-pixel shortcut (Wu et al., ICLR 2023).

No surrogate and no gradient. Every image of a class gets the same single pixel position set to the same
colour, a corner of the colour cube (each channel 0 or 255): ``2**C`` candidate colours per position. The
position and colour of a class are those its clean images deviate from most consistently, the score of the
authors' pixel search:

    score_k(p, c) = mean(|c - x[p]|) / std(|c - x[p]|)

over the class's images and channels at position ``p``, pixel values in [0, 1], population standard deviation.
Classes are searched in label order, and a (position, colour) pair chosen by an earlier class is not chosen
again (the search's exclusion list). The budget is L0 = 1: one pixel position per image.

Computation: ``|c - x|`` is ``x`` where a channel of ``c`` is 0 and ``1 - x`` where it is 1, so every score
follows from the per-class, per-channel, per-position sums of ``x`` and ``x**2``. They are accumulated exactly in
int64 from the uint8 images, a chunk at a time: the search costs one pass over the data, runs on any device and
gives the same result on every machine.

Differences from the authors' code (``perturb.py``, read to understand it, not copied):
- a score whose standard deviation is 0 is ``+inf`` when its mean is positive (the reference divides by zero:
  the same ``inf``) and 0 when its mean is 0 too: the class's images already all have that colour there, and
  setting it changes nothing (the reference's ``0/0`` is NaN, which its ``argsort`` ranks above every number,
  so it would pick such a do-nothing pixel; this only happens on data with constant pixels, e.g.
  Fashion-MNIST's black borders, never on CIFAR);
- ties are broken towards the first position in row-major order, then the first colour (the reference's
  ``argsort`` leaves ties to the sort algorithm);
- the reference loops over 10 classes and indexes positions as ``(p // H, p % H)``; here any number of classes
  and non-square images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from benchmarks.noise import Meter, NoiseMethod
from benchmarks.registry import METHODS
from benchmarks.types import Budget, Context, ImageSet, row_chunks


def corner_colours(channels: int, device: torch.device | str = "cpu") -> Tensor:
    """The ``2**C`` corners of the colour cube, 0 or 1 per channel; the first channel is the highest bit.

    Example:
        >>> corner_colours(2).tolist()
        [[0, 0], [0, 1], [1, 0], [1, 1]]

    Shape:
        result: int64 ``(2**C, C)``.
    """
    bits = torch.arange(channels - 1, -1, -1, device=device)
    return (torch.arange(2**channels, device=device).view(-1, 1) >> bits) & 1


def class_moments(train: ImageSet) -> tuple[Tensor, Tensor, Tensor]:
    """Exact per-class sums of the pixel values and of their squares, and the class sizes, in one pass.

    Shape:
        result: int64 ``(K, C, H, W)``, int64 ``(K, C, H, W)``, int64 ``(K,)``, where the images live.
    """
    x, y = train.x, train.y.to(train.x.device)
    first = torch.zeros((train.num_classes, *train.shape), dtype=torch.int64, device=x.device)
    second = torch.zeros_like(first)
    for rows in row_chunks(len(train), 16 * math.prod(train.shape)):
        values = x[rows].to(torch.int64)
        first.index_add_(0, y[rows], values)
        second.index_add_(0, y[rows], values.square())
    return first, second, torch.bincount(y, minlength=train.num_classes)


def pixel_scores(first: Tensor, second: Tensor, count: int) -> Tensor:
    """The search score of every (position, colour) for one class, from its sums (see the module docstring).

    Shape:
        first, second: int64 ``(C, H, W)``, the class's sums of ``x`` and ``x**2`` (``x`` in 0..255);
        result: float64 ``(H * W, 2**C)``, positions in row-major order.
    """
    c = first.shape[0]
    colours = corner_colours(c, first.device).t().reshape(c, 1, 1, -1)  # (C, 1, 1, 2**C)
    s1, s2 = first.unsqueeze(-1), second.unsqueeze(-1)
    # sums over the class's images of |colour - x| and |colour - x|**2, per channel, in 1/255 units (exact)
    dev1 = torch.where(colours == 1, 255 * count - s1, s1)
    dev2 = torch.where(colours == 1, 255**2 * count - 2 * 255 * s1 + s2, s2)
    n = count * c
    mean = dev1.sum(0).double() / n  # (H, W, 2**C)
    var = (dev2.sum(0).double() / n - mean.square()).clamp_min(0)
    std = var.sqrt()
    score = torch.where(std > 0, mean / std.clamp_min(1e-300), torch.where(mean > 0, math.inf, 0.0))
    return score.flatten(0, 1)


@METHODS.register("ops")
class OnePixelShortcut(NoiseMethod):
    """One pixel per class, at the position and in the corner colour its images deviate from most consistently.

    Example:
        >>> OnePixelShortcut().budget((3, 32, 32), 8.0)
        Budget(norm='l0', radius=1.0)
    """

    name = "ops"
    citation = "Wu et al., One-Pixel Shortcut: on the Learning Preference of Deep Neural Networks, ICLR 2023"
    url = "https://arxiv.org/abs/2205.12141"
    norms = ("l0",)

    @dataclass(frozen=True)
    class Config:
        # pixel positions per class (the reference's `sparsity`, default 1: the paper's OPS; confirmed). More
        # than 1 takes the class's next-best pairs, which may repeat a position in another colour; the budget
        # counts positions, so it is the number of distinct positions at most
        pixels: int = 1

        def __post_init__(self) -> None:
            if self.pixels < 1:
                raise ValueError("ops: pixels must be at least 1")

    def budget(self, shape: tuple[int, ...], radius: float) -> Budget:
        """L0: ``pixels`` positions per image, whatever the run's L-inf radius."""
        return Budget("l0", float(self.config.pixels))

    def search(self, train: ImageSet) -> tuple[Tensor, Tensor]:
        """Each class's pixel positions and colours, in label order with the reference's exclusion list.

        Returns:
            positions: int64 ``(K, pixels)`` row-major indices ``h * W + w``; colours: int64 ``(K, pixels, C)``,
            0 or 1 per channel.
        """
        first, second, counts = class_moments(train)
        c, h, w = train.shape
        colours = corner_colours(c, first.device)
        taken = torch.zeros((h * w, 2**c), dtype=torch.bool, device=first.device)
        positions, picked = [], []
        for k in range(train.num_classes):
            score = pixel_scores(first[k], second[k], max(int(counts[k]), 1))
            score = score.masked_fill(taken, -math.inf)
            best = torch.argsort(score.flatten(), descending=True, stable=True)[: self.config.pixels]
            pos, colour = best // 2**c, best % 2**c
            taken.view(-1)[best] = True
            positions.append(pos)
            picked.append(colours[colour])
        return torch.stack(positions), torch.stack(picked)

    def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
        """The protected images: each image's class pixels set to the class's colours (0 or 255 per channel).

        Shape:
            result: uint8 ``(N, C, H, W)``, where the images live.
        """
        positions, colours = self.search(train)
        meter.extra["ops_positions"] = positions.tolist()
        meter.extra["ops_colours"] = colours.tolist()
        c, h, w = train.shape
        out = train.x.clone()
        y = train.y.to(out.device)
        flat = out.view(len(out), c, h * w)
        values = (colours * 255).to(torch.uint8).to(out.device)  # (K, pixels, C)
        for j in range(positions.shape[1]):  # one pixel slot at a time, every image at once
            pos = positions[:, j].to(out.device)[y]  # (N,)
            index = pos.view(-1, 1, 1).expand(-1, c, 1)
            flat.scatter_(2, index, values[y, j].unsqueeze(-1))
        return out
