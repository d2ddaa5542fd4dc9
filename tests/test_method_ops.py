"""``ops`` (one-pixel shortcut): one pixel per image, the class's searched position and corner colour."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import methods.ops  # noqa: F401  (registers "ops" whether or not methods/__init__.py imports it)
from benchmarks.cache import NoiseCache
from benchmarks.data import make_synthetic
from benchmarks.noise import PoisonError, validate_poison
from benchmarks.types import Budget, Context, ImageSet, Poison
from methods.ops import OnePixelShortcut, corner_colours, pixel_scores

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def train() -> ImageSet:
    data, _ = make_synthetic(n_train=60, n_test=8, num_classes=4, shape=(3, 12, 10))
    return data


def _generate(data: ImageSet, **options: int) -> Poison:
    method = OnePixelShortcut(**options)
    return method.generate(data, method.budget(data.shape, 8.0), Context(seed=0, progress=False))


def _reference_scores(images: np.ndarray) -> np.ndarray:
    """The authors' objective written directly: mean / std of |colour - x| over images and channels.

    Shape:
        images: float ``(n, C, H, W)`` in [0, 1]; result: ``(H * W, 2**C)``.
    """
    n, c, h, w = images.shape
    out = np.zeros((h * w, 2**c))
    for p in range(h * w):
        pixel = images[:, :, p // w, p % w]  # (n, C)
        for v in range(2**c):
            colour = np.array([(v >> (c - 1 - ch)) & 1 for ch in range(c)], dtype=float)
            dev = np.abs(colour - pixel)
            out[p, v] = dev.mean() / dev.std() if dev.std() > 0 else (math.inf if dev.mean() > 0 else 0.0)
    return out


def test_exactly_one_pixel_per_image_changes_to_the_class_colour(train: ImageSet) -> None:
    poison = _generate(train)
    assert poison.images and poison.delta.dtype == torch.uint8
    changed = poison.difference(train).ne(0).any(1).flatten(1)  # (N, H*W)
    # one position per image (a random image never already has a corner colour there, so it always changes)
    assert changed.sum(1).tolist() == [1] * len(train)
    positions = changed.float().argmax(1)
    colours = poison.delta.flatten(2)[torch.arange(len(train)), :, positions]  # (N, C)
    for k in range(train.num_classes):
        members = train.y == k
        assert positions[members].unique().numel() == 1, "one position per class"
        assert colours[members].unique(dim=0).shape[0] == 1, "one colour per class"
        assert set(colours[members].unique().tolist()) <= {0, 255}, "a corner of the colour cube"
    pairs = {(int(positions[train.y == k][0]), tuple(colours[train.y == k][0].tolist())) for k in range(4)}
    assert len(pairs) == train.num_classes, "the classes' (position, colour) pairs differ"
    # everything else is untouched
    untouched = ~changed.view(len(train), 1, -1).expand(-1, 3, -1)
    assert torch.equal(poison.delta.flatten(2)[untouched], train.x.flatten(2)[untouched])


def test_scores_match_the_objective_written_directly(train: ImageSet) -> None:
    images = train.x[train.y == 0].to(torch.int64)
    ours = pixel_scores(images.sum(0), images.square().sum(0), len(images)).numpy()
    expect = _reference_scores(images.numpy() / 255.0)
    np.testing.assert_allclose(ours, expect, rtol=1e-9)


def test_search_picks_the_highest_score_and_excludes_earlier_pairs(train: ImageSet) -> None:
    positions, colours = OnePixelShortcut().search(train)
    taken: set[tuple[int, int]] = set()
    for k in range(train.num_classes):
        images = train.x[train.y == k].numpy() / 255.0
        scores = _reference_scores(images)
        for p, v in taken:
            scores[p, v] = -math.inf
        best = int(np.argmax(scores))  # the first maximum in (position, colour) order
        colour = corner_colours(3)[best % 8]
        assert (int(positions[k, 0]), colours[k, 0].tolist()) == (best // 8, colour.tolist())
        taken.add((best // 8, best % 8))


def test_constant_pixels_get_a_colour_that_changes_them() -> None:
    """Black borders (Fashion-MNIST): the colour the images already have there scores 0, never chosen."""
    data, _ = make_synthetic(n_train=40, n_test=4, num_classes=4, shape=(1, 8, 8))
    x = data.x.clone()
    x[:, :, 0, :] = 0  # a constant black top row
    data = data.with_images(x)
    poison = _generate(data)
    changed = poison.difference(data).ne(0).flatten(1)
    assert changed.sum(1).tolist() == [1] * len(data)
    # a constant row with the other colour is the most consistent deviation: std 0, mean 1
    positions, colours = OnePixelShortcut().search(data)
    assert positions[:, 0].tolist() == [0, 1, 2, 3] and colours[:, 0, 0].tolist() == [1, 1, 1, 1]


def test_budget_is_l0_and_checked(train: ImageSet) -> None:
    poison = _generate(train)
    budget = Budget("l0", 1.0)
    assert poison.norms(train, budget).tolist() == [1.0] * len(train)
    two = _generate(train, pixels=2)
    assert OnePixelShortcut(pixels=2).budget(train.shape, 8.0) == Budget("l0", 2.0)
    with pytest.raises(PoisonError, match="exceeds its budget"):
        validate_poison(two, train, budget)
    with pytest.raises(ValueError, match="whole number"):
        Budget("l0", 1.5)


def test_deterministic_and_cached_as_images(train: ImageSet, tmp_path) -> None:
    poison = _generate(train)
    assert torch.equal(_generate(train).delta, poison.delta)
    cache = NoiseCache(tmp_path)
    path = cache.path("synthetic", "ops")
    cache.save(path, poison)
    loaded = cache.load(path, train, Budget("l0", 1.0))
    assert loaded is not None and loaded.images and torch.equal(loaded.delta, poison.delta)
    assert torch.equal(loaded.apply(train).x, poison.delta)
    assert cache.load(path, train, Budget("linf", 8.0)) is None, "protected images are not int8 noise"


def test_protected_image_poisons_refuse_noise_only_uses(train: ImageSet) -> None:
    poison = _generate(train)
    with pytest.raises(ValueError, match="protected images"):
        poison.per_sample(train.y)
    with pytest.raises(ValueError, match="class-wise"):
        Poison(poison.delta, classwise=True, images=True)
