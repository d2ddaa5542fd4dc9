"""Batched, seeded, differentiable training augmentation (the reference's per-image loop, vectorised).

All functions take a whole batch on its device and one ``torch.Generator``, draw every random
parameter at once, and are differentiable with respect to the input (they gather pixels or sample
bilinearly), so the expectation over transformations (EOT) of REM/SEM/TAP back-propagates to the
noise through them.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align


def _randint(high: int, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.randint(0, high, (n,), generator=generator, device=device)


def random_flip(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Horizontal flip of each image with probability 1/2. Shape: ``(N, C, H, W)`` -> same."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_crop(x: Tensor, pad: int, generator: torch.Generator | None) -> Tensor:
    """Zero-pad by ``pad`` and take a random crop of the original size from each image.

    Equivalent to torchvision's ``RandomCrop(size, padding=pad)`` applied per image.

    Shape:
        ``(N, C, H, W)`` -> ``(N, C, H, W)``.
    """
    if pad <= 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    top = _randint(2 * pad + 1, n, generator, x.device)
    left = _randint(2 * pad + 1, n, generator, x.device)
    rows = (top[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(n, c, h, w + 2 * pad)
    cropped_rows = padded.gather(2, rows)
    cols = (left[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(n, c, h, w)
    return cropped_rows.gather(3, cols)


def crop_flip(x: Tensor, generator: torch.Generator | None, pad: int = 4) -> Tensor:
    """The CIFAR training augmentation of the reference code: flip, then random crop with padding."""
    return random_crop(random_flip(x, generator), pad, generator)


def random_resized_crop(
    x: Tensor,
    size: int,
    generator: torch.Generator | None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Tensor:
    """torchvision's ``RandomResizedCrop(size)`` for a whole batch, bilinear (``roi_align``).

    One box per image is drawn as torchvision does (area fraction in ``scale``, log-uniform aspect
    ratio); boxes that do not fit are shrunk to fit instead of redrawn (no per-image retry loop).

    Shape:
        ``(N, C, H, W)`` -> ``(N, C, size, size)``.
    """
    n, _, h, w = x.shape
    dev = x.device
    area = h * w * torch.empty(n, device=dev).uniform_(*scale, generator=generator)
    log_r = torch.empty(n, device=dev).uniform_(*torch.tensor(ratio).log().tolist(), generator=generator)
    aspect = log_r.exp()
    bw = (area * aspect).sqrt().clamp(1, w)
    bh = (area / aspect).sqrt().clamp(1, h)
    x0 = torch.rand(n, generator=generator, device=dev) * (w - bw)
    y0 = torch.rand(n, generator=generator, device=dev) * (h - bh)
    boxes = torch.stack([torch.arange(n, device=dev, dtype=x.dtype), x0, y0, x0 + bw, y0 + bh], 1).to(x.dtype)
    return roi_align(x, boxes, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)


def resized_crop_flip(x: Tensor, generator: torch.Generator | None, size: int = 224) -> Tensor:
    """The ImageNet-subset training augmentation of the reference code: random resized crop, flip."""
    return random_flip(random_resized_crop(x, size, generator), generator)


def center_crop(x: Tensor, size: int) -> Tensor:
    """Central ``size`` x ``size`` crop (the ImageNet test transform after the 256 resize)."""
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


#: the named training augmentations of recipes and methods (``T`` of the EOT)
Name = Literal["crop_flip", "resized_crop_flip", "none"]
NAMES: tuple[str, ...] = get_args(Name)


def check_name(name: str, what: str = "augment") -> None:
    """Raise ``ValueError`` naming the accepted augmentations unless ``name`` is one of them."""
    if name not in NAMES:
        raise ValueError(f"{what} must be one of {', '.join(NAMES)}, got {name!r}")


def by_name(
    name: str, x: Tensor, generator: torch.Generator | None, crop_size: int | None = None, pad: int = 4
) -> Tensor:
    """The augmentation called ``name`` on a batch: ``crop_flip`` (CIFAR: pad ``pad``), ``resized_crop_flip``
    (ImageNet subset: output side ``crop_size``, default the input's) or ``none``."""
    if name == "crop_flip":
        return crop_flip(x, generator, pad)
    if name == "resized_crop_flip":
        return resized_crop_flip(x, generator, crop_size or x.shape[-1])
    check_name(name)
    return x
