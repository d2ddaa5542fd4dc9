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

import dataclasses
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
#: ``compile``, ``graphs``: the surrogate as ``--compile`` runs it (``Context.compiled``: torch.compile, or inductor's
#: ``reduce-overhead`` mode, which replays each graph as a CUDA graph); with another ``UEB_BENCH_COMPILE_BACKEND``
#: than inductor (the dry run's aot_eager), both are plain torch.compile with that backend.
COMPILE_AXIS = _axis("UEB_BENCH_COMPILE", "eager", ("eager", "compile", "graphs"))
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
    if mode != "eager":
        if COMPILE_BACKEND == "inductor":  # as the engine does it (--compile)
            run.model = dataclasses.replace(ctx, compile_mode=mode).compiled(run.model)
        else:
            run.model = torch.compile(run.model, backend=COMPILE_BACKEND)
        _sync()
        start = time.perf_counter()
        run.step(batch.x, batch.y, 1)  # compiles every graph of the step (eval and train mode)
        _sync()
        extra.update(compile_backend=COMPILE_BACKEND, compile_mode=mode, compile_s=time.perf_counter() - start)

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
        f"{name}/{precision}" + ("" if mode == "eager" else f"+{mode}"),
        benchmark,
        meter,
        precision=ctx.precision,
        compiled=mode != "eager",
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


def _reference_sem_step(
    model: torch.nn.Module, opt: torch.optim.Optimizer, x_u8: torch.Tensor, y: torch.Tensor, sem: Any
) -> None:
    """One SEM generation step the way the authors' code runs it (algorithms.md 5.2-5.3), for the ratio below.

    The surrogate's parameters are frozen (``requires_grad=False``) during the noise update; each of the K_u sign
    steps runs J separate forwards of the B images, every view augmented image by image in a Python loop, and
    sums the samples' gradients; then PGD-10 adversarial training on the batch augmented the same way, one SGD
    step. Written from the algorithm, not from the authors' code.
    """
    cfg = sem.config
    eps, alpha, rho = BUDGET.eps, cfg.noise_step_size / 255, cfg.rho_r / 255
    x = x_u8.float() / 255
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    delta = (torch.rand_like(x) * 2 - 1) * eps
    for _ in range(cfg.noise_steps):
        delta.requires_grad_(True)
        for _ in range(cfg.samples):  # one forward of B images per EOT sample, gradients summed
            views = _reference_crop_flip((x + delta).clamp(0, 1))
            point = (views.detach() + (torch.rand_like(views) * 2 - 1) * rho).clamp(0, 1)
            torch.nn.functional.cross_entropy(model(views + (point - views).detach()), y).backward()
        with torch.no_grad():
            delta = (delta - alpha * delta.grad.sign()).clamp(-eps, eps)
    for p in model.parameters():
        p.requires_grad_(True)
    protected = _reference_crop_flip((x + delta).clamp(0, 1))
    adv = protected + (torch.rand_like(protected) * 2 - 1) * cfg.adv_radius / 255
    for _ in range(cfg.adv_steps):  # the attack of adversarial training, BN in eval mode
        adv = adv.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(adv), y), adv)
        step = adv.detach() + cfg.adv_step_size / 255 * grad.sign()
        adv = (protected + (step - protected).clamp(-cfg.adv_radius / 255, cfg.adv_radius / 255)).clamp(0, 1)
    model.train()
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(adv.detach()), y).backward()
    opt.step()


#: ours on the CPU: default layout, channels_last (``Context.channels_last``, on by default only on CUDA),
#: channels_last with the surrogate under torch.compile (``--compile compile``; the warm-up rounds compile), and
#: channels_last under bf16 autocast (``--precision bf16``: other numerics, another cell; fast only on a CPU with
#: native bf16, ``env.cpu_bf16``)
LAYOUT_AXIS = _axis("UEB_BENCH_LAYOUT", "default,channels_last", ("default", "channels_last", "compiled", "bf16"))


