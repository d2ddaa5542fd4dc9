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
of the batch-mean losses, up to a positive factor that the sign step ignores. Where that forward would
not fit in memory (the ImageNet subset: 5 x 128 views of 224 x 224) it runs in chunks of at most
``max_forward`` views, one forward/backward each, with the same gradient: the objective's random draws
are made for all views before the split (:class:`Objective`), and an out-of-memory error (CUDA) halves the
chunk and retries the step from the same generator state.

Memory: the noise bank is int8 where the training set lives (1 byte per pixel); float work is one batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from benchmarks import augment
from benchmarks.models import create_victim
from benchmarks.noise import EXECUTION_ONLY, Meter, quantize
from benchmarks.pgd import eval_mode, frozen, pgd_optimize, uniform_like
from benchmarks.train import TrainRecipe, adversarial_loss, batches, make_optimizer, sgd_step
from benchmarks.types import Budget, Context, ImageSet


@dataclass(frozen=True)
class Objective:
    """The loss the noise minimises, on the surrogate's augmented protected views in [0, 1].

    ``loss(model, views, labels, unit)``: ``unit`` is a uniform draw in [-1, 1] shaped like ``views`` when
    ``draws`` (SEM's r, REM's PGD start; the objective scales it to its radius), else None. The caller draws it
    for all J x B views at once, so splitting the views into several forward passes cannot change it.
    """

    loss: Callable[[nn.Module, Tensor, Tensor, Tensor | None], Tensor]
    draws: bool = False

    def draw(self, views: Tensor, generator: torch.Generator) -> Tensor | None:
        """The objective's random draw for ``views`` (None when it draws nothing)."""
        return uniform_like(views.detach(), 1.0, generator) if self.draws else None

    def __call__(self, model: nn.Module, views: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        """The loss of one forward of every view, its draw taken from ``generator``."""
        return self.loss(model, views, y, self.draw(views, generator))


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
    #: most views per forward pass of a noise step (the J x B EOT views run in chunks of this many, with the same
    #: result); None = all J x B at once on a GPU (halved automatically on an out-of-memory error), and one
    #: forward per EOT sample (B views) on a CPU, where that is faster (ResNet-18, batch 32: 7.6 s against 9.2 s
    #: per two noise steps on 2 cores)
    max_forward: int | None = field(default=None, metadata=EXECUTION_ONLY)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "noise_steps", "samples"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_forward is not None and self.max_forward <= 0:
            raise ValueError(f"max_forward must be positive or null (all views at once), got {self.max_forward}")
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


@dataclass
class ForwardLimit:
    """Views per forward pass of a noise step in one run: ``max_forward``, lowered on out-of-memory errors."""

    views: int | None = None


def forward_limit(cfg: MinMinConfig, ctx: Context) -> ForwardLimit:
    """The views per forward pass a run starts with: ``cfg.max_forward`` (None: see :func:`views_per_forward`)."""
    return ForwardLimit(cfg.max_forward)


def views_per_forward(limit: ForwardLimit, batch: int, samples: int, device: torch.device) -> int:
    """Views per forward pass of a noise step on ``batch`` images: the limit, else one forward per EOT sample
    (``batch`` views) on a CPU, else all ``samples * batch`` at once."""
    total = samples * batch
    return min(limit.views or (batch if device.type == "cpu" else total), total)


def noise_update(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    cfg: MinMinConfig,
    objective: Objective,
    budget: Budget,
    generator: torch.Generator,
    ctx: Context,
    limit: ForwardLimit | None = None,
) -> Tensor:
    """Error-minimising noise for one batch: fresh uniform start, EOT over ``cfg.samples`` views.

    The ``samples * B`` views run in one forward pass, or in chunks of ``limit.views`` (default
    ``cfg.max_forward``) with the same result. On an out-of-memory error (``torch.OutOfMemoryError``) the
    chunk is halved (and remembered in ``limit``) and the update restarts from the generator's state before it.

    Shape:
        x: float ``(B, C, H, W)`` in [0, 1]; y: int64 ``(B,)``; result: float noise like ``x``.
    """
    limit = limit if limit is not None else forward_limit(cfg, ctx)
    state = generator.get_state()
    while True:
        chunk = views_per_forward(limit, len(y), cfg.samples, ctx.device)
        try:
            return _noise_pgd(model, x, y, cfg, objective, budget, generator, ctx, chunk)
        except torch.OutOfMemoryError:
            if chunk <= 1:
                raise
            limit.views = math.ceil(chunk / 2)
            generator.set_state(state)
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()


def _noise_pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    cfg: MinMinConfig,
    objective: Objective,
    budget: Budget,
    generator: torch.Generator,
    ctx: Context,
    chunk: int,
) -> Tensor:
    """:func:`noise_update` with at most ``chunk`` views per forward pass."""
    labels = y.repeat(cfg.samples)
    total = len(labels)

    def views_of(delta: Tensor) -> Tensor:
        return cfg.transform((x + delta).clamp(0, 1).repeat(cfg.samples, 1, 1, 1), generator)

    def loss(views: Tensor, labels: Tensor, unit: Tensor | None) -> Tensor:
        if ctx.channels_last:
            views = views.contiguous(memory_format=torch.channels_last)
        with ctx.autocast():
            return objective.loss(model, views, labels, unit)

    def whole(delta: Tensor) -> Tensor:
        views = views_of(delta)
        return loss(views, labels, objective.draw(views, generator))

    def chunked(delta: Tensor) -> Tensor:
        """d loss / d delta from one forward/backward per chunk of views (batch-mean loss: chunks weighted)."""
        views = views_of(delta)
        unit = objective.draw(views, generator)
        flat, grad_views = views.detach(), torch.empty_like(views)
        for s in range(0, total, chunk):
            part = flat[s : s + chunk].detach().requires_grad_(True)
            piece = loss(part, labels[s : s + chunk], None if unit is None else unit[s : s + chunk])
            (grad_views[s : s + chunk],) = torch.autograd.grad(piece * (len(part) / total), part)
        (grad,) = torch.autograd.grad(views, delta, grad_views)
        return grad

    init = uniform_like(x, budget.eps, generator)
    eps, alpha, steps = budget.eps, cfg.noise_step_size / 255, cfg.noise_steps
    with eval_mode(model), frozen(model):
        if chunk >= total:
            return pgd_optimize(whole, init, eps=eps, alpha=alpha, steps=steps, ascent=False)
        return pgd_optimize(None, init, eps=eps, alpha=alpha, steps=steps, ascent=False, gradient=chunked)


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


