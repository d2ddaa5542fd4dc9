"""Low-pass filters of the training set, applied once: ``gaussian<k>``, ``median<k>``, ``mean<k>`` (k x k, k odd).

Filtering removes high-frequency noise, the band where most unlearnable noise lives (APBench evaluates
Gaussian, median and mean filters as pre-processing defenses). Every filter pads by reflection, so that borders
are not darkened, and rounds back to uint8.

- ``gaussian<k>``: Gaussian kernel (kornia) with OpenCV's default ``sigma = 0.3 * ((k - 1) / 2 - 1) + 0.8`` for
  a k x k kernel (0.8 at k = 3). APBench's own setting (k 3, sigma 0.1) leaves an image unchanged to within 1/255:
  the weight of a neighbour is ``exp(-50)``.
- ``median<k>``: the median of each k x k window (exact: one of the window's values). kornia's ``median_blur``
  pads with zeros, which would blacken the border pixels' windows; here the windows are read from a reflected
  copy with ``unfold``.
- ``mean<k>``: the window's mean (kornia's box blur).
"""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.registry import DEFENSES
from benchmarks.train import Defense

#: the kernel sides accepted: odd, from 3 to this
MAX_KERNEL = 15


def _check_kernel(family: str, k: int) -> None:
    if k < 3 or k > MAX_KERNEL or k % 2 == 0:
        raise ValueError(f"{family}<k>: the kernel side k must be odd, 3..{MAX_KERNEL}; got {k}")


def _to_uint8(x: Tensor) -> Tensor:
    return x.round_().clamp_(0, 255).to(torch.uint8)


class LowPass(Defense):
    """A k x k low-pass filter of every training image (reflect padding), rounded to uint8."""

    kind: str = ""

    def __init__(self, kernel: int = 3) -> None:
        _check_kernel(self.kind, kernel)
        self.name, self.kernel = f"{self.kind}{kernel}", kernel

    def filtered(self, x: Tensor) -> Tensor:
        """The filter on float images in 0..255. Shape: ``(N, C, H, W)`` -> same."""
        raise NotImplementedError

    def preprocess(self, x: Tensor) -> Tensor:
        if min(x.shape[-2:]) <= self.kernel // 2:
            raise ValueError(f"defense {self.name}: images of {tuple(x.shape[-2:])} are too small for its kernel")
        return _to_uint8(self.filtered(x.float()))


class Gaussian(LowPass):
    kind = "gaussian"

    def __init__(self, kernel: int = 3) -> None:
        super().__init__(kernel)
        self.sigma = 0.3 * ((kernel - 1) / 2 - 1) + 0.8

    def filtered(self, x: Tensor) -> Tensor:
        k = self.kernel
        return kornia.filters.gaussian_blur2d(x, (k, k), (self.sigma, self.sigma), border_type="reflect")


class Median(LowPass):
    kind = "median"

    def filtered(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        k, r = self.kernel, self.kernel // 2
        padded = F.pad(x, (r, r, r, r), mode="reflect")
        windows = F.unfold(padded.reshape(n * c, 1, h + 2 * r, w + 2 * r), k)  # (N*C, k*k, H*W)
        return windows.median(dim=1).values.view(n, c, h, w)


class Mean(LowPass):
    kind = "mean"

    def filtered(self, x: Tensor) -> Tensor:
        return kornia.filters.box_blur(x, (self.kernel, self.kernel), border_type="reflect")


@DEFENSES.register("gaussian<k>", examples=("gaussian3", "gaussian5"))
def gaussian_k(k: int) -> Defense:
    return Gaussian(k)


@DEFENSES.register("median<k>", examples=("median3", "median5"))
def median_k(k: int) -> Defense:
    return Median(k)


@DEFENSES.register("mean<k>", examples=("mean3", "mean5"))
def mean_k(k: int) -> Defense:
    return Mean(k)
