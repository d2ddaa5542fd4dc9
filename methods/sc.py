"""``sc``: synthetic shortcut noise (Yu et al., KDD 2022), algorithms.md section 3.

No surrogate and no optimisation: linearly separable synthetic points (scikit-learn's
``make_classification``, as in the reference) are laid out as coarse patches, scaled to a fixed L2
norm, and assigned class by class to the training images in data-set order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sklearn.datasets import make_classification
from torch import Tensor

from benchmarks.noise import Meter, NoiseMethod, quantize
from benchmarks.registry import METHODS
from benchmarks.types import Budget, Context, ImageSet, derive_seed, row_chunks


@METHODS.register("sc")
class SyntheticShortcut(NoiseMethod):
    """Class-separable patch noise with L2 norm ``sqrt(C*H*W) * eps/255`` per image.

    Example:
        >>> SyntheticShortcut().config.patch
        8
    """

    name = "sc"
    citation = "Yu et al., Availability Attacks Create Shortcuts, KDD 2022"
    url = "https://arxiv.org/abs/2111.00898"
    norms = ("l2",)

    @dataclass(frozen=True)
    class Config:
        patch: int = 8  # side of one constant patch (CIFAR: 32/8 = 4x4 grid, 48 features)
        class_sep: float = 10.0  # make_classification's class_sep in the reference
        # per-pixel scale in 1/255 units, L2 norm = sqrt(d) * eps/255; None = the run's radius (the
        # SC code's default is 6; the suite compares methods at one nominal radius, 8 by default)
        eps: float | None = None

        def __post_init__(self) -> None:
            if self.patch <= 0 or self.class_sep <= 0 or (self.eps is not None and self.eps <= 0):
                raise ValueError("sc: patch, eps and class_sep must be positive")

    def budget(self, shape: tuple[int, ...], radius: float) -> Budget:
        """L2 budget ``sqrt(C*H*W) * eps`` for images of ``shape``; ``radius`` is the run's L-inf radius."""
        return Budget("l2", math.sqrt(math.prod(shape)) * (self.config.eps or radius))

    def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
        c, h, w = train.shape
        gh, gw = math.ceil(h / self.config.patch), math.ceil(w / self.config.patch)
        counts = torch.bincount(train.y.cpu(), minlength=train.num_classes)
        per_class = int(counts.max())
        points, labels = make_classification(
            n_samples=per_class * train.num_classes,
            n_features=c * gh * gw,
            n_informative=c * gh * gw,
            n_redundant=0,
            n_repeated=0,
            n_classes=train.num_classes,
            n_clusters_per_class=1,
            class_sep=self.config.class_sep,
            flip_y=0,
            weights=None,
            random_state=derive_seed(ctx.seed, self.name) % 2**32,
        )
        grid = torch.as_tensor(points, dtype=torch.float32).view(-1, gh, gw, c).permute(0, 3, 1, 2)
        # which synthetic point each image gets: the first points of its class, in data-set order
        labels_t, y = torch.as_tensor(labels), train.y.cpu()
        source = torch.empty(len(train), dtype=torch.int64)
        for k in range(train.num_classes):  # one vectorised assignment per class
            targets = (y == k).nonzero().squeeze(1)
            source[targets] = (labels_t == k).nonzero().squeeze(1)[: len(targets)]
        # patches upsampled, scaled and quantised a chunk of images at a time into an int8 bank
        bank = torch.empty(train.x.shape, dtype=torch.int8, device=train.x.device)
        for rows in row_chunks(len(train), 4 * c * h * w):
            noise = F.interpolate(grid[source[rows]], scale_factor=self.config.patch, mode="nearest")[:, :, :h, :w]
            noise = noise * (budget.eps / noise.flatten(1).norm(dim=1).clamp_min(1e-12)).view(-1, 1, 1, 1)
            bank[rows] = quantize(noise, budget, train.x[rows])
        return bank
