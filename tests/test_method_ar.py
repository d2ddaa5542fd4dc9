"""``ar`` (autoregressive perturbations): the recursion, the class filters, the budget, seeding and image sizes."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import methods.ar  # noqa: F401  (registers "ar" whether or not methods/__init__.py imports it)
from benchmarks.data import make_synthetic
from benchmarks.noise import NoiseMethod
from benchmarks.registry import METHODS
from benchmarks.types import Context, ImageSet, Poison
from methods.ar import (
    AutoregressivePerturbation,
    ar_recursion,
    draw_coefficients,
    prediction_residual,
    random_start,
    response,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RADIUS = 8.0


@pytest.fixture(scope="module")
def train() -> ImageSet:
    data, _ = make_synthetic(n_train=40, n_test=8, num_classes=4, shape=(3, 16, 16))
    return data


def _generate(method: NoiseMethod, data: ImageSet, seed: int) -> Poison:
    return method.generate(data, method.budget(data.shape, RADIUS), Context(seed=seed, progress=False))


@pytest.fixture(scope="module")
def poison(train: ImageSet) -> Poison:
    return _generate(AutoregressivePerturbation(), train, 0)


def _residual_share(delta: Tensor, coef: Tensor) -> Tensor:
    """Energy of each process's prediction error on each image, relative to the image's noise energy.

    Shape:
        delta: ``(N, C, H, W)`` in any units; coef: ``(K, C, w, w)``; result: ``(N, K)``.
    """
    delta = delta.float()
    return prediction_residual(delta, coef).square().sum((2, 3)) / delta.square().sum((1, 2, 3))[:, None]


def _raster_loop(coef: Tensor, start: Tensor) -> Tensor:
    """The recursion as the paper writes it: one pixel at a time in raster order, for one canvas.

    Shape:
        coef: ``(w, w)``; start: ``(H, W)``; result: ``(H, W)``.
    """
    x = start.clone()
    k = coef.shape[0] - 1
    for r in range(k, x.shape[0]):
        for c in range(k, x.shape[1]):
            window = x[r - k : r + 1, c - k : c + 1]
            x[r, c] = (window * coef).sum() - window[-1, -1] * coef[-1, -1]
    return x


def test_registered_with_an_l2_budget_scaled_to_the_image() -> None:
    method = METHODS.get("ar")()
    assert isinstance(method, AutoregressivePerturbation) and method.norms == ("l2",)
    assert not method.classwise
    # the paper's bounds: L2 1.0 (in [0, 1] units) for 3 x 32 x 32, 3.0 for 3 x 96 x 96 STL-10
    assert method.budget((3, 32, 32), RADIUS).radius == pytest.approx(255.0)
    assert method.budget((3, 96, 96), RADIUS).radius == pytest.approx(3 * 255.0)
    assert method.budget((1, 28, 28), RADIUS).radius == pytest.approx(255.0 * 28 / math.sqrt(3072))
    # l2=None follows the run's radius, as sc does
    assert AutoregressivePerturbation(l2=None).budget((3, 16, 16), RADIUS).radius == pytest.approx(16 * 3**0.5 * 8)


@pytest.mark.parametrize(("window", "size"), [(3, (9, 11)), (2, (7, 5)), (4, (10, 10))])
def test_recursion_equals_the_raster_loop(window: int, size: tuple[int, int]) -> None:
    """The anti-diagonal vectorisation computes the pixel-by-pixel recursion in raster order (up to rounding)."""
    g = torch.Generator().manual_seed(window)
    coef = torch.randn((6, window, window), generator=g) * 0.2  # small: the loop and the recursion stay bounded
    coef[:, -1, -1] = 5.0  # the generated pixel's own coefficient is ignored
    start = torch.randn((6, *size), generator=g)  # pixels past the margin are overwritten
    out = ar_recursion(coef, start)
    expect = torch.stack([_raster_loop(b, s) for b, s in zip(coef, start, strict=True)])
    torch.testing.assert_close(out, expect, rtol=1e-5, atol=1e-5)  # summation order differs
    k = window - 1
    assert torch.equal(out[:, :k], start[:, :k]) and torch.equal(out[:, :, :k], start[:, :, :k])


def test_coefficients_are_normalised_and_patterns_obey_their_filter() -> None:
    g = torch.Generator().manual_seed(0)
    coef = draw_coefficients(32, 3, g, torch.device("cpu"))
    assert torch.all(coef[:, -1, -1] == 0)
    torch.testing.assert_close(coef.sum((1, 2)), torch.ones(32))
    patterns = ar_recursion(coef, random_start(32, (12, 12), 2, g))
    bounded = patterns.flatten(1).abs().amax(1) < 10  # unstable draws are what the search throws away
    own = prediction_residual(patterns[bounded, None], coef[bounded, None]).diagonal().abs()
    assert bounded.any() and float(own.max()) < 1e-4


def test_response_is_the_reference_score_at_cifar_size() -> None:
    """At 3 x 32 x 32: sum(relu(residual)) of a unit-L2 pattern, the finder's number; 0 for its own process."""
    g = torch.Generator().manual_seed(1)
    coef = draw_coefficients(6, 3, g, torch.device("cpu")).view(2, 3, 3, 3)
    pattern = torch.randn((1, 3, 32, 32), generator=g)
    unit = pattern / pattern.norm()
    expect = torch.stack([prediction_residual(unit, coef[i : i + 1]).relu().sum() for i in range(2)])
    torch.testing.assert_close(response(pattern, coef)[0], expect)
    candidates = AutoregressivePerturbation().bounded_candidates((3, 32, 32), g, {"ar_draws": 0})
    (own, own_pattern), (other, _) = next(candidates), next(candidates)
    scores = response(own_pattern[None], torch.stack([own, other]))[0]
    assert float(scores[0]) < 1e-3 < float(scores[1])


