"""The surrogate/noise alternation shared by EM, REM and SEM (algorithms.md sections 1.3, 4, 5).

One loop, as the REM/SEM code runs it: at every step draw a batch, re-optimise that batch's noise
against the current surrogate (fresh uniform start, ``noise_steps`` sign steps, expectation over
``samples`` random augmentations), store it as int8, then take one SGD step of the surrogate on the
augmented protected batch (adversarially trained when ``adv_radius > 0``). After the last step, one
pass regenerates the noise of every image with the final surrogate.

The methods differ only in the *noise objective*: the loss of the surrogate on an augmented view
``v = T(x + delta)``. EM uses ``CE(f(v), y)``, REM ``CE(f(v + PGD_max(v)), y)``, SEM
``CE(f(v + r), y)`` with ``r`` uniform in the rho_r ball.

The EOT samples are one batched forward of ``samples * B`` images (the reference loops over them,
and over images, in Python). With BN in eval mode this is the same objective: the sum over samples
of the batch-mean losses, up to a positive factor that the sign step ignores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from benchmarks import augment
from benchmarks.models import create_victim
from benchmarks.noise import Meter, quantize
from benchmarks.pgd import eval_mode, pgd_optimize, uniform_like
from benchmarks.train import TrainRecipe, adversarial_loss, batches, make_optimizer, sgd_step
from benchmarks.types import Budget, Context, ImageSet

#: maps (model, augmented protected views in [0, 1], labels, generator) to the loss the noise minimises
Objective = Callable[[nn.Module, Tensor, Tensor, torch.Generator], Tensor]


@dataclass(frozen=True)
class MinMinConfig:
    """Hyperparameters of the alternation; defaults are the REM/SEM CIFAR scripts (gen_sem.sh)."""

    surrogate: str = "resnet18"  # registered victim name (CIFAR-stem ResNet-18 as in the reference)
    steps: int = 5000  # surrogate SGD steps, each preceded by a noise update of its batch
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_decay_every: int = 2000  # LR x 0.1 every this many steps
    noise_steps: int = 10  # K_u: sign-descent steps of the noise per update
    noise_step_size: float = 1.6  # alpha_u, 1/255 units
    samples: int = 5  # J: random augmentations (EOT samples) per noise step
    adv_radius: float = 4.0  # rho_a of the surrogate's adversarial training, 1/255 (0 = standard training)
    adv_steps: int = 10  # PGD steps of that adversarial training
    adv_step_size: float = 0.8  # its step size, 1/255
    augment: augment.Name = "crop_flip"  # T: crop_flip (CIFAR), resized_crop_flip (ImageNet subset) or none
    crop_size: int | None = None  # output side of resized_crop_flip (ImageNet subset: 224)
    final_pass: bool = True  # regenerate every image's noise with the final surrogate

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "noise_steps", "samples"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.adv_radius < 0 or self.noise_step_size <= 0:
            raise ValueError("adv_radius must be >= 0 and noise_step_size > 0")
        augment.check_name(self.augment)

    def recipe(self) -> TrainRecipe:
        milestones = tuple(
            k * self.lr_decay_every / self.steps for k in range(1, self.steps // self.lr_decay_every + 1)
        )
        return TrainRecipe(
            "surrogate", self.steps, self.batch_size, self.lr, self.momentum, self.weight_decay, milestones=milestones
        )

    def transform(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return augment.by_name(self.augment, x, generator, self.crop_size)


def build_surrogate(cfg: MinMinConfig, train: ImageSet, ctx: Context, tag: str) -> nn.Module:
    """A freshly initialised surrogate (seeded from ``ctx`` and ``tag``) on the device."""
    ctx.manual_seed(tag, "surrogate")
    return ctx.prepare(create_victim(cfg.surrogate, train.num_classes, train.shape[0]))


def noise_update(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    cfg: MinMinConfig,
    objective: Objective,
    budget: Budget,
    generator: torch.Generator,
    ctx: Context,
) -> Tensor:
    """Error-minimising noise for one batch: fresh uniform start, EOT over ``cfg.samples`` views.

    Shape:
        x: float ``(B, C, H, W)`` in [0, 1]; y: int64 ``(B,)``; result: float noise like ``x``.
    """
    labels = y.repeat(cfg.samples)

    def loss(delta: Tensor) -> Tensor:
        protected = (x + delta).clamp(0, 1).repeat(cfg.samples, 1, 1, 1)
        views = cfg.transform(protected, generator)
        if ctx.channels_last:
            views = views.contiguous(memory_format=torch.channels_last)
        with ctx.autocast():
            return objective(model, views, labels, generator)

    init = uniform_like(x, budget.eps, generator)
    with eval_mode(model):
        return pgd_optimize(
            loss, init, eps=budget.eps, alpha=cfg.noise_step_size / 255, steps=cfg.noise_steps, ascent=False
        )


def surrogate_loss(model: nn.Module, x: Tensor, y: Tensor, cfg: MinMinConfig, generator: torch.Generator) -> Tensor:
    """Adversarial (rho_a > 0) or standard cross-entropy of the surrogate on protected views."""
    if cfg.adv_radius > 0:
        loss, _ = adversarial_loss(
            model,
            x,
            y,
            eps=cfg.adv_radius / 255,
            alpha=cfg.adv_step_size / 255,
            steps=cfg.adv_steps,
            generator=generator,
        )
        return loss
    return F.cross_entropy(model(x), y)


@dataclass
class Alternation:
    """The state of one min-min run: surrogate, optimiser, RNG streams and the int8 noise bank."""

    model: nn.Module
    opt: torch.optim.Optimizer
    recipe: TrainRecipe
    cfg: MinMinConfig
    objective: Objective
    budget: Budget
    ctx: Context
    g_noise: torch.Generator
    g_train: torch.Generator

    def step(self, x_u8: Tensor, y: Tensor, step: int) -> tuple[Tensor, Tensor]:
        """One generation step on a batch: re-optimise its noise, then one surrogate SGD step.

        Returns the batch's int8 noise and the surrogate's loss.
        """
        cfg, ctx = self.cfg, self.ctx
        x = x_u8.float().div_(255)
        delta = quantize(
            noise_update(self.model, x, y, cfg, self.objective, self.budget, self.g_noise, ctx), self.budget, x_u8
        )
        protected = cfg.transform((x + delta.float() / 255).clamp_(0, 1), self.g_train)
        if ctx.channels_last:
            protected = protected.contiguous(memory_format=torch.channels_last)
        with ctx.autocast():
            loss = surrogate_loss(self.model, protected, y, cfg, self.g_train)
        sgd_step(self.model, self.opt, loss, self.recipe, step)
        return delta, loss.detach()


def start_alternation(
    train: ImageSet, budget: Budget, ctx: Context, cfg: MinMinConfig, objective: Objective, tag: str
) -> Alternation:
    """A fresh surrogate (seeded from ``ctx`` and ``tag``) with its optimiser and RNG streams."""
    model = build_surrogate(cfg, train, ctx, tag)
    recipe = cfg.recipe()
    g_noise, g_train = ctx.generator(tag, "noise"), ctx.generator(tag, "train")
    return Alternation(model, make_optimizer(model, recipe), recipe, cfg, objective, budget, ctx, g_noise, g_train)


def run_minmin(
    train: ImageSet, budget: Budget, ctx: Context, meter: Meter, cfg: MinMinConfig, objective: Objective, tag: str
) -> Tensor:
    """Run the alternation; return float noise ``(N, C, H, W)`` in [0, 1] units.

    The final surrogate is left in ``meter.surrogate`` (its robustness is measured on the poison).
    """
    run = start_alternation(train, budget, ctx, cfg, objective, tag)
    bank = torch.zeros_like(train.x, dtype=torch.int8)
    g_data = ctx.generator(tag, "data")
    with meter.watch(run.model):
        bar = tqdm(total=cfg.steps, desc=f"{tag} generate", disable=not ctx.progress, leave=False, dynamic_ncols=True)
        for step, idx in enumerate(batches(len(train), cfg.batch_size, g_data, ctx.device)):
            if step >= cfg.steps:
                break
            bank[idx], loss = run.step(train.x[idx], train.y[idx], step)
            meter.steps += 1
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{float(loss):.3f}")
        bar.close()
        noise = bank.float().div_(255)
        if cfg.final_pass:
            noise = final_pass(run.model, train, budget, ctx, cfg, objective, run.g_noise)
    meter.surrogate = run.model
    return noise


def final_pass(
    model: nn.Module,
    train: ImageSet,
    budget: Budget,
    ctx: Context,
    cfg: MinMinConfig,
    objective: Objective,
    generator: torch.Generator,
) -> Tensor:
    """Noise for every image from the final surrogate.

    The reference iterates a shuffled, drop_last loader here, which leaves up to ``batch_size - 1``
    images with stale noise; this pass covers every image exactly once.
    """
    out = torch.empty(train.x.shape, dtype=torch.float32, device=ctx.device)
    for i in tqdm(range(0, len(train), cfg.batch_size), desc="final pass", disable=not ctx.progress, leave=False):
        x, y = train.x[i : i + cfg.batch_size].float().div_(255), train.y[i : i + cfg.batch_size]
        out[i : i + len(y)] = noise_update(model, x, y, cfg, objective, budget, generator, ctx)
    return out
