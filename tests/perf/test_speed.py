"""Seconds per generation step of EM, REM, SEM and TAP on the same batch, model and device.

One step is what the method repeats: for the min-min methods one noise update of a batch plus one
surrogate SGD step (the reference hyperparameters: K_u 10, J 5, K_a 10, PGD-10 adversarial
training); for TAP one targeted PGD step of a batch. The reference's pass count gives REM/SEM about
9.2 (algorithms.md section 5.4); the ratio measured here is printed in the terminal summary.

The augmentation benchmarks compare the batched crop+flip of every EOT sample with the reference's
per-image Python loop over torchvision transforms.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
import torchvision.transforms.v2 as T

from benchmarks import augment
from benchmarks.env import device_name
from benchmarks.noise import Meter
from benchmarks.registry import METHODS, VICTIMS
from benchmarks.types import Budget, Context, ImageSet
from methods._minmin import start_alternation
from methods.em import cross_entropy_objective
from methods.tap import target_labels

ARCH = os.environ.get("UEB_BENCH_ARCH", "tiny_cnn")
BATCH = int(os.environ.get("UEB_BENCH_BATCH", "128"))
_DEV = os.environ.get("UEB_BENCH_DEVICE", "auto")
DEVICE = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if _DEV == "auto" else _DEV)
ON_GPU = DEVICE.type == "cuda"
ROUNDS = int(os.environ.get("UEB_BENCH_ROUNDS", "10" if ON_GPU else "3"))


def _ctx() -> Context:
    return Context(device=DEVICE, seed=0, amp=ON_GPU, channels_last=ON_GPU, progress=False)


def _sync() -> None:
    if ON_GPU:
        torch.cuda.synchronize(DEVICE)


@pytest.fixture(scope="module")
def batch() -> ImageSet:
    """One CIFAR-10-shaped batch (3 x 32 x 32, 10 classes) on the device."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (BATCH, 3, 32, 32), dtype=torch.uint8, generator=g)
    return ImageSet(x, torch.arange(BATCH) % 10, 10, "bench").to(DEVICE)


def _record(results: dict[str, Any], name: str, benchmark: Any, meter: Meter) -> None:
    stats = benchmark.stats.stats
    results[name] = {
        "mean_s": stats.mean,
        "min_s": stats.min,
        "rounds": stats.rounds,
        "forward_calls": meter.forward_calls,
        "forward_images_per_image": meter.images_forwarded / BATCH,
        "device": device_name(DEVICE),
        "arch": ARCH,
        "batch": BATCH,
    }
    benchmark.extra_info.update(results[name])


@pytest.mark.parametrize("name", ["em", "rem", "sem"])
def test_minmin_step(benchmark: Any, speed_results: dict, batch: ImageSet, name: str) -> None:
    method = METHODS.get(name)(surrogate=ARCH)
    objective = cross_entropy_objective if name == "em" else method.objective
    run = start_alternation(batch, Budget("linf", 8.0), _ctx(), method.config, objective, name)
    meter = Meter()
    with meter.watch(run.model):  # count one step's passes
        run.step(batch.x, batch.y, 0)

    def step() -> None:
        run.step(batch.x, batch.y, 1)
        _sync()

    benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=1)
    _record(speed_results, name, benchmark, meter)


def test_tap_step(benchmark: Any, speed_results: dict, batch: ImageSet) -> None:
    """One targeted PGD step of TAP's crafting (the surrogate is trained once beforehand, not timed here)."""
    tap = METHODS.get("tap")(surrogate=ARCH, steps=1)
    ctx = _ctx()
    model = ctx.prepare(VICTIMS.get(ARCH)(10, 3))
    x, target = batch.x.float() / 255, target_labels(batch.y, 10)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    meter = Meter()
    with meter.watch(model):
        tap.craft(model, x, target, Budget("linf", 8.0), g, ctx)

    def step() -> None:
        tap.craft(model, x, target, Budget("linf", 8.0), g, ctx)
        _sync()

    benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=1)
    _record(speed_results, "tap", benchmark, meter)


def _reference_crop_flip(x: torch.Tensor) -> torch.Tensor:
    """The reference code's EOT transform: a Python loop of per-image RandomCrop(pad 4) + flip."""
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()])
    return torch.stack([transform(img) for img in x])


@pytest.mark.parametrize("impl", ["batched", "per_image_loop"])
def test_eot_augmentation(benchmark: Any, speed_results: dict, batch: ImageSet, impl: str) -> None:
    """J = 5 augmented views of a batch, as one noise step of REM/SEM needs (forward only, no model)."""
    x = batch.x.float().div(255).repeat(5, 1, 1, 1)
    g = torch.Generator(device=DEVICE).manual_seed(0)

    def run() -> None:
        augment.crop_flip(x, g) if impl == "batched" else _reference_crop_flip(x)
        _sync()

    benchmark.pedantic(run, rounds=max(ROUNDS, 5), warmup_rounds=1)
    _record(speed_results, f"eot_crop_flip_{impl}", benchmark, Meter())
