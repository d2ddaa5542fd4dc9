"""NTGA (methods/ntga.py): the closed-form NTK, the kernel regression, its chunked gradient, and the attack."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import jacrev, vmap

import methods.ntga  # noqa: F401  (registers "ntga")
from benchmarks.data import make_synthetic
from benchmarks.noise import Meter, NoiseMethod
from benchmarks.registry import METHODS
from benchmarks.types import Budget, Context, ImageSet, Poison
from methods.ntga import NeuralTangentGeneralizationAttack, NTGAConfig, generalization_loss, ntk, regression_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RADIUS = 8.0
#: the options of the contract test's 32 images of 3x16x16 (about 0.1 s)
TINY: dict[str, Any] = {"block_size": 8, "val_size": 16, "steps": 2}
FAST: dict[str, Any] = {"block_size": 16, "val_size": 32, "steps": 5}


@pytest.fixture(scope="module")
def train() -> ImageSet:
    data, _ = make_synthetic(n_train=64, n_test=8, num_classes=4, shape=(3, 16, 16))
    return data


def _generate(method: NoiseMethod, data: ImageSet, seed: int = 0) -> Poison:
    return method.generate(data, method.budget(data.shape, RADIUS), Context(seed=seed, progress=False))


def _floats(data: ImageSet) -> Tensor:
    return data.x.to(torch.float64) / 255


# ----------------------------------------------------------------------------------------------- kernel


def _wide_fnn(
    inputs: int, depth: int, width: int, activation: str, config: NTGAConfig
) -> tuple[dict[str, Tensor], Callable]:
    """A finite ``depth`` x [Dense, act] network in the NTK parameterisation, read out along a random unit vector."""
    dims = [inputs] + [width] * depth
    params = {}
    for i in range(depth):
        params[f"w{i}"] = torch.randn(dims[i + 1], dims[i], dtype=torch.float64)
        params[f"b{i}"] = torch.randn(dims[i + 1], dtype=torch.float64)
    readout = F.normalize(torch.randn(width, dtype=torch.float64), dim=0)
    act = torch.erf if activation == "erf" else torch.relu

    def net(p: dict[str, Tensor], x: Tensor) -> Tensor:
        h = x.flatten()
        for i in range(depth):
            scale = math.sqrt(config.weight_var / dims[i])
            h = act(scale * p[f"w{i}"] @ h + math.sqrt(config.bias_var) * p[f"b{i}"])
        return readout @ h

    return params, net


def _wide_cnn(width: int, config: NTGAConfig) -> tuple[dict[str, Tensor], Callable]:
    """2 x [Conv 5x5 stride 2 SAME, ReLU], Flatten, 3 x Dense on 3x8x8 inputs (the official cnn surrogate)."""
    size, stride = config.filter_size, config.stride
    chans = [3, width, width]
    dense = [width * 2 * 2, width, width, width]
    params = {}
    for i in range(2):
        params[f"w{i}"] = torch.randn(chans[i + 1], chans[i], size, size, dtype=torch.float64)
        params[f"b{i}"] = torch.randn(chans[i + 1], dtype=torch.float64)
    for j in range(3):
        params[f"d{j}"] = torch.randn(dense[j + 1], dense[j], dtype=torch.float64)
        params[f"c{j}"] = torch.randn(dense[j + 1], dtype=torch.float64)
    readout = F.normalize(torch.randn(width, dtype=torch.float64), dim=0)

    def same(h: Tensor) -> Tensor:
        side = h.shape[-1]
        total = max((math.ceil(side / stride) - 1) * stride + size - side, 0)
        return F.pad(h, [total // 2, total - total // 2] * 2)

    def net(p: dict[str, Tensor], x: Tensor) -> Tensor:
        h = x[None]
        for i in range(2):
            scale = math.sqrt(config.weight_var / (chans[i] * size * size))
            conv = F.conv2d(same(h), p[f"w{i}"], stride=stride)
            h = torch.relu(scale * conv + math.sqrt(config.bias_var) * p[f"b{i}"][None, :, None, None])
        h = h.flatten()
        for j in range(3):
            h = math.sqrt(config.weight_var / dense[j]) * p[f"d{j}"] @ h + math.sqrt(config.bias_var) * p[f"c{j}"]
        return readout @ h

    return params, net


def _empirical_ntk(params: dict[str, Tensor], net: Callable, x: Tensor) -> Tensor:
    """``J J^T`` of the scalar network at ``x`` (per-sample parameter gradients by torch.func)."""
    jac = vmap(jacrev(net), in_dims=(None, 0))(params, x)
    flat = torch.cat([j.flatten(1) for j in jac.values()], 1)
    return flat @ flat.T


@pytest.mark.parametrize(
    ("kernel", "activation", "width", "seeds"),
    [("fnn", "erf", 128, 48), ("fnn", "relu", 128, 48), ("cnn", None, 64, 32)],
)
def test_closed_form_ntk_is_the_wide_network_limit(kernel: str, activation: str | None, width: int, seeds: int) -> None:
    """The closed-form NTK matches the mean empirical NTK of finite networks of the same architecture."""
    data, _ = make_synthetic(n_train=4, n_test=1, num_classes=2, shape=(3, 8, 8))
    x = _floats(data)
    config = NTGAConfig(kernel=kernel, activation=activation, depth=3 if kernel == "fnn" else None)  # type: ignore[arg-type]
    closed = ntk(x, x, config)
    torch.manual_seed(0)
    total = torch.zeros_like(closed)
    for _ in range(seeds):
        if kernel == "fnn":
            params, net = _wide_fnn(x[0].numel(), 3, width, config.act, config)
        else:
            params, net = _wide_cnn(width, config)
        total += _empirical_ntk(params, net, x)
    empirical = total / seeds
    assert torch.allclose(empirical, closed, rtol=0.05), (empirical, closed)
    assert torch.allclose(ntk(x[:2], x, config), closed[:2], rtol=1e-12)  # rows are independent of the others
    assert float(torch.linalg.eigvalsh(closed).min()) > 0


def test_official_architecture_defaults() -> None:
    config = NeuralTangentGeneralizationAttack().config
    assert (config.kernel, config.act, config.layers) == ("fnn", "erf", 5)
    assert (config.weight_var, config.bias_var, config.diag_reg, config.t) == (1.76, 0.18, 1e-4, 64.0)
    assert (config.block_size, config.val_size, config.steps, config.step_size) == (512, 10_000, 10, None)
    cnn = NeuralTangentGeneralizationAttack(kernel="cnn").config
    assert (cnn.act, cnn.layers, cnn.filter_size, cnn.stride) == ("relu", 2, 5, 2)


# ----------------------------------------------------------------------------------------------- regression


def _block(train: ImageSet, n: int = 16) -> tuple[Tensor, Tensor]:
    k = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))[0]
    spectrum = torch.logspace(-3, 1, n, dtype=torch.float64)
    y = F.one_hot(train.y[:n], train.num_classes).to(torch.float64)
    return k @ torch.diag(spectrum) @ k.T, y


def test_regression_is_gradient_flow_on_the_mse(train: ImageSet) -> None:
    """A = K^-1 (I - exp(-K t / (n k))) Y, its t -> inf and t -> 0 limits, and its gradient (against matrix_exp)."""
    k_bb, y = _block(train)
    n, reg = len(k_bb), 1e-4
    k_reg = k_bb + reg * k_bb.diagonal().mean() * torch.eye(n, dtype=k_bb.dtype)

    def reference(k: Tensor, t: float) -> Tensor:
        ks = (k + k.T) / 2
        kr = ks + reg * ks.diagonal().mean() * torch.eye(n, dtype=k.dtype)
        return torch.linalg.solve(kr, y - torch.linalg.matrix_exp(-kr * t / y.numel()) @ y)

    for t in (0.5, 64.0, 1e3):
        assert torch.allclose(regression_weights(k_bb, y, t, reg), reference(k_bb, t), rtol=1e-9, atol=1e-12)
    assert torch.allclose(regression_weights(k_bb, y, None, reg), torch.linalg.solve(k_reg, y), rtol=1e-9)
    assert torch.allclose(regression_weights(k_bb, y, 1e9, reg), torch.linalg.solve(k_reg, y), rtol=1e-6)
    t_small = 1e-6  # early in training every eigen-direction moves at speed lambda: A ~ t Y / (n k)
    assert torch.allclose(regression_weights(k_bb, y, t_small, reg), y * t_small / y.numel(), rtol=1e-4)

    weights = torch.randn(n, y.shape[1], dtype=torch.float64)
    for k in (k_bb, k_bb.clone().index_fill_(0, torch.tensor([0]), 0).index_fill_(1, torch.tensor([0]), 0)):
        ours = k.clone().requires_grad_(True)
        ref = k.clone().requires_grad_(True)
        (g_ours,) = torch.autograd.grad((regression_weights(ours, y, 64.0, reg) * weights).sum(), ours)
        (g_ref,) = torch.autograd.grad((reference(ref, 64.0) * weights).sum(), ref)
        assert torch.allclose(g_ours, g_ref, rtol=1e-6, atol=1e-9 * float(g_ref.abs().max()))


def test_regression_gradient_is_finite_for_duplicate_images(train: ImageSet) -> None:
    """Repeated images give repeated eigenvalues, where the generic eigh backward divides by zero."""
    x = _floats(train)[:8]
    x = torch.cat([x, x]).requires_grad_(True)
    y = F.one_hot(torch.cat([train.y[:8], train.y[:8]]), train.num_classes).to(torch.float64)
    config = NTGAConfig()
    (grad,) = torch.autograd.grad(regression_weights(ntk(x, x, config), y, config.t, config.diag_reg).sum(), x)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().max()) > 0


@pytest.mark.parametrize(
    ("kernel", "t", "loss"), [("fnn", 64.0, "ce"), ("fnn", None, "ce"), ("fnn", 8.0, "mse"), ("cnn", 64.0, "ce")]
)
def test_chunked_gradient_equals_autograd(train: ImageSet, kernel: str, t: float | None, loss: str) -> None:
    """The attack's chunk-by-chunk gradient is the gradient of generalization_loss, masked rows left out."""
    method = NeuralTangentGeneralizationAttack(kernel=kernel, t=t, loss=loss, val_batch=5)
    x = _floats(train)
    x_b, y_b, x_val, y_val = x[:16], train.y[:16], x[16:], train.y[16:]
    weight = torch.ones(len(x_val), dtype=torch.float64)
    weight[:7] = 0
    leaf = x_b.clone().requires_grad_(True)
    objective = generalization_loss(leaf, y_b, x_val, y_val, train.num_classes, method.config, weight)
    (expected,) = torch.autograd.grad(objective, leaf)
    one_hot = F.one_hot(y_b, train.num_classes).to(torch.float64)
    meter = Meter()
    value, grad = method.objective_and_gradient(x_b, one_hot, x_val, y_val, weight, meter)
    expected_value = float(objective.detach())
    assert value == pytest.approx(expected_value, rel=1e-8)
    assert method.objective(x_b, one_hot, x_val, y_val, weight, meter) == pytest.approx(expected_value, rel=1e-8)
    assert torch.allclose(grad, expected, rtol=1e-6, atol=1e-7 * float(expected.abs().max()))
    assert meter.forward_calls > 0


