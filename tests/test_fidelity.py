"""Fidelity to the authors' code, one test per fix (issue "Numbers a reviewer can trust", section 4).

Each test checks a behaviour of the reference implementation that an earlier version of uebench got
wrong: class-wise EM's per-batch pattern update and full-set surrogate training, SEM's straight-through
clamp and its sampling radius following rho_a. (The training loop's BatchNorm updates and training
accuracy are tested in ``test_defenses.py``; option validation and failing generations in ``test_cli.py``.)
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmarks.data import make_synthetic
from benchmarks.noise import Meter
from benchmarks.registry import METHODS, VICTIMS
from benchmarks.types import Budget, Context, ImageSet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def train() -> ImageSet:
    data, _ = make_synthetic(n_train=200, n_test=8, num_classes=4, shape=(3, 16, 16))
    return data


# ------------------------------------------------------------------------------------------------- em-cw


def _em_cw(**options: object):
    base = {"surrogate": "tiny_cnn", "max_rounds": 1, "train_steps": 2, "stop_error": 0.0}
    return METHODS.get("em-cw")(**{**base, **options})


def test_em_cw_updates_the_patterns_after_every_batch(train: ImageSet) -> None:
    """Official: each batch of the subset replaces its classes' patterns by the mean one-step update.

    With one step of alpha per sample, a pattern moves at most alpha per update. One update per round
    (the old behaviour) leaves max |pattern| <= alpha after one round; ten batches per round move it further.
    """
    alpha = 0.8
    method = _em_cw(subset=1.0, batch_size=20, noise_step_size=alpha)  # 200 images: 10 batches of 20
    meter = Meter()
    patterns = method.perturb(train, Budget("linf", 8.0), Context(progress=False), meter)
    assert float(patterns.abs().max()) * 255 > 3 * alpha + 1e-4
    assert float(patterns.abs().max()) * 255 <= 8.0 + 1e-4
    assert meter.extra["rounds"] == 1


def test_em_cw_surrogate_trains_on_the_whole_training_set(train: ImageSet) -> None:
    """Official: the surrogate's steps draw batches of the whole training set; the subset is only for the
    pattern updates and the stop test. Counted through the forward passes of one round."""
    batch, steps, subset = 64, 3, 0.1  # subset: 20 images, smaller than one training batch
    meter = Meter()
    method = _em_cw(subset=subset, batch_size=batch, train_steps=steps)
    method.perturb(train, Budget("linf", 8.0), Context(progress=False), meter)
    n_sub = round(subset * len(train))
    # training: steps x a full batch of the training set; update: one batch (the whole 20-image subset) with
    # one noise step; stop test: the subset once
    assert meter.images_forwarded == steps * batch + n_sub + n_sub


# --------------------------------------------------------------------------------------------------- sem


def _sem(**options: object):
    return METHODS.get("sem")(surrogate="tiny_cnn", steps=2, batch_size=16, **options)


def _model(train: ImageSet) -> torch.nn.Module:
    torch.manual_seed(0)
    return VICTIMS.get("tiny_cnn")(train.num_classes, train.shape[0]).eval()


def test_sem_gradient_passes_straight_through_the_clamp(train: ImageSet) -> None:
    """Reference: the gradient of the loss at ``clamp(view + r)`` is applied to the view unchanged, also at
    pixels that r pushes outside [0, 1] (inside autograd the clamp would zero them)."""
    sem = _sem(sample_radius=32.0)
    model = _model(train)
    views = train.x[:16].float() / 255
    views[:, :, :4], views[:, :, -4:] = 0.0, 1.0  # black and white borders, as real images have
    views.requires_grad_(True)
    y = train.y[:16]
    (grad,) = torch.autograd.grad(sem.objective(model, views, y, torch.Generator().manual_seed(3)), views)

    r = (torch.rand(views.shape, generator=torch.Generator().manual_seed(3)) * 2 - 1) * 32 / 255
    point = (views.detach() + r).clamp(0, 1).requires_grad_(True)
    (expect,) = torch.autograd.grad(F.cross_entropy(model(point), y), point)
    clipped = (views.detach() + r < 0) | (views.detach() + r > 1)
    assert clipped.float().mean() > 0.05  # the test exercises the clamp
    assert torch.allclose(grad, expect, atol=1e-7)
    assert float(grad[clipped].abs().sum()) > 0


@pytest.mark.parametrize(
    ("options", "rho_r"), [({}, 4.0), ({"adv_radius": 2.0}, 2.0), ({"adv_radius": 2.0, "sample_radius": 6.0}, 6.0)]
)
def test_sem_sampling_radius_follows_the_adversarial_radius_unless_set(
    options: dict, rho_r: float, train: ImageSet, monkeypatch
) -> None:
    """In the reference rho_r and rho_a are one parameter (``--atk-pgd-radius``)."""
    sem = _sem(**options)
    model = _model(train)
    seen: list[torch.Tensor] = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda inp: seen.append(inp.detach().clone()) or forward(inp))
    views, y = train.x[:64].float() / 255, train.y[:64]
    sem.objective(model, views, y, torch.Generator().manual_seed(0))
    r = seen[0] - views
    inside = (views > rho_r / 255) & (views < 1 - rho_r / 255)
    assert float(r.abs().max()) <= rho_r / 255 + 1e-6
    assert float(r[inside].abs().mean()) == pytest.approx(rho_r / 2 / 255, rel=0.1)
    assert sem.config.rho_r == rho_r
