"""The one training loop, ``fit``, and the ``Defense`` hooks it calls.

A defense changes training in three places only: ``preprocess`` (once, on the uint8 training set:
JPEG, grayscale, bit-depth reduction), ``augment`` (per batch, on the device, after the recipe's
standard crop+flip: cutout, mixup, cutmix) and ``loss`` (adversarial training). ``none`` is the
recipe's standard augmentation alone, which is itself a defense and is recorded as such.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from benchmarks import augment
from benchmarks.pgd import pgd
from benchmarks.types import Context, ImageSet, row_chunks, take_rows


@dataclass(frozen=True)
class TrainRecipe:
    """Every number of a victim (or surrogate) training protocol."""

    name: str
    steps: int  # SGD steps (the REM/SEM code counts steps, not epochs)
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: Literal["step", "cosine", "constant"] = "step"
    milestones: tuple[float, ...] = (0.4, 0.8)  # fractions of `steps` where the LR is multiplied by gamma
    gamma: float = 0.1
    grad_clip: float | None = None  # max grad norm; None = off
    augment: augment.Name = "crop_flip"
    crop_pad: int = 4  # zero padding of the random crop
    crop_size: int | None = None  # output side of the train crop / test centre crop (ImageNet: 224)
    eval_every: int = 1000  # steps between clean test evaluations (peak accuracy is over these)

    def __post_init__(self) -> None:
        if self.steps <= 0 or self.batch_size <= 0 or self.eval_every <= 0:
            raise ValueError(f"recipe {self.name}: steps, batch_size and eval_every must be positive")
        augment.check_name(self.augment, f"recipe {self.name}: augment")

    def lr_at(self, step: int) -> float:
        """Learning rate for 0-based ``step``."""
        if self.schedule == "cosine":
            return 0.5 * self.lr * (1 + math.cos(math.pi * step / self.steps))
        if self.schedule == "step":
            return self.lr * self.gamma ** sum(step >= round(m * self.steps) for m in self.milestones)
        return self.lr

    def train_augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return augment.by_name(self.augment, x, generator, self.crop_size, self.crop_pad)

    def test_view(self, x: Tensor) -> Tensor:
        return augment.center_crop(x, self.crop_size) if self.crop_size else x


class Defense:
    """Training-time defense hooks; the base class is ``none`` (the recipe's augmentation only)."""

    name: str = "none"
    #: whether ``augment`` and ``loss`` take one-hot float labels (mixup, cutmix)
    soft_labels: bool = False
    #: the threat model: what the defender uses beyond the protected training set, one of :data:`EXTRA_DATA`
    #: ("none": the poisoned set alone; "clean-data": extra clean images; "pretrained": a model trained on other
    #: data, such as a diffusion purifier). Recorded in every cell; the leaderboard marks and separates defenses
    #: that use more than the protected set, since they answer a weaker threat model
    extra_data: str = "none"

    def config(self) -> dict[str, Any]:
        """The defense's parameters, stored with every result."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    @property
    def attack_radius(self) -> float | None:
        """The L-inf radius (1/255 units) the defense trains against (adversarial training), else None: the victim's
        robust accuracy is measured at this radius (:func:`benchmarks.robustness.victim_robustness`)."""
        return None

    #: whether :meth:`preprocess` treats every image on its own: then it runs a chunk of images at a time on the
    #: device (float work per chunk, whatever the set's size); a defense that fits something to the whole set
    #: sets this to False and gets the whole set at once
    per_image: ClassVar[bool] = True

    def preprocess(self, x: Tensor) -> Tensor:
        """Applied once to the uint8 training images. Shape: uint8 ``(N, C, H, W)`` -> same."""
        return x

    def preprocess_set(self, x: Tensor, device: torch.device) -> Tensor:
        """:meth:`preprocess` of a whole training set, where it lives (chunk by chunk on ``device`` when per image).

        Shape: uint8 ``(N, C, H, W)`` -> same, on the device of ``x``.
        """
        if type(self).preprocess is Defense.preprocess:
            return x
        if not self.per_image:
            return self._checked(self.preprocess(x.to(device)), x).to(x.device)
        out = torch.empty_like(x)
        for rows in row_chunks(len(x), 4 * x[0].numel()):
            out[rows] = self._checked(self.preprocess(x[rows].to(device, non_blocking=True)), x[rows]).to(x.device)
        return out

    def _checked(self, out: Tensor, x: Tensor) -> Tensor:
        if out.dtype != torch.uint8 or out.shape != x.shape:
            got = f"{out.dtype} {tuple(out.shape)}"
            raise ValueError(f"defense {self.name}: preprocess must return uint8 {tuple(x.shape)}, got {got}")
        return out

    def setup(self, train: ImageSet, ctx: Context) -> None:
        """Called once by :func:`fit`, before training, with the training set as :meth:`preprocess_set` left it
        (uint8, where the set lives): for a defense that learns something from the whole set (``oproj``)."""

    def prepare(self, x: Tensor) -> Tensor:
        """Per batch on the device, float in [0, 1], before the recipe's augmentation (``oproj`` projects here).

        Shape: ``(B, C, H, W)`` -> same.
        """
        return x

    def augment(self, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Per batch on the device after the standard augmentation; ``y`` may become soft ``(N, K)``."""
        return x, y

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Training loss of one batch and the logits it was computed from (the one training forward).

        ``y`` is int64 ``(N,)`` or soft float ``(N, K)``. The training accuracy is read from the returned
        logits, so no extra forward pass (which would update BatchNorm statistics) is ever needed.
        """
        logits = model(x)
        return F.cross_entropy(logits, y), logits


#: joins the parts of a composed defense's name: ``jpeg10+at4``
COMPOSE = "+"
#: what a defense may use beyond the protected training set (:attr:`Defense.extra_data`)
EXTRA_DATA = ("none", "clean-data", "pretrained")


def extra_data_of(defense: Defense) -> str:
    """What ``defense`` uses beyond the protected set: ``"none"``, or its kinds of :data:`EXTRA_DATA` joined by
    ``+`` in that order (a composition of a part with clean data and one with a pretrained model:
    ``clean-data+pretrained``).

    Raises:
        ValueError: a kind outside :data:`EXTRA_DATA`.
    """
    kinds = set(defense.extra_data.split(COMPOSE))
    unknown = sorted(kinds - set(EXTRA_DATA))
    if unknown:
        raise ValueError(
            f"defense {defense.name}: extra_data {defense.extra_data!r} is not one of {', '.join(EXTRA_DATA)}"
        )
    return COMPOSE.join(k for k in EXTRA_DATA if k in kinds and k != "none") or "none"


class Composed(Defense):
    """Several defenses trained as one, named ``a+b`` (and hashed with every part's parameters).

    The order is defined and follows the training pipeline, whatever the parts: the one-time preprocessing of every
    part in the order written (``jpeg10+grayscale`` compresses, then converts), then each part's set-up on the
    preprocessed set; per batch each part's preparation, the recipe's augmentation, each part's augmentation, all in
    the order written, then the loss of the one part that defines a loss (adversarial training),
    or cross-entropy. At most one part may define the loss and at most one may mix labels (mixup, cutmix): two
    of either have no defined meaning and are refused, as is a part repeated.

    Example:
        >>> from benchmarks.train import Defense
        >>> Composed("none+none", [Defense(), Defense()])
        Traceback (most recent call last):
        ...
        ValueError: defense none+none: a part is repeated; give each defense once
    """

    def __init__(self, name: str, parts: list[Defense]) -> None:
        if len(parts) < 2:
            raise ValueError(f"defense {name}: a composition needs at least two parts")
        names = name.split(COMPOSE)
        if len(set(names)) != len(names):
            raise ValueError(f"defense {name}: a part is repeated; give each defense once")
        losses = [p.name for p in parts if type(p).loss is not Defense.loss]
        if len(losses) > 1:
            raise ValueError(f"defense {name}: {' and '.join(losses)} both define the training loss; compose one")
        mixing = [p.name for p in parts if p.soft_labels]
        if len(mixing) > 1:
            raise ValueError(f"defense {name}: {' and '.join(mixing)} both mix labels; compose at most one")
        self.name = name
        self._parts = list(parts)
        self.soft_labels = bool(mixing)
        self.extra_data = COMPOSE.join(extra_data_of(p) for p in parts)
        self.extra_data = extra_data_of(self)

    @property
    def parts(self) -> list[Defense]:
        return list(self._parts)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "parts": [p.config() for p in self._parts]}

    @property
    def attack_radius(self) -> float | None:
        return next((p.attack_radius for p in self._parts if p.attack_radius is not None), None)

    def preprocess_set(self, x: Tensor, device: torch.device) -> Tensor:
        for part in self._parts:
            x = part.preprocess_set(x, device)
        return x

    def setup(self, train: ImageSet, ctx: Context) -> None:
        for part in self._parts:
            part.setup(train, ctx)

    def prepare(self, x: Tensor) -> Tensor:
        for part in self._parts:
            x = part.prepare(x)
        return x

    def augment(self, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        for part in self._parts:
            x, y = part.augment(x, y, generator)
        return x, y

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        for part in self._parts:
            if type(part).loss is not Defense.loss:
                return part.loss(model, x, y, generator)
        return super().loss(model, x, y, generator)


def adversarial_loss(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, alpha: float, steps: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Madry adversarial training loss: cross-entropy on the L-inf PGD example of ``x``, and its logits.

    The attack runs with BN in eval mode and a uniform random start; the update uses train mode.
    """
    delta = pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=True, generator=generator)
    logits = model(x + delta)
    return F.cross_entropy(logits, y), logits


@dataclass
class FitResult:
    """What a training run measured. Accuracies are fractions in [0, 1] on the clean test set."""

    final_acc: float
    peak_acc: float
    peak_step: int
    #: accuracy of the training forward itself (augmented, defended batches: adversarial ones under at<k>)
    #: over the last evaluation period
    train_acc: float
    curve: list[tuple[int, float]] = field(default_factory=list)
    wall_s: float = 0.0
    steps: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class NonFiniteLossError(FloatingPointError):
    """Training diverged (NaN or inf loss)."""


@torch.no_grad()
def evaluate(
    model: nn.Module, data: ImageSet, ctx: Context, recipe: TrainRecipe | None = None, batch: int = 1000
) -> float:
    """Clean top-1 accuracy of ``model`` on ``data`` (eval mode; mode restored)."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(data), batch):
        x = data.x[i : i + batch].to(ctx.device, non_blocking=True).float().div_(255)
        if recipe is not None:
            x = recipe.test_view(x)
        if ctx.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with ctx.autocast():
            pred = model(x).argmax(1)
        correct += int((pred == data.y[i : i + batch].to(ctx.device)).sum())
    model.train(was_training)
    return correct / max(len(data), 1)


def make_optimizer(model: nn.Module, recipe: TrainRecipe) -> torch.optim.SGD:
    return torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        nesterov=recipe.nesterov,
    )


def sgd_step(model: nn.Module, opt: torch.optim.Optimizer, loss: Tensor, recipe: TrainRecipe, step: int) -> None:
    """One parameter update with the recipe's LR schedule and gradient clipping."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"non-finite training loss {float(loss)} at step {step}")
    for group in opt.param_groups:
        group["lr"] = recipe.lr_at(step)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if recipe.grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
    opt.step()


def batches(
    n: int, batch_size: int, generator: torch.Generator, device: torch.device, epochs: int | None = None
) -> Iterator[Tensor]:
    """Shuffled index batches of a data set of size ``n`` (drop_last, like the reference), reshuffled
    every epoch; endless unless ``epochs`` is given."""
    batch_size = min(batch_size, n)
    epoch = 0
    while epochs is None or epoch < epochs:
        perm = torch.randperm(n, generator=generator, device=device)
        for i in range(0, n - batch_size + 1, batch_size):
            yield perm[i : i + batch_size]
        epoch += 1


def fit(
    model: nn.Module,
    train: ImageSet,
    test: ImageSet,
    defense: Defense,
    recipe: TrainRecipe,
    ctx: Context,
    desc: str = "train",
) -> FitResult:
    """Train ``model`` on ``train`` under ``defense`` and report clean test accuracy.

    Data stay uint8 on ``ctx.device`` (or pinned on the host when larger than the device's share,
    :meth:`Context.place`); each batch is copied, converted, augmented and attacked on the device.
    Evaluates every ``recipe.eval_every`` steps and at the end: ``final_acc`` is the last
    evaluation, ``peak_acc`` the best one (oracle early stopping, reported separately).
    """
    start = time.perf_counter()
    model = ctx.prepare(model).train()
    train = ctx.place(train)  # on the device, or pinned on the host and streamed batch by batch
    x_all = defense.preprocess_set(train.x, ctx.device)
    if x_all.dtype != torch.uint8 or x_all.shape != train.x.shape:
        raise ValueError(f"defense {defense.name}: preprocess must return uint8 {tuple(train.x.shape)}")
    y_all = train.y.to(ctx.device)
    defense.setup(train.with_images(x_all), ctx)
    opt = make_optimizer(model, recipe)
    g_data, g_aug = ctx.generator("fit", "data"), ctx.generator("fit", "augment")
    curve: list[tuple[int, float]] = []
    correct = torch.zeros((), dtype=torch.int64, device=ctx.device)  # on the device: no sync per step
    seen = 0
    train_acc = 0.0
    bar = tqdm(total=recipe.steps, desc=desc, disable=not ctx.progress, leave=False, dynamic_ncols=True)
    for step, idx in enumerate(batches(len(train), recipe.batch_size, g_data, ctx.device)):
        if step >= recipe.steps:
            break
        x = recipe.train_augment(defense.prepare(take_rows(x_all, idx, ctx.device).float().div_(255)), g_aug)
        y = F.one_hot(y_all[idx], train.num_classes).float() if defense.soft_labels else y_all[idx]
        x, y = defense.augment(x, y, g_aug)
        if ctx.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with ctx.autocast():
            loss, logits = defense.loss(model, x, y, g_aug)
        sgd_step(model, opt, loss, recipe, step)
        with torch.no_grad():  # accuracy of the forward the update was computed from (soft labels: their argmax)
            correct += (logits.argmax(1) == (y if y.dim() == 1 else y.argmax(1))).sum()
            seen += len(y)
        bar.update(1)
        if (step + 1) % recipe.eval_every == 0 or step + 1 == recipe.steps:
            acc = evaluate(model, test, ctx, recipe)
            curve.append((step + 1, acc))
            train_acc, seen = int(correct) / seen, 0
            correct.zero_()
            bar.set_postfix(test_acc=f"{acc:.3f}", loss=f"{float(loss.detach()):.3f}")
    bar.close()
    peak_step, peak = max(curve, key=lambda p: p[1])
    return FitResult(curve[-1][1], peak, peak_step, train_acc, curve, time.perf_counter() - start, recipe.steps)
