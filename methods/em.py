"""``em`` and ``em-cw``: error-minimising noise (Huang et al., ICLR 2021), algorithms.md section 1.

``em`` is sample-wise EM as the REM/SEM code base runs it (section 1.3; the EM rows of the SEM
paper's tables), through the shared alternation of :mod:`methods._minmin` with the plain
cross-entropy objective and a standard-trained surrogate.

Deviation from the reference, on purpose: the REM-repo EM optimises the noise on the *augmented*
view and stores ``x_aug_adv - x_aug``, i.e. noise in the augmented coordinate frame that is then
added to the un-augmented image. Here the noise lives in the image frame and is optimised through
the augmentation, as REM and SEM do.

``em-cw`` is the official class-wise EM (section 1.2): one pattern per class, rounds of surrogate
training on the whole training set followed by a pass over a 20 % subset in which every batch replaces
each class pattern by the mean of its samples' one-step updates, stopping when the surrogate's error
on the protected subset falls below ``stop_error`` (capped at ``max_rounds``; non-convergence is
recorded, not looped on forever).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from benchmarks.noise import Meter, NoiseMethod
from benchmarks.pgd import box_projection, eval_mode, pgd_optimize
from benchmarks.registry import METHODS
from benchmarks.train import TrainRecipe, batches, make_optimizer, sgd_step
from benchmarks.types import Budget, Context, ImageSet
from methods._minmin import MinMinConfig, Objective, build_surrogate, run_minmin


def _cross_entropy(model: nn.Module, views: Tensor, y: Tensor, unit: Tensor | None) -> Tensor:
    return F.cross_entropy(model(views), y)


#: EM's noise objective: the surrogate's loss on the protected views (no random draw)
cross_entropy_objective = Objective(_cross_entropy)


@METHODS.register("em")
class ErrorMinimizing(NoiseMethod):
    """Sample-wise error-minimising noise (min-min), REM/SEM-code protocol.

    Example:
        >>> (ErrorMinimizing().config.adv_radius, ErrorMinimizing().config.samples)
        (0.0, 1)
    """

    name = "em"
    citation = "Huang et al., Unlearnable Examples: Making Personal Data Unexploitable, ICLR 2021"
    url = "https://arxiv.org/abs/2101.04898"

    @dataclass(frozen=True)
    class Config(MinMinConfig):
        adv_radius: float = 0.0  # EM's surrogate is trained normally
        samples: int = 1  # one augmented view per noise step (no EOT)

    def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
        return run_minmin(train, budget, ctx, meter, self.config, cross_entropy_objective, self.name)


@METHODS.register("em-cw")
class ClassWiseErrorMinimizing(NoiseMethod):
    """Class-wise error-minimising noise, official EM protocol (section 1.2, ``perturbation.py``).

    Rounds until the stop test passes: ``train_steps`` surrogate SGD steps on batches of the **whole**
    training set carrying their class pattern; then, for every batch of the fixed ``subset`` (shuffled,
    drop_last), a ``noise_steps`` PGD descent per sample from its class pattern, and each class present in
    the batch gets the clamped mean of its samples' results **after every batch**; then the stop test:
    the surrogate's error on the protected subset below ``stop_error``.
    """

    name = "em-cw"
    citation = ErrorMinimizing.citation
    url = ErrorMinimizing.url

    @dataclass(frozen=True)
    class Config:
        surrogate: str = "resnet18"
        subset: float = 0.2  # fraction of the training set the patterns are optimised and tested on
        batch_size: int = 512
        lr: float = 0.1  # constant: the official code does not step its scheduler during the search
        momentum: float = 0.9
        weight_decay: float = 5e-4
        grad_clip: float = 5.0
        train_steps: int = 10  # surrogate steps per round, on the whole training set
        noise_steps: int = 1  # PGD steps per sample per batch
        noise_step_size: float = 0.8  # 1/255 units
        stop_error: float = 0.01  # stop when the surrogate's error on the protected subset is below this
        max_rounds: int = 100  # cap; whether the stop criterion was met is recorded
        classwise: bool = True  # the output is one pattern per class

        def __post_init__(self) -> None:
            if not 0 < self.subset <= 1 or self.max_rounds <= 0 or self.train_steps <= 0:
                raise ValueError("em-cw: subset must be in (0, 1], max_rounds and train_steps positive")
            if self.batch_size <= 0 or self.noise_steps <= 0 or self.noise_step_size <= 0:
                raise ValueError("em-cw: batch_size, noise_steps and noise_step_size must be positive")

    def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
        cfg = self.config
        g = ctx.generator(self.name, "data")
        order = torch.randperm(len(train), generator=g, device=ctx.device)[: max(1, round(cfg.subset * len(train)))]
        subset = train.subset(order)
        model = build_surrogate(cfg, train, ctx, self.name)  # type: ignore[arg-type]
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
        patterns = torch.zeros((train.num_classes, *train.shape), device=ctx.device)  # official: zero start
        stream = batches(len(train), cfg.batch_size, g, ctx.device)
        error, rounds = 1.0, 0
        with meter.watch(model):
            bar = tqdm(total=cfg.max_rounds, desc="em-cw rounds", disable=not ctx.progress, leave=False)
            while rounds < cfg.max_rounds and error >= cfg.stop_error:
                model.train()
                for _ in range(cfg.train_steps):
                    x_u8, y = train.take(next(stream), ctx.device)
                    x = x_u8.float() / 255 + patterns[y]  # official: no clamp here
                    with ctx.autocast():
                        sgd_step(model, opt, F.cross_entropy(model(x), y), recipe, meter.steps)
                    meter.steps += 1
                for idx in batches(len(subset), cfg.batch_size, g, ctx.device, epochs=1):
                    self._update_patterns(model, *subset.take(idx, ctx.device), patterns, budget, ctx)
                error = self._error(model, subset, patterns, ctx)
                rounds += 1
                bar.update(1)
            bar.close()
        meter.extra.update(converged=error < cfg.stop_error, final_error=error, rounds=rounds)
        meter.surrogate = model
        return patterns

    def _update_patterns(
        self, model: nn.Module, x_u8: Tensor, y: Tensor, patterns: Tensor, budget: Budget, ctx: Context
    ) -> None:
        """One batch: PGD descent per sample from its class pattern; each class in the batch gets the mean.

        The official per-sample result is ``clip(x + pattern) - x`` after the steps, clipped to the budget
        but not to the pixel box (``project_last=False``); the mean is clipped to the budget again.
        """
        x = x_u8.float() / 255
        project = box_projection(x)

        def loss(delta: Tensor) -> Tensor:
            with ctx.autocast():
                return F.cross_entropy(model(x + delta), y)

        with eval_mode(model):
            eta = pgd_optimize(
                loss,
                project(patterns[y].clone()),
                eps=budget.eps,
                alpha=self.config.noise_step_size / 255,
                steps=self.config.noise_steps,
                ascent=False,
                project=project,
                project_last=False,
            )
        total = torch.zeros_like(patterns).index_add_(0, y, eta)
        counts = torch.bincount(y, minlength=len(patterns))
        present = counts > 0
        patterns[present] = (total[present] / counts[present].view(-1, 1, 1, 1)).clamp_(-budget.eps, budget.eps)

    @torch.no_grad()
    def _error(self, model: nn.Module, data: ImageSet, patterns: Tensor, ctx: Context) -> float:
        """The stop test: error on the protected subset (official: eval mode, noise added without clamp)."""
        with eval_mode(model):
            wrong = 0
            for i in range(0, len(data), 1000):
                x, y = data.x[i : i + 1000].to(ctx.device).float() / 255, data.y[i : i + 1000].to(ctx.device)
                with ctx.autocast():
                    wrong += int((model(x + patterns[y]).argmax(1) != y).sum())
        return wrong / len(data)