def gemm_tflops(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """The best TFLOP/s of an ``n x n`` matrix product in ``dtype`` on the device, at torch's thread count: a
    measured ceiling for dense arithmetic on this machine (convolutions run at or below it), where no data sheet
    gives a CPU's peak."""
    g = torch.Generator(device=DEVICE).manual_seed(0)
    a, b = (torch.randn(n, n, generator=g, device=DEVICE).to(dtype) for _ in range(2))
    torch.mm(a, b)  # warm-up: kernel choice, page faults
    best = math.inf
    for _ in range(reps):
        _sync()
        start = time.perf_counter()
        torch.mm(a, b)
        _sync()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


class _Global:
    """A module tracker that tracks nothing: every FLOP counts towards ``Global``."""

    parents = ("Global",)

    def __enter__(self) -> _Global:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _count(step: Any, model: torch.nn.Module) -> tuple[int, int]:
    """FLOPs and images forwarded through ``model`` in one call of ``step`` (which is then one step further).

    FlopCounterMode's per-module tracking hooks the backward of module inputs, which ``torch.autograd.grad`` with a
    leaf input (the reference's PGD) refuses in torch 2.14; the total needs no tracking, so the tracker is a no-op.
    """
    meter = Meter()
    flops = FlopCounterMode(display=False)
    flops.mod_tracker = _Global()
    with meter.watch(model), flops:
        step()
    return int(flops.get_total_flops()), meter.images_forwarded


@pytest.mark.timeout(0)  # at ResNet-18 on a 2-core CPU one round of the three steps takes minutes
def test_sem_step_against_reference_style(speed_results: dict, batch: ImageSet) -> None:
    """Seconds per SEM generation step at the reference settings (K_u 10, J 5, PGD-10 adversarial training):
    the authors' way (:func:`_reference_sem_step`) against the suite's step with each layout of
    ``UEB_BENCH_LAYOUT``, interleaved round by round in one process, so the ratio compares like with like.

    Each row also says what the step computes, counted over one untimed step before the timed rounds: the FLOPs
    (:class:`FlopCounterMode`) and the images forwarded per image of the batch; and how fast: images forwarded per
    second, achieved TFLOP/s, and its share of the measured matrix-product rate in the row's arithmetic
    (:func:`gemm_tflops`). Where the reference-style step already runs near that rate, no layout of the same
    arithmetic can be much faster: ``ceiling_speedup`` is the rate over the reference's achieved TFLOP/s. The
    compiled layout's count is that of the eager steps (the same graph); the count's step is not counted inside
    inductor's kernels."""
    sem = METHODS.get("sem")(surrogate=ARCH)
    contenders: dict[str, Any] = {}
    models: dict[str, torch.nn.Module] = {}
    arithmetic: dict[str, str] = {"reference_style": "fp32"}
    ref_ctx = _ctx("fp32")
    ref_model = ref_ctx.prepare(VICTIMS.get(ARCH)(10, 3))
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    contenders["reference_style"] = lambda: _reference_sem_step(ref_model, ref_opt, batch.x, batch.y, sem)
    models["reference_style"] = ref_model
    for layout in LAYOUT_AXIS:
        ctx = Context(
            DEVICE,
            0,
            "bf16" if layout == "bf16" else "fp32",
            channels_last=layout != "default" or ON_GPU,
            progress=False,
            compile_mode="compile" if layout == "compiled" else "eager",
        )
        ctx.set_numerics()
        run = start_alternation(batch, BUDGET, ctx, sem.config, sem.objective, "sem")
        contenders[f"ours_{layout}"] = lambda run=run: run.step(batch.x, batch.y, 1)
        arithmetic[f"ours_{layout}"] = ctx.precision
        if layout != "compiled":
            models[f"ours_{layout}"] = run.model
    counts = {name: _count(contenders[name], model) for name, model in models.items()}
    # the count the compiled layout reports: an eager step of the suite's, else the reference style's (same FLOPs)
    eager = next(n for n in ("ours_default", "ours_channels_last", "reference_style") if n in counts)
    ceilings = {p: gemm_tflops(torch.bfloat16 if p == "bf16" else torch.float32) for p in set(arithmetic.values())}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(WARMUP + ROUNDS):
        for name, step in contenders.items():
            _sync()
            start = time.perf_counter()
            step()
            _sync()
            if round_ >= WARMUP:
                times[name].append(time.perf_counter() - start)
    ref = sum(times["reference_style"]) / ROUNDS
    ref_tflops = counts["reference_style"][0] / ref / 1e12
    for name, seconds in times.items():
        mean = sum(seconds) / ROUNDS
        counted_on = name if name in counts else eager
        step_flops, forwarded = counts[counted_on]
        tflops = step_flops / mean / 1e12
        ceiling = ceilings[arithmetic[name]]
        speed_results[f"sem_reference_settings/{name}"] = {
            "mean_s": mean,
            "min_s": min(seconds),
            "rounds": ROUNDS,
            "speedup_vs_reference_style": ref / mean,
            "arithmetic": arithmetic[name],
            "step_flops": step_flops,
            "flops_counted_on": counted_on,
            "forward_images_per_image": forwarded / BATCH,
            "images_per_s": forwarded / mean,
            "achieved_tflops": tflops,
            "gemm_tflops": ceiling,
            "gemm_share": tflops / ceiling,
            "ceiling_speedup_vs_reference_style": ceiling / ref_tflops,
            "device": device_name(DEVICE),
            "arch": ARCH,
            "batch": BATCH,
            "threads": torch.get_num_threads(),
        }
    assert all(len(v) == ROUNDS for v in times.values())
    # the suite's step does the reference's arithmetic: the same passes per image, FLOPs within rounding
    if eager != "reference_style":
        (ours_flops, ours_images), (ref_flops, ref_images) = counts[eager], counts["reference_style"]
        assert ours_images == ref_images
        assert abs(ours_flops - ref_flops) <= 0.02 * ref_flops
