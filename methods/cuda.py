"""``cuda``: convolution-based unlearnable data sets (Sadasivan et al., CVPR 2023).

No surrogate and no optimisation. Every class gets one random ``k x k`` filter, the same for every channel:
weights uniform in ``[0, blur]`` (the paper's blur parameter p_b), one of them, at a random position, set to
``peak`` (1). Each image is convolved with its class's filter (zero padding, no bias) and rescaled so that its
brightest value is 255, then truncated to uint8:

    x' = floor(255 * (h_y * x) / max(h_y * x))

The change is not small noise: nothing bounds ``|x' - x|``. The budget is the filter's blur parameter, declared as
such (``Budget("blur", p_b)``), and the poison keeps the protected images, not int8 noise. A higher ``blur``
mixes more of each pixel's neighbourhood into it.

Differences from the authors' script (``final_filter_unlearnable.py``, read to understand it, not copied; its
licence forbids copying):
- the filters come from ``ctx.generator``, so a different seed gives different filters (the reference seeds
  NumPy with its ``--seed``);
- the convolution runs in float64 on the uint8 values (the reference: float32 on ``x / 255``); the ratio is the
  same, and float64 makes the truncation the same on every machine;
- an image whose convolution is 0 everywhere (all black) stays black (the reference divides by 0);
- every image is protected; partial protection (the reference's ``--mix``) is a property of a cell, not of a
  method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.noise import Meter, NoiseMethod
from benchmarks.registry import METHODS
from benchmarks.types import Budget, Context, ImageSet, row_chunks


def convolve_images(x: Tensor, filters: Tensor) -> Tensor:
    """Each image convolved with its own filter on every channel and rescaled to a peak of 255, as uint8.

    Shape:
        x: uint8 ``(B, C, H, W)``; filters: float ``(B, k, k)`` with ``k`` odd; result: uint8 ``(B, C, H, W)``.
    """
    b, c, h, w = x.shape
    k = filters.shape[-1]
    # one group per (image, channel): the image's filter on each of its channels
    weight = filters.double().repeat_interleave(c, dim=0).unsqueeze(1)  # (B*C, 1, k, k)
    out = F.conv2d(x.double().reshape(1, b * c, h, w), weight, padding=k // 2, groups=b * c).view(b, c, h, w)
    peak = out.flatten(1).amax(1).clamp_min(1e-300).view(-1, 1, 1, 1)
    return out.mul_(255).div_(peak).floor_().clamp_(0, 255).to(torch.uint8)


@METHODS.register("cuda")
class ConvolutionUnlearnable(NoiseMethod):
    """One random blur filter per class, applied to the class's images.

    Example:
        >>> ConvolutionUnlearnable().budget((3, 32, 32), 8.0)
        Budget(norm='blur', radius=0.3)
    """

    name = "cuda"
    citation = "Sadasivan et al., CUDA: Convolution-based Unlearnable Datasets, CVPR 2023"
    url = "https://arxiv.org/abs/2303.04278"
    norms = ("blur",)

    @dataclass(frozen=True)
    class Config:
        # p_b: the off-peak weights are uniform in [0, blur]. 0.3 is the CIFAR-10 setting of the README command
        # and the script's default (confirmed); the paper varies it (higher blurs more) and other data sets'
        # values are not confirmed here
        blur: float = 0.3
        # the weight at one random position of each filter (the script's center_parameter, 1.0; confirmed)
        peak: float = 1.0
        # filter side (the script's kernel_size, 3; confirmed); odd, so that the image keeps its size
        kernel_size: int = 3

        def __post_init__(self) -> None:
            if not (math.isfinite(self.blur) and self.blur > 0):
                raise ValueError("cuda: blur must be a positive number")
            if not (math.isfinite(self.peak) and self.peak > 0):
                raise ValueError("cuda: peak must be a positive number")
            if self.kernel_size < 1 or self.kernel_size % 2 == 0:
                raise ValueError("cuda: kernel_size must be a positive odd number")

    def budget(self, shape: tuple[int, ...], radius: float) -> Budget:
        """The declared budget: the blur parameter, whatever the run's L-inf radius."""
        return Budget("blur", self.config.blur)

    def filters(self, num_classes: int, ctx: Context) -> Tensor:
        """The class filters, a function of ``ctx.seed``: uniform in ``[0, blur]``, ``peak`` at a random position.

        Shape:
            result: float32 ``(num_classes, k, k)`` on ``ctx.device``.
        """
        cfg = self.config
        k = cfg.kernel_size
        g = ctx.generator(self.name, "filters")
        weights = torch.rand((num_classes, k * k), generator=g, device=ctx.device) * cfg.blur
        peaks = torch.randint(k * k, (num_classes,), generator=g, device=ctx.device)
        weights[torch.arange(num_classes, device=ctx.device), peaks] = cfg.peak
        return weights.view(num_classes, k, k)

    def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
        """The protected images, convolved a chunk at a time on ``ctx.device`` into a uint8 set where the images
        live.

        Shape:
            result: uint8 ``(N, C, H, W)``.
        """
        filters = self.filters(train.num_classes, ctx)
        out = torch.empty_like(train.x)
        for rows in row_chunks(len(train), 16 * math.prod(train.shape)):
            index = torch.arange(rows.start, rows.stop)
            x, y = train.take(index, ctx.device)
            out[rows] = convolve_images(x, filters[y]).to(out.device)
        return out
