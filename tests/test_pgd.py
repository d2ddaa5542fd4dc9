"""Tests for benchmarks.pgd: ascent/descent, projection, random start, mode restoration, custom objectives."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.pgd import box_projection, eval_mode, pgd, pgd_optimize, uniform_like

EPS = 8 / 255
ALPHA = 2 / 255


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    with torch.no_grad():
        net[1].weight.mul_(20)  # a strong enough dependence on the input for eps = 8/255 to matter
    return net


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand((16, 3, 8, 8), generator=g)
    x[0, 0, 0, :4] = torch.tensor([0.0, 1.0, 0.001, 0.999])  # pixels at the box edges
    y = torch.randint(0, 5, (16,), generator=g)
    return x, y


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y))


def _check_constraints(x: torch.Tensor, delta: torch.Tensor, eps: float) -> None:
    assert delta.shape == x.shape
    assert not delta.requires_grad
    assert float(delta.abs().max()) <= eps + 1e-6
    assert float((x + delta).min()) >= -1e-6
    assert float((x + delta).max()) <= 1 + 1e-6


@pytest.mark.parametrize("random_start", [True, False])
def test_ascent_raises_loss(model, batch, random_start) -> None:
    x, y = batch
    g = torch.Generator().manual_seed(0)
    delta = pgd(model, x, y, eps=EPS, alpha=ALPHA, steps=10, random_start=random_start, generator=g)
    _check_constraints(x, delta, EPS)
    assert _loss(model, x + delta, y) > _loss(model, x, y) + 0.05


@pytest.mark.parametrize("random_start", [True, False])
def test_descent_lowers_loss(model, batch, random_start) -> None:
    x, y = batch
    g = torch.Generator().manual_seed(0)
    delta = pgd(model, x, y, eps=EPS, alpha=ALPHA, steps=10, ascent=False, random_start=random_start, generator=g)
    _check_constraints(x, delta, EPS)
    assert _loss(model, x + delta, y) < _loss(model, x, y) - 0.05


def test_large_step_still_projected(model, batch) -> None:
    x, y = batch
    delta = pgd(model, x, y, eps=EPS, alpha=1.0, steps=3, generator=torch.Generator().manual_seed(0))
    _check_constraints(x, delta, EPS)
    # a sign step of 1.0 saturates every coordinate at the ball's edge unless the box clips it
    inside = (x > EPS) & (x < 1 - EPS)
    assert torch.allclose(delta[inside].abs(), torch.full_like(delta[inside], EPS), atol=1e-6)


def test_custom_box(model, batch) -> None:
    x, y = batch
    x = x * 0.5 + 0.25
    delta = pgd(model, x, y, eps=0.3, alpha=0.1, steps=5, box=(0.2, 0.8), generator=torch.Generator().manual_seed(0))
    assert float((x + delta).min()) >= 0.2 - 1e-6
    assert float((x + delta).max()) <= 0.8 + 1e-6
    assert float(delta.abs().max()) <= 0.3 + 1e-6


@pytest.mark.parametrize(("eps", "steps"), [(EPS, 0), (0.0, 5), (EPS, -1), (-EPS, 3)])
def test_zero_steps_or_eps_returns_zeros(model, batch, eps, steps) -> None:
    x, y = batch
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    delta = pgd(model, x, y, eps=eps, alpha=ALPHA, steps=steps, generator=torch.Generator().manual_seed(0))
    assert delta.shape == x.shape
    assert torch.equal(delta, torch.zeros_like(x))
    assert calls == []


def test_random_start_is_seeded(model, batch) -> None:
    x, y = batch

    def run(seed: int) -> torch.Tensor:
        return pgd(model, x, y, eps=EPS, alpha=EPS / 4, steps=1, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_no_random_start_is_deterministic_without_generator(model, batch) -> None:
    x, y = batch
    a = pgd(model, x, y, eps=EPS, alpha=ALPHA, steps=3, random_start=False)
    b = pgd(model, x, y, eps=EPS, alpha=ALPHA, steps=3, random_start=False)
    assert torch.equal(a, b)


def test_input_not_modified(model, batch) -> None:
    x, y = batch
    x_before, y_before = x.clone(), y.clone()
    pgd(model, x, y, eps=EPS, alpha=ALPHA, steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x_before) and torch.equal(y, y_before)


@pytest.mark.parametrize("start_training", [True, False])
def test_mode_restored_and_attack_runs_in_eval(batch, start_training) -> None:
    x, y = batch
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    net.train(start_training)
    seen_modes: list[bool] = []
    net.register_forward_pre_hook(lambda module, _args: seen_modes.append(module.training))
    stats_before = net[1].running_mean.clone()
    pgd(net, x, y, eps=EPS, alpha=ALPHA, steps=3, generator=torch.Generator().manual_seed(0))
    assert seen_modes == [False, False, False]
    assert net.training is start_training
    assert all(m.training is start_training for m in net.modules())
    assert torch.equal(net[1].running_mean, stats_before)  # BN statistics frozen during the attack


@pytest.mark.parametrize("start_training", [True, False])
def test_mode_restored_after_exception(start_training) -> None:
    net = nn.Linear(2, 2).train(start_training)
    with pytest.raises(RuntimeError), eval_mode(net):
        assert not net.training
        raise RuntimeError("boom")
    assert net.training is start_training


def test_pgd_optimize_descent_converges_to_target_inside_ball() -> None:
    g = torch.Generator().manual_seed(0)
    target = uniform_like(torch.empty(4, 3, 5, 5), 0.8 * EPS, g)
    alpha = EPS / 50
    delta = pgd_optimize(
        lambda d: ((d - target) ** 2).sum(), torch.zeros_like(target), eps=EPS, alpha=alpha, steps=200, ascent=False
    )
    # sign steps of size alpha end within one step of the target
    assert float((delta - target).abs().max()) <= alpha + 1e-6
    assert float(delta.abs().max()) <= EPS + 1e-6


def test_pgd_optimize_target_outside_ball_ends_on_the_clamped_target() -> None:
    target = torch.tensor([[2 * EPS, -3 * EPS, 0.5 * EPS]])
    alpha = EPS / 20
    delta = pgd_optimize(
        lambda d: ((d - target) ** 2).sum(), torch.zeros_like(target), eps=EPS, alpha=alpha, steps=100, ascent=False
    )
    assert float((delta - target.clamp(-EPS, EPS)).abs().max()) <= alpha + 1e-6


def test_pgd_optimize_ascent_goes_to_the_corner() -> None:
    w = torch.tensor([1.0, -2.0, 3.0, -0.5])
    delta = pgd_optimize(lambda d: (w * d).sum(), torch.zeros(4), eps=0.1, alpha=0.03, steps=10, ascent=True)
    assert torch.allclose(delta, 0.1 * w.sign())


def test_pgd_optimize_does_not_modify_init_and_applies_projection() -> None:
    init = torch.zeros(3, requires_grad=False)
    delta = pgd_optimize(
        lambda d: d.sum(), init, eps=1.0, alpha=0.5, steps=4, ascent=True, project=lambda d: d.clamp(max=0.25)
    )
    assert torch.equal(init, torch.zeros(3))
    assert torch.allclose(delta, torch.full((3,), 0.25))
    assert not delta.requires_grad


def test_pgd_optimize_zero_steps_returns_copy_of_init() -> None:
    init = torch.full((2, 2), 0.01)
    out = pgd_optimize(lambda d: d.sum(), init, eps=1.0, alpha=0.1, steps=0, ascent=True)
    assert torch.equal(out, init)
    out.add_(1)
    assert torch.equal(init, torch.full((2, 2), 0.01))


def test_box_projection_keeps_sum_in_box() -> None:
    x = torch.tensor([0.0, 0.5, 1.0])
    proj = box_projection(x)
    assert torch.allclose(proj(torch.tensor([-0.1, 0.2, 0.1])), torch.tensor([0.0, 0.2, 0.0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uniform_like_in_range_shape_dtype_and_seeded(dtype) -> None:
    x = torch.empty((64, 3, 8, 8), dtype=dtype)
    a = uniform_like(x, 0.25, torch.Generator().manual_seed(3))
    b = uniform_like(x, 0.25, torch.Generator().manual_seed(3))
    c = uniform_like(x, 0.25, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and a.dtype == dtype and a.device == x.device
    assert float(a.abs().max()) <= 0.25
    assert float(a.min()) < -0.2 and float(a.max()) > 0.2  # covers the interval
    assert abs(float(a.mean())) < 0.01
    assert torch.equal(a, b) and not torch.equal(a, c)
