"""``oproj``: orthogonal projection (Sandoval-Segura et al., NeurIPS 2023, "What Can We Learn from Unlearnable
Datasets?").

Class-wise shortcuts are nearly linearly separable, so a linear model trained on the protected set learns them
as its class directions. The defense fits a bias-free multinomial logistic regression on the flattened
protected training images (pixels in [0, 1]), turns its ``K`` class weight vectors into an orthonormal basis
``Q`` (each normalised, then QR) and trains the victim on ``x - Q Q^T x``: the images with every learned class
direction removed. The test images are not projected (the authors' default; their ``--project-test`` is off).

The authors' step 1 (read to understand it, not copied): plain SGD, learning rate 0.1, 20 epochs over the set in
its stored order in batches of 1024 (the last one partial), the rate divided by 10 after 50 % and 75 % of the
epochs. Here the same, with two differences: the weights start at 0 (the authors: PyTorch's random
initialisation), so the defense needs no randomness; and the projection is applied to every training batch as
it is drawn, before the recipe's augmentation (the authors project the stored set once; the result is the same
batch, without a float copy of the whole set). Their step 2 also trains with strong augmentations and CutMix
by default; here the victim recipe and any composed defense decide that (``oproj+cutmix``).

No extra data and no pretrained model: the threat model of the other training-time defenses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.registry import DEFENSES
from benchmarks.train import Defense
from benchmarks.types import Context, ImageSet


def fit_linear(train: ImageSet, device: torch.device, epochs: int, lr: float, batch_size: int) -> Tensor:
    """Bias-free softmax regression on the flattened images in [0, 1], by the authors' schedule (see the module).

    Shape:
        result: float32 ``(K, C*H*W)`` on ``device``: one weight vector per class.
    """
    n = len(train)
    weights = torch.zeros((train.num_classes, math.prod(train.shape)), device=device)
    for epoch in range(epochs):
        # MultiStepLR(milestones=[int(E/2), int(3E/4)]) stepped once per epoch: a milestone of 0 never fires
        rate = lr * 0.1 ** sum(1 <= int(epochs * m) <= epoch for m in (0.5, 0.75))
        for start in range(0, n, batch_size):
            index = torch.arange(start, min(start + batch_size, n))
            x, y = train.take(index, device)
            flat = x.flatten(1).float().div_(255)
            residual = torch.softmax(flat @ weights.t(), dim=1) - F.one_hot(y, train.num_classes).float()
            weights -= rate * (residual.t() @ flat) / len(y)  # the cross-entropy gradient, mean over the batch
    return weights


def orthonormal_basis(weights: Tensor) -> Tensor:
    """An orthonormal basis of the span of the weight vectors: each normalised, then QR (as the authors do).

    Shape:
        weights: ``(K, D)`` with ``K <= D``; result: ``(D, K)`` with orthonormal columns.
    """
    unit = weights / weights.norm(dim=1, keepdim=True).clamp_min(1e-12)
    q, _ = torch.linalg.qr(unit.t().double())
    return q.float()


class OrthogonalProjection(Defense):
    """Train on the images with the class directions of a linear model fitted to them projected out.

    Example:
        >>> d = DEFENSES.get("oproj")()
        >>> (d.epochs, d.lr, d.batch_size)
        (20, 0.1, 1024)
    """

    name = "oproj"

    def __init__(self, epochs: int = 20, lr: float = 0.1, batch_size: int = 1024) -> None:
        if epochs < 1 or batch_size < 1 or not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"oproj: epochs and batch_size must be positive integers and lr positive, got "
                             f"{epochs}, {batch_size}, {lr}")  # fmt: skip
        self.epochs, self.lr, self.batch_size = epochs, lr, batch_size
        self._basis: Tensor | None = None

    def setup(self, train: ImageSet, ctx: Context) -> None:
        if math.prod(train.shape) < train.num_classes:
            raise ValueError(f"oproj: {train.num_classes} class directions do not fit images of {train.shape}")
        weights = fit_linear(train, ctx.device, self.epochs, self.lr, self.batch_size)
        self._basis = orthonormal_basis(weights)

    @property
    def basis(self) -> Tensor:
        """The orthonormal class directions removed from every training batch. Shape: ``(C*H*W, K)``."""
        if self._basis is None:
            raise RuntimeError("oproj: setup() has not run: the projection is fitted to the training set first")
        return self._basis

    def prepare(self, x: Tensor) -> Tensor:
        q = self.basis.to(x.device, x.dtype)
        flat = x.flatten(1)
        return (flat - (flat @ q) @ q.t()).view_as(x)


@DEFENSES.register("oproj")
def oproj() -> Defense:
    return OrthogonalProjection()