def test_noise_is_predicted_by_its_own_class_filter_only(train: ImageSet, poison: Poison) -> None:
    """The defining property: each image's noise is its class's AR process, which the other classes' are not."""
    coef, facts = AutoregressivePerturbation().processes(train.num_classes, train.shape, Context(seed=0))
    assert coef.shape == (train.num_classes, 3, 3, 3)
    share = _residual_share(poison.delta, coef)  # on the published int8 noise: rounding is the only error
    own = share[torch.arange(len(train)), train.y]
    others = share[F.one_hot(train.y, train.num_classes) == 0].view(len(train), -1)
    assert float(own.max()) < 0.03
    assert float(others.min()) > 2 * float(own.max())  # every image: its own filter beats all the others
    assert float(others.mean()) > 20 * float(own.mean())
    assert facts["ar_min_response"] == 10.0  # the reference's 10-class threshold was reached
    assert poison.stats["ar_candidates"] == facts["ar_candidates"] >= train.num_classes


def test_budget_respected_after_generate(train: ImageSet, poison: Poison) -> None:
    budget = AutoregressivePerturbation().budget(train.shape, RADIUS)
    delta = poison.delta
    assert delta.dtype == torch.int8 and tuple(delta.shape) == tuple(train.x.shape)
    norms = budget.norms(delta)
    assert float(norms.max()) <= budget.radius + 1e-6
    assert float(norms.min()) >= 0.8 * budget.radius  # scaled to the budget, less rounding and clipping
    total = train.x.to(torch.int16) + delta.to(torch.int16)
    assert int(total.min()) >= 0 and int(total.max()) <= 255
    assert torch.equal(poison.apply(train).x.to(torch.int16), total)


def test_seeded(train: ImageSet, poison: Poison) -> None:
    again = _generate(AutoregressivePerturbation(), train, 0)  # a fresh instance
    assert torch.equal(again.delta, poison.delta)
    other = _generate(AutoregressivePerturbation(), train, 1)
    assert not torch.equal(other.delta, poison.delta)
    a, _ = AutoregressivePerturbation().processes(4, train.shape, Context(seed=0))
    b, _ = AutoregressivePerturbation().processes(4, train.shape, Context(seed=1))
    assert not torch.equal(a, b)


@pytest.mark.parametrize(
    ("shape", "options"),
    [((1, 28, 28), {"min_response": 5.0}), ((3, 32, 32), {})],
    ids=["1x28x28", "3x32x32"],
)
def test_image_sizes(shape: tuple[int, int, int], options: dict[str, Any]) -> None:
    data, _ = make_synthetic(n_train=16, n_test=4, num_classes=4, shape=shape)
    method = AutoregressivePerturbation(**options)
    budget = method.budget(shape, RADIUS)
    poison = method.generate(data, budget, Context(seed=0, progress=False))
    assert tuple(poison.delta.shape) == tuple(data.x.shape)
    assert float(budget.norms(poison.delta).max()) <= budget.radius + 1e-6
    coef, _ = method.processes(data.num_classes, shape, Context(seed=0))
    assert coef.shape == (data.num_classes, shape[0], 3, 3)
    assert torch.equal(_residual_share(poison.delta, coef).argmin(1), data.y)


def test_unreachable_threshold_is_halved(train: ImageSet) -> None:
    method = AutoregressivePerturbation(min_response=1000.0, search_candidates=10)
    coef, facts = method.processes(train.num_classes, train.shape, Context(seed=0))
    assert coef.shape == (train.num_classes, 3, 3, 3)
    halvings = math.log2(1000.0 / facts["ar_min_response"])
    assert halvings >= 1 and halvings == int(halvings)
    assert facts["ar_candidates"] > 10 * halvings


def test_invalid_options() -> None:
    with pytest.raises(ValueError, match="window"):
        AutoregressivePerturbation(window=1)
    with pytest.raises(ValueError, match="crop"):
        AutoregressivePerturbation(crop=-1)
    with pytest.raises(ValueError, match="expected"):
        AutoregressivePerturbation(l2="1")
    with pytest.raises(ValueError, match="too small"):
        AutoregressivePerturbation(window=5).processes(2, (1, 4, 4), Context())
