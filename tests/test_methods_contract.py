"""The noise-method contract, checked for every registered method on a tiny synthetic set."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch

from benchmarks.data import make_synthetic
from benchmarks.noise import NoiseMethod
from benchmarks.plugins import load_plugins
from benchmarks.registry import METHODS
from benchmarks.types import Budget, Context, ImageSet, Poison

load_plugins()

RADIUS = 8.0

# Options that make each method run in seconds on 32 images of 3x16x16. A method registered later without an
# entry here still gets tested, with its defaults ({}): add an entry if those are too slow for a unit test.
TINY: dict[str, dict[str, Any]] = {
    "em": {"surrogate": "tiny_cnn", "steps": 3, "batch_size": 16, "noise_steps": 2},
    "em-cw": {"surrogate": "tiny_cnn", "max_rounds": 2, "train_steps": 2, "batch_size": 16},
    "rem": {"surrogate": "tiny_cnn", "steps": 2, "batch_size": 16, "noise_steps": 2, "samples": 2, "adv_steps": 2},
    "tap": {"surrogate": "tiny_cnn", "surrogate_steps": 3, "surrogate_batch_size": 16, "steps": 2, "batch_size": 16},
    "sem": {"surrogate": "tiny_cnn", "steps": 2, "batch_size": 16, "noise_steps": 2, "samples": 2, "adv_steps": 2},
    "hypo": {"surrogate": "tiny_cnn", "surrogate_steps": 3, "surrogate_batch_size": 16, "steps": 2, "batch_size": 16},
    "asr": {"surrogate": "tiny_cnn", "steps": 2, "batch_size": 16, "noise_steps": 2, "samples": 2, "adv_steps": 2},
    "ntga": {"block_size": 8, "val_size": 16, "steps": 2},
}

# Methods whose noise does not depend on the seed.
DETERMINISTIC = {"clean", "ops"}  # OPS: the pixel search has no randomness

# Extra option variants worth covering with the same contract.
VARIANTS: list[tuple[str, dict[str, Any]]] = [("random", {"classwise": True})]

CASES = [(name, TINY.get(name, {})) for name in METHODS.list()] + VARIANTS
IDS = METHODS.list() + [f"{name}-{'-'.join(f'{k}={v}' for k, v in extra.items())}" for name, extra in VARIANTS]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def train() -> ImageSet:
    data, _ = make_synthetic(n_train=32, n_test=8, num_classes=4, shape=(3, 16, 16))
    return data


def _build(name: str, options: dict[str, Any]) -> NoiseMethod:
    method = METHODS.get(name)(**options)
    assert isinstance(method, NoiseMethod)
    return method


def _generate(method: NoiseMethod, train: ImageSet, seed: int) -> Poison:
    budget = method.budget(train.shape, RADIUS)
    return method.generate(train, budget, Context(seed=seed, progress=False))


def test_every_registered_method_is_covered() -> None:
    assert {name for name, _ in CASES} == set(METHODS.list())
    assert {"em", "em-cw", "sc", "random", "clean"} <= set(METHODS.list())


def test_every_method_but_clean_links_its_paper() -> None:
    """The leaderboard's Methods list shows each method's citation, linked to its paper."""
    for name in METHODS.list():
        cls = METHODS.get(name)
        if name == "clean":
            assert (cls.citation, cls.url) == ("", ""), "the baseline has no paper"
            continue
        assert re.fullmatch(r"[^,]+ et al\., .+, .*\b20\d\d\b.*", cls.citation), f"{name}: 'Authors, Title, Venue Year'"
        assert cls.url.startswith("https://"), f"{name}: no paper URL"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("name", "options"), CASES, ids=IDS)
def test_method_contract(train: ImageSet, name: str, options: dict[str, Any]) -> None:
    method = _build(name, options)
    assert method.name == name
    assert isinstance(method.citation, str)
    budget = method.budget(train.shape, RADIUS)
    assert budget.norm in method.norms
    x_before, y_before = train.x.clone(), train.y.clone()

    poison = method.generate(train, budget, Context(seed=0, progress=False))

    # dtype, shape, device: int8 noise, or the uint8 protected images of a method that transforms images
    delta = poison.delta
    assert delta.dtype == (torch.uint8 if poison.images else torch.int8)
    assert poison.classwise == method.classwise
    expect = (train.num_classes, *train.shape) if method.classwise else tuple(train.x.shape)
    assert tuple(delta.shape) == expect
    assert delta.device.type == "cpu"

    # within budget: measured on the change (a declared budget, e.g. CUDA's blur, is checked by its own test)
    if budget.measured:
        assert float(poison.norms(train, budget).max()) <= budget.radius + 1e-6
    else:
        assert budget.norm in Budget.DECLARED and poison.images

    # the published images are valid, and sample-wise noise is exactly what they carry (no clipping needed)
    protected = poison.apply(train)
    assert protected.x.dtype == torch.uint8 and protected.x.shape == train.x.shape
    if poison.images:
        assert torch.equal(protected.x, delta)
        assert torch.equal(protected.x.to(torch.int16) - train.x.to(torch.int16), poison.difference(train))
    else:
        total = train.x.to(torch.int16) + poison.per_sample(train.y).to(torch.int16)
        if not method.classwise:
            assert int(total.min()) >= 0 and int(total.max()) <= 255
            assert torch.equal(protected.x.to(torch.int16), total)
        else:
            assert torch.equal(protected.x.to(torch.int16), total.clamp(0, 255))
    assert torch.equal(protected.y, train.y)

    # inputs untouched
    assert torch.equal(train.x, x_before)
    assert torch.equal(train.y, y_before)

    # cost recorded
    stats = poison.stats
    for key in ("wall_s", "steps", "forward_calls", "device"):
        assert key in stats, key
    assert isinstance(stats["wall_s"], float) and stats["wall_s"] >= 0
    assert isinstance(stats["steps"], int) and stats["steps"] >= 0
    assert isinstance(stats["forward_calls"], int) and stats["forward_calls"] >= 0
    assert isinstance(stats["device"], str) and stats["device"].startswith("cpu")
    if name in TINY:  # the methods with a surrogate do real work
        assert stats["steps"] > 0 and stats["forward_calls"] > 0

    # determinism in ctx.seed
    again = method.generate(train, budget, Context(seed=0, progress=False))
    assert torch.equal(again.delta, delta)
    other = method.generate(train, budget, Context(seed=1, progress=False))
    if name in DETERMINISTIC:
        assert torch.equal(other.delta, delta)
    else:
        assert not torch.equal(other.delta, delta)


@pytest.mark.timeout(120)
def test_fresh_instances_agree(train: ImageSet) -> None:
    """Two separately built instances with the same options and seed produce the same noise."""
    a = _generate(_build("em", TINY["em"]), train, 3)
    b = _generate(_build("em", TINY["em"]), train, 3)
    assert torch.equal(a.delta, b.delta)


def test_clean_is_zero(train: ImageSet) -> None:
    poison = _generate(_build("clean", {}), train, 0)
    assert not bool(poison.delta.any())
    assert torch.equal(poison.apply(train).x, train.x)


def test_random_is_nontrivial(train: ImageSet) -> None:
    poison = _generate(_build("random", {}), train, 0)
    assert int(poison.delta.abs().max()) == int(RADIUS)
    assert abs(float(poison.delta.float().mean())) < 1.0


def test_sc_noise_is_class_separable(train: ImageSet) -> None:
    """SC's noise of two images of the same class is closer than that of images of different classes."""
    method = _build("sc", {})
    budget = method.budget(train.shape, RADIUS)
    assert budget.norm == "l2"
    assert budget.radius == pytest.approx((3 * 16 * 16) ** 0.5 * RADIUS)
    delta = _generate(method, train, 0).delta.float().flatten(1)
    centroids = torch.stack([delta[train.y == k].mean(0) for k in range(train.num_classes)])
    nearest = torch.cdist(delta, centroids).argmin(1)
    assert float((nearest == train.y).float().mean()) >= 0.9


@pytest.mark.timeout(120)
def test_em_cw_records_convergence(train: ImageSet) -> None:
    poison = _generate(_build("em-cw", TINY["em-cw"]), train, 0)
    assert "converged" in poison.stats
