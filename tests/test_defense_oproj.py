"""``oproj`` (orthogonal projection): a linear model fitted to the protected set, its class directions projected
out of every training batch; class-wise shortcuts go with them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmarks.plugins import load_plugins
from benchmarks.registry import DEFENSES, VICTIMS
from benchmarks.train import TrainRecipe, fit
from benchmarks.types import Context, ImageSet
from victims.defenses.oproj import OrthogonalProjection, fit_linear, orthonormal_basis

load_plugins()

pytestmark = pytest.mark.usefixtures("one_torch_thread")

K, SHAPE = 4, (3, 8, 8)


def _shortcut_set(n: int = 400, seed: int = 0) -> tuple[ImageSet, torch.Tensor]:
    """Random images plus a class-wise +-24/255 pattern: a linearly separable shortcut. Also returns the patterns."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % K
    patterns = torch.randint(0, 2, (K, *SHAPE), generator=g).float() * 48 - 24
    base = torch.randint(60, 196, (n, *SHAPE), generator=g).float()
    x = (base + patterns[y]).round().clamp(0, 255).to(torch.uint8)
    return ImageSet(x, y, K, "shortcut"), patterns


def test_linear_fit_follows_the_cross_entropy_gradient() -> None:
    data, _ = _shortcut_set(n=40)
    weights = fit_linear(data, torch.device("cpu"), epochs=1, lr=0.1, batch_size=16)
    # the same with autograd: three batches of 16, 16 and 8 in stored order, from zero
    w = torch.zeros(K, 192, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    for start in (0, 16, 32):
        x = data.x[start : start + 16].flatten(1).float() / 255
        opt.zero_grad()
        F.cross_entropy(x @ w.t(), data.y[start : start + 16]).backward()
        opt.step()
    torch.testing.assert_close(weights, w.detach(), rtol=1e-5, atol=1e-6)


def test_basis_is_orthonormal_and_spans_the_weights() -> None:
    weights = torch.randn(K, 50, generator=torch.Generator().manual_seed(1))
    q = orthonormal_basis(weights)
    torch.testing.assert_close(q.t() @ q, torch.eye(K), atol=1e-5, rtol=0)
    residual = weights.t() - q @ (q.t() @ weights.t())
    assert float(residual.norm()) < 1e-4 * float(weights.norm())


def test_projection_removes_the_learned_directions_and_the_class_shortcut() -> None:
    data, patterns = _shortcut_set()
    defense = DEFENSES.get("oproj")()
    defense.setup(data, Context(progress=False))
    x = data.x[:64].float() / 255
    prepared = defense.prepare(x)
    q = defense.basis
    assert float((prepared.flatten(1) @ q).abs().max()) < 1e-4, "nothing left along the class directions"
    # the shortcut's class-wise differences lie mostly in the removed span
    centred = (patterns - patterns.mean(0)).flatten(1) / 255
    kept = centred - (centred @ q) @ q.t()
    assert float(kept.norm()) < 0.35 * float(centred.norm())
    # and the linear model that found it cannot use it any more: chance level after projection
    w = fit_linear(data, torch.device("cpu"), 20, 0.1, 1024)
    before = ((x.flatten(1) @ w.t()).argmax(1) == data.y[:64]).float().mean()
    after = ((prepared.flatten(1) @ w.t()).argmax(1) == data.y[:64]).float().mean()
    assert float(before) > 0.95 and float(after) < 0.5


def test_prepare_before_setup_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="setup"):
        OrthogonalProjection().prepare(torch.zeros(2, *SHAPE))


def test_fit_projects_training_batches_only() -> None:
    data, _ = _shortcut_set(n=64)
    test, _ = _shortcut_set(n=32, seed=1)
    ctx = Context(progress=False)
    ctx.manual_seed("victim")
    seen: list[torch.Tensor] = []
    model = VICTIMS.get("tiny_cnn")(K, 3)
    model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()) if model.training else None)
    defense = OrthogonalProjection(epochs=2)
    fit(model, data, test, defense, TrainRecipe("t", steps=2, batch_size=16, eval_every=2, augment="none"), ctx)
    assert seen and all(float((b.flatten(1) @ defense.basis).abs().max()) < 1e-4 for b in seen)


@pytest.mark.parametrize("options", [{"epochs": 0}, {"lr": -1.0}, {"batch_size": 0}])
def test_bad_options(options: dict) -> None:
    with pytest.raises(ValueError, match="oproj:"):
        OrthogonalProjection(**options)