# ----------------------------------------------------------------------------------------------- attack


def _block_losses(method: NeuralTangentGeneralizationAttack, clean: ImageSet, data: ImageSet) -> Tensor:
    """generalization_loss of every block of ``data`` (seed 0), validated on the clean images outside the block."""
    blocks, val = method.plan(len(clean), Context(seed=0, progress=False))
    x, x_clean = _floats(data), _floats(clean)
    out = []
    for block in blocks:
        weight = (~torch.isin(val, block)).to(torch.float64)
        out.append(
            generalization_loss(
                x[block], data.y[block], x_clean[val], clean.y[val], clean.num_classes, method.config, weight
            )
        )
    return torch.stack(out)


@pytest.mark.parametrize("kernel", ["fnn", "cnn"])
def test_attack_raises_the_generalization_loss(train: ImageSet, kernel: str) -> None:
    """The defining property: the published (quantised) poison raises the NTK regression's clean-validation loss
    in every block, far more than random noise of the same budget does."""
    method = NeuralTangentGeneralizationAttack(kernel=kernel, **FAST)
    poison = _generate(method, train)
    clean = _block_losses(method, train, train)
    protected = _block_losses(method, train, poison.apply(train))
    random = _block_losses(method, train, _generate(METHODS.get("random")(), train).apply(train))
    gain, random_gain = protected - clean, random - clean
    assert bool((gain > 0.04).all()), (clean, protected)
    # a clear share of the distance from the clean loss to the loss of a chance prediction, log K
    assert float(gain.mean()) > 0.15 * (math.log(train.num_classes) - float(clean.mean()))
    assert float(gain.mean()) > 10 * float(random_gain.abs().mean())
    stats = poison.stats
    assert stats["val_loss_protected"] > stats["val_loss_clean"] + 0.04
    assert stats["val_loss_clean"] == pytest.approx(float(clean.mean()), rel=1e-6)  # equal blocks: plain mean


