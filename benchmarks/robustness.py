"""Two robustness numbers per generated poison, the axes of the SEM paper's correlation study.

Both are measured with the method's *final surrogate* ``f`` on the protected training images
``x + delta`` (a fixed class-balanced head of at most ``max_images`` images, so the cost is bounded),
against L-inf PGD of radius ``rho_a`` (step rho_a / 4, 10 steps, random start, valid pixel box):

* **surrogate robustness**: the accuracy of ``f`` on ``x + delta + PGD(x + delta)``, i.e. how well the
  surrogate resists adversarial perturbation of the protected data. The paper's finding: protection
  under adversarial training tracks this.
* **noise robustness**: ``mean_i [CE(f(x_i + delta_i + PGD_i)) - CE(f(x_i + delta_i))]``, how much the
  surrogate's loss on a protected image rises under that perturbation (reported with the sign flipped
  so that larger = more robust noise: ``-mean rise``). The paper reports it correlates negatively
  with protection.

Methods without a surrogate (random, sc, clean) have neither number.

The *victim's* robustness (:func:`victim_robustness`), measured in every results cell, asks the question of the
trained victim instead: its accuracy on a fixed class-balanced head of the test set under the same PGD, at the
radius its defense trained against (4/255 for defenses without one), as RobustBench reports robust accuracy,
with per-class accuracy. It shows whether adversarial training did anything to the victim, and in which regime
a protocol is: a standard victim that is already fairly robust at a radius is not the papers' CIFAR-10 one.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.data import stratified_head
from benchmarks.pgd import pgd
from benchmarks.types import CHUNK_BYTES, Context, ImageSet

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import Tensor

DEFAULT_RADIUS = 4.0  # rho_a in 1/255 units when the method's surrogate was trained without AT
PGD_STEPS = 10
ROBUSTNESS_IMAGES = 2000  # a class-balanced head of the protected set (stratified_head)
VICTIM_IMAGES = 1000  # the victim's robust accuracy: a class-balanced head of the test set


def robustness(
    model: nn.Module,
    protected: ImageSet,
    ctx: Context,
    radius: float = DEFAULT_RADIUS,
    max_images: int = ROBUSTNESS_IMAGES,
    batch_size: int = 256,
) -> dict[str, float]:
    """Surrogate robustness and noise robustness of ``model`` on ``protected`` at L-inf ``radius``/255.

    Returns:
        ``surrogate_robust_acc`` (accuracy under PGD, in [0, 1]), ``surrogate_clean_acc`` (on the
        protected images without attack), ``noise_loss_rise`` (mean CE rise under PGD, >= 0 up to
        noise), ``noise_robustness`` (= -noise_loss_rise), ``robustness_radius`` and ``robustness_images``.
    """
    data = stratified_head(protected, min(max_images, len(protected))).to(ctx.device)
    batch_size = max(1, min(batch_size, CHUNK_BYTES // (4 * math.prod(data.shape))))  # float batch <= one chunk
    g = ctx.generator("robustness")
    was_training = model.training
    model.eval()
    correct_adv = correct_clean = 0
    rise = 0.0
    for i in range(0, len(data), batch_size):
        x, y = data.x[i : i + batch_size].float().div_(255), data.y[i : i + batch_size]
        delta = pgd(model, x, y, eps=radius / 255, alpha=radius / 4 / 255, steps=PGD_STEPS, generator=g)
        with torch.no_grad():
            logits_clean, logits_adv = model(x), model(x + delta)
        correct_clean += int((logits_clean.argmax(1) == y).sum())
        correct_adv += int((logits_adv.argmax(1) == y).sum())
        ce_adv, ce_clean = (F.cross_entropy(z, y, reduction="sum") for z in (logits_adv, logits_clean))
        rise += float(ce_adv - ce_clean)
    model.train(was_training)
    n = max(len(data), 1)
    return {
        "surrogate_robust_acc": correct_adv / n,
        "surrogate_clean_acc": correct_clean / n,
        "noise_loss_rise": rise / n,
        "noise_robustness": -rise / n,
        "robustness_radius": float(radius),
        "robustness_images": len(data),
    }


class _Viewed(nn.Module):
    """``model`` behind a test-time view (the recipe's centre crop), so the attack perturbs the stored image."""

    def __init__(self, model: nn.Module, view: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.model, self.view = model, view

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.view(x))


def victim_robustness(
    model: nn.Module,
    test: ImageSet,
    ctx: Context,
    radius: float = DEFAULT_RADIUS,
    view: Callable[[Tensor], Tensor] | None = None,
    max_images: int = VICTIM_IMAGES,
    batch_size: int = 256,
) -> dict[str, object]:
    """A trained victim's robust accuracy at L-inf ``radius``/255 and its per-class accuracy.

    The attack is PGD (10 steps of ``radius / 4``, random start from ``ctx``'s generator, valid pixel box) on the
    first ``max_images`` images of a class-balanced head of ``test`` (the same images for every cell); per-class
    clean accuracy is over the whole test set. ``view``: the recipe's test-time view, applied inside the attacked
    model.

    Returns:
        ``radius`` (1/255), ``attack`` (its description), ``images`` (of the head), ``clean_acc`` and
        ``robust_acc`` on the head, ``per_class_acc`` (clean, whole test set) and ``per_class_robust_acc`` (head),
        lists indexed by class; fractions in [0, 1].
    """
    if not radius > 0:
        raise ValueError(f"victim_robustness: radius must be positive, got {radius}")
    attacked = _Viewed(model, view) if view is not None else model
    head = stratified_head(test, min(max_images, len(test)))
    batch_size = max(1, min(batch_size, CHUNK_BYTES // (4 * math.prod(test.shape))))
    k = test.num_classes
    g = ctx.generator("victim-robustness")
    was_training = model.training
    model.eval()
    hits, seen = torch.zeros(k, dtype=torch.int64), torch.zeros(k, dtype=torch.int64)
    robust = torch.zeros(k, dtype=torch.int64)
    clean_head = 0
    for data, attack in ((test, False), (head, True)):
        for i in range(0, len(data), batch_size):
            x = data.x[i : i + batch_size].to(ctx.device).float().div_(255)
            y = data.y[i : i + batch_size].to(ctx.device)
            if attack:
                with ctx.autocast():
                    delta = pgd(attacked, x, y, eps=radius / 255, alpha=radius / 4 / 255, steps=PGD_STEPS, generator=g)
            with torch.no_grad(), ctx.autocast():
                right = (attacked(x + delta if attack else x).argmax(1) == y).cpu()
                if attack:
                    clean_head += int((attacked(x).argmax(1) == y).sum())
            y = y.cpu()
            if attack:
                robust += torch.bincount(y[right], minlength=k)
            else:
                hits += torch.bincount(y[right], minlength=k)
                seen += torch.bincount(y, minlength=k)
    model.train(was_training)
    head_per_class = torch.bincount(head.y.cpu(), minlength=k).clamp_min(1)
    n = max(len(head), 1)
    return {
        "radius": float(radius),
        "attack": f"L-inf PGD-{PGD_STEPS}, step radius/4, random start",
        "images": len(head),
        "clean_acc": clean_head / n,
        "robust_acc": int(robust.sum()) / n,
        "per_class_acc": (hits / seen.clamp_min(1)).tolist(),
        "per_class_robust_acc": (robust / head_per_class).tolist(),
    }
