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
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.data import stratified_head
from benchmarks.pgd import pgd
from benchmarks.types import CHUNK_BYTES, Context, ImageSet

DEFAULT_RADIUS = 4.0  # rho_a in 1/255 units when the method's surrogate was trained without AT
PGD_STEPS = 10
ROBUSTNESS_IMAGES = 2000  # a class-balanced head of the protected set (stratified_head)


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
