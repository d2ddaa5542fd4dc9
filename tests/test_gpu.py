"""The GPU tier: the runner, noise generation and the training loop on CUDA (skipped without it).

Every test takes its device from the ``gpu_device`` fixture: CUDA, or the CPU under
``UEB_GPU_TEST_DEVICE=cpu`` (the rehearsal of ``scripts/gpu_check.sh --dry``), where the one test that
needs CUDA's memory statistics skips. Sizes are tiny: these check that everything runs and is recorded
correctly on the device, not what it protects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks import run as runner
from benchmarks.data import make_synthetic
from benchmarks.env import device_name
from benchmarks.matrix import load_records
from benchmarks.models import create_victim
from benchmarks.registry import METHODS, PRESETS
from benchmarks.train import Defense, TrainRecipe, fit
from benchmarks.types import Budget, Context, ImageSet
from methods._minmin import start_alternation

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(90)]  # a hung test fails; the tier goes on

TINY = PRESETS.get("tiny")("synthetic")


@pytest.fixture(scope="module")
def synthetic() -> tuple[ImageSet, ImageSet]:
    return make_synthetic()


def test_a_campaign_on_the_device_writes_ok_cells_that_name_it(gpu_device: torch.device, tmp_path: Path) -> None:
    argv = [
        "--dataset", "synthetic", "--preset", "tiny", "--methods", "em", "sem", "--defense", "none", "at2",
        "--seeds", "0", "--device", str(gpu_device), "--no-progress",
        "--results-dir", str(tmp_path / "cells"), "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    assert runner.main(argv) == 0
    records = load_records(tmp_path / "cells")
    assert sorted((r["method"], r["defense"]) for r in records) == [
        (m, d) for m in ("clean", "em", "sem") for d in ("at2", "none")
    ]
    name, precision = device_name(gpu_device), Context(gpu_device).arithmetic
    for r in records:
        assert r["status"] == "ok", r.get("error")
        assert r["env"]["device"] == name
        numerics = r["env"]["numerics"]
        assert numerics["precision"] == precision
        if gpu_device.type == "cuda":
            assert precision == "fp32"  # the default on every device: bf16 only when asked for
            assert numerics["tf32_matmul"] is False and numerics["tf32_cudnn"] is False
            assert numerics["gpu"] == name and numerics["cuda"] == torch.version.cuda
            assert numerics["cudnn"] == torch.backends.cudnn.version()
        assert 0.0 <= r["metrics"]["final_acc"] <= 1.0
        if r["method"] != "clean":
            assert r["generation"]["device"] == name
            assert r["generation"]["steps"] == TINY.method_options(r["method"])["steps"]
    clean = {r["defense"]: r["metrics"]["final_acc"] for r in records if r["method"] == "clean"}
    assert clean["none"] > 0.5, clean  # 4 classes: chance is 0.25; the synthetic set is learnt in a few steps


@pytest.mark.parametrize("name", ["em", "sem"])
def test_generation_on_the_device_gives_int8_noise_within_budget(
    gpu_device: torch.device, synthetic: tuple[ImageSet, ImageSet], name: str
) -> None:
    train, _ = synthetic
    method = METHODS.get(name)(**TINY.method_options(name))
    budget = method.budget(train.shape, 8.0)
    poison = method.generate(train, budget, Context(gpu_device, progress=False))
    delta = poison.delta
    assert delta.dtype == torch.int8 and delta.device.type == "cpu"
    assert delta.shape == train.x.shape
    assert int(delta.abs().max()) <= 8
    assert float(delta.float().abs().mean()) > 1.0  # sign steps from a uniform start: far from zero noise
    protected = poison.apply(train).x.to(torch.int16)
    assert torch.equal(protected - train.x.to(torch.int16), delta.to(torch.int16))  # no clipping was needed
    assert poison.stats["device"] == device_name(gpu_device)
    assert poison.stats["steps"] == method.config.steps and poison.stats["images_forwarded"] > 0


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_fit_on_the_device_learns_in_fp32_and_bf16_autocast(
    gpu_device: torch.device, synthetic: tuple[ImageSet, ImageSet], precision: str
) -> None:
    train, test = synthetic
    amp = precision == "bf16"
    if precision == "tf32" and gpu_device.type != "cuda":
        pytest.skip("TF32 is a CUDA arithmetic")
    ctx = Context(gpu_device, precision=precision, progress=False)
    ctx.set_numerics()
    ctx.manual_seed("gpu-fit")
    model = create_victim("tiny_cnn", train.num_classes, train.shape[0])
    recipe = TrainRecipe("gpu-fit", steps=40, batch_size=32, lr=0.05, schedule="cosine", augment="none", eval_every=20)
    result = fit(model, train, test, Defense(), recipe, ctx)
    assert result.final_acc > 0.9, result.curve
    assert next(model.parameters()).device.type == gpu_device.type
    with torch.no_grad(), ctx.autocast():
        logits = model(test.x[:8].to(gpu_device).float() / 255)
    assert logits.dtype == (torch.bfloat16 if amp else torch.float32)


def _step_peak_bytes(device: torch.device, amp: bool, batch: int) -> int:
    """Peak memory of one SEM generation step of a ResNet-18 surrogate on a CIFAR-shaped batch, above what the
    surrogate and its data hold before the step."""
    g = torch.Generator().manual_seed(0)
    data = ImageSet(
        torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(batch) % 10, 10, "b"
    ).to(device)
    sem = METHODS.get("sem")()
    ctx = Context(device, precision="bf16" if amp else "fp32", progress=False)
    ctx.set_numerics()
    run = start_alternation(data, Budget("linf", 8.0), ctx, sem.config, sem.objective, "sem")
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    run.step(data.x, data.y, 0)
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def test_bf16_autocast_lowers_the_peak_memory_of_a_sem_step(gpu_device: torch.device, record_property: Any) -> None:
    if gpu_device.type != "cuda":
        pytest.skip("peak memory is measured by CUDA's allocator")
    fp32, bf16 = (_step_peak_bytes(gpu_device, amp, batch=64) for amp in (False, True))
    record_property("sem_step_peak_fp32_bytes", fp32)
    record_property("sem_step_peak_bf16_bytes", bf16)
    total = torch.cuda.get_device_properties(gpu_device).total_memory
    # J = 5 views of 64 images through ResNet-18: activations of hundreds of MB, far below the device's memory
    assert 50 * 2**20 < fp32 < total / 4
    assert bf16 < 0.9 * fp32, (bf16, fp32)
