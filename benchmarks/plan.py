"""A validated campaign: :func:`make_plan` turns a :class:`~benchmarks.spec.CampaignSpec` into a :class:`Plan`,
and :func:`jobs` lists the poisons to make and the cells each of them fills.

Everything a user could get wrong is checked in :func:`make_plan`, before anything is read or written:
names, method and defense options (typed, with their accepted values), victims and surrogates, seeds,
budget, device and precision, executor options and the output directories.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.cache import NoiseCache
from benchmarks.data import load_dataset, pad_to, stratified_head
from benchmarks.env import code_state, cpu_bf16
from benchmarks.errors import UsageError, check_resource, parse_device, parse_radius
from benchmarks.models import check_victim
from benchmarks.noise import NoiseMethod, config_hash, result_config
from benchmarks.noisefile import FileNoise, NoiseFileError
from benchmarks.partial import check_fraction, parts_of
from benchmarks.presets import Protocol
from benchmarks.registry import DATASETS, DEFENSES, METHODS, PRESETS, UnknownNameError
from benchmarks.spec import DEFAULT_METHODS, CampaignSpec
from benchmarks.store import CellKey, ResultStore, protocol_hash
from benchmarks.train import COMPOSE, Composed, Defense, extra_data_of
from benchmarks.types import COMPILE_MODES, PRECISIONS, Budget, Context, ImageSet

MAX_SEED = 2**63 - 1
log = logging.getLogger("uebench")


@dataclass
class Plan:
    """A validated campaign: nothing in it can fail for a reason the user could have fixed.

    ``variants`` maps each poison variant's label (``sem``, or ``sem[sample_radius=2]`` in a sweep) to its
    method; ``ctx`` may be settled by an executor (:meth:`benchmarks.executors.Executor.connect`).
    """

    spec: CampaignSpec
    protocol: Protocol
    variants: dict[str, NoiseMethod]
    victims: list[str]
    defenses: dict[str, Defense]
    seeds: list[int]
    radius: float
    ctx: Context
    store: ResultStore
    cache: NoiseCache
    #: the protected fractions (1.0: the whole set), checked (:func:`benchmarks.partial.check_fraction`)
    fractions: tuple[float, ...] = (1.0,)
    #: the local executor's worker processes (``auto`` resolved for the device)
    workers: int = 1


@dataclass(frozen=True)
class Job:
    """One poison of the campaign, ``(variant, seed)``, with its budget and its cells not finished yet."""

    label: str  # the key of the variant in ``Plan.variants``
    seed: int
    budget: Budget
    method_hash: str
    cache_key: str | None  # the noise cache entry; None for a noise file (never cached)
    cells: tuple[CellKey, ...]


def method_key(method: NoiseMethod, budget: Budget) -> str:
    """Hash of everything that determines the noise besides data and seed (a noise file: its sha256)."""
    if isinstance(method, FileNoise):
        return method.hash
    return config_hash({"method": method.name, "config": result_config(method.config), "budget": asdict(budget)})


def cache_key(method: NoiseMethod, mhash: str, fingerprint: str, seed: int, arithmetic: str = "fp32") -> str | None:
    """The noise cache entry of a poison (None for a noise file: never cached). Noise generated in another
    arithmetic than fp32 is another entry (``-tf32``, ``-bf16-autocast``): it is another poison."""
    if isinstance(method, FileNoise):
        return None
    return f"{method.name}-{mhash}-{fingerprint}-s{seed}" + ("" if arithmetic == "fp32" else f"-{arithmetic}")


def _variant_label(name: str, combo: Mapping[str, Any]) -> str:
    return f"{name}[{','.join(f'{k}={v}' for k, v in combo.items())}]" if combo else name


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple | dict):
        return all(_finite(v) for v in (value.values() if isinstance(value, dict) else value))
    return True


def _noise_files(paths: tuple[Path, ...]) -> dict[str, FileNoise]:
    files: dict[str, FileNoise] = {}
    for path in paths:
        try:
            method = FileNoise(path)
        except NoiseFileError as err:
            raise UsageError(str(err)) from None
        other = files.get(method.name)
        if other is not None and other.hash != method.hash:
            raise UsageError(
                f"--noise-file {other.path} and {path} have the same name {method.name!r} but different contents; "
                "rename one"
            )
        files.setdefault(method.name, method)
    return files


def _check_executor(spec: CampaignSpec) -> None:
    if spec.executor not in ("local", "ray"):
        raise UsageError(f"--executor must be local or ray, got {spec.executor!r}")
    ray_options = {"--ray-address": spec.ray_address, "--ray-cpus": spec.ray_cpus, "--ray-gpus": spec.ray_gpus}
    for flag, value in ray_options.items():
        if value is not None and spec.executor != "ray":
            raise UsageError(f"{flag} needs --executor ray")
    if spec.ray_address is not None and not spec.ray_address.strip():
        raise UsageError("--ray-address must not be empty")
    check_resource("--ray-cpus", spec.ray_cpus)
    check_resource("--ray-gpus", spec.ray_gpus)
    workers = spec.workers
    if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise UsageError(f"--workers must be a positive integer or auto, got {workers!r}")
    if workers not in (1, "auto") and spec.executor != "local":
        raise UsageError("--workers is for --executor local (a Ray task's CPUs: --ray-cpus)")


def _workers(spec: CampaignSpec, device: torch.device) -> int:
    """``spec.workers`` for ``device``: ``auto`` is one process per thread of this one on the CPU, 1 on CUDA."""
    if spec.workers == "auto":
        return torch.get_num_threads() if device.type == "cpu" and spec.executor == "local" else 1
    if spec.workers > 1 and device.type != "cpu":
        raise UsageError(
            f"--workers {spec.workers} runs worker processes on the CPU; the device is {device}: use --workers 1 "
            "(one GPU), or --executor ray --ray-gpus 0.5 to share one"
        )
    return int(spec.workers)


def _combos(name: str, axes: Mapping[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Every combination of a method's sweep axes (one empty combination without a sweep)."""
    for key, values in axes.items():
        if not values or any(not _finite(v) for v in values):
            raise UsageError(f"--sweep {name}.{key}: values must be non-empty and finite")
        if len(set(map(str, values))) != len(values):
            raise UsageError(f"--sweep {name}.{key}: repeated value")
    keys = list(axes)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(axes[k] for k in keys))] or [{}]


