"""Tests for benchmarks.noise (quantize, validate_poison, NoiseMethod, options, hashes) and types.Poison."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from benchmarks.data import make_synthetic
from benchmarks.env import device_name
from benchmarks.noise import (
    Meter,
    NoiseMethod,
    PoisonError,
    check_options,
    config_hash,
    quantize,
    validate_poison,
)
from benchmarks.pgd import uniform_like
from benchmarks.types import Budget, Context, ImageSet, Poison

# --------------------------------------------------------------------------------------------- fixtures / helpers


@pytest.fixture
def data() -> ImageSet:
    train, _ = make_synthetic(n_train=16, n_test=4, num_classes=4, shape=(3, 8, 8))
    return train


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class _Opts:
    name: str = "x"
    steps: int = 10
    lr: float = 0.1
    flag: bool = False
    sizes: tuple[int, ...] = (1, 2)
    maybe: float | None = None


class _Uniform(NoiseMethod):
    """A well-behaved method: uniform noise at ``scale`` times the radius (projected by the base class)."""

    name = "uniform-test"
    norms = ("linf", "l2")

    @dataclass(frozen=True)
    class Config:
        scale: float = 2.0
        classwise: bool = False

    def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
        shape = (train.num_classes, *train.shape) if self.classwise else tuple(train.x.shape)
        meter.steps += 3
        return uniform_like(torch.empty(shape), budget.eps * self.config.scale, ctx.generator(self.name))


class _ChangesLabels(_Uniform):
    name = "changes-labels"

    def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
        train.y[0] = (train.y[0] + 1) % train.num_classes
        return super().perturb(train, budget, ctx, meter)


class _ChangesImages(_Uniform):
    name = "changes-images"

    def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
        train.x.add_(1)
        return super().perturb(train, budget, ctx, meter)


class _SwapsPixels(_Uniform):
    """Modifies two pixels in place keeping their sum (flat indices 1 and 2, off the 97-pixel sampling grid)."""

    name = "swaps-pixels"

    def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
        flat = train.x.view(-1)
        flat[1] -= 10
        flat[2] += 10
        return super().perturb(train, budget, ctx, meter)


class _CountsForwards(_Uniform):
    name = "counts"

    def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
        model = nn.Linear(2, 2)
        with meter.watch(model):
            model(torch.zeros(5, 2))
            model(torch.zeros(3, 2))
        model(torch.zeros(7, 2))  # not watched
        return torch.zeros(train.x.shape)


# --------------------------------------------------------------------------------------------- quantize


def test_quantize_rounds_to_nearest_1_over_255() -> None:
    g = _gen(0)
    k = torch.randint(-8, 9, (4, 3, 5, 5), generator=g).float()
    frac = (torch.rand(k.shape, generator=g) - 0.5) * 0.8  # |frac| < 0.4: unambiguous rounding
    q = quantize((k + frac) / 255, Budget("linf", 8))
    assert q.dtype == torch.int8
    assert torch.equal(q, k.to(torch.int8))


@pytest.mark.parametrize(("radius", "limit"), [(8, 8), (8.9, 8), (4.0, 4), (1.5, 1), (127, 127)])
def test_quantize_linf_clamps_to_floor_radius(radius, limit) -> None:
    delta = uniform_like(torch.empty(8, 3, 4, 4), 2 * radius / 255, _gen(1))
    q = quantize(delta, Budget("linf", radius))
    assert int(q.abs().max()) == limit
    inside = (delta * 255).round().abs() <= limit
    assert torch.equal(q[inside], (delta[inside] * 255).round().to(torch.int8))
    assert torch.equal(q[~inside].abs(), torch.full_like(q[~inside], limit))
    assert torch.equal(q[~inside].sign(), (delta[~inside]).sign().to(torch.int8))


def test_quantize_clips_so_images_stay_in_range() -> None:
    x = torch.tensor([0, 3, 128, 252, 255, 10], dtype=torch.uint8).view(1, 1, 1, 6).repeat(2, 1, 1, 1)
    delta = torch.tensor([[-8, -8, -8, 8, 8, 5], [8, 8, 8, -8, -8, -5]], dtype=torch.float32).view(2, 1, 1, 6) / 255
    q = quantize(delta, Budget("linf", 8), x)
    expect = torch.tensor([[0, -3, -8, 3, 0, 5], [8, 8, 8, -8, -8, -5]], dtype=torch.int8).view(2, 1, 1, 6)
    assert torch.equal(q, expect)
    total = x.to(torch.int16) + q.to(torch.int16)
    assert int(total.min()) >= 0 and int(total.max()) <= 255


def test_quantize_without_images_does_not_clip() -> None:
    delta = torch.full((1, 1, 2, 2), -8 / 255)
    assert torch.equal(quantize(delta, Budget("linf", 8)), torch.full((1, 1, 2, 2), -8, dtype=torch.int8))


@pytest.mark.parametrize("radius", [10.0, 50.0, 300.0])
def test_quantize_l2_every_norm_within_radius(radius) -> None:
    g = _gen(2)
    scale = torch.tensor([0.1, 0.5, 0.99, 1.0, 1.01, 2.0, 10.0, 0.0]).view(-1, 1, 1, 1)
    raw = torch.randn((8, 3, 8, 8), generator=g)
    delta = raw / raw.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * scale * radius / 255
    budget = Budget("l2", radius)
    q = quantize(delta, budget)
    assert q.dtype == torch.int8
    norms = budget.norms(q)
    assert float(norms.max()) <= radius + 1e-6
    # far over-budget noise is rescaled toward the radius, not zeroed (truncation loses a part of it)
    assert float(norms[6]) > 0.5 * radius
    assert float(norms[7]) == 0.0


def test_quantize_l2_under_budget_is_plain_rounding() -> None:
    delta = torch.tensor([3.2, -4.4, 0.3, 1.6]).view(1, 1, 2, 2) / 255
    q = quantize(delta, Budget("l2", 10.0))
    assert torch.equal(q, torch.tensor([3, -4, 0, 2], dtype=torch.int8).view(1, 1, 2, 2))


def test_quantize_l2_rounding_over_budget_is_truncated() -> None:
    # raw norm 4.50 is within the radius 5, but rounding (2.6 -> 3) would give 5.20: truncate instead
    delta = torch.tensor([2.6, 2.6, 2.6, 0.0]).view(1, 1, 2, 2) / 255
    budget = Budget("l2", 5.0)
    q = quantize(delta, budget)
    assert torch.equal(q, torch.tensor([2, 2, 2, 0], dtype=torch.int8).view(1, 1, 2, 2))
    assert float(budget.norms(q)[0]) <= 5.0


def test_quantize_l2_respects_image_range() -> None:
    x = torch.zeros((2, 1, 4, 4), dtype=torch.uint8)
    delta = torch.full((2, 1, 4, 4), -3 / 255)
    q = quantize(delta, Budget("l2", 100.0), x)
    assert torch.equal(q, torch.zeros_like(q))


def test_quantize_does_not_modify_input() -> None:
    delta = uniform_like(torch.empty(2, 3, 4, 4), 20 / 255, _gen(3))
    before = delta.clone()
    quantize(delta, Budget("linf", 8))
    quantize(delta, Budget("l2", 10))
    assert torch.equal(delta, before)


# --------------------------------------------------------------------------------------------- validate_poison


def test_validate_poison_accepts_valid_samplewise_and_classwise(data) -> None:
    budget = Budget("linf", 8)
    validate_poison(Poison(torch.full(data.x.shape, 8, dtype=torch.int8)), data, budget)
    validate_poison(Poison(torch.full((4, 3, 8, 8), -8, dtype=torch.int8), classwise=True), data, budget)


@pytest.mark.parametrize("dtype", [torch.int16, torch.float32, torch.uint8])
def test_validate_poison_rejects_wrong_dtype(data, dtype) -> None:
    with pytest.raises(PoisonError, match="int8"):
        validate_poison(Poison(torch.zeros(data.x.shape, dtype=dtype)), data, Budget())


@pytest.mark.parametrize(
    ("shape", "classwise"),
    [
        ((15, 3, 8, 8), False),
        ((16, 1, 8, 8), False),
        ((4, 3, 8, 8), False),
        ((16, 3, 8, 8), True),
        ((3, 3, 8, 8), True),
    ],
)
def test_validate_poison_rejects_wrong_shape(data, shape, classwise) -> None:
    with pytest.raises(PoisonError, match="shape"):
        validate_poison(Poison(torch.zeros(shape, dtype=torch.int8), classwise=classwise), data, Budget())


def test_validate_poison_rejects_over_budget_linf_with_measured_norm(data) -> None:
    delta = torch.zeros(data.x.shape, dtype=torch.int8)
    delta[3, 1, 2, 2] = -9
    with pytest.raises(PoisonError, match="budget") as info:
        validate_poison(Poison(delta), data, Budget("linf", 8))
    assert "9.000" in str(info.value) and "linf" in str(info.value)


def test_validate_poison_rejects_over_budget_l2_with_measured_norm(data) -> None:
    delta = torch.zeros(data.x.shape, dtype=torch.int8)
    delta[0, 0, 0, :2] = torch.tensor([3, 4], dtype=torch.int8)  # L2 norm 5
    validate_poison(Poison(delta), data, Budget("l2", 5.0))
    with pytest.raises(PoisonError) as info:
        validate_poison(Poison(delta), data, Budget("l2", 4.5))
    assert "5.000" in str(info.value) and "l2" in str(info.value)


def test_budget_norms_handle_int8_minimum() -> None:
    delta = torch.full((1, 2), -128, dtype=torch.int8)
    assert float(Budget("linf", 8).norms(delta)[0]) == 128.0


def test_poison_error_is_value_error() -> None:
    assert issubclass(PoisonError, ValueError)


# --------------------------------------------------------------------------------------------- NoiseMethod.generate


def test_generate_returns_int8_within_budget(data) -> None:
    method = _Uniform()
    budget = Budget("linf", 8)
    x_before, y_before = data.x.clone(), data.y.clone()
    poison = method.generate(data, budget, Context(progress=False))
    assert poison.delta.dtype == torch.int8
    assert poison.delta.shape == data.x.shape
    assert poison.delta.device.type == "cpu"
    assert not poison.classwise
    assert float(budget.norms(poison.delta).max()) <= 8
    assert int(poison.delta.abs().max()) == 8  # scale 2 noise was clamped onto the ball
    total = data.x.to(torch.int16) + poison.delta.to(torch.int16)
    assert int(total.min()) >= 0 and int(total.max()) <= 255
    assert torch.equal(data.x, x_before) and torch.equal(data.y, y_before)
    stats = poison.stats
    assert set(stats) >= {"wall_s", "steps", "forward_calls", "images_forwarded", "device"}
    assert stats["steps"] == 3 and stats["forward_calls"] == 0 and stats["wall_s"] >= 0
    assert stats["device"] == device_name(torch.device("cpu"))


def test_generate_classwise(data) -> None:
    poison = _Uniform(classwise=True).generate(data, Budget("linf", 4), Context(progress=False))
    assert poison.classwise and poison.delta.shape == (4, 3, 8, 8)
    assert int(poison.delta.abs().max()) <= 4


def test_generate_l2(data) -> None:
    budget = Budget("l2", 20.0)
    poison = _Uniform(scale=5.0).generate(data, budget, Context(progress=False))
    assert float(budget.norms(poison.delta).max()) <= 20.0 + 1e-6


def test_generate_is_seeded(data) -> None:
    budget = Budget("linf", 8)
    a = _Uniform().generate(data, budget, Context(seed=1, progress=False)).delta
    b = _Uniform().generate(data, budget, Context(seed=1, progress=False)).delta
    c = _Uniform().generate(data, budget, Context(seed=2, progress=False)).delta
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_generate_rejects_label_changes(data) -> None:
    with pytest.raises(PoisonError, match="labels"):
        _ChangesLabels().generate(data, Budget(), Context(progress=False))


def test_generate_rejects_in_place_image_changes(data) -> None:
    with pytest.raises(PoisonError, match="in place"):
        _ChangesImages().generate(data, Budget(), Context(progress=False))


def test_generate_rejects_sum_preserving_in_place_image_changes() -> None:
    x = torch.full((2, 1, 8, 8), 100, dtype=torch.uint8)
    train = ImageSet(x, torch.tensor([0, 1]), 2, "t")
    with pytest.raises(PoisonError, match="in place"):
        _SwapsPixels().generate(train, Budget(), Context(progress=False))


@pytest.mark.parametrize("lead", [17, 1])
def test_generate_rejects_wrong_shape(data, lead) -> None:
    class WrongShape(_Uniform):
        name = "wrong-shape"

        def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
            return torch.zeros((lead, *train.shape))

    with pytest.raises(PoisonError, match="shape"):
        WrongShape().generate(data, Budget(), Context(progress=False))


def test_generate_rejects_wrong_classwise_shape(data) -> None:
    class WrongClasswise(_Uniform):
        name = "wrong-classwise"

        def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
            return torch.zeros((train.num_classes + 1, *train.shape))

    with pytest.raises(PoisonError, match="shape"):
        WrongClasswise(classwise=True).generate(data, Budget(), Context(progress=False))


def test_generate_rejects_unsupported_norm(data) -> None:
    class LinfOnly(_Uniform):
        name = "linf-only"
        norms = ("linf",)

    with pytest.raises(PoisonError, match="l2"):
        LinfOnly().generate(data, Budget("l2", 10.0), Context(progress=False))


def test_generate_counts_watched_forward_calls(data) -> None:
    poison = _CountsForwards().generate(data, Budget(), Context(progress=False))
    assert poison.stats["forward_calls"] == 2
    assert poison.stats["images_forwarded"] == 8


def test_meter_watch_removes_hook() -> None:
    meter, model = Meter(), nn.Linear(2, 2)
    with meter.watch(model):
        model(torch.zeros(4, 2))
    model(torch.zeros(4, 2))
    assert (meter.forward_calls, meter.images_forwarded) == (1, 4)
    assert not model._forward_pre_hooks


def test_method_overrides_and_base_config() -> None:
    method = _Uniform(scale=3)
    assert method.config.scale == 3.0 and isinstance(method.config.scale, float)
    base = _Uniform.Config(scale=0.5, classwise=True)
    assert _Uniform(base).config == base and _Uniform(base).classwise
    assert _Uniform(base, classwise=False).config == _Uniform.Config(0.5, False)
    with pytest.raises(ValueError, match="unknown option"):
        _Uniform(nope=1)
    assert _Uniform().budget((3, 8, 8), 8.0) == Budget("linf", 8.0)


# --------------------------------------------------------------------------------------------- check_options


def test_check_options_unknown_key_lists_accepted() -> None:
    with pytest.raises(ValueError, match="unknown option 'stepz'") as info:
        check_options(_Opts, {"stepz": 3})
    for name in ("flag", "lr", "maybe", "name", "sizes", "steps"):
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("steps", "10"),
        ("steps", 1.5),
        ("steps", True),
        ("lr", "0.1"),
        ("lr", False),
        ("flag", 1),
        ("flag", "yes"),
        ("name", 3),
        ("sizes", 3),
    ],
)
def test_check_options_wrong_type(key, value) -> None:
    with pytest.raises(ValueError, match=f"{key}: expected"):
        check_options(_Opts, {key: value})


def test_check_options_converts() -> None:
    out = check_options(_Opts, {"sizes": [3, 4], "lr": 1, "steps": 5, "flag": True, "name": "y"})
    assert out == {"sizes": (3, 4), "lr": 1.0, "steps": 5, "flag": True, "name": "y"}
    assert isinstance(out["sizes"], tuple) and isinstance(out["lr"], float)
    assert check_options(_Opts, None) == {} and check_options(_Opts, {}) == {}


def test_check_options_converts_int_for_optional_float_field() -> None:
    out = check_options(_Opts, {"maybe": 8})
    assert isinstance(out["maybe"], float)
    assert config_hash(_Opts(**out)) == config_hash(_Opts(maybe=8.0))


def test_check_options_rejects_wrong_type_for_optional_field() -> None:
    with pytest.raises(ValueError, match="maybe"):
        check_options(_Opts, {"maybe": "abc"})


# --------------------------------------------------------------------------------------------- config_hash


def test_config_hash_stable_and_sensitive() -> None:
    h = config_hash(_Opts())
    assert len(h) == 8 and all(c in "0123456789abcdef" for c in h)
    assert h == config_hash(_Opts())
    assert h != config_hash(_Opts(steps=11))
    assert h != config_hash(_Opts(lr=0.2))
    assert h != config_hash(_Opts(sizes=(2, 1)))
    assert config_hash({"b": 1, "a": [1, 2]}) == config_hash({"a": [1, 2], "b": 1})
    expected = hashlib.sha256(json.dumps({"a": 1}, sort_keys=True).encode()).hexdigest()[:8]
    assert config_hash({"a": 1}) == expected


def test_config_hash_of_dataclass_equals_hash_of_its_dict() -> None:
    assert config_hash(_Opts()) == config_hash(
        {"name": "x", "steps": 10, "lr": 0.1, "flag": False, "sizes": [1, 2], "maybe": None}
    )


# --------------------------------------------------------------------------------------------- Poison.apply


def test_poison_apply_equals_clipped_integer_sum(data) -> None:
    delta = torch.randint(-127, 128, data.x.shape, generator=_gen(4)).to(torch.int8)
    x = data.x.clone()
    x[0, 0, 0, :2] = torch.tensor([0, 255], dtype=torch.uint8)
    delta[0, 0, 0, :2] = torch.tensor([-100, 100], dtype=torch.int8)
    data = data.with_images(x)
    out = Poison(delta).apply(data)
    expect = (x.to(torch.int32) + delta.to(torch.int32)).clamp(0, 255).to(torch.uint8)
    assert out.x.dtype == torch.uint8
    assert torch.equal(out.x, expect)
    assert torch.equal(out.y, data.y) and out.num_classes == data.num_classes
    assert int(out.x[0, 0, 0, 0]) == 0 and int(out.x[0, 0, 0, 1]) == 255


def test_poison_apply_classwise_expands_by_label(data) -> None:
    patterns = torch.randint(-8, 9, (4, 3, 8, 8), generator=_gen(5)).to(torch.int8)
    poison = Poison(patterns, classwise=True)
    per_sample = poison.per_sample(data.y)
    assert per_sample.shape == data.x.shape
    for i in range(len(data)):
        assert torch.equal(per_sample[i], patterns[data.y[i]])
    out = poison.apply(data)
    expect = (data.x.to(torch.int16) + patterns[data.y].to(torch.int16)).clamp(0, 255).to(torch.uint8)
    assert torch.equal(out.x, expect)


def test_poison_apply_shape_mismatch(data) -> None:
    with pytest.raises(ValueError, match="does not match"):
        Poison(torch.zeros((3, 3, 8, 8), dtype=torch.int8)).apply(data)


def test_budget_validation() -> None:
    assert Budget().eps == pytest.approx(8 / 255)
    for bad in (dict(norm="l1"), dict(radius=0), dict(radius=-1), dict(radius=math.inf), dict(radius=128)):
        with pytest.raises(ValueError):
            Budget(**bad)
    assert Budget("l2", 500.0).radius == 500.0
