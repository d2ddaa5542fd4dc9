"""``asr`` (Fang et al., CVPR 2024): EM noise steps, an adversarially trained surrogate whose predictions on the
clean images are pushed toward the uniform distribution, through the one alternation of methods._minmin."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import benchmarks.train
import methods.asr  # noqa: F401  (registers "asr" whether or not methods/__init__.py imports it)
from benchmarks.data import make_synthetic
from benchmarks.noise import Meter
from benchmarks.registry import METHODS, VICTIMS
from benchmarks.types import Budget, Context, ImageSet
from methods import _minmin
from methods.asr import ASRNoise, uniform_penalty
from methods.em import cross_entropy_objective

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST: dict[str, Any] = {
    "surrogate": "tiny_cnn",
    "steps": 4,
    "batch_size": 16,
    "noise_steps": 2,
    "samples": 2,
    "adv_steps": 2,
    "final_pass": False,
}


@pytest.fixture(scope="module")
def train() -> ImageSet:
    data, _ = make_synthetic(n_train=64, n_test=8, num_classes=4, shape=(3, 16, 16))
    return data


def _entropy(probs: Tensor) -> float:
    return float(-(probs * probs.clamp_min(1e-12).log()).sum(1).mean())


def test_registered_with_the_code_defaults() -> None:
    method = METHODS.get("asr")()
    assert isinstance(method, ASRNoise) and method.norms == ("linf",) and not method.classwise
    c = method.config
    # run.sh of the official code: REM's generation numbers, EM noise steps, surrogate PGD-10 at 4/255, weight 1
    assert (c.steps, c.batch_size, c.lr, c.lr_decay_every) == (5000, 128, 0.1, 2000)
    assert (c.noise_steps, c.noise_step_size, c.samples) == (10, 1.6, 5)
    assert (c.adv_radius, c.adv_steps, c.adv_step_size) == (4.0, 10, 0.8)
    assert (c.weight, c.penalty) == (1.0, "l2")
    assert "CVPR 2024" in method.citation and method.url == "https://arxiv.org/abs/2305.10691"
    with pytest.raises(ValueError, match="asr.weight"):
        ASRNoise(weight=-1.0)


def test_uniform_penalty() -> None:
    k = 10
    assert float(uniform_penalty(torch.zeros(3, k))) == 0.0
    one_hot = torch.full((2, k), -1e4)
    one_hot[:, 0] = 1e4
    assert float(uniform_penalty(one_hot)) == pytest.approx(math.sqrt(1 - 1 / k))
    assert float(uniform_penalty(one_hot, squared=True)) == pytest.approx(1 - 1 / k)
    # the batch mean of per-sample distances (not the distance of the mean)
    mixed = torch.cat([torch.zeros(1, k), one_hot[:1]])
    assert float(uniform_penalty(mixed)) == pytest.approx(math.sqrt(1 - 1 / k) / 2)


def test_surrogate_loss_is_the_adversarial_loss_plus_the_weighted_penalty(train: ImageSet) -> None:
    """Without adversarial training (adv_radius 0) and augmentation the loss is checked in closed form."""
    torch.manual_seed(0)
    model = VICTIMS.get("tiny_cnn")(train.num_classes, train.shape[0])
    x, y = train.x[:16].float() / 255, train.y[:16]
    protected = (x + 4 / 255).clamp(0, 1)
    for weight, penalty in ((0.0, "l2"), (2.5, "l2"), (2.5, "squared_l2")):
        method = ASRNoise(weight=weight, penalty=penalty, adv_radius=0.0, augment="none")
        cfg = method.config
        with torch.no_grad():
            got = method.train_loss(model, protected, x, y, cfg, torch.Generator().manual_seed(0))
            ce = F.cross_entropy(model(protected), y)
            expect = ce + weight * uniform_penalty(model(x), squared=penalty == "squared_l2")
        assert float(got) == pytest.approx(float(expect), rel=1e-5)


def test_adversarial_training_is_on(train: ImageSet, monkeypatch) -> None:
    """Every surrogate step attacks the protected batch with PGD at rho_a (the noise steps never do: EM)."""
    calls: list[tuple[float, int]] = []
    real = benchmarks.train.pgd

    def spy(*args: Any, **kwargs: Any) -> Tensor:
        calls.append((kwargs["eps"], kwargs["steps"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(benchmarks.train, "pgd", spy)
    meter = Meter()
    ASRNoise(**FAST).perturb(train, Budget(), Context(progress=False), meter)
    assert calls == [(4.0 / 255, FAST["adv_steps"])] * FAST["steps"]
    # forward calls per step: K_u x J (on a CPU one forward per EOT sample) + PGD steps + the adversarial and the
    # clean forward
    per_step = FAST["noise_steps"] * FAST["samples"] + FAST["adv_steps"] + 2
    assert meter.forward_calls == FAST["steps"] * per_step
    calls.clear()
    ASRNoise(**FAST, adv_radius=0.0).perturb(train, Budget(), Context(progress=False), Meter())
    assert calls == []


def test_clean_predictions_move_toward_uniform(train: ImageSet) -> None:
    """The defining property: with the penalty the final surrogate's predictions on the clean images are far
    closer to uniform (higher entropy) than without it.

    Labels independent of the images (as for data whose clean features a surrogate cannot pick up quickly):
    only the noise explains them, so without the penalty the surrogate memorises the clean images too.
    """
    labels = train.y[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))]
    data = ImageSet(train.x, labels, train.num_classes, "shuffled labels")
    options = {**FAST, "steps": 40, "batch_size": 32, "noise_steps": 3, "samples": 1, "lr": 0.05}
    options |= {"adv_step_size": 2.0, "augment": "none"}
    x = data.x.float() / 255
    entropy, distance = {}, {}
    for weight in (0.0, 1.0):
        meter = Meter()
        ASRNoise(**options, weight=weight).perturb(data, Budget(), Context(progress=False), meter)
        assert meter.surrogate is not None
        with torch.no_grad():
            logits = meter.surrogate.eval()(x)
        entropy[weight], distance[weight] = _entropy(logits.softmax(1)), float(uniform_penalty(logits))
    assert entropy[1.0] > 5 * entropy[0.0] and entropy[1.0] > entropy[0.0] + 0.1, entropy
    assert distance[1.0] < distance[0.0], distance


def test_the_hook_leaves_the_alternation_unchanged(train: ImageSet) -> None:
    """A surrogate_loss that computes today's loss gives the bank of the default, bit for bit (no extra draws)."""
    cfg = ASRNoise(**FAST).config

    def same(
        model: torch.nn.Module, protected: Tensor, clean: Tensor, y: Tensor, cfg: Any, generator: torch.Generator
    ) -> Tensor:
        return _minmin.surrogate_loss(model, protected, y, cfg, generator)

    banks = [
        _minmin.run_minmin(train, Budget(), Context(progress=False), Meter(), cfg, cross_entropy_objective, "t", hook)
        for hook in (None, same)
    ]
    assert torch.equal(banks[0], banks[1])