def _variants(spec: CampaignSpec, protocol: Protocol, names: list[str], files: dict[str, FileNoise]) -> dict:
    for what, table in (("--set", spec.options), ("--sweep", spec.sweeps)):
        for method, values in table.items():
            if method not in names:
                raise UsageError(f"{what} {method}.*: method {method!r} is not in --methods ({' '.join(names)})")
            if method in files and values:
                raise UsageError(f"{what} {method}.*: a noise file has no options")
            if what == "--set" and not _finite(dict(values)):
                raise UsageError(f"--set {method}.*: values must be finite (no NaN or infinity)")
    variants: dict[str, NoiseMethod] = {}
    try:
        for name in names:
            if name in files:
                variants[name] = files[name]
                continue
            for combo in _combos(name, spec.sweeps.get(name, {})):
                overrides = {**protocol.method_options(name), **spec.options.get(name, {}), **combo}
                variants[_variant_label(name, combo)] = METHODS.get(name)(**overrides)
    except (ValueError, TypeError) as err:
        raise UsageError(str(err)) from None
    for label, method in variants.items():
        surrogate = getattr(getattr(method, "config", None), "surrogate", None)
        if surrogate is not None:
            try:
                check_victim(surrogate, "surrogate")
            except UnknownNameError as err:
                raise UsageError(f"{label}: {err}") from None
    return variants


def resolve_defenses(patterns: Sequence[str]) -> list[str]:
    """Defense names and wildcards expanded in order (:meth:`Registry.resolve`); a composition ``a+b`` is one
    name whose parts are each checked (no wildcards inside a composition); ``@iss`` is the named grid's members
    (:meth:`Registry.group`).

    Raises:
        UnknownNameError: an unknown part or grid, or a wildcard in a composition.
    """
    out: list[str] = []
    expanded = [m for p in patterns for m in (DEFENSES.members(p) if p.startswith("@") else (p,))]
    for pattern in expanded:
        if COMPOSE not in pattern:
            found = DEFENSES.resolve([pattern])
        else:
            parts = pattern.split(COMPOSE)
            if any(not part or any(ch in part for ch in "*?[") for part in parts):
                raise UnknownNameError(
                    f"defense {pattern!r}: a composition joins defense names with '{COMPOSE}' (e.g. jpeg10+at4), "
                    "without empty parts or wildcards"
                )
            for part in parts:
                DEFENSES.get(part)
            found = [pattern]
        out.extend(n for n in found if n not in out)
    return out