def test_generate_respects_the_budget(train: ImageSet) -> None:
    method = NeuralTangentGeneralizationAttack(**FAST)
    budget = method.budget(train.shape, RADIUS)
    assert budget == Budget("linf", RADIUS)
    poison = _generate(method, train)
    delta = poison.delta
    assert delta.dtype == torch.int8 and tuple(delta.shape) == tuple(train.x.shape) and not poison.classwise
    assert int(delta.abs().max()) <= RADIUS
    assert int(delta.abs().max()) == RADIUS and float(delta.abs().float().mean()) > RADIUS / 2  # it uses the budget
    total = train.x.to(torch.int16) + delta
    assert int(total.min()) >= 0 and int(total.max()) <= 255
    stats = poison.stats
    assert stats["steps"] == 4 * FAST["steps"] and stats["blocks"] == 4 and stats["validation_images"] == 32
    assert stats["forward_calls"] > 0 and stats["images_forwarded"] > 0


def test_contract_options_are_tiny() -> None:
    data, _ = make_synthetic(n_train=32, n_test=8, num_classes=4, shape=(3, 16, 16))
    poison = _generate(NeuralTangentGeneralizationAttack(**TINY), data)
    assert poison.stats["wall_s"] < 5 and poison.stats["steps"] > 0 and poison.stats["forward_calls"] > 0


