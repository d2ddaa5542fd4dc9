"""``em`` and ``em-cw``: error-minimising noise (Huang et al., ICLR 2021), algorithms.md section 1.

``em`` is sample-wise EM as the REM/SEM code base runs it (section 1.3; the EM rows of the SEM
paper's tables), through the shared alternation of :mod:`methods._minmin` with the plain
cross-entropy objective and a standard-trained surrogate.

Deviation from the reference, on purpose: the REM-repo EM optimises the noise on the *augmented*
view and stores ``x_aug_adv - x_aug``, i.e. noise in the augmented coordinate frame that is then
added to the un-augmented image. Here the noise lives in the image frame and is optimised through
the augmentation, as REM and SEM do.

``em-cw`` is the official class-wise EM (section 1.2): one pattern per class, rounds of surrogate
training followed by a one-step update of every sample averaged per class, stopping when the
surrogate's error on the protected subset falls below ``stop_error`` (capped at ``max_rounds``;
non-convergence is recorded, not looped on forever).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from benchmarks.noise import Meter, NoiseMethod
from benchmarks.pgd import pgd
from benchmarks.registry import METHODS
from benchmarks.train import TrainRecipe, batches, make_optimizer, sgd_step
from benchmarks.types import Budget, Context, ImageSet
from methods._minmin import MinMinConfig, build_surrogate, run_minmin


def cross_entropy_objective(model: nn.Module, views: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
    """EM's noise objective: the surrogate's loss on the protected views."""
    return F.cross_entropy(model(views), y)


@METHODS.register("em")
class ErrorMinimizing(NoiseMethod):
    """Sample-wise error-minimising noise (min-min), REM/SEM-code protocol.

    Example:
        >>> (ErrorMinimizing().config.adv_radius, ErrorMinimizing().config.samples)
        (0.0, 1)
    """

    name = "em"
    citation = "Huang et al., Unlearnable Examples: Making Personal Data Unexploitable, ICLR 2021"

    @dataclass(frozen=True)
    class Config(MinMinConfig):
        adv_radius: float = 0.0  # EM's surrogate is trained normally
        samples: int = 1  # one augmented view per noise step (no EOT)

    def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
        return run_minmin(train, budget, ctx, meter, self.config, cross_entropy_objective, self.name)


@METHODS.register("em-cw")
class ClassWiseErrorMinimizing(NoiseMethod):
    """Class-wise error-minimising noise, official EM protocol (section 1.2)."""

    name = "em-cw"
    citation = ErrorMinimizing.citation

    @dataclass(frozen=True)
    class Config:
        surrogate: str = "resnet18"
        subset: float = 0.2  # fraction of the training set the patterns are optimised on
        batch_size: int = 512
        lr: float = 0.1  # constant: the official code does not step its scheduler during the search
        momentum: float = 0.9
        weight_decay: float = 5e-4
        grad_clip: float = 5.0
        train_steps: int = 10  # surrogate steps per round
        noise_steps: int = 1  # PGD steps per sample per round
        noise_step_size: float = 0.8  # 1/255 units
        stop_error: float = 0.01  # stop when the surrogate's error on protected data is below this
        max_rounds: int = 100  # cap; whether the stop criterion was met is recorded
        classwise: bool = True  # the output is one pattern per class

        def __post_init__(self) -> None:
            if not 0 < self.subset <= 1 or self.max_rounds <= 0 or self.train_steps <= 0:
                raise ValueError("em-cw: subset must be in (0, 1], max_rounds and train_steps positive")

    def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
        cfg = self.config
        g = ctx.generator(self.name, "data")
        order = torch.randperm(len(train), generator=g, device=ctx.device)[: max(1, round(cfg.subset * len(train)))]
        data = train.subset(order)
        model = build_surrogate(cfg, data, ctx, self.name)  # type: ignore[arg-type]
        recipe = TrainRecipe(
            "em-cw",
            10**9,
            cfg.batch_size,
            cfg.lr,
            cfg.momentum,
            cfg.weight_decay,
            schedule="constant",
            grad_clip=cfg.grad_clip,
        )
        opt = make_optimizer(model, recipe)
        patterns = torch.zeros((train.num_classes, *train.shape), device=ctx.device)
        stream = batches(len(data), cfg.batch_size, g, ctx.device)
        error = 1.0
        with meter.watch(model):
            for _ in tqdm(range(cfg.max_rounds), desc="em-cw rounds", disable=not ctx.progress, leave=False):
                for _ in range(cfg.train_steps):
                    idx = next(stream)
                    x = (data.x[idx].float() / 255 + patterns[data.y[idx]]).clamp(0, 1)
                    with ctx.autocast():
                        sgd_step(model, opt, F.cross_entropy(model(x), data.y[idx]), recipe, meter.steps)
                    meter.steps += 1
                patterns = self._update_patterns(model, data, patterns, budget, ctx)
                error = self._error(model, data, patterns, ctx)
                if error < cfg.stop_error:
                    break
        meter.extra.update(converged=error < cfg.stop_error, final_error=error)
        meter.surrogate = model
        return patterns

    def _update_patterns(
        self, model: nn.Module, data: ImageSet, patterns: Tensor, budget: Budget, ctx: Context
    ) -> Tensor:
        """One PGD pass per sample from its class pattern; each pattern becomes its class's mean."""
        cfg = self.config
        total = torch.zeros_like(patterns)
        for i in range(0, len(data), cfg.batch_size):
            x, y = data.x[i : i + cfg.batch_size].float() / 255, data.y[i : i + cfg.batch_size]
            start = (x + patterns[y]).clamp(0, 1)
            with ctx.autocast():
                step = pgd(
                    model,
                    start,
                    y,
                    eps=budget.eps,
                    alpha=cfg.noise_step_size / 255,
                    steps=cfg.noise_steps,
                    ascent=False,
                    random_start=False,
                )
            total.index_add_(0, y, (start + step - x).clamp(-budget.eps, budget.eps))
        counts = torch.bincount(data.y, minlength=data.num_classes).clamp_min(1).view(-1, 1, 1, 1)
        return (total / counts).clamp(-budget.eps, budget.eps)

    @torch.no_grad()
    def _error(self, model: nn.Module, data: ImageSet, patterns: Tensor, ctx: Context) -> float:
        model.eval()
        wrong = 0
        for i in range(0, len(data), 1000):
            x, y = data.x[i : i + 1000].float() / 255, data.y[i : i + 1000]
            with ctx.autocast():
                wrong += int((model((x + patterns[y]).clamp(0, 1)).argmax(1) != y).sum())
        model.train()
        return wrong / len(data)
