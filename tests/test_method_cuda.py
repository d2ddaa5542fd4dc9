"""``cuda`` (convolution-based unlearnable data sets): each class's images are its filter applied to the clean
ones, with the filters the paper describes and a declared (not measured) budget."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import methods.cuda  # noqa: F401  (registers "cuda" whether or not methods/__init__.py imports it)
from benchmarks.data import make_synthetic
from benchmarks.noise import PoisonError, validate_poison
from benchmarks.types import Budget, Context, ImageSet
from methods.cuda import ConvolutionUnlearnable, convolve_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def train() -> ImageSet:
    data, _ = make_synthetic(n_train=48, n_test=8, num_classes=4, shape=(3, 12, 12))
    return data


def _direct(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """One image through its filter as the paper writes it: a depthwise 3 x 3 convolution with the same kernel on
    every channel, zero padding, then ``x / max(x)`` to 255 and truncation."""
    c = x.shape[0]
    out = F.conv2d(x.double()[None], kernel.double().expand(c, 1, *kernel.shape), padding=1, groups=c)[0]
    return (out * 255 / out.max()).floor().clamp(0, 255).to(torch.uint8)


def test_each_class_is_its_filter_applied_to_the_clean_images(train: ImageSet) -> None:
    method = ConvolutionUnlearnable()
    ctx = Context(seed=3, progress=False)
    poison = method.generate(train, method.budget(train.shape, 8.0), ctx)
    assert poison.images
    filters = method.filters(train.num_classes, ctx)
    for i in range(len(train)):
        assert torch.equal(poison.delta[i], _direct(train.x[i], filters[train.y[i]])), i
    # and not another class's filter: the class is what determines the transform
    other = (train.y + 1) % train.num_classes
    mismatched = sum(
        not torch.equal(poison.delta[i], _direct(train.x[i], filters[other[i]])) for i in range(len(train))
    )
    assert mismatched == len(train)


def test_filters_follow_the_paper(train: ImageSet) -> None:
    method = ConvolutionUnlearnable(blur=0.2)
    filters = method.filters(10, Context(seed=0, progress=False))
    assert filters.shape == (10, 3, 3)
    flat = filters.flatten(1)
    assert ((flat == 1.0).sum(1) == 1).all(), "one weight at the peak per filter"
    rest = flat[flat != 1.0]
    assert float(rest.min()) >= 0 and float(rest.max()) <= 0.2
    assert not torch.equal(filters, method.filters(10, Context(seed=1, progress=False))), "a function of the seed"
    assert torch.equal(filters, method.filters(10, Context(seed=0, progress=False)))
    assert flat.argmax(1).unique().numel() > 1, "the peak's position is random"


def test_budget_is_declared_not_measured(train: ImageSet) -> None:
    method = ConvolutionUnlearnable(blur=0.5)
    budget = method.budget(train.shape, 8.0)
    assert budget == Budget("blur", 0.5) and not budget.measured
    with pytest.raises(ValueError, match="declared"):
        budget.norms(torch.zeros(2, 3, 4, 4))
    poison = method.generate(train, budget, Context(seed=0, progress=False))
    assert int(poison.difference(train).abs().max()) > 8, "far outside any L-inf ball the others use"
    with pytest.raises(PoisonError, match="int8 noise"):
        validate_poison(type(poison)(torch.zeros_like(train.x, dtype=torch.int8)), train, budget)


def test_black_images_stay_black() -> None:
    x = torch.zeros(2, 3, 5, 5, dtype=torch.uint8)
    x[1, :, 2, 2] = 100
    out = convolve_images(x, torch.full((2, 3, 3), 0.5))
    assert not out[0].any()
    assert int(out[1].max()) == 255


def test_chunks_do_not_change_the_result(train: ImageSet, monkeypatch: pytest.MonkeyPatch) -> None:
    method = ConvolutionUnlearnable()
    budget = method.budget(train.shape, 8.0)
    whole = method.generate(train, budget, Context(seed=0, progress=False))
    monkeypatch.setattr(
        methods.cuda, "row_chunks", lambda n, row_bytes: (slice(i, min(i + 5, n)) for i in range(0, n, 5))
    )
    chunked = method.generate(train, budget, Context(seed=0, progress=False))
    assert torch.equal(whole.delta, chunked.delta)


@pytest.mark.parametrize("options", [{"blur": 0.0}, {"kernel_size": 4}, {"peak": -1.0}])
def test_bad_options(options: dict) -> None:
    with pytest.raises(ValueError, match="cuda:"):
        ConvolutionUnlearnable(**options)
