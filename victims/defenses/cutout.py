"""``cutout``: zero one random square per image (DeVries & Taylor 2017), batched on the device."""

from __future__ import annotations

import torch
from torch import Tensor

from benchmarks.registry import DEFENSES
from benchmarks.train import Defense


class Cutout(Defense):
    """A ``length`` x ``length`` square (half the image side by default, 16 on CIFAR) centred at a
    uniformly random pixel, clipped at the border, set to zero."""

    def __init__(self, length: int | None = None) -> None:
        self.name = "cutout"
        self.length = length

    def augment(self, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        n, _, h, w = x.shape
        length = self.length or h // 2
        cy = torch.randint(0, h, (n, 1, 1), generator=generator, device=x.device)
        cx = torch.randint(0, w, (n, 1, 1), generator=generator, device=x.device)
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        half = length // 2  # as the reference: rows [cy - L//2, cy + L//2), clipped at the border
        inside = (rows >= cy - half) & (rows < cy + half) & (cols >= cx - half) & (cols < cx + half)
        return x.masked_fill(inside[:, None], 0.0), y


@DEFENSES.register("cutout")
def cutout() -> Defense:
    return Cutout()
