"""``hypo`` (hypocritical perturbations): error-minimising noise against a fixed clean model, TAP's surrogate."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

import methods.hypo  # noqa: F401  (registers "hypo" whether or not methods/__init__.py imports it)
from benchmarks.data import make_synthetic
from benchmarks.noise import Meter
from benchmarks.registry import METHODS
from benchmarks.types import Budget, Context, ImageSet, Poison
from methods.hypo import HypocriticalPerturbation
from methods.tap import TargetedAdversarialPoisoning

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BUDGET = Budget("linf", 8.0)
#: a tiny clean surrogate and a short crafting run
FAST: dict[str, Any] = {
    "surrogate": "tiny_cnn",
    "surrogate_steps": 40,
    "surrogate_batch_size": 32,
    "surrogate_lr": 0.05,
    "steps": 10,
    "step_size": 1.6,
    "batch_size": 32,
}


@pytest.fixture(scope="module")
def train() -> ImageSet:
    data, _ = make_synthetic(n_train=64, n_test=8, num_classes=4, shape=(3, 16, 16))
    return data


def _run(method: HypocriticalPerturbation, data: ImageSet, seed: int = 0) -> tuple[Tensor, Meter]:
    meter = Meter()
    bank = method.perturb(data, BUDGET, Context(seed=seed, progress=False), meter)
    return bank, meter


@torch.no_grad()
def _loss(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Mean CE of ``model`` (eval mode) on uint8 images ``x``."""
    model.eval()
    return float(F.cross_entropy(model(x.float() / 255), y))


def test_registered_with_the_official_defaults() -> None:
    method = METHODS.get("hypo")()
    assert isinstance(method, HypocriticalPerturbation)
    assert method.norms == ("linf",) and not method.classwise
    c = method.config
    # both official codes: 100 steps from the clean image; the 2022 code: eps / 10 at 8/255, augmented
    assert (c.steps, c.step_size, c.random_start, c.samples, c.augment) == (100, 0.8, False, 1, "crop_flip")
    # the fixed model is trained on clean data with the victim recipe, as TAP's
    tap = TargetedAdversarialPoisoning().config
    assert (c.surrogate, c.surrogate_steps, c.surrogate_lr) == (tap.surrogate, tap.surrogate_steps, tap.surrogate_lr)
    assert "NeurIPS 2021" in method.citation and method.url.startswith("https://arxiv.org/")
    with pytest.raises(ValueError, match="hypo.steps"):
        HypocriticalPerturbation(steps=0)
    with pytest.raises(ValueError, match="hypo.surrogate_schedule"):
        HypocriticalPerturbation(surrogate_schedule="linear")


@pytest.mark.parametrize("augment", ["none", "crop_flip"])
def test_noise_makes_the_fixed_model_far_more_confident(train: ImageSet, augment: str) -> None:
    """The defining property: the fixed model's loss on the protected images is far below its loss on the clean
    images, and below its loss under random noise of the same budget."""
    bank, meter = _run(HypocriticalPerturbation(**FAST, augment=augment), train)
    model = meter.surrogate
    assert model is not None
    protected = Poison(bank).apply(train)
    g = torch.Generator().manual_seed(1)
    random = Poison(torch.randint(-8, 9, train.x.shape, generator=g, dtype=torch.int8)).apply(train)
    clean, hypo, rand = (_loss(model, d.x, train.y) for d in (train, protected, random))
    assert hypo < 0.1 * clean, (hypo, clean)
    assert hypo < 0.1 * rand, (hypo, rand)
    assert float(BUDGET.norms(bank).max()) <= 8  # and it used the budget: the noise is not trivially small
    assert float(bank.float().abs().mean()) > 2


def test_the_surrogate_is_taps_clean_model_and_stays_fixed(train: ImageSet) -> None:
    """One code path for the clean surrogate: for the same seed and options it is TAP's model, untouched by
    the crafting (no alternation)."""
    method = HypocriticalPerturbation(**FAST, augment="none")
    _, meter = _run(method, train)
    surrogate_options = {k: v for k, v in FAST.items() if k.startswith("surrogate")}
    tap = TargetedAdversarialPoisoning(**surrogate_options, augment="none")
    reference = tap.surrogate_model(train, Context(seed=0, progress=False), Meter())
    assert meter.surrogate is not None
    for (name, a), (_, b) in zip(meter.surrogate.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    # the cost: the surrogate's training steps, then `steps` per crafted batch
    assert meter.steps == FAST["surrogate_steps"] + FAST["steps"] * 2
    assert meter.extra["surrogate"] == "trained 40 steps on clean data"


def test_a_checkpoint_replaces_the_training(train: ImageSet, tmp_path) -> None:
    method = HypocriticalPerturbation(**FAST, augment="none")
    first, meter = _run(method, train)
    assert meter.surrogate is not None
    path = tmp_path / "clean.safetensors"
    save_file(meter.surrogate.state_dict(), str(path))
    again, loaded = _run(HypocriticalPerturbation(**FAST, augment="none", checkpoint=str(path)), train, seed=5)
    assert loaded.extra["surrogate"] == "checkpoint clean.safetensors"
    assert loaded.steps == FAST["steps"] * 2  # no training
    # zero start, no augmentation: the noise is a function of the fixed model and the images alone
    assert torch.equal(first, again)


def test_seeded_and_reproducible(train: ImageSet) -> None:
    method = HypocriticalPerturbation(**FAST)
    a, _ = _run(method, train, seed=3)
    b, _ = _run(method, train, seed=3)
    c, _ = _run(method, train, seed=4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_random_start_draws_from_the_ball(train: ImageSet) -> None:
    """With ``random_start`` a single descent step from a uniform point is not the zero-start result."""
    options = {**FAST, "steps": 1, "augment": "none"}
    zero, _ = _run(HypocriticalPerturbation(**options), train)
    uniform, _ = _run(HypocriticalPerturbation(**options, random_start=True), train)
    # one 1.6/255 step from zero rounds to +-2 (less at the pixel box); from a uniform point it spreads out
    assert set(zero.unique().tolist()) <= {-2, -1, 0, 1, 2}
    assert len(uniform.unique()) > 5
