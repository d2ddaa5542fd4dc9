"""Memory: int8 noise end to end, float work per batch, large sets streamed, chunked EOT forwards.

The peak-memory test runs each method in a fresh interpreter on 500 x 3 x 256 x 256 uint8 images (94 MiB, the
ImageNet-subset resolution) and reads the process's peak resident memory (``VmHWM``, reset through
``/proc/self/clear_refs`` before each phase). glibc is told to serve every allocation above 128 KiB by ``mmap``
(``MALLOC_MMAP_THRESHOLD_``), so freed tensors leave the resident set at once and the peak is what was live.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.data import make_synthetic
from benchmarks.noise import config_hash, quantize, quantize_bank, result_config
from benchmarks.registry import METHODS
from benchmarks.types import CHUNK_BYTES, Budget, Context, ImageSet, Poison, row_chunks
from methods._minmin import ForwardLimit, build_surrogate, forward_limit, noise_update, views_per_forward
from methods.em import cross_entropy_objective

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20

#: SEM for the memory test: a surrogate that average-pools 8 x 8 first, so its activations are small and the
#: test measures what the engine holds (bank, batches, views), not a convolution's activations at 256 px
SEM_TINY = {"surrogate": "pooled_tiny_cnn", "steps": 3, "batch_size": 16, "noise_steps": 2, "samples": 2}

PROBE = r"""
import json, sys
import torch
from torch import nn
from benchmarks.plugins import load_plugins
from benchmarks.registry import METHODS, VICTIMS
from benchmarks.types import Context, ImageSet
from victims.archs import tiny_cnn

def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

def peak(fn):
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak to the current resident set
        f.write("5")
    base = rss("VmRSS")
    out = fn()
    return out, rss("VmHWM") - base