def build_defense(name: str, protocol: Protocol) -> Defense:
    """The defense ``name`` with the preset's options for its family; ``a+b`` composes the parts (:class:`Composed`).

    Raises:
        ValueError, TypeError: bad parameters, a composition that is refused, or an unknown ``extra_data``.
    """
    parts = [DEFENSES.get(part)(**protocol.defense_options(DEFENSES.template(part))) for part in name.split(COMPOSE)]
    defense = parts[0] if len(parts) == 1 else Composed(name, parts)
    extra_data_of(defense)  # its threat model is one the results can say
    return defense


def cuda_only(spec: CampaignSpec) -> list[tuple[str, str, str]]:
    """The options of ``spec`` that need CUDA: (option, why, what to use instead). ``make_plan`` refuses them on a
    device without CUDA, and the Ray executor on a cluster without a GPU."""
    out = []
    if spec.precision == "tf32":
        out.append(("--precision tf32", "TF32 tensor cores", "fp32 or bf16"))
    if spec.compile_mode == "graphs":
        out.append(("--compile graphs", "CUDA graphs", "eager or compile"))
    return out


def make_plan(spec: CampaignSpec) -> Plan:
    """Resolve and check every field of ``spec``; raises :class:`UsageError`, reads and writes nothing."""
    if spec.dataset not in DATASETS:
        raise UsageError(f"unknown dataset {spec.dataset!r}; accepted: {', '.join(DATASETS.accepted())}")
    if spec.methods is not None and not spec.methods and not spec.noise_files:
        raise UsageError("--methods: give at least one method (or leave it out for the defaults)")
    requested = list(spec.methods) if spec.methods is not None else ([] if spec.noise_files else list(DEFAULT_METHODS))
    try:
        protocol: Protocol = PRESETS.get(spec.preset)(spec.dataset)
        names = METHODS.resolve(requested)
        defense_names = resolve_defenses(spec.defenses)
        victims = list(spec.victims) or [protocol.victim]
        for victim in victims:
            check_victim(victim)
    except UnknownNameError as err:
        raise UsageError(str(err)) from None
    if not spec.defenses:
        raise UsageError("--defense: give at least one defense")
    _check_executor(spec)
    files = _noise_files(tuple(spec.noise_files))
    names += list(files)
    if spec.clean and "clean" not in names:
        names.insert(0, "clean")
    if not spec.seeds or any(
        isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED for s in spec.seeds
    ):
        raise UsageError(f"--seeds must be non-negative integers below 2^63, got {' '.join(map(str, spec.seeds))}")
    variants = _variants(spec, protocol, names, files)
    try:
        fractions = tuple(dict.fromkeys(check_fraction(f) for f in spec.fractions))
    except ValueError as err:
        raise UsageError(f"--fractions: {err}") from None
    if not fractions:
        raise UsageError("--fractions: give at least one fraction (1 protects the whole set)")
    try:
        defenses = {n: build_defense(n, protocol) for n in defense_names}
    except (ValueError, TypeError) as err:
        raise UsageError(str(err)) from None
    radius = parse_radius(spec.radius, protocol.radius)
    if spec.precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {spec.precision!r}")
    if spec.compile_mode not in COMPILE_MODES:
        raise UsageError(f"--compile must be one of {', '.join(COMPILE_MODES)}, got {spec.compile_mode!r}")
    device = parse_device(spec.device, here=spec.executor == "local")
    needed = cuda_only(spec)
    if needed and device.type != "cuda" and (spec.executor == "local" or spec.device != "auto"):
        # (a Ray cluster resolves --device auto when it connects, and refuses these there without a GPU)
        option, why, instead = needed[0]
        raise UsageError(f"{option} needs CUDA ({why}); the device is {device}: use {instead}")
    if spec.precision == "bf16" and device.type == "cpu" and cpu_bf16() is None:
        log.warning(
            "--precision bf16 on the CPU: this CPU has no native bf16 (AMX or AVX512-BF16), and autocast to bf16 runs "
            "about 20x slower than fp32 on such CPUs (measured: ResNet-18 forward + input gradient on 2 AVX2 cores); "
            "it is recorded in every cell"
        )
    if spec.channels_last not in (None, True, False):
        raise UsageError(f"channels_last must be true, false or null (on for CUDA only), got {spec.channels_last!r}")
    workers = _workers(spec, device)
    ctx = Context(
        device,
        precision=spec.precision,
        channels_last=spec.channels_last,
        progress=spec.progress,
        compile_mode=spec.compile_mode,
    )
    code_state()  # the code's version as this process imported it, recorded in every cell (benchmarks.env)
    for what, directory in (("--results-dir", spec.results_dir), ("--cache-dir", spec.cache_dir)):
        if "\x00" in str(directory):
            raise UsageError(f"{what}: a path cannot contain a NUL byte: {str(directory)!r}")
        try:
            ResultStore(directory).check_writable()
        except (OSError, ValueError) as err:  # PermissionError, a name too long, a NUL byte
            raise UsageError(f"{what}: {err}") from None
    return Plan(
        spec, protocol, variants, victims, defenses, sorted(set(spec.seeds)), radius, ctx,
        ResultStore(spec.results_dir), NoiseCache(spec.cache_dir), fractions, workers,
    )  # fmt: skip


