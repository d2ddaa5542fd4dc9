"""benchmarks.robustness on tiny data: an adversarially trained surrogate is the more robust one."""

from __future__ import annotations

import pytest
import torch

from benchmarks.data import make_synthetic
from benchmarks.registry import DEFENSES, METHODS, VICTIMS
from benchmarks.robustness import robustness, victim_robustness
from benchmarks.train import TrainRecipe, evaluate, fit
from benchmarks.types import Budget, Context


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_train=512, n_test=128, num_classes=4, shape=(1, 16, 16))


def _trained(train, test, defense: str):
    ctx = Context(progress=False)
    ctx.manual_seed("victim")
    model = VICTIMS.get("tiny_cnn")(train.num_classes, 1)
    recipe = TrainRecipe("t", steps=60, batch_size=32, lr=0.05, schedule="cosine", eval_every=60)
    fit(model, train, test, DEFENSES.get(defense)(), recipe, ctx)
    return model


@pytest.fixture(scope="module")
def victims(data):
    train, test = data
    return {defense: _trained(train, test, defense) for defense in ("none", "at8")}


@pytest.mark.timeout(600)
def test_adversarial_training_raises_surrogate_robustness(data, victims) -> None:
    train, test = data
    ctx = Context(progress=False)
    plain = robustness(victims["none"], test, ctx, radius=8.0)
    robust = robustness(victims["at8"], test, ctx, radius=8.0)
    assert robust["surrogate_robust_acc"] > plain["surrogate_robust_acc"] + 0.05, (plain, robust)
    assert robust["noise_loss_rise"] < plain["noise_loss_rise"], (plain, robust)
    for out in (plain, robust):
        assert 0.0 <= out["surrogate_robust_acc"] <= out["surrogate_clean_acc"] <= 1.0
        assert out["noise_robustness"] == -out["noise_loss_rise"]
        assert out["robustness_images"] == len(test) and out["robustness_radius"] == 8.0


class _Constant(torch.nn.Module):
    """Always predicts class 0 of 4, whatever the input (its gradient with respect to the input is zero)."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(x), 4) + 0 * x.flatten(1).sum(1, keepdim=True)


def test_constant_model_is_perfectly_robust(data) -> None:
    train, _ = data
    out = robustness(_Constant(), train, Context(progress=False), max_images=64)
    assert out["surrogate_robust_acc"] == out["surrogate_clean_acc"] == 0.25
    assert out["noise_loss_rise"] == pytest.approx(0.0, abs=1e-6)
    assert out["robustness_images"] == 64


@pytest.mark.timeout(600)
def test_victim_robustness_sees_adversarial_training(data, victims) -> None:
    """The victim's robust accuracy: higher after adversarial training, never above its clean accuracy, per class
    consistent with the totals, the same on a rerun (the attack's start is seeded from the context)."""
    _, test = data
    ctx = Context(progress=False, seed=3)
    plain = victim_robustness(victims["none"], test, ctx, radius=8.0, max_images=64)
    robust = victim_robustness(victims["at8"], test, ctx, radius=8.0, max_images=64)
    assert robust["robust_acc"] > plain["robust_acc"] + 0.05, (plain, robust)
    assert victim_robustness(victims["none"], test, ctx, radius=8.0, max_images=64) == plain
    counts = torch.bincount(test.y, minlength=4).double()
    for model, out in ((victims["none"], plain), (victims["at8"], robust)):
        assert out["images"] == 64 and out["radius"] == 8.0 and "PGD-10" in out["attack"]
        assert 0.0 <= out["robust_acc"] <= out["clean_acc"] <= 1.0
        per_class = torch.tensor(out["per_class_acc"], dtype=torch.float64)
        assert float((per_class * counts).sum() / counts.sum()) == pytest.approx(evaluate(model, test, ctx))
        assert sum(out["per_class_robust_acc"]) / 4 == pytest.approx(out["robust_acc"])  # 16 images per class
    with pytest.raises(ValueError, match="radius must be positive"):
        victim_robustness(victims["none"], test, ctx, radius=0.0)


def test_victim_robustness_of_a_constant_model_and_a_test_view(data) -> None:
    _, test = data
    seen: list[tuple[int, ...]] = []

    def view(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape[-2:]))
        return x[..., 2:-2, 2:-2]

    out = victim_robustness(_Constant(), test, Context(progress=False), view=view, max_images=64)
    assert out["robust_acc"] == out["clean_acc"] == 0.25 and out["radius"] == 4.0
    assert out["per_class_acc"] == out["per_class_robust_acc"] == [1.0, 0.0, 0.0, 0.0]
    assert seen and set(seen) == {(16, 16)}  # the attack perturbs the stored image; the view crops inside


def test_generation_stats_carry_robustness_for_surrogate_methods(data) -> None:
    train, _ = data
    sem = METHODS.get("sem")(surrogate="tiny_cnn", steps=2, batch_size=32, noise_steps=1, samples=1, adv_steps=1)
    stats = sem.generate(train, Budget(), Context(progress=False)).stats
    assert stats["robustness_radius"] == 4.0  # SEM's rho_a
    assert 0.0 <= stats["surrogate_robust_acc"] <= 1.0 and "noise_robustness" in stats
    # at 4/255 the own numbers are the fixed-radius ones; at another rho_a both are measured, PGD at 8/255 is harder
    assert stats["surrogate_robust_acc_fixed"] == stats["surrogate_robust_acc"]
    assert stats["noise_robustness_fixed"] == stats["noise_robustness"]
    wide = METHODS.get("sem")(
        surrogate="tiny_cnn", steps=2, batch_size=32, noise_steps=1, samples=1, adv_steps=1, adv_radius=8.0
    )
    stats = wide.generate(train, Budget(), Context(progress=False)).stats
    assert stats["robustness_radius"] == 8.0
    assert stats["noise_robustness"] < stats["noise_robustness_fixed"]  # a larger CE rise at 8/255 than at 4/255
    assert stats["surrogate_robust_acc"] <= stats["surrogate_robust_acc_fixed"]
    rnd = METHODS.get("random")().generate(train, Budget(), Context(progress=False)).stats
    assert "surrogate_robust_acc" not in rnd