def test_deterministic_per_seed(train: ImageSet) -> None:
    method = NeuralTangentGeneralizationAttack(**FAST)
    first = _generate(method, train, seed=0).delta
    assert torch.equal(_generate(NeuralTangentGeneralizationAttack(**FAST), train, seed=0).delta, first)
    assert not torch.equal(_generate(method, train, seed=1).delta, first)
    # val_batch is execution-only: chunking the kernel rows leaves the noise unchanged
    assert torch.equal(_generate(NeuralTangentGeneralizationAttack(**FAST, val_batch=3), train, seed=0).delta, first)
    randomised = NeuralTangentGeneralizationAttack(**FAST, random_start=True)
    start = _generate(randomised, train, seed=0).delta
    assert torch.equal(_generate(randomised, train, seed=0).delta, start) and not torch.equal(start, first)


def test_plan_covers_every_image_once(train: ImageSet) -> None:
    method = NeuralTangentGeneralizationAttack(block_size=24, val_size=1000)
    blocks, val = method.plan(len(train), Context(seed=0, progress=False))
    assert [len(b) for b in blocks] == [22, 21, 21]  # ceil(64 / 24) near-equal blocks, none dropped
    assert torch.equal(torch.cat(blocks).sort().values, torch.arange(len(train)))
    assert torch.equal(val, torch.arange(len(train)))  # val_size is capped at N


def test_one_step_of_size_eps_is_the_official_fgsm(train: ImageSet) -> None:
    """steps=1, step_size=radius from zero: eps * sign of the objective's gradient at the clean block, as the
    official loop (gradient always at the clean block, step eps) computes."""
    data = ImageSet(train.x[:16], train.y[:16], train.num_classes, "block")
    method = NeuralTangentGeneralizationAttack(block_size=8, val_size=16, steps=1, step_size=RADIUS)
    poison = _generate(method, data)
    blocks, val = method.plan(len(data), Context(seed=0, progress=False))
    x = _floats(data)
    expect = torch.zeros_like(x)
    for block in blocks:
        leaf = x[block].clone().requires_grad_(True)
        weight = (~torch.isin(val, block)).to(torch.float64)
        loss = generalization_loss(leaf, data.y[block], x[val], data.y[val], data.num_classes, method.config, weight)
        (grad,) = torch.autograd.grad(loss, leaf)
        expect[block] = ((x[block] + RADIUS / 255 * grad.sign()).clamp(0, 1) - x[block]) * 255
    assert torch.equal(poison.delta, expect.round().to(torch.int8))


@pytest.mark.parametrize(
    "options",
    [{"block_size": 0}, {"steps": 0}, {"val_size": -1}, {"t": 0.0}, {"step_size": -1.0}, {"depth": 0}],
)
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="ntga"):
        NeuralTangentGeneralizationAttack(**options)


def test_unknown_kernel_is_refused() -> None:
    with pytest.raises(ValueError, match="kernel"):
        NeuralTangentGeneralizationAttack(kernel="resnet")
