"""``tap``: targeted adversarial poisoning (Fowl et al., NeurIPS 2021), algorithms.md section 2.

The REM/SEM code-base protocol (section 2.2; the TAP rows of the SEM paper's tables): a surrogate
trained on *clean* data with the victim recipe, then for every training image a targeted PGD
descent of ``CE(f(T(x + delta)), (y + 1) mod C)`` with an expectation over ``samples`` random
training augmentations per step. The surrogate is frozen (eval mode) while crafting.

The surrogate is either trained here (its cost is part of the recorded generation cost) or loaded
from ``checkpoint``, a ``.safetensors`` state dict of the ``surrogate`` architecture (no pickle).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from benchmarks import augment
from benchmarks.data import stratified_head
from benchmarks.models import create_victim
from benchmarks.noise import Meter, NoiseMethod, quantize
from benchmarks.pgd import box_projection, eval_mode, frozen, pgd_optimize, uniform_like
from benchmarks.registry import DEFENSES, METHODS
from benchmarks.train import TrainRecipe, evaluate, fit
from benchmarks.types import Budget, Context, ImageSet


def target_labels(y: Tensor, num_classes: int, shift: int = 1) -> Tensor:
    """TAP's class map pi(y) = (y + shift) mod C."""
    return (y + shift) % num_classes


