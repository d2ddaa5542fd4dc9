"""``sem``: stable error-minimising noise (Liu et al., AAAI 2024), algorithms.md section 5.

REM's loop with the inner maximisation replaced by one uniform random perturbation in the rho_r
ball per augmentation sample (no gradient steps on it); the surrogate is still adversarially
trained at rho_a, exactly as in REM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.noise import Meter, NoiseMethod
from benchmarks.registry import METHODS
from benchmarks.types import Budget, Context, ImageSet
from methods._minmin import MinMinConfig, Objective, run_minmin


@METHODS.register("sem")
class StableErrorMinimizing(NoiseMethod):
    """Stable error-minimising noise, SEM code protocol (gen_sem.sh).

    Example:
        >>> c = StableErrorMinimizing().config
        >>> (c.samples, c.rho_r, c.noise_steps, c.adv_radius)
        (5, 4.0, 10, 4.0)
        >>> StableErrorMinimizing(adv_radius=2.0).config.rho_r  # rho_r follows rho_a unless set
        2.0
    """

    name = "sem"
    citation = "Liu et al., Stable Unlearnable Example: Enhancing the Robustness of Unlearnable Examples via "
    citation += "Stable Error-Minimizing Noise, AAAI 2024"
    url = "https://arxiv.org/abs/2311.13091"

    @dataclass(frozen=True)
    class Config(MinMinConfig):
        #: rho_r: r ~ U[-rho_r, rho_r]^d per EOT sample, 1/255 (uniform_scale 1.0). None = ``adv_radius``: in
        #: the reference one parameter (``--atk-pgd-radius``) is both, so a sweep of rho_a moves rho_r with it
        sample_radius: float | None = None

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.sample_radius is not None and self.sample_radius < 0:
                raise ValueError(f"sample_radius must be >= 0 or null (= adv_radius), got {self.sample_radius}")

        @property
        def rho_r(self) -> float:
            """The sampling radius in use, 1/255 units."""
            return self.adv_radius if self.sample_radius is None else self.sample_radius

    @property
    def objective(self) -> Objective:
        """CE at one uniform random point r of the rho_r ball around each view, clamped to the valid box.

        As in the reference, the gradient at the clamped point reaches the view unchanged (straight
        through the clamp): a pixel that r pushes outside [0, 1] still passes its gradient on.
        """
        return Objective(self._loss, draws=True)

    def _loss(self, model: nn.Module, views: Tensor, y: Tensor, unit: Tensor | None) -> Tensor:
        assert unit is not None  # Objective(draws=True) always passes the draw
        point = (views.detach() + unit * (self.config.rho_r / 255)).clamp_(0, 1)
        return F.cross_entropy(model(views + (point - views).detach()), y)

    def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
        return run_minmin(train, budget, ctx, meter, self.config, self.objective, self.name)
