"""``crop-flip``: random crop with zero padding and horizontal flip, as a defense of its own.

The CIFAR recipes already apply it as their standard augmentation (so ``none`` includes it there).
The ``smoke`` recipe trains without augmentation, and this defense measures what the standard
augmentation alone does to a poison; on a recipe that already crops and flips it crops twice.
"""

from __future__ import annotations

import torch
from torch import Tensor

from benchmarks import augment
from benchmarks.registry import DEFENSES
from benchmarks.train import Defense


class CropFlip(Defense):
    """Per image: a random ``pad``-padded crop back to the input size, then a coin-flip mirror."""

    def __init__(self, pad: int = 4) -> None:
        if pad < 0:
            raise ValueError(f"crop-flip: pad must be >= 0, got {pad}")
        self.name = "crop-flip"
        self.pad = pad

    def augment(self, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return augment.crop_flip(x, generator, self.pad), y


@DEFENSES.register("crop-flip")
def crop_flip(pad: int = 4) -> Defense:
    return CropFlip(pad)