#: a surrogate training loss for :class:`Alternation` ``(model, protected_views, clean, y, cfg, generator)``
SurrogateLoss = Callable[[nn.Module, Tensor, Tensor, Tensor, MinMinConfig, torch.Generator], Tensor]


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
    limit: ForwardLimit
    #: the surrogate's training loss ``(model, protected_views, clean, y, cfg, generator)``, with ``clean`` the
    #: batch's un-augmented clean images in [0, 1]; None = :func:`surrogate_loss` on the protected views
    surrogate_loss: SurrogateLoss | None = None
    #: the surrogate itself when ``model`` is its compiled wrapper (``Context.compile_mode``); None: ``model``
    module: nn.Module | None = None

    @property
    def surrogate(self) -> nn.Module:
        """The surrogate as an ordinary module (its robustness is measured on it, in eager mode)."""
        return self.model if self.module is None else self.module

    def step(self, x_u8: Tensor, y: Tensor, step: int) -> tuple[Tensor, Tensor]:
        """One generation step on a batch: re-optimise its noise, then one surrogate SGD step.

        Returns the batch's int8 noise and the surrogate's loss.
        """
        cfg, ctx = self.cfg, self.ctx
        x = x_u8.float().div_(255)
        noise = noise_update(self.model, x, y, cfg, self.objective, self.budget, self.g_noise, ctx, self.limit)
        delta = quantize(noise, self.budget, x_u8)
        protected = cfg.transform((x + delta.float() / 255).clamp_(0, 1), self.g_train)
        if ctx.channels_last:
            protected = protected.contiguous(memory_format=torch.channels_last)
        with ctx.autocast():
            if self.surrogate_loss is None:
                loss = surrogate_loss(self.model, protected, y, cfg, self.g_train)
            else:
                loss = self.surrogate_loss(self.model, protected, x, y, cfg, self.g_train)
        sgd_step(self.model, self.opt, loss, self.recipe, step)
        return delta, loss.detach()


