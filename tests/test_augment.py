"""Tests for benchmarks.augment: exactness against per-image references, seeding and differentiability."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmarks.augment import (
    center_crop,
    crop_flip,
    random_crop,
    random_flip,
    random_resized_crop,
    resized_crop_flip,
)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand((16, 3, 16, 16), generator=torch.Generator().manual_seed(0))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _offsets(n: int, pad: int, seed: int, skip_flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-draw ``(top, left)`` the way random_crop does, from an identically seeded generator."""
    g = _gen(seed)
    if skip_flip:
        torch.rand(n, generator=g)
    top = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    left = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    return top, left


@pytest.mark.parametrize("pad", [1, 2, 4])
def test_random_crop_matches_per_image_crop_of_padded_image(images, pad) -> None:
    n, _, h, w = images.shape
    out = random_crop(images, pad, _gen(5))
    top, left = _offsets(n, pad, 5)
    assert out.shape == images.shape
    for i in range(n):
        padded = F.pad(images[i], (pad, pad, pad, pad))
        expect = padded[:, top[i] : top[i] + h, left[i] : left[i] + w]
        assert torch.equal(out[i], expect), i
    # with 16 images some crops are shifted
    assert not torch.equal(out, images)


def test_random_crop_non_square_images() -> None:
    x = torch.rand((6, 2, 5, 9), generator=_gen(1))
    out = random_crop(x, 2, _gen(2))
    top, left = _offsets(6, 2, 2)
    for i in range(6):
        expect = F.pad(x[i], (2, 2, 2, 2))[:, top[i] : top[i] + 5, left[i] : left[i] + 9]
        assert torch.equal(out[i], expect)


def test_random_crop_pad_zero_is_identity(images) -> None:
    assert torch.equal(random_crop(images, 0, _gen()), images)


def test_random_crop_seeded(images) -> None:
    assert torch.equal(random_crop(images, 4, _gen(3)), random_crop(images, 4, _gen(3)))
    assert not torch.equal(random_crop(images, 4, _gen(3)), random_crop(images, 4, _gen(4)))


def test_random_flip_is_exact_and_about_half(images) -> None:
    n = 64
    x = torch.rand((n, 3, 4, 6), generator=_gen(9))
    out = random_flip(x, _gen(11))
    expected_mask = torch.rand(n, generator=_gen(11)) < 0.5
    flipped = torch.tensor([torch.equal(out[i], x[i].flip(-1)) for i in range(n)])
    kept = torch.tensor([torch.equal(out[i], x[i]) for i in range(n)])
    assert bool((flipped | kept).all())
    assert torch.equal(flipped, expected_mask)
    assert 20 <= int(flipped.sum()) <= 44


def test_random_flip_seeded(images) -> None:
    assert torch.equal(random_flip(images, _gen(1)), random_flip(images, _gen(1)))


def test_random_crop_gradient_counts(images) -> None:
    pad = 3
    x = images.clone().requires_grad_(True)
    random_crop(x, pad, _gen(6)).sum().backward()
    n, c, h, w = images.shape
    top, left = _offsets(n, pad, 6)
    assert x.grad is not None
    # every input pixel is used at most once; the ones used are those inside the crop window
    assert set(x.grad.unique().tolist()) <= {0.0, 1.0}
    for i in range(n):
        rows = h - abs(int(top[i]) - pad)
        cols = w - abs(int(left[i]) - pad)
        assert int(x.grad[i].sum()) == c * rows * cols, i


def test_random_crop_pad_zero_gradient_is_all_ones(images) -> None:
    x = images.clone().requires_grad_(True)
    random_crop(x, 0, _gen()).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(images))


def test_random_flip_gradient(images) -> None:
    x = images.clone().requires_grad_(True)
    weights = torch.rand(images.shape, generator=_gen(2))
    (random_flip(x, _gen(4)) * weights).sum().backward()
    mask = torch.rand(images.shape[0], generator=_gen(4)) < 0.5
    expect = torch.where(mask[:, None, None, None], weights.flip(-1), weights)
    assert torch.allclose(x.grad, expect)


def test_crop_flip_shape_and_composition(images) -> None:
    out = crop_flip(images, _gen(8), pad=2)
    assert out.shape == images.shape
    # flip draws first, then the crop, from the same generator
    mask = torch.rand(images.shape[0], generator=_gen(8)) < 0.5
    flipped = torch.where(mask[:, None, None, None], images.flip(-1), images)
    top, left = _offsets(images.shape[0], 2, 8, skip_flip=True)
    for i in range(images.shape[0]):
        expect = F.pad(flipped[i], (2, 2, 2, 2))[:, top[i] : top[i] + 16, left[i] : left[i] + 16]
        assert torch.equal(out[i], expect)


def test_crop_flip_differentiable(images) -> None:
    x = images.clone().requires_grad_(True)
    crop_flip(x, _gen(1)).sum().backward()
    assert x.grad is not None and float(x.grad.sum()) > 0


@pytest.mark.parametrize("size", [8, 16, 24])
def test_random_resized_crop_shape_finite_and_differentiable(images, size) -> None:
    x = images.clone().requires_grad_(True)
    out = random_resized_crop(x, size, _gen(2))
    assert out.shape == (16, 3, size, size)
    assert torch.isfinite(out).all()
    # bilinear interpolation of [0, 1] inputs stays in [0, 1]
    assert float(out.detach().min()) >= -1e-6 and float(out.detach().max()) <= 1 + 1e-6
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert bool((x.grad.flatten(1).abs().sum(1) > 0).all())  # every image receives gradient


def test_random_resized_crop_seeded(images) -> None:
    a = random_resized_crop(images, 8, _gen(3))
    assert torch.equal(a, random_resized_crop(images, 8, _gen(3)))
    assert not torch.equal(a, random_resized_crop(images, 8, _gen(4)))


def test_random_resized_crop_full_box_is_identity_for_constant_images() -> None:
    x = torch.full((4, 3, 8, 8), 0.3)
    out = random_resized_crop(x, 8, _gen(0), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(out, x, atol=1e-6)


def test_resized_crop_flip_shape(images) -> None:
    assert resized_crop_flip(images, _gen(0), size=12).shape == (16, 3, 12, 12)


@pytest.mark.parametrize(("h", "w", "size"), [(16, 16, 8), (17, 15, 10), (8, 8, 8)])
def test_center_crop_exact(h, w, size) -> None:
    x = torch.arange(2 * 3 * h * w, dtype=torch.float32).view(2, 3, h, w)
    out = center_crop(x, size)
    top, left = (h - size) // 2, (w - size) // 2
    assert out.shape == (2, 3, size, size)
    assert torch.equal(out, x[:, :, top : top + size, left : left + size])
