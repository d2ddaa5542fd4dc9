"""Seconds per generation step of EM, REM, SEM and TAP on the same batch, model and device.

One step is what the method repeats: for the min-min methods one noise update of a batch plus one
surrogate SGD step (the reference hyperparameters: K_u 10, J 5, K_a 10, PGD-10 adversarial
training); for TAP one targeted PGD step of a batch. The reference's pass count gives REM/SEM about
9.2 (algorithms.md section 5.4); the ratio measured here is printed in the terminal summary.

Each min-min row also records what the step computes and how fast: the images forwarded (each with
its backward pass) and images per second; the FLOPs of the step, counted by
:class:`torch.utils.flop_counter.FlopCounterMode` over one real step (the attacks' input-only backward
costs about one forward, a training backward two), next to the ``3 x forward x images`` rule; the
achieved TFLOP/s and its share of the device's dense peak where the device is known; one noise update
of the batch alone (what each batch of the final pass costs); and the projected wall time of a whole
generation with the method's defaults at this batch (5000 steps plus a final pass over CIFAR-10's 50,000
images).

The augmentation benchmarks compare the batched crop+flip of every EOT sample with the reference's
per-image Python loop over torchvision transforms.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import pytest
import torch
import torchvision.transforms.v2 as T
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import augment
from benchmarks.env import device_name, peak_shares
from benchmarks.noise import Meter
from benchmarks.registry import METHODS, VICTIMS
from benchmarks.types import PRECISIONS, Budget, Context, ImageSet
from methods._minmin import noise_update, start_alternation
from methods.em import cross_entropy_objective
from methods.tap import target_labels

ARCH = os.environ.get("UEB_BENCH_ARCH", "tiny_cnn")
BATCH = int(os.environ.get("UEB_BENCH_BATCH", "128"))
_DEV = os.environ.get("UEB_BENCH_DEVICE", "auto")
DEVICE = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if _DEV == "auto" else _DEV)
ON_GPU = DEVICE.type == "cuda"
ROUNDS = int(os.environ.get("UEB_BENCH_ROUNDS", "10" if ON_GPU else "3"))
WARMUP = int(os.environ.get("UEB_BENCH_WARMUP", "1"))
BUDGET = Budget("linf", 8.0)
#: the training-set size the projected generation time assumes (CIFAR-10)
PROJECTED_TRAIN_SIZE = 50_000


def _axis(variable: str, default: str, accepted: tuple[str, ...]) -> list[str]:
    """A comma-separated parameter axis from the environment, e.g. ``UEB_BENCH_PRECISION=fp32,bf16``."""
    values = [v.strip() for v in os.environ.get(variable, default).split(",") if v.strip()]
    if not values or set(values) - set(accepted):
        raise pytest.UsageError(f"{variable} must be a comma-separated list of {', '.join(accepted)}, got {values}")
    return values


#: arithmetic of forward and backward passes (Context.precision): fp32, tf32 (CUDA) or bf16 autocast
PRECISION_AXIS = _axis("UEB_BENCH_PRECISION", "bf16" if ON_GPU else "fp32", PRECISIONS)
#: ``compile``: the surrogate under torch.compile (``UEB_BENCH_COMPILE_BACKEND``, default inductor)
COMPILE_AXIS = _axis("UEB_BENCH_COMPILE", "eager", ("eager", "compile"))
COMPILE_BACKEND = os.environ.get("UEB_BENCH_COMPILE_BACKEND", "inductor")


def _ctx(precision: str) -> Context:
    ctx = Context(device=DEVICE, seed=0, precision=precision, channels_last=ON_GPU, progress=False)
    ctx.set_numerics()
    return ctx


def _sync() -> None:
    if ON_GPU:
        torch.cuda.synchronize(DEVICE)


@pytest.fixture(scope="module")
def batch() -> ImageSet:
    """One CIFAR-10-shaped batch (3 x 32 x 32, 10 classes) on the device."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (BATCH, 3, 32, 32), dtype=torch.uint8, generator=g)
    return ImageSet(x, torch.arange(BATCH) % 10, 10, "bench").to(DEVICE)


@pytest.fixture(scope="module")
def forward_flops() -> int:
    """FLOPs of one forward pass of the surrogate architecture on one 3 x 32 x 32 image."""
    model = VICTIMS.get(ARCH)(10, 3).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 32, 32))
    return int(counter.get_total_flops())