def load_data(plan: Plan) -> tuple[ImageSet, ImageSet]:
    """The protocol's class-balanced slices of the data set, padded to its image size (raises DatasetMissingError)."""
    p = plan.protocol
    train, test = load_dataset(p.dataset, plan.spec.data_root, plan.spec.download)
    train, test = stratified_head(train, p.train_size), stratified_head(test, p.test_size)
    return pad_to(train, p.image_size), pad_to(test, p.image_size)


def load_noise_files(plan: Plan, train: ImageSet) -> None:
    """Read and check every noise file against the training slice; raises :class:`NoiseFileError`."""
    for method in plan.variants.values():
        if isinstance(method, FileNoise):
            method.load(train, method.budget(train.shape, plan.radius))


def jobs(plan: Plan, train: ImageSet, test: ImageSet) -> tuple[list[CellKey], list[Job]]:
    """Every cell of the plan, and the jobs that fill the unfinished ones (seed-major, in variant order)."""
    fingerprint = train.fingerprint()
    recipe = asdict(plan.protocol.recipe)
    protocols = {
        name: protocol_hash(recipe, defense.config(), len(train), len(test), plan.ctx.arithmetic)
        for name, defense in plan.defenses.items()
    }
    keys: list[CellKey] = []
    todo: list[Job] = []
    for seed in plan.seeds:
        for label, method in plan.variants.items():
            budget = method.budget(train.shape, plan.radius)
            mhash = method_key(method, budget)
            p = plan.protocol
            cells = [
                CellKey(p.dataset, p.preset, method.name, mhash, v, d, protocols[d], seed, part)
                for part in _parts(plan, method)
                for v in plan.victims
                for d in plan.defenses
            ]
            keys.extend(cells)
            open_cells = tuple(k for k in cells if not _finished(plan, k))
            if open_cells:
                key = cache_key(method, mhash, fingerprint, seed, plan.ctx.arithmetic)
                todo.append(Job(label, seed, budget, mhash, key, open_cells))
    return keys, todo


def _parts(plan: Plan, method: NoiseMethod) -> list[str]:
    """The training-set parts of a variant's cells: "" (the whole set) for the fraction 1; for each fraction
    below 1 its partly protected set (``p40``), and for the clean baseline the clean rest alone (``rest40``,
    the control; the clean baseline "partly protected" would be the clean set again)."""
    parts = []
    for fraction in plan.fractions:
        if fraction == 1.0:
            parts.append("")
            continue
        protected, rest = parts_of(fraction)
        parts.append(rest if method.name == "clean" else protected)
    return parts


def _finished(plan: Plan, key: CellKey) -> bool:
    record = plan.store.load(key)
    return record is not None and (record["status"] == "ok" or not plan.spec.retry_errors)
