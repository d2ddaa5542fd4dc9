"""The environment a number was measured in: code version, and everything that decides the numerics.

A training run is deterministic on one machine, but its numbers move with the kernels torch dispatches
to: the instruction set ATen's vectorised kernels use (``ATEN_CPU_CAPABILITY``), oneDNN's convolution
kernels (``ONEDNN_MAX_CPU_ISA``, and its blocking, which depends on the CPU model), the number of threads
that split each reduction, and on a GPU the cuDNN version, TF32 and the deterministic flags. A cell
records all of them in ``env.numerics`` so two numbers can be compared knowing what differed.

``dirty`` says whether the code (every tracked file outside ``results/``, and untracked files in the
packages) differed from the commit; ``diff_sha256`` then identifies the exact difference.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from benchmarks import __version__

REPO = Path(__file__).resolve().parent.parent
#: paths whose changes do not change what the code computes: measured results and their reports
RESULTS_PATHSPEC = ":(exclude)results"
CODE_DIRS = ("benchmarks", "methods", "victims", "analysis", "scripts")
#: environment variables that change which kernels run (or how many threads split them)
NUMERICS_VARIABLES = (
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "MKL_CBWR",
    "CUBLAS_WORKSPACE_CONFIG",
)

#: dense peak TFLOP/s of known GPUs by a pattern of their name (NVIDIA data sheets; tensor-core figures without
#: sparsity): fp32 without tensor cores, tf32 and bf16 on tensor cores. The first pattern in the name wins.
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H100 PCIe", {"fp32": 51.0, "tf32": 378.0, "bf16": 756.0}),
    ("H100", {"fp32": 67.0, "tf32": 495.0, "bf16": 989.0}),  # SXM5, e.g. "NVIDIA H100 80GB HBM3"
    ("H200", {"fp32": 67.0, "tf32": 495.0, "bf16": 989.0}),
    ("A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0}),
)


def _git(*args: str, text: bool = True) -> Any:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=text, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if text else out.stdout


def source_state() -> dict[str, Any]:
    """``git_commit``, ``dirty`` and, when dirty, ``diff_sha256`` of the code (``results/`` excluded).

    Untracked files count when they sit in a code directory (a new method file changes what runs).
    ``dirty`` is None outside a git checkout (an installed package).
    """
    commit = _git("rev-parse", "--short=12", "HEAD")
    if commit is None:
        return {"git_commit": None, "dirty": None}
    diff = _git("diff", "HEAD", "--binary", "--", ".", RESULTS_PATHSPEC, text=False) or b""
    untracked = _git("ls-files", "--others", "--exclude-standard", "--", *CODE_DIRS) or ""
    if not diff and not untracked:
        return {"git_commit": commit, "dirty": False}
    digest = hashlib.sha256(diff)
    for name in sorted(untracked.splitlines()):
        digest.update(name.encode() + b"\0")
        try:
            digest.update((REPO / name).read_bytes())
        except OSError:
            pass
    return {"git_commit": commit, "dirty": True, "diff_sha256": digest.hexdigest()[:16]}


@functools.cache
def code_state() -> dict[str, Any]:
    """:func:`source_state` of the code this process runs, taken once, at the first call (the runner makes it while
    it validates, before any work). A checkout that moves under a running campaign (a pull, an edit) changes the
    code on disk, not the code already imported: the cells the campaign writes afterwards keep the state it started
    from instead of being labelled with a commit that never ran."""
    return source_state()


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_bf16() -> str | None:
    """The CPU's native bf16 arithmetic, which oneDNN's bf16 convolutions use: ``amx`` (AMX tiles), ``avx512_bf16``,
    or None (bf16 is emulated: autocast to it is slower than fp32).

    Measured, ResNet-18 forward + input gradient of 64 images at one thread: bf16 autocast 3.1x faster than fp32 on an
    Intel Xeon with AMX (4.1x with channels_last); 20x slower on 2 AVX2 cores without it.
    """
    probes = (("amx", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported"))
    for name, probe in probes:
        supported = getattr(torch.cpu, probe, None)  # private in torch 2.x: absent means unknown, taken as no
        if supported is not None and supported():
            return name
    return None


def machine(env: dict[str, Any]) -> str:
    """The machine a cell's ``env`` names: its device and, on a CPU, the CPU's model (``cpu (1 threads), AMD EPYC``):
    the same seed moves between CPU models, and so does the time."""
    device = str(env.get("device", "?"))
    cpu = (env.get("numerics") or {}).get("cpu")
    return f"{device}, {cpu}" if cpu and device.startswith("cpu") else device


def device_name(device: torch.device) -> str:
    """A human name of the device, e.g. ``cpu (2 threads)`` or ``NVIDIA H100 80GB HBM3``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


def peak_tflops(name: str) -> dict[str, float] | None:
    """The dense peak TFLOP/s of the device called ``name`` per arithmetic (``fp32``, ``tf32``, ``bf16``), if known."""
    return next((dict(peaks) for pattern, peaks in PEAK_TFLOPS if pattern in name), None)


def peak_shares(name: str, precision: str, tflops: float) -> dict[str, float]:
    """``tflops`` as a share of the dense peak of the device ``name`` at ``precision`` (``fp32``, ``tf32``,
    ``bf16``: :attr:`benchmarks.types.Context.precision`, which sets the TF32 switches). Empty for a device
    without a known peak (a CPU)."""
    peaks = peak_tflops(name)
    if peaks is None:
        return {}
    return {precision: tflops / peaks[precision]}


def numerics(
    device: torch.device,
    precision: str | None = None,
    channels_last: bool | None = None,
    compile_mode: str | None = None,
) -> dict[str, Any]:
    """What decides the floating-point results on ``device``: kernels, threads, libraries, flags."""
    out: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the ISA of ATen's vectorised kernels
        "cpu_bf16": cpu_bf16(),  # native bf16 units (what --precision bf16 costs on a CPU)
        "threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "precision": precision,
        "channels_last": channels_last,  # the memory format of models and batches (None: not said)
        "compile": compile_mode,  # how min-min surrogates ran: eager, compile, graphs (None: not said)
        "variables": {k: os.environ[k] for k in NUMERICS_VARIABLES if k in os.environ},
    }
    if device.type == "cuda":
        out.update(
            gpu=torch.cuda.get_device_name(device),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            cudnn_deterministic=torch.backends.cudnn.deterministic,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        )
    return out


def environment(
    device: torch.device,
    precision: str | None = None,
    channels_last: bool | None = None,
    compile_mode: str | None = None,
) -> dict[str, Any]:
    """Code version (commit, dirty flag, diff hash), library versions, device, numerics, time."""
    return {
        "uebench": __version__,
        **code_state(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device_name(device),
        "numerics": numerics(device, precision, channels_last, compile_mode),
        "timestamp_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
