"""One cell: train a victim on the protected set under a defense and return its results record.

Runs anywhere (this process or a Ray task) and writes nothing: the driver stores the record.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any

import torch

from benchmarks.env import environment
from benchmarks.models import create_victim
from benchmarks.noise import result_config
from benchmarks.partial import index_digest, parse_part, protected_index, training_part
from benchmarks.plan import Job, Plan
from benchmarks.poisons import GenerationFailure
from benchmarks.robustness import victim_robustness
from benchmarks.store import CellKey
from benchmarks.train import NonFiniteLossError, extra_data_of, fit
from benchmarks.types import ImageSet, Poison, derive_seed

log = logging.getLogger("uebench")


def protect(poison: Poison | GenerationFailure, train: ImageSet, part: str = "") -> ImageSet | None:
    """The training set of a cell: the protected set a data owner would publish, or the part ``part`` of it
    (:func:`benchmarks.partial.training_part`); None when the generation failed."""
    return training_part(poison, train, part) if isinstance(poison, Poison) else None


def train_cell(
    plan: Plan,
    job: Job,
    key: CellKey,
    protected: ImageSet | None,
    test: ImageSet,
    poison: Poison | GenerationFailure,
    full_size: int,
) -> dict[str, Any]:
    """Train the victim of cell ``key`` (one of ``job``'s) on ``protected`` (:func:`protect` of the training set
    of ``full_size`` images, for the cell's part) and return its record, status ``ok`` or ``error``.

    A failed generation, and any exception while training (divergence, out of memory, a bug), give a
    record with status ``error`` and the reason; the traceback is logged.
    """
    defense = plan.defenses[key.defense]
    failed = isinstance(poison, GenerationFailure)
    record: dict[str, Any] = {
        "variant": job.label,
        "method_cfg": result_config(plan.variants[job.label].config),
        "budget": asdict(job.budget),
        "defense_cfg": defense.config(),
        # the threat model: what the defense uses beyond the protected set (not part of its hash)
        "threat_model": {"extra_data": extra_data_of(defense)},
        "recipe": asdict(plan.protocol.recipe),
        "train_size": full_size,  # the protocol's slice (a partial cell may train on fewer: see "partial")
        "test_size": len(test),
        # a cache entry written before the budget travelled with the job carries it in its stats
        "generation": {} if failed else {k: v for k, v in poison.stats.items() if k != "budget"},
        "env": {
            **environment(plan.ctx.device, plan.ctx.arithmetic, plan.ctx.channels_last, plan.ctx.compile_mode),
            # how the campaign ran its tasks: a part's wall time depends on what ran beside it
            "executor": {"name": plan.spec.executor, "workers": plan.workers},
        },
    }
    if key.part:  # which images were protected (or left out): the published list, by its digest
        kind, fraction = parse_part(key.part)
        index = protected_index(full_size, fraction)
        record["partial"] = {
            "fraction": fraction,
            "trains_on": "protected part and clean rest" if kind == "p" else "clean rest only",
            "trained_images": None if protected is None else len(protected),
            "protected_images": len(index) if kind == "p" else 0,
            "index_sha256": index_digest(index),
        }
    if failed or protected is None:
        return {**record, "status": "error", "error": poison.error if failed else "no protected set", "metrics": {}}
    # Victim init, data order and augmentation depend on (seed, victim, defense) only, not on the
    # method: every method is compared on the same random numbers (common random numbers).
    ctx = plan.ctx.with_seed(derive_seed(key.seed, "victim", key.victim, key.defense))
    try:
        ctx.manual_seed()
        model = create_victim(key.victim, protected.num_classes, protected.shape[0])
        result = fit(model, protected, test, defense, plan.protocol.recipe, ctx, desc=key.cell_id)
        # the victim's robust accuracy at its defense's radius (without one: the protocol's rho_a, 4/255 unless the
        # protocol scales its radii): did the defense change it?
        recipe, start = plan.protocol.recipe, time.perf_counter()
        radius = defense.attack_radius or plan.protocol.adv_radius
        robust = victim_robustness(model, test, ctx, radius, recipe.test_view if recipe.crop_size else None)
    except Exception as err:
        if not isinstance(err, NonFiniteLossError | torch.cuda.OutOfMemoryError):
            log.error("cell %s failed", key.cell_id, exc_info=True)
        return {**record, "status": "error", "error": f"{type(err).__name__}: {err}", "metrics": {}}
    metrics = {k: float(v) for k, v in result.as_dict().items() if k in ("final_acc", "peak_acc", "train_acc")}
    return {
        **record,
        "status": "ok",
        "metrics": {**metrics, "peak_step": result.peak_step, "robust_acc": robust["robust_acc"]},
        "victim_robustness": robust,
        "curve": result.curve,
        "wall_s": {
            "train": result.wall_s,
            "robust_eval": time.perf_counter() - start,
            "generate": poison.stats.get("wall_s"),
        },
    }
