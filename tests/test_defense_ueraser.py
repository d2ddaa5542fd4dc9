"""UEraser: heavy batched augmentation (lite) and the per-image maximum loss over repeated views (max)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from benchmarks.plugins import load_plugins
from benchmarks.registry import DEFENSES, VICTIMS
from victims.defenses.ueraser import UEraser

load_plugins()

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(8, 3, 16, 16, generator=g), torch.arange(8) % 4


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_lite_augments_heavily_and_reproducibly() -> None:
    x, y = _batch()
    d = DEFENSES.get("ueraser-lite")()
    a, ya = d.augment(x, y, _gen(1))
    assert a.shape == x.shape and torch.equal(ya, y)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert float((a - x).abs().mean()) > 0.05, "heavy: far from the input"
    assert torch.equal(a, d.augment(x, y, _gen(1))[0]), "a function of the generator"
    assert not torch.equal(a, d.augment(x, y, _gen(2))[0])
    # per image: the images of one batch get different draws
    assert not torch.allclose((a - x)[0], (a - x)[1])


def test_the_global_generator_is_left_alone() -> None:
    x, y = _batch()
    torch.manual_seed(5)
    expect = torch.rand(3)
    torch.manual_seed(5)
    DEFENSES.get("ueraser-lite")().augment(x, y, _gen(1))
    assert torch.equal(torch.rand(3), expect)


def test_max_takes_the_largest_loss_of_the_repeats_per_image() -> None:
    x, y = _batch()
    d = DEFENSES.get("ueraser-max")()
    assert d.repeats == 5 and d.name == "ueraser-max"
    assert torch.equal(d.augment(x, y, _gen(0))[0], x), "the views are drawn in the loss"
    model = VICTIMS.get("tiny_cnn")(4, 3).eval()  # eval: the same logits for the same views
    loss, logits = d.loss(model, x, y, _gen(3))
    views = d._draw(x.repeat(5, 1, 1, 1), _gen(3))
    with torch.no_grad():
        per_view = F.cross_entropy(model(views), y.repeat(5), reduction="none").view(5, 8)
        all_logits = model(views).view(5, 8, -1)
    torch.testing.assert_close(loss, per_view.max(0).values.mean())
    worst = per_view.argmax(0)
    torch.testing.assert_close(logits, all_logits[worst, torch.arange(8)])
    assert float(loss.detach()) >= float(per_view.mean()), "the maximum is at least the mean"


def test_max_with_soft_labels() -> None:
    x, y = _batch()
    model = VICTIMS.get("tiny_cnn")(4, 3)
    loss, logits = UEraser(3).loss(copy.deepcopy(model), x, F.one_hot(y, 4).float(), _gen(0))
    assert loss.isfinite() and logits.shape == (8, 4)


def test_bad_repeats() -> None:
    with pytest.raises(ValueError, match="ueraser: repeats"):
        UEraser(0)