def _record(results: dict[str, Any], name: str, benchmark: Any, meter: Meter, **extra: Any) -> None:
    stats = benchmark.stats.stats
    results[name] = {
        "mean_s": stats.mean,
        "min_s": stats.min,
        "rounds": stats.rounds,
        "forward_calls": meter.forward_calls,
        "images_forwarded": meter.images_forwarded,
        "forward_images_per_image": meter.images_forwarded / BATCH,
        "images_per_s": meter.images_forwarded / stats.mean,
        "device": device_name(DEVICE),
        "arch": ARCH,
        "batch": BATCH,
        **extra,
    }
    benchmark.extra_info.update(results[name])


@pytest.mark.parametrize("mode", COMPILE_AXIS)
@pytest.mark.parametrize("precision", PRECISION_AXIS)
@pytest.mark.parametrize("name", ["em", "rem", "sem"])
def test_minmin_step(
    benchmark: Any, speed_results: dict, batch: ImageSet, forward_flops: int, name: str, precision: str, mode: str
) -> None:
    method = METHODS.get(name)(surrogate=ARCH)
    objective = cross_entropy_objective if name == "em" else method.objective
    ctx = _ctx(precision)
    run = start_alternation(batch, BUDGET, ctx, method.config, objective, name)
    meter = Meter()
    with meter.watch(run.model), FlopCounterMode(display=False) as flops:  # count one step's passes and FLOPs
        run.step(batch.x, batch.y, 0)
    extra: dict[str, Any] = {}
    if mode == "compile":
        run.model = torch.compile(run.model, backend=COMPILE_BACKEND)
        _sync()
        start = time.perf_counter()
        run.step(batch.x, batch.y, 1)  # compiles every graph of the step (eval and train mode)
        _sync()
        extra.update(compile_backend=COMPILE_BACKEND, compile_s=time.perf_counter() - start)

    def step() -> None:
        run.step(batch.x, batch.y, 1)
        _sync()

    benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=WARMUP)

    # one noise update of the batch alone, as every batch of the final pass does it (warm model, one sample)
    update = Meter()
    x = batch.x.float() / 255
    start = time.perf_counter()
    with update.watch(run.model):
        noise_update(run.model, x, batch.y, run.cfg, objective, run.budget, run.g_noise, ctx)
    _sync()
    update_s = time.perf_counter() - start

    mean_s = benchmark.stats.stats.mean
    step_flops = int(flops.get_total_flops())
    tflops = step_flops / mean_s / 1e12
    final_batches = math.ceil(PROJECTED_TRAIN_SIZE / BATCH)
    _record(
        speed_results,
        f"{name}/{precision}" + ("+compile" if mode == "compile" else ""),
        benchmark,
        meter,
        precision=ctx.precision,
        compiled=mode == "compile",
        channels_last=ctx.channels_last,
        tf32_cudnn=torch.backends.cudnn.allow_tf32,
        tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        forward_flops_per_image=forward_flops,
        step_flops=step_flops,
        step_flops_3x_rule=3 * forward_flops * meter.images_forwarded,
        achieved_tflops=tflops,
        peak_share=peak_shares(device_name(DEVICE), precision, tflops),
        noise_update_s=update_s,
        noise_update_images=update.images_forwarded,
        projected_generation={
            "steps": run.cfg.steps,
            "final_pass_batches": final_batches,
            "train_size": PROJECTED_TRAIN_SIZE,
            "minutes": (run.cfg.steps * mean_s + final_batches * update_s) / 60,
        },
        **extra,
    )


@pytest.mark.parametrize("precision", PRECISION_AXIS)
def test_tap_step(benchmark: Any, speed_results: dict, batch: ImageSet, precision: str) -> None:
    """One targeted PGD step of TAP's crafting (the surrogate is trained once beforehand, not timed here)."""
    tap = METHODS.get("tap")(surrogate=ARCH, steps=1)
    ctx = _ctx(precision)
    model = ctx.prepare(VICTIMS.get(ARCH)(10, 3))
    x, target = batch.x.float() / 255, target_labels(batch.y, 10)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    meter = Meter()
    with meter.watch(model):
        tap.craft(model, x, target, BUDGET, g, ctx)

    def step() -> None:
        tap.craft(model, x, target, BUDGET, g, ctx)
        _sync()

    benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=WARMUP)
    _record(speed_results, f"tap/{precision}", benchmark, meter, precision=ctx.precision)


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

    benchmark.pedantic(run, rounds=max(ROUNDS, 5), warmup_rounds=WARMUP)
    _record(speed_results, f"eot_crop_flip_{impl}", benchmark, Meter())