load_plugins()
VICTIMS.register("pooled_tiny_cnn")(lambda k, c: nn.Sequential(nn.AvgPool2d(8), tiny_cnn(k, c)))
torch.set_num_threads(1)
name, options, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
x = torch.randint(0, 256, (n, 3, 256, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
data = ImageSet(x, torch.arange(n) % 10, 10, "probe")
method = METHODS.get(name)(**options)
budget = method.budget(data.shape, 8.0)
small = data.subset(torch.arange(32))
method.generate(small, budget, Context(progress=False))  # library start-up
_, one_batch = peak(lambda: method.generate(small, budget, Context(progress=False)))
poison, generate = peak(lambda: method.generate(data, budget, Context(progress=False)))
_, apply = peak(lambda: poison.apply(data))
print(json.dumps({"one_batch": one_batch, "generate": generate, "apply": apply, "images": x.numel()}))
"""


def _peaks(name: str, options: dict, n: int = 500) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, name, json.dumps(options), str(n)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS accounting")
@pytest.mark.parametrize(("name", "options"), [("clean", {}), ("random", {}), ("sc", {}), ("sem", SEM_TINY)])
def test_peak_memory_is_the_int8_bank_plus_a_few_batches(name: str, options: dict) -> None:
    """Generating noise for 500 x 3 x 256 x 256 uint8 images (94 MiB) holds one int8 bank (94 MiB) plus what one
    batch of 32 images needs, twice at most; applying it holds the protected uint8 set plus a few chunks. Before
    the int8 path: 2,281 MiB for both together, about 24 bytes per pixel."""
    peaks = _peaks(name, options)
    bank = peaks["images"]  # bytes: 1 per pixel
    batch = max(peaks["one_batch"], CHUNK_BYTES)  # measured on 32 images (16 for SEM's batch), same process
    assert peaks["generate"] <= bank + 2 * batch + 3 * CHUNK_BYTES, (name, {k: v / MIB for k, v in peaks.items()})
    assert peaks["apply"] <= bank + 3 * CHUNK_BYTES, (name, {k: v / MIB for k, v in peaks.items()})


def test_row_chunks_cover_every_row_once_within_the_byte_limit() -> None:
    slices = list(row_chunks(10, row_bytes=3, chunk_bytes=7))
    assert [(s.start, s.stop) for s in slices] == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    assert [(s.start, s.stop) for s in row_chunks(3, row_bytes=100, chunk_bytes=7)] == [(0, 1), (1, 2), (2, 3)]


def test_quantize_bank_matches_quantize_of_the_whole_bank() -> None:
    """Chunked quantisation is the whole-bank quantisation, for float and int8 input, L-inf and L2."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (300, 3, 64, 64), dtype=torch.uint8, generator=g)
    noise = (torch.rand(x.shape, generator=g) - 0.5) * (24 / 255)
    for budget in (Budget("linf", 8.0), Budget("l2", 300.0)):
        whole = quantize(noise, budget, x)
        assert torch.equal(quantize_bank(noise, budget, x), whole)
        again = whole.clone()
        assert torch.equal(quantize_bank(again, budget, x), whole)  # int8 in: clamped in place, unchanged
    assert len(list(row_chunks(300, 4 * 3 * 64 * 64))) > 1  # the test crosses chunk boundaries


def test_apply_in_chunks_equals_the_integer_formula() -> None:
    train, _ = make_synthetic(n_train=400, n_test=8, num_classes=4, shape=(3, 64, 64))
    g = torch.Generator().manual_seed(1)
    delta = torch.randint(-127, 128, tuple(train.x.shape), dtype=torch.int8, generator=g)
    want = (train.x.to(torch.int16) + delta.to(torch.int16)).clamp(0, 255).to(torch.uint8)
    assert torch.equal(Poison(delta).apply(train).x, want)
    patterns = delta[:4]
    want_cw = (train.x.to(torch.int16) + patterns[train.y].to(torch.int16)).clamp(0, 255).to(torch.uint8)
    assert torch.equal(Poison(patterns, classwise=True).apply(train).x, want_cw)
    head = torch.tensor([3, 7, 9])
    assert torch.equal(Poison(delta).subset(head).apply(train.subset(head)).x, want[head])


def test_place_streams_only_sets_larger_than_the_device_share() -> None:
    train, _ = make_synthetic(n_train=16, n_test=8, num_classes=4, shape=(3, 8, 8))
    cpu = Context(progress=False)
    assert not cpu.streams(train) and cpu.place(train).x.device.type == "cpu"
    x, y = train.take(torch.tensor([2, 5]), cpu.device)
    assert torch.equal(x, train.x[[2, 5]]) and torch.equal(y, train.y[[2, 5]])


@pytest.mark.gpu
def test_a_set_above_the_device_share_is_streamed_from_pinned_host_memory(gpu_device: torch.device) -> None:
    """With ``resident_share`` 0 every set stays on the host, pinned, and generation and training still run."""
    if gpu_device.type != "cuda":
        pytest.skip("streaming is a CUDA placement")
    train, test = make_synthetic(n_train=64, n_test=32, num_classes=4, shape=(3, 16, 16))
    ctx = Context(gpu_device, progress=False, resident_share=0.0)
    placed = ctx.place(train)
    assert ctx.streams(train) and placed.x.device.type == "cpu" and placed.x.is_pinned()
    sem = METHODS.get("sem")(**{**SEM_TINY, "surrogate": "tiny_cnn"})  # pooled_tiny_cnn lives in the probe only
    streamed = sem.generate(train, sem.budget(train.shape, 8.0), ctx)
    resident = sem.generate(train, sem.budget(train.shape, 8.0), dataclasses.replace(ctx, resident_share=0.5))
    assert torch.equal(streamed.delta, resident.delta)


@pytest.mark.parametrize("name", ["em", "sem", "rem"])
def test_chunked_eot_forward_gives_the_same_noise(name: str) -> None:
    """J x B views in chunks of 1, 5 or 16 per forward pass: the same noise as one pass, draws included."""
    train, _ = make_synthetic(n_train=16, n_test=8, num_classes=4, shape=(3, 16, 16))
    method = METHODS.get(name)(surrogate="tiny_cnn", samples=3, noise_steps=3, batch_size=16)
    ctx = Context(progress=False)
    model = build_surrogate(method.config, train, ctx, name)
    objective = cross_entropy_objective if name == "em" else method.objective
    x = train.x.float() / 255

    def update(max_forward: int | None) -> torch.Tensor:
        cfg = dataclasses.replace(method.config, max_forward=max_forward)
        generator = torch.Generator().manual_seed(1)
        return noise_update(model, x, train.y, cfg, objective, Budget("linf", 8.0), generator, ctx)

    whole = update(3 * 16)  # all J x B views in one forward
    for chunk in (None, 1, 5, 16):
        assert torch.equal(update(chunk), whole), chunk


def test_out_of_memory_halves_the_chunk_and_retries_from_the_same_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    """A forward of more than 6 views 'runs out of memory': the update shrinks its chunk to 6 (48 -> 24 -> 12 ->
    6), remembers it, and returns the noise of an unchunked update."""
    train, _ = make_synthetic(n_train=16, n_test=8, num_classes=4, shape=(3, 16, 16))
    sem = METHODS.get("sem")(surrogate="tiny_cnn", samples=3, noise_steps=2, batch_size=16)
    ctx = Context(progress=False)
    model = build_surrogate(sem.config, train, ctx, "sem")
    x = train.x.float() / 255
    want = noise_update(model, x, train.y, sem.config, sem.objective, Budget("linf", 8.0), torch.Generator(), ctx)
    real = sem.objective.loss

    def small_memory(model: torch.nn.Module, views: torch.Tensor, y: torch.Tensor, unit: torch.Tensor | None):
        if len(views) > 6:
            raise torch.OutOfMemoryError("test: too many views")
        return real(model, views, y, unit)

    tight = dataclasses.replace(sem.objective, loss=small_memory)
    limit = ForwardLimit(48)  # all J x B views at first
    got = noise_update(model, x, train.y, sem.config, tight, Budget("linf", 8.0), torch.Generator(), ctx, limit)
    assert limit.views == 6 and torch.equal(got, want)


def test_execution_only_options_leave_hashes_and_records_alone() -> None:
    """``max_forward`` says how to compute, not what: the method's hash and recorded config ignore it."""
    sem = METHODS.get("sem")
    assert config_hash(sem().config) == config_hash(sem(max_forward=64).config)
    assert "max_forward" not in result_config(sem(max_forward=64).config)
    with pytest.raises(ValueError, match="max_forward"):
        sem(max_forward=0)


def test_sample_wise_methods_return_int8_banks() -> None:
    """clean, random and sc hand the base class 1 byte per pixel, never a float copy of the set."""
    train, _ = make_synthetic(n_train=24, n_test=8, num_classes=4, shape=(3, 16, 16))
    ctx = Context(progress=False)
    from benchmarks.noise import Meter

    for name in ("clean", "random", "sc"):
        method = METHODS.get(name)()
        out = method.perturb(train, method.budget(train.shape, 8.0), ctx, Meter())
        assert out.dtype == torch.int8 and tuple(out.shape) == tuple(train.x.shape), name


def test_per_image_preprocessing_runs_in_chunks_with_the_whole_set_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-image preprocessing runs a chunk at a time with the result of the whole-set call."""
    from benchmarks.registry import DEFENSES

    train, _ = make_synthetic(n_train=40, n_test=8, num_classes=4, shape=(3, 32, 32))
    jpeg = DEFENSES.get("jpeg10")()
    monkeypatch.setattr("benchmarks.train.row_chunks", lambda n, row_bytes: row_chunks(n, row_bytes, 3 * row_bytes))
    assert torch.equal(jpeg.preprocess_set(train.x, torch.device("cpu")), jpeg.preprocess(train.x))


def test_imageset_take_is_subset_on_any_device() -> None:
    data = ImageSet(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.arange(4), 4, "t")
    x, y = data.take(torch.tensor([3, 1]), torch.device("cpu"))
    assert y.tolist() == [3, 1] and x.shape == (2, 1, 2, 2)


def test_a_cpu_runs_one_forward_per_eot_sample_unless_told() -> None:
    """On a CPU the J x B views go through the surrogate in J forwards of B (faster there, same result)."""
    sem = METHODS.get("sem")(batch_size=128, samples=5)
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    limit = forward_limit(sem.config, Context(progress=False))
    assert views_per_forward(limit, 32, 5, cpu) == 32 and views_per_forward(limit, 32, 5, gpu) == 160
    limit = forward_limit(dataclasses.replace(sem.config, max_forward=80), Context(progress=False))
    assert views_per_forward(limit, 32, 5, cpu) == 80 and views_per_forward(limit, 8, 5, gpu) == 40
