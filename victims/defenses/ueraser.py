"""``ueraser-lite`` and ``ueraser-max``: UEraser (Qin et al., 2023, "Learning the Unlearnable: Adversarial
Augmentations Suppress Unlearnable Example Attacks").

Heavy random augmentation of every training batch on the device, the authors' kornia composition: plasma
brightness (roughness 0.1-0.7, intensity 0-1, always), plasma contrast (roughness 0.1-0.7, always), a random
channel shuffle (p 0.5) and TrivialAugment (one random operation at a random strength).

- ``ueraser-lite``: one augmented view per image, cross-entropy.
- ``ueraser-max``: ``repeats`` (5) augmented views per image and, per image, the largest of their losses (the
  adversarial augmentation); the training accuracy is read from the view with that loss. The authors train
  with the maximum for their first ``repeat_epoch`` epochs (all of them in UEraser-Max, the variant here) and
  their README uses 5 repeats (APBench: 5).

kornia draws from the global random generator: every call runs inside ``torch.random.fork_rng`` seeded from
the cell's augmentation generator, so a cell stays a function of its seed and nothing else is disturbed.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from kornia.augmentation.auto import TrivialAugment
from torch import Tensor, nn

from benchmarks.registry import DEFENSES
from benchmarks.train import Defense


def eraser_augmentation() -> nn.Module:
    """The authors' augmentation pipeline (float images in [0, 1], any channel count)."""
    return K.AugmentationSequential(
        K.RandomPlasmaBrightness(roughness=(0.1, 0.7), intensity=(0.0, 1.0), p=1.0),
        K.RandomPlasmaContrast(roughness=(0.1, 0.7), p=1.0),
        K.RandomChannelShuffle(p=0.5),
        TrivialAugment(),
    )


class UEraser(Defense):
    """The UEraser augmentations on every batch; with ``repeats > 1`` the per-image maximum loss over repeats."""

    def __init__(self, repeats: int = 1) -> None:
        if not 1 <= repeats <= 64:
            raise ValueError(f"ueraser: repeats must be in 1..64, got {repeats}")
        self.name = "ueraser-lite" if repeats == 1 else "ueraser-max"
        self.repeats = repeats
        self._augment = eraser_augmentation()

    def _draw(self, x: Tensor, generator: torch.Generator) -> Tensor:
        seed = int(torch.randint(2**62, (), generator=generator, device=generator.device))
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return self._augment(x).clamp_(0, 1)

    def augment(self, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return (self._draw(x, generator) if self.repeats == 1 else x), y

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        if self.repeats == 1:
            return super().loss(model, x, y, generator)
        b = len(x)
        views = self._draw(x.repeat(self.repeats, *[1] * (x.dim() - 1)), generator)  # repeat r is rows r*B..
        logits = model(views)
        targets = y.repeat(self.repeats, *[1] * (y.dim() - 1))  # int64 (R*B,) or soft (R*B, K)
        losses = F.cross_entropy(logits, targets, reduction="none").view(self.repeats, b)
        worst = losses.argmax(0)  # per image, the view with the largest loss
        picked = logits.view(self.repeats, b, -1)[worst, torch.arange(b, device=x.device)]
        return losses.amax(0).mean(), picked


@DEFENSES.register("ueraser-lite")
def ueraser_lite() -> Defense:
    return UEraser(1)


@DEFENSES.register("ueraser-max")
def ueraser_max(repeats: int = 5) -> Defense:
    return UEraser(repeats)
