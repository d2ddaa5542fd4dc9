"""The one model factory (benchmarks.models) and victims.archs: shapes, CIFAR stems, normalisation, names."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from benchmarks.models import Normalize, victim_exists
from benchmarks.models import create_victim as build_victim
from benchmarks.registry import VICTIMS, UnknownNameError
from victims.archs import resnet18_cifar, resnet50_cifar, wrn34_10_cifar

LARGE = ("vgg16_bn", "resnet50", "densenet121")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _logits(model: nn.Module, chans: int, size: int = 32) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.rand(2, chans, size, size))


def test_all_names_registered() -> None:
    assert set(VICTIMS.list()) >= {"resnet18", "resnet50", "vgg16_bn", "wrn34_10", "densenet121", "tiny_cnn"}
    assert all(victim_exists(n) for n in VICTIMS.list())
    assert victim_exists("timm/resnet10t") and not victim_exists("timm/not_a_model") and not victim_exists("nope")


@pytest.mark.parametrize("name", [n for n in VICTIMS.list() if n not in LARGE + ("wrn34_10",)])
@pytest.mark.parametrize("chans", [1, 3])
def test_registered_victims_forward(name: str, chans: int) -> None:
    model = build_victim(name, 7, chans)
    assert isinstance(model[0], Normalize)
    assert _logits(model, chans).shape == (2, 7)


@pytest.mark.parametrize("name", LARGE)
def test_large_victims_forward(name: str) -> None:
    assert _logits(build_victim(name, 10, 3), 3).shape == (2, 10)


@pytest.mark.parametrize("name", ["tiny_cnn", "resnet18", "vgg16_bn"])
def test_28x28_input(name: str) -> None:
    assert _logits(build_victim(name, 10, 1), 1, size=28).shape == (2, 10)


def test_small_wrn() -> None:
    net = wrn34_10_cifar(num_classes=5, in_chans=1, depth=10, widen_factor=1)
    assert _logits(net, 1).shape == (2, 5)
    assert _logits(net, 1, size=16).shape == (2, 5)
    with pytest.raises(ValueError):
        wrn34_10_cifar(depth=11)


def test_resnet18_cifar_stem() -> None:
    net = resnet18_cifar(num_classes=10, in_chans=3)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1) and net.conv1.bias is None
    assert isinstance(net.maxpool, nn.Identity)
    assert sum(p.numel() for p in net.parameters()) == 11_173_962  # kuangliu ResNet-18
    assert _logits(net, 3, size=16).shape == (2, 10)


def test_resnet50_cifar_stem() -> None:
    net = resnet50_cifar(num_classes=10, in_chans=1)
    assert net.conv1.in_channels == 1 and net.conv1.stride == (1, 1) and isinstance(net.maxpool, nn.Identity)


def test_normalize_matches_shifted_input() -> None:
    model = build_victim("tiny_cnn", 4, 3).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), model[1](x - 0.5), atol=1e-6)
    norm = Normalize(mean=(0.1, 0.2, 0.3), std=(1.0, 2.0, 4.0))
    assert torch.allclose(norm(torch.ones(1, 3, 2, 2))[0, :, 0, 0], torch.tensor([0.9, 0.4, 0.175]))


def test_the_architectures_stay_out_of_timms_registry() -> None:
    """Importing uebench leaves timm.list_models() as it was; VICTIMS is the namespace of these models."""
    for name in ("resnet18_cifar", "resnet50_cifar", "vgg16_bn_cifar", "wrn34_10_cifar", "tiny_cnn"):
        assert not timm.is_model(name)


def test_surrogates_come_from_the_same_factory() -> None:
    """``surrogate=timm/<model>`` works wherever ``--victims timm/<model>`` does."""
    from benchmarks.data import make_synthetic
    from benchmarks.registry import METHODS
    from benchmarks.types import Budget, Context

    train, _ = make_synthetic(n_train=16, n_test=4, num_classes=2, shape=(3, 16, 16))
    em = METHODS.get("em")(surrogate="timm/resnet10t", steps=1, batch_size=8, noise_steps=1, augment="none")
    poison = em.generate(train, Budget("linf", 8.0), Context(progress=False))
    assert poison.delta.dtype == torch.int8 and poison.stats["steps"] == 1


def test_build_timm_model() -> None:
    model = build_victim("timm/resnet10t", 10, 3)
    assert isinstance(model[0], Normalize)
    assert _logits(model, 3).shape == (2, 10)


@pytest.mark.parametrize("name", ["timm/not_a_model", "nope"])
def test_unknown_names(name: str) -> None:
    with pytest.raises(UnknownNameError) as info:
        build_victim(name, 10, 3)
    message = str(info.value)
    assert "\n" not in message and "resnet18" in message and "tiny_cnn" in message and "timm/" in message
    if name.startswith("timm/"):
        assert "timm.list_models()" in message
