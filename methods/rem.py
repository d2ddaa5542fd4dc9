"""``rem``: robust error-minimising noise (Fu et al., ICLR 2022), algorithms.md section 4.

The shared alternation of :mod:`methods._minmin` with an adversarially trained surrogate and a
min-min-max noise objective: for each augmented view the inner PGD *maximises* the loss inside the
rho_a ball, and the noise minimises the loss at that adversarial point.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.noise import Meter, NoiseMethod
from benchmarks.pgd import pgd
from benchmarks.registry import METHODS
from benchmarks.types import Budget, Context, ImageSet
from methods._minmin import MinMinConfig, Objective, run_minmin


@METHODS.register("rem")
class RobustErrorMinimizing(NoiseMethod):
    """Robust error-minimising noise, REM code protocol (gen_rem.sh defaults).

    Example:
        >>> c = RobustErrorMinimizing().config
        >>> (c.samples, c.inner_radius, c.inner_steps, c.adv_radius)
        (5, 4.0, 10, 4.0)
    """

    name = "rem"
    citation = "Fu et al., Robust Unlearnable Examples: Protecting Data Against Adversarial Learning, ICLR 2022"
    url = "https://arxiv.org/abs/2203.14533"

    @dataclass(frozen=True)
    class Config(MinMinConfig):
        inner_radius: float = 4.0  # rho_a of the inner maximisation in the noise step, 1/255
        inner_steps: int = 10  # K_a
        inner_step_size: float = 0.8  # alpha_a, 1/255

    @property
    def objective(self) -> Objective:
        """CE at the worst point of the rho_a ball around each view (the ball's point is detached); the inner
        PGD starts at a uniform point of the ball (drawn only when there is an inner maximisation)."""
        return Objective(self._loss, draws=self.config.inner_steps > 0 and self.config.inner_radius > 0)

    def _loss(self, model: nn.Module, views: Tensor, y: Tensor, unit: Tensor | None) -> Tensor:
        cfg = self.config
        eps = cfg.inner_radius / 255
        start = None if unit is None else unit * eps
        delta_a = pgd(model, views, y, eps=eps, alpha=cfg.inner_step_size / 255, steps=cfg.inner_steps, start=start)
        return F.cross_entropy(model(views + delta_a), y)

    def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
        return run_minmin(train, budget, ctx, meter, self.config, self.objective, self.name)