def start_alternation(
    train: ImageSet,
    budget: Budget,
    ctx: Context,
    cfg: MinMinConfig,
    objective: Objective,
    tag: str,
    surrogate_loss: SurrogateLoss | None = None,
) -> Alternation:
    """A fresh surrogate (seeded from ``ctx`` and ``tag``) with its optimiser and RNG streams; ``surrogate_loss``
    replaces the surrogate's training loss (None: :func:`surrogate_loss`)."""
    model = build_surrogate(cfg, train, ctx, tag)
    recipe = cfg.recipe()
    g_noise, g_train = ctx.generator(tag, "noise"), ctx.generator(tag, "train")
    opt = make_optimizer(model, recipe)
    limit = forward_limit(cfg, ctx)
    return Alternation(
        ctx.compiled(model), opt, recipe, cfg, objective, budget, ctx, g_noise, g_train, limit, surrogate_loss, model
    )


def run_minmin(
    train: ImageSet,
    budget: Budget,
    ctx: Context,
    meter: Meter,
    cfg: MinMinConfig,
    objective: Objective,
    tag: str,
    surrogate_loss: SurrogateLoss | None = None,
) -> Tensor:
    """Run the alternation; return the int8 noise bank ``(N, C, H, W)`` in 1/255 units.

    The bank lives where the training set does (the device, or the host when the set is streamed). The
    final surrogate is left in ``meter.surrogate`` (its robustness is measured on the poison).
    ``surrogate_loss`` replaces the surrogate's training loss (None: :func:`surrogate_loss`).
    """
    run = start_alternation(train, budget, ctx, cfg, objective, tag, surrogate_loss)
    bank = torch.zeros_like(train.x, dtype=torch.int8)
    g_data = ctx.generator(tag, "data")
    with meter.watch(run.model):
        bar = tqdm(total=cfg.steps, desc=f"{tag} generate", disable=not ctx.progress, leave=False, dynamic_ncols=True)
        for step, idx in enumerate(batches(len(train), cfg.batch_size, g_data, ctx.device)):
            if step >= cfg.steps:
                break
            delta, loss = run.step(*train.take(idx, ctx.device), step)
            bank[idx.to(bank.device)] = delta.to(bank.device)
            meter.steps += 1
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{float(loss):.3f}")
        bar.close()
        if cfg.final_pass:
            final_pass(run.model, train, budget, ctx, cfg, objective, run.g_noise, out=bank, limit=run.limit)
    meter.surrogate = run.surrogate
    meter.extra["views_per_forward"] = views_per_forward(run.limit, cfg.batch_size, cfg.samples, ctx.device)
    return bank


def final_pass(
    model: nn.Module,
    train: ImageSet,
    budget: Budget,
    ctx: Context,
    cfg: MinMinConfig,
    objective: Objective,
    generator: torch.Generator,
    out: Tensor | None = None,
    limit: ForwardLimit | None = None,
) -> Tensor:
    """Int8 noise for every image from the final surrogate, written batch by batch into ``out`` (default: a
    new bank where the training set lives).

    The reference iterates a shuffled, drop_last loader here, which leaves up to ``batch_size - 1``
    images with stale noise; this pass covers every image exactly once.

    Shape:
        result: int8 ``(N, C, H, W)`` in 1/255 units.
    """
    out = torch.empty_like(train.x, dtype=torch.int8) if out is None else out
    for i in tqdm(range(0, len(train), cfg.batch_size), desc="final pass", disable=not ctx.progress, leave=False):
        rows = slice(i, i + cfg.batch_size)
        x_u8, y = train.x[rows].to(ctx.device, non_blocking=True), train.y[rows].to(ctx.device)
        noise = noise_update(model, x_u8.float().div_(255), y, cfg, objective, budget, generator, ctx, limit)
        out[rows] = quantize(noise, budget, x_u8).to(out.device)
    return out
