"""What a campaign is, as one frozen value: :class:`CampaignSpec`.

The CLI builds one from its flags; a notebook or script builds one directly::

    from benchmarks.campaign import run_campaign
    from benchmarks.spec import CampaignSpec

    frame = run_campaign(CampaignSpec(methods=("sem", "rem"), defenses=("none", "at4"), seeds=(0, 1)))
    frame.groupby(["method", "defense"])["final_acc"].mean()

Nothing here is checked: :func:`benchmarks.plan.make_plan` validates every field (names, options, paths,
device, executor) before any work starts and raises :class:`benchmarks.errors.UsageError` naming what is
wrong and what is accepted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_METHODS = ("em", "sc", "random")
#: the embedded default protocol: the candidate the protocol study chose by its validity criteria (results/
#: protocol-study.md; README "Protocols"): smoke's design with the victims trained 600 steps. The regression tier
#: tests it (results/expected/smoke-600-fashion-mnist.json) beside smoke's file.
DEFAULT_PRESET = "smoke-600"
DEFAULT_RESULTS = Path("results/cells")
DEFAULT_CACHE = Path(os.environ.get("UEB_CACHE", Path.home() / ".cache" / "uebench" / "noise"))


@dataclass(frozen=True)
class CampaignSpec:
    """Every choice of a campaign: data, protocol, methods and their options, victims, defenses, seeds, budget,
    where it runs and where its results and noise go.

    Attributes:
        dataset: a registered data set (``fashion-mnist``, ``cifar10``, ...).
        preset: the protocol preset (default :data:`DEFAULT_PRESET`; ``smoke``, ``paper``, ``tiny``, the study's
            candidates ``smoke-*``).
        methods: method names or shell wildcards; ``None`` = :data:`DEFAULT_METHODS` (none with noise files).
        options: per method, option overrides, e.g. ``{"sem": {"samples": 3}}``.
        sweeps: per method, option -> values; one poison variant per combination, e.g.
            ``{"sem": {"sample_radius": (0, 2, 4)}}``.
        noise_files: poisons made elsewhere (``.npz`` or a folder of PNGs), evaluated as methods ``file:<stem>``.
        victims: victim names (``timm/<model>`` too); empty = the preset's.
        defenses: defense names or wildcards (``none``, ``at4``, ``jpeg10``, ...).
        seeds: non-negative integers below 2**63.
        radius: the L-inf noise budget rho_u in 1/255 units; None = the preset's (8).
        clean: add the clean baseline (method ``clean``).
        fractions: the protected fractions of the training set: 1.0 (the default) protects every image; a
            fraction below 1 gives cells of that part (``p40``: 40 % protected, the rest clean) and, with the clean
            baseline, the control that trains on the clean rest alone (``rest40``); see :mod:`benchmarks.partial`.
        device: ``auto`` (CUDA if present), ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32`` (the reference's; on CUDA without TF32), ``tf32`` (CUDA only: TF32 tensor cores for
            matmuls and convolutions) or ``bf16`` (bf16 autocast). Never implied by the device: part of every
            cell's protocol hash and of the noise cache key.
        channels_last: the NHWC memory format for models and batches: None (the default) = on for CUDA, off on the
            CPU. On a CPU it speeds small convolutions up (tiny_cnn, one thread: REM's
            generation on smoke-r16 1.16x, its at8 victim 1.21x; README "Speed") but changes the rounding, like
            another machine: the committed CPU numbers were measured without it. Recorded in every
            cell (``env.numerics.channels_last``), not part of hashes or cache keys (as the thread count is not).
        compile_mode: how min-min surrogates run: ``eager`` (the default), ``compile`` (``torch.compile``) or
            ``graphs`` (compiled, replayed as CUDA graphs; CUDA only). Recorded in every cell
            (``env.numerics.compile``), not part of hashes or cache keys: like ``channels_last`` it changes rounding.
        executor: ``local`` or ``ray`` (with ``ray_address``, ``ray_cpus``, ``ray_gpus``).
        workers: the local executor's processes: 1 (this process), N, or ``auto`` (one per thread of this process
            on the CPU, i.e. one per core unless ``OMP_NUM_THREADS`` says fewer; 1 on CUDA). Several run on the CPU
            only, each with an equal share of the threads. Recorded through each cell's thread count
            (``env.numerics.threads``), not part of hashes or cache keys.
    """

    dataset: str = "fashion-mnist"
    preset: str = DEFAULT_PRESET
    methods: tuple[str, ...] | None = None
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    sweeps: Mapping[str, Mapping[str, tuple[Any, ...]]] = field(default_factory=dict)
    noise_files: tuple[Path, ...] = ()
    victims: tuple[str, ...] = ()
    defenses: tuple[str, ...] = ("none",)
    seeds: tuple[int, ...] = (0,)
    radius: float | None = None
    clean: bool = True
    fractions: tuple[float, ...] = (1.0,)
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool | None = None
    compile_mode: str = "eager"
    data_root: Path | None = None
    download: bool = False
    results_dir: Path = DEFAULT_RESULTS
    cache_dir: Path = DEFAULT_CACHE
    retry_errors: bool = False
    progress: bool = True
    executor: str = "local"
    workers: int | str = 1
    ray_address: str | None = None
    ray_cpus: float | None = None
    ray_gpus: float | None = None
