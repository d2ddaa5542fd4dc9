"""``mixup`` and ``cutmix``: batch-level label mixing with a Beta(alpha, alpha) ratio."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from benchmarks.registry import DEFENSES
from benchmarks.train import Defense


def _beta(alpha: float, generator: torch.Generator) -> float:
    """One Beta(alpha, alpha) draw, reproducible from ``generator``."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


class MixUp(Defense):
    """Convex combination of the batch with a permutation of itself (Zhang et al. 2018)."""

    soft_labels = True

    def __init__(self, alpha: float = 1.0) -> None:
        self.name, self.alpha = "mixup", alpha

    def augment(self, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        lam = _beta(self.alpha, generator)
        perm = torch.randperm(x.shape[0], generator=generator, device=x.device)
        return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


class CutMix(Defense):
    """Paste a random box of a permuted batch; labels mixed by the pasted area (Yun et al. 2019)."""

    soft_labels = True

    def __init__(self, alpha: float = 1.0) -> None:
        self.name, self.alpha = "cutmix", alpha

    def augment(self, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        n, _, h, w = x.shape
        cut = (1 - _beta(self.alpha, generator)) ** 0.5
        cy, cx = divmod(int(torch.randint(0, h * w, (1,), generator=generator, device=x.device)), w)
        ch, cw = int(h * cut), int(w * cut)
        top, bottom = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        left, right = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        perm = torch.randperm(n, generator=generator, device=x.device)
        x = x.clone()
        x[:, :, top:bottom, left:right] = x[perm, :, top:bottom, left:right]
        lam = 1 - (bottom - top) * (right - left) / (h * w)
        return x, lam * y + (1 - lam) * y[perm]


@DEFENSES.register("mixup")
def mixup() -> Defense:
    return MixUp()


@DEFENSES.register("cutmix")
def cutmix() -> Defense:
    return CutMix()