def check_crafting_config(cfg: Any, method: str) -> None:
    """The option checks of a method that crafts noise against a clean surrogate (TAP, HYPO): positive counts and
    step size, a known LR schedule and augmentation.

    Raises:
        ValueError: naming ``<method>.<option>`` and what it accepts.
    """
    for name in ("surrogate_steps", "surrogate_batch_size", "steps", "samples", "batch_size"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{method}.{name} must be positive, got {getattr(cfg, name)}")
    if cfg.step_size <= 0:
        raise ValueError(f"{method}.step_size must be positive, got {cfg.step_size}")
    if cfg.surrogate_schedule not in ("step", "cosine"):
        raise ValueError(f"{method}.surrogate_schedule must be step or cosine, got {cfg.surrogate_schedule!r}")
    augment.check_name(cfg.augment, f"{method}.augment")


@METHODS.register("tap")
class TargetedAdversarialPoisoning(NoiseMethod):
    """Class-targeted adversarial examples of a clean surrogate (REM-repo generate_tap.py protocol).

    Example:
        >>> c = TargetedAdversarialPoisoning().config
        >>> (c.steps, c.step_size, c.samples, c.surrogate_steps)
        (250, 0.064, 1, 40000)
    """

    name = "tap"
    citation = "Fowl et al., Adversarial Examples Make Strong Poisons, NeurIPS 2021"
    url = "https://arxiv.org/abs/2106.10807"

    @dataclass(frozen=True)
    class Config:
        surrogate: str = "resnet18"  # registered victim name
        checkpoint: str | None = None  # .safetensors state dict of a clean surrogate; None = train one here
        surrogate_steps: int = 40_000  # the victim recipe of train_clr.sh (section 4.4, rho_a = 0)
        surrogate_batch_size: int = 128
        surrogate_lr: float = 0.1
        surrogate_schedule: str = "step"  # step: x0.1 at 40 % and 80 % of the steps; or cosine
        steps: int = 250  # PGD steps per image (CIFAR; ImageNet-mini: 100)
        step_size: float = 0.064  # 1/255 units (ImageNet-mini: 0.16)
        samples: int = 1  # EOT samples of the training augmentation per step (samp_num)
        batch_size: int = 128  # images crafted at once (a sequential pass over the data)
        shift: int = 1  # target label (y + shift) mod C
        augment: augment.Name = "crop_flip"  # crop_flip (CIFAR), resized_crop_flip (ImageNet subset) or none
        crop_size: int | None = None  # output side of resized_crop_flip

        def __post_init__(self) -> None:
            check_crafting_config(self, "tap")

        def recipe(self) -> TrainRecipe:
            return TrainRecipe(
                "tap-surrogate",
                steps=self.surrogate_steps,
                batch_size=self.surrogate_batch_size,
                lr=self.surrogate_lr,
                schedule=self.surrogate_schedule,  # type: ignore[arg-type]
                augment=self.augment,
                crop_size=self.crop_size,
                eval_every=self.surrogate_steps,
            )

    def surrogate_model(self, train: ImageSet, ctx: Context, meter: Meter) -> nn.Module:
        """The clean surrogate: loaded from ``checkpoint``, or trained on the clean set (cost counted in ``meter``)."""
        cfg = self.config
        ctx.manual_seed(self.name, "surrogate")
        model = ctx.prepare(create_victim(cfg.surrogate, train.num_classes, train.shape[0]))
        probe = stratified_head(train, min(len(train), 1000))
        if cfg.checkpoint is not None:
            path = Path(cfg.checkpoint)
            if path.suffix != ".safetensors" or not path.is_file():
                raise ValueError(f"tap.checkpoint must be an existing .safetensors file, got {str(path)!r}")
            model.load_state_dict(load_file(path, device=str(ctx.device)))
            meter.extra["surrogate"] = f"checkpoint {path.name}"
        else:
            with meter.watch(model):
                fit(model, train, probe, DEFENSES.get("none")(), cfg.recipe(), ctx, "tap surrogate")
            meter.steps += cfg.surrogate_steps
            meter.extra["surrogate"] = f"trained {cfg.surrogate_steps} steps on clean data"
        meter.extra["surrogate_clean_train_acc"] = evaluate(model, probe, ctx)
        meter.surrogate = model
        return model

    def transform(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return augment.by_name(self.config.augment, x, generator, self.config.crop_size)

    def craft(
        self, model: nn.Module, x: Tensor, target: Tensor, budget: Budget, generator: torch.Generator, ctx: Context
    ) -> Tensor:
        """Targeted noise for one batch: uniform start, sign-descent toward ``target``, ``x + delta`` in [0, 1].

        Shape:
            x: float ``(B, C, H, W)`` in [0, 1]; target: int64 ``(B,)``; result: float noise like ``x``.
        """
        cfg = self.config
        targets = target.repeat(cfg.samples)

        def loss(delta: Tensor) -> Tensor:
            views = self.transform((x + delta).repeat(cfg.samples, 1, 1, 1), generator)
            if ctx.channels_last:
                views = views.contiguous(memory_format=torch.channels_last)
            with ctx.autocast():
                return F.cross_entropy(model(views), targets)

        project = box_projection(x)
        init = project(uniform_like(x, budget.eps, generator))
        with eval_mode(model), frozen(model):
            return pgd_optimize(
                loss, init, eps=budget.eps, alpha=cfg.step_size / 255, steps=cfg.steps, ascent=False, project=project
            )

    def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
        cfg = self.config
        model = self.surrogate_model(train, ctx, meter)
        return craft_bank(
            self.name, self.craft, model, train, budget, ctx, meter, cfg.batch_size, cfg.steps,
            lambda y: target_labels(y, train.num_classes, cfg.shift),
        )  # fmt: skip


def craft_bank(
    name: str,
    craft: Callable[[nn.Module, Tensor, Tensor, Budget, torch.Generator, Context], Tensor],
    model: nn.Module,
    train: ImageSet,
    budget: Budget,
    ctx: Context,
    meter: Meter,
    batch_size: int,
    steps: int,
    labels: Callable[[Tensor], Tensor],
) -> Tensor:
    """Noise of a fixed model for every image, one sequential batch at a time, into an int8 bank where the images
    live (TAP: toward ``labels(y)`` = shifted targets; HYPO: the true labels). ``steps`` per batch go to ``meter``.

    Shape:
        result: int8 ``(N, C, H, W)`` in 1/255 units.
    """
    generator = ctx.generator(name, "craft")
    bank = torch.empty_like(train.x, dtype=torch.int8)  # float work per batch
    with meter.watch(model):
        for i in tqdm(range(0, len(train), batch_size), desc=f"{name} craft", disable=not ctx.progress, leave=False):
            rows = slice(i, i + batch_size)
            x_u8, y = train.x[rows].to(ctx.device, non_blocking=True), train.y[rows].to(ctx.device)
            noise = craft(model, x_u8.float().div_(255), labels(y), budget, generator, ctx)
            bank[rows] = quantize(noise, budget, x_u8).to(bank.device)
            meter.steps += steps
    return bank
