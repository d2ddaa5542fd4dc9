"""``grayscale``: convert the training set to grayscale once (ISS), keeping the channel count."""

from __future__ import annotations

import kornia
from torch import Tensor

from benchmarks.registry import DEFENSES
from benchmarks.train import Defense


class Grayscale(Defense):
    """ITU-R 601 luma (kornia), replicated over three channels; one-channel sets pass unchanged."""

    name = "grayscale"

    def preprocess(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            return x
        gray = kornia.color.rgb_to_grayscale(x.float() / 255)
        return (gray * 255).round_().clamp_(0, 255).to(x.dtype).expand_as(x).contiguous()


@DEFENSES.register("grayscale")
def grayscale() -> Defense:
    return Grayscale()
