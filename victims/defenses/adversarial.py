"""``at<k>``: PGD adversarial training at radius k/255 (Madry et al.), as the REM/SEM code runs it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from benchmarks.registry import DEFENSES
from benchmarks.train import Defense, adversarial_loss


class AdversarialTraining(Defense):
    """Cross-entropy on L-inf PGD examples: ``steps`` steps of ``radius/step_div`` from a uniform start.

    Example:
        >>> d = DEFENSES.get("at4")()
        >>> (d.radius, d.steps, d.step_size)
        (4, 10, 0.8)
    """

    def __init__(self, radius: int, steps: int = 10, step_div: float = 5.0) -> None:
        if radius <= 0 or radius > 64:
            raise ValueError(f"at<k>: radius k must be in 1..64 (1/255 units), got {radius}")
        if steps <= 0 or step_div <= 0:
            raise ValueError(f"at<k>: steps and step_div must be positive, got {steps}, {step_div}")
        self.name = f"at{radius}"
        self.radius = radius
        self.steps = steps
        self.step_size = radius / step_div  # 1/255 units; the reference uses rho_a / 5 (ImageNet: / 4)

    @property
    def attack_radius(self) -> float:
        return float(self.radius)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return adversarial_loss(
            model, x, y, eps=self.radius / 255, alpha=self.step_size / 255, steps=self.steps, generator=generator
        )


@DEFENSES.register("at<k>", examples=("at1", "at2", "at3", "at4", "at8"))
def at(k: int, steps: int = 10, step_div: float = 5.0) -> Defense:
    return AdversarialTraining(k, steps, step_div)
