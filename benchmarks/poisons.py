"""The one cache-or-generate path of poisons.

:func:`get_poison` is what a local run, the gallery and any script call: the poison of (training set,
method config, budget, seed) from the noise cache under the key every run uses, else generated and cached.
Its two halves are public for executors that generate elsewhere (Ray): :func:`cached` runs where the cache
is (the driver) and :func:`generate` anywhere; the driver then :func:`save` s what came back.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.cache import NoiseCache
from benchmarks.noise import NoiseMethod
from benchmarks.noisefile import FileNoise
from benchmarks.plan import cache_key, method_key
from benchmarks.types import Budget, Context, ImageSet, Poison, derive_seed

log = logging.getLogger("uebench")


@dataclass(frozen=True)
class GenerationFailure:
    """A noise generation that raised: every cell of its job becomes an error row, the campaign goes on."""

    error: str
    budget: dict[str, Any]
    train_size: int


def cached(
    method: NoiseMethod, train: ImageSet, budget: Budget, key: str | None, dataset: str, cache: NoiseCache
) -> Poison | None:
    """A noise file's poison, or a valid cache entry under ``key``; None when it must be generated."""
    if isinstance(method, FileNoise):
        return method.generate(train, budget, Context(train.x.device, progress=False))
    return None if key is None else cache.load(cache.path(dataset, key), train, budget)


def generate(
    method: NoiseMethod, train: ImageSet, budget: Budget, ctx: Context, seed: int
) -> Poison | GenerationFailure:
    """Generate a poison for a run's ``seed`` (its RNG streams derive from the seed alone; any process).

    Any exception of the method (a bug, NaN, out of memory, a budget violation) is returned as a
    :class:`GenerationFailure` with its traceback logged; a stop (KeyboardInterrupt) is not caught.
    """
    try:
        return method.generate(train, budget, ctx.with_seed(derive_seed(seed, "generate")))
    except Exception as err:
        log.error("generating %s (seed %d) failed", method.name, seed, exc_info=True)
        return GenerationFailure(f"generation failed: {type(err).__name__}: {err}", asdict(budget), len(train))


def save(cache: NoiseCache, dataset: str, key: str | None, poison: Poison, name: str = "") -> None:
    """Store a generated poison in the noise cache (atomically); noise files are never cached."""
    if key is None:
        return
    path = cache.path(dataset, key)
    cache.save(path, poison)
    log.info("generated %s noise in %.1f s -> %s", name, poison.stats.get("wall_s", 0.0), path)


def obtain(
    method: NoiseMethod,
    train: ImageSet,
    budget: Budget,
    key: str | None,
    dataset: str,
    cache: NoiseCache,
    ctx: Context,
    seed: int,
) -> Poison | GenerationFailure:
    """The cached poison under ``key``, else generated for ``seed`` and cached (a failure is not cached)."""
    poison = cached(method, train, budget, key, dataset, cache)
    if poison is None:
        poison = generate(method, train, budget, ctx, seed)
        if isinstance(poison, Poison):
            save(cache, dataset, key, poison, method.name)
    return poison


def get_poison(
    method: NoiseMethod, train: ImageSet, budget: Budget, dataset: str, cache: NoiseCache, ctx: Context, seed: int
) -> Poison | GenerationFailure:
    """The poison of (training set, method config, budget, seed) under the cache key every run uses."""
    key = cache_key(method, method_key(method, budget), train.fingerprint(), seed, ctx.arithmetic)
    return obtain(method, train, budget, key, dataset, cache, ctx, seed)
