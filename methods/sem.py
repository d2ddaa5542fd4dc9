"""``sem``: stable error-minimising noise (Liu et al., AAAI 2024), algorithms.md section 5.

REM's loop with the inner maximisation replaced by one uniform random perturbation in the rho_r
ball per augmentation sample (no gradient steps on it); the surrogate is still adversarially
trained at rho_a, exactly as in REM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.noise import Meter, NoiseMethod
from benchmarks.pgd import uniform_like
from benchmarks.registry import METHODS
from benchmarks.types import Budget, Context, ImageSet
from methods._minmin import MinMinConfig, run_minmin


@METHODS.register("sem")
class StableErrorMinimizing(NoiseMethod):
    """Stable error-minimising noise, SEM code protocol (gen_sem.sh).

    Example:
        >>> c = StableErrorMinimizing().config
        >>> (c.samples, c.sample_radius, c.noise_steps, c.adv_radius)
        (5, 4.0, 10, 4.0)
    """

    name = "sem"
    citation = "Liu et al., Stable Unlearnable Example: Enhancing the Robustness of Unlearnable Examples via "
    citation += "Stable Error-Minimizing Noise, AAAI 2024"

    @dataclass(frozen=True)
    class Config(MinMinConfig):
        sample_radius: float = 4.0  # rho_r: r ~ U[-rho_r, rho_r]^d per EOT sample, 1/255 (uniform_scale 1.0)

    def objective(self, model: nn.Module, views: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        """CE at one uniform random point of the rho_r ball around each view, clamped to the valid box."""
        r = uniform_like(views.detach(), self.config.sample_radius / 255, generator)
        return F.cross_entropy(model((views + r).clamp(0, 1)), y)

    def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
        return run_minmin(train, budget, ctx, meter, self.config, self.objective, self.name)
