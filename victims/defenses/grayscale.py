"""``grayscale``: convert the training set to grayscale once (ISS), keeping the channel count."""

from __future__ import annotations

import functools
import logging

import kornia
from torch import Tensor

from benchmarks.registry import DEFENSES
from benchmarks.train import Defense
from benchmarks.types import Context, ImageSet

log = logging.getLogger(__name__)


class Grayscale(Defense):
    """ITU-R 601 luma (kornia), replicated over three channels; one-channel sets pass unchanged."""

    name = "grayscale"

    def preprocess(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            return x
        gray = kornia.color.rgb_to_grayscale(x.float() / 255)
        return (gray * 255).round_().clamp_(0, 255).to(x.dtype).expand_as(x).contiguous()

    def setup(self, train: ImageSet, ctx: Context) -> None:
        if train.x.shape[1] == 1:
            warn_identity(train.name)


@functools.cache
def warn_identity(dataset: str) -> None:
    """Say once per process and data set that ``grayscale`` changes nothing there: its cells repeat the defense
    without it (with another random stream, since a victim's seed derives from the defense's name)."""
    log.warning(
        "defense grayscale on %s: the images have one channel, so grayscale leaves them unchanged and its cells "
        "measure the same as without it (README: the ISS grid)",
        dataset,
    )


@DEFENSES.register("grayscale")
def grayscale() -> Defense:
    return Grayscale()
