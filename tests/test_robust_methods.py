"""The defining property of each robust method, checked on tiny data (algorithms.md sections 2, 4, 5)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from benchmarks.data import make_synthetic
from benchmarks.noise import Meter
from benchmarks.pgd import pgd
from benchmarks.registry import METHODS, VICTIMS
from benchmarks.types import Budget, Context, ImageSet
from methods import _minmin
from methods.tap import target_labels

FAST = {"surrogate": "tiny_cnn", "steps": 3, "batch_size": 16, "noise_steps": 2, "samples": 2, "adv_steps": 2}


@pytest.fixture(scope="module")
def train() -> ImageSet:
    data, _ = make_synthetic(n_train=64, n_test=8, num_classes=4, shape=(3, 16, 16))
    return data


def _model(train: ImageSet, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return VICTIMS.get("tiny_cnn")(train.num_classes, train.shape[0]).eval()


def _views(train: ImageSet, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    return train.x[:n].float() / 255, train.y[:n]


def test_rem_inner_step_raises_the_loss(train: ImageSet) -> None:
    """REM's objective is the loss at the inner maximiser: never below the loss at the view itself."""
    rem = METHODS.get("rem")(**FAST, inner_steps=5)
    model = _model(train)
    x, y = _views(train)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        plain = float(F.cross_entropy(model(x), y))
    assert float(rem.objective(model, x, y, g).detach()) > plain
    delta = pgd(model, x, y, eps=4 / 255, alpha=0.8 / 255, steps=5, generator=g)
    assert float(delta.abs().max()) <= 4 / 255 + 1e-6


def test_sem_perturbation_is_uniform_in_its_radius_and_takes_no_gradient_steps(train: ImageSet, monkeypatch) -> None:
    """SEM draws r ~ U[-rho_r, rho_r] once per sample; no PGD runs inside its objective."""
    sem = METHODS.get("sem")(**FAST, sample_radius=2.0)
    model = _model(train)
    x, y = _views(train)
    seen: list[torch.Tensor] = []
    forward = model.forward

    def spy(inp: torch.Tensor) -> torch.Tensor:
        seen.append(inp.detach().clone())
        return forward(inp)

    monkeypatch.setattr(model, "forward", spy)
    sem.objective(model, x, y, torch.Generator().manual_seed(0))
    assert len(seen) == 1, "one forward per evaluation: no gradient steps on r (REM's inner PGD would take K_a + 1)"
    r = seen[0] - x
    inside = (x > 2 / 255) & (x < 1 - 2 / 255)  # away from the box, where the clamp does not act
    assert float(r.abs().max()) <= 2 / 255 + 1e-6
    assert float(r[inside].abs().mean()) == pytest.approx(1 / 255, rel=0.1)  # mean |U[-a, a]| = a / 2


def test_sem_and_rem_differ_only_in_the_objective(train: ImageSet, monkeypatch) -> None:
    """Both run through the one alternation of methods._minmin (no copied loops)."""
    calls: list[str] = []
    real = _minmin.run_minmin

    def spy(*args, **kwargs):
        calls.append(args[-1])
        return real(*args, **kwargs)

    for name in ("em", "rem", "sem"):
        module = __import__(f"methods.{name}", fromlist=["run_minmin"])
        monkeypatch.setattr(module, "run_minmin", spy)
        options = {
            k: v for k, v in FAST.items() if name != "em" or k in ("surrogate", "steps", "batch_size", "noise_steps")
        }
        method = METHODS.get(name)(**options)
        method.generate(train, Budget(), Context(progress=False))
    assert calls == ["em", "rem", "sem"]


def test_rem_and_sem_cost_matches_the_pass_count(train: ImageSet) -> None:
    """Forward calls per alternation step: REM K_u*(K_a+1) + (adv_steps+1), SEM K_u + (adv_steps+1)."""
    k_u, k_a, adv = 2, 3, 2
    # max_forward: all J x B views in one forward (a CPU would otherwise run one forward per sample)
    opts = {**FAST, "noise_steps": k_u, "adv_steps": adv, "final_pass": False, "max_forward": 10**6}
    costs = {}
    for name, extra in (("rem", {"inner_steps": k_a}), ("sem", {})):
        meter = Meter()
        METHODS.get(name)(**opts, **extra).perturb(train, Budget(), Context(progress=False), meter)
        costs[name] = meter.forward_calls / meter.steps
    # the EOT samples are one batched forward; PGD's steps each take one forward
    assert costs["rem"] == k_u * (k_a + 1) + adv + 1
    assert costs["sem"] == k_u + adv + 1


def test_tap_moves_predictions_toward_the_target_label(train: ImageSet, tmp_path) -> None:
    """Against a fixed surrogate, TAP's noise raises the share of images predicted as (y + 1) mod C."""
    model = _model(train, seed=1)
    path = tmp_path / "surrogate.safetensors"
    save_file(model.state_dict(), str(path))
    tap = METHODS.get("tap")(surrogate="tiny_cnn", checkpoint=str(path), steps=20, step_size=1.0, augment="none")
    budget = Budget("linf", 8.0)
    poison = tap.generate(train, budget, Context(progress=False))
    target = target_labels(train.y, train.num_classes)
    with torch.no_grad():
        before = float((model(train.x.float() / 255).argmax(1) == target).float().mean())
        after = float((model(poison.apply(train).x.float() / 255).argmax(1) == target).float().mean())
    assert after > before + 0.3, (before, after)
    assert poison.stats["surrogate"].startswith("checkpoint")


def test_tap_trains_its_surrogate_when_no_checkpoint(train: ImageSet) -> None:
    tap = METHODS.get("tap")(surrogate="tiny_cnn", surrogate_steps=5, surrogate_batch_size=16, steps=1)
    poison = tap.generate(train, Budget(), Context(progress=False))
    assert poison.stats["surrogate"] == "trained 5 steps on clean data"
    assert 0.0 <= poison.stats["surrogate_clean_train_acc"] <= 1.0
    assert poison.stats["forward_calls"] > 5


@pytest.mark.parametrize("bad", [{"checkpoint": "missing.safetensors"}, {"checkpoint": "weights.pt"}])
def test_tap_rejects_bad_checkpoints(train: ImageSet, bad) -> None:
    with pytest.raises(ValueError, match="safetensors"):
        METHODS.get("tap")(surrogate="tiny_cnn", **bad).generate(train, Budget(), Context(progress=False))


def test_target_labels_wrap() -> None:
    assert target_labels(torch.tensor([0, 1, 9]), 10).tolist() == [1, 2, 0]


@pytest.mark.parametrize("name", ["rem", "sem"])
def test_final_pass_covers_every_image(train: ImageSet, name: str) -> None:
    """With one step of batch 16 the loop touches 16 images; the final pass gives all 64 noise."""
    method = METHODS.get(name)(**{**FAST, "steps": 1})
    poison = method.generate(train, Budget(), Context(progress=False))
    assert bool((poison.delta.flatten(1).abs().sum(1) > 0).all())
