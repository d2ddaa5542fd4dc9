"""Is a miniature protocol valid? Four criteria, computed from a preset's results cells, not assumed.

A miniature of the paper protocol (the ``smoke`` preset: a small victim, a few hundred steps, a slice of the data)
can only answer the mission's question (do EM's, REM's and SEM's protections survive adversarial training?) if

(a) **plateau**: its victims are trained to a plateau: under ``none`` and ``at4``, the mean change between the last
    two evaluations of a victim's curve is within the seed spread of its final accuracy (standard deviation over
    seeds), for each of the mission's victims (clean, EM, REM, SEM: the same four for every candidate, so that a
    candidate on which more methods were run is not judged on more pairs; the others' pairs are shown, not judged);
(b) **adversarial training acts**: the clean victim trained under ``at4`` is well more robust at 4/255 than the one
    trained without it: the paired difference of their robust accuracies (the victims' own, recorded in every
    cell) is positive with 95 % confidence and at least :data:`ROBUST_GAIN`;
(c) **surrogates fit**: the min-min surrogates fit their protected data: EM's final surrogate classifies at least
    :data:`SURROGATE_FIT` of its protected training images (REM's and SEM's are shown);
(d) **it is quick**: the mission's command, ``python -m benchmarks.run --methods sem rem --defense at4`` (seed 0:
    two generations and three trainings), takes at most :data:`MISSION_BUDGET_S` seconds, from the wall times its
    parts recorded (generation, training, evaluation; loading the data set is not counted), on the machine the
    cells name: their sum where the cells ran in one process, the local executor's schedule replayed on them
    (:func:`pool_makespan`) where they ran in ``--workers N`` processes.

``python -m benchmarks.validate --preset smoke`` prints them (:func:`report`); a criterion whose cells are missing
is "not measured", and counts as not met.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks import stats
from benchmarks.env import machine
from benchmarks.registry import PRESETS

SURROGATE_FIT = 0.98
ROBUST_GAIN = 0.10
MISSION_BUDGET_S = 600.0
#: the mission's command: its methods (the clean baseline is always added) and defense (the papers' at4; a protocol
#: that scales its radii names its own: ``Protocol.mission_defense``)
MISSION_METHODS = ("clean", "sem", "rem")
MISSION_DEFENSE = "at4"
MIN_MIN = ("em", "rem", "sem")


@dataclass(frozen=True)
class Criterion:
    """One criterion: ``met`` None when the cells do not measure it."""

    name: str
    rule: str
    met: bool | None
    measured: str
    details: tuple[str, ...] = ()
    value: float = math.nan  # the number judged, where one is (the mission's seconds for (d))


def main_variants(records: Sequence[dict[str, Any]], dataset: str, preset: str) -> list[dict[str, Any]]:
    """The whole-set ok cells of ``preset`` on ``dataset``, of each method's main variant only: the config hash with
    the most cells (a sweep's variants, run on fewer seeds, are not the method the mission's command runs)."""
    cells = [
        r
        for r in records
        if r.get("status") == "ok" and r["dataset"] == dataset and r["preset"] == preset and not r.get("part")
    ]
    counts: dict[str, dict[str, int]] = {}
    for r in cells:
        hashes = counts.setdefault(r["method"], {})
        hashes[r["method_hash"]] = hashes.get(r["method_hash"], 0) + 1
    main = {m: max(sorted(h), key=h.__getitem__) for m, h in counts.items()}
    return [r for r in cells if r["method_hash"] == main[r["method"]]]


def per_seed(cells: Sequence[dict[str, Any]], method: str, defense: str) -> dict[int, float]:
    """``seed -> final clean test accuracy`` of ``method`` under ``defense`` (what :func:`stats.paired` compares)."""
    return {
        int(r["seed"]): float(r["metrics"]["final_acc"])
        for r in cells
        if (r["method"], r["defense"]) == (method, defense)
    }


def _pp(value: float) -> str:
    return f"{value * 100:+.2f}" if math.isfinite(value) else "—"


def plateau(cells: Sequence[dict[str, Any]], mission: str = MISSION_DEFENSE) -> Criterion:
    """(a): per (method, defense) under ``none`` and ``mission``, |mean last-evaluation change| <= seed SD, judged on
    the mission's victims (clean and :data:`MIN_MIN`); other methods' pairs are listed as not judged."""
    judged_methods = ("clean", *MIN_MIN)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in cells:
        if r["defense"] in ("none", mission) and len(r.get("curve") or []) >= 2:
            groups.setdefault((r["method"], r["defense"]), []).append(r)
    rows, failed, measured_pairs, others = [], [], set(), []
    for (method, defense), group in sorted(groups.items()):
        if len({r["seed"] for r in group}) < 2:
            continue
        drift = float(np.mean([r["curve"][-1][1] - r["curve"][-2][1] for r in group]))
        spread = float(np.std([r["metrics"]["final_acc"] for r in group], ddof=1))
        line = f"{method}/{defense}: last change {_pp(drift)} pp, seed SD {spread * 100:.2f} pp (n {len(group)})"
        if method not in judged_methods:
            others.append(f"{line}, {'within' if abs(drift) <= spread else 'beyond'} the spread (not judged)")
            continue
        measured_pairs.add((method, defense))
        rows.append(line)
        if abs(drift) > spread:
            failed.append(line)
    rule = (
        f"under none and {mission}, the mission's victims' (clean, EM, REM, SEM) mean change over the last two "
        "evaluations is within the seed SD"
    )
    if not rows:
        none_run = f"no mission victim with 2 seeds and a curve under none or {mission}"
        return Criterion("(a) plateau", rule, None, none_run, tuple(others))
    measured = f"{len(rows) - len(failed)} of {len(rows)} (method, defense) pairs within the seed spread"
    # the mission's methods must all have been measured before the criterion is met (one that moves is enough to
    # fail it): a candidate whose clean victims alone were run is not judged on them
    missing = [f"{m}/{d}" for m in judged_methods for d in ("none", mission) if (m, d) not in measured_pairs]
    if missing and not failed:
        return Criterion(
            "(a) plateau", rule, None, f"{measured}; not run on 2 seeds: {' '.join(missing)}", tuple(others)
        )
    return Criterion("(a) plateau", rule, not failed, measured, (*(failed or rows[:4]), *others))


def adversarial_training_acts(
    cells: Sequence[dict[str, Any]], mission: str = MISSION_DEFENSE, radius: float = 4.0
) -> Criterion:
    """(b): the clean ``mission`` victim's robust accuracy at ``radius``/255 against the standard victim's, paired over
    seeds."""
    robust: dict[str, dict[int, float]] = {"none": {}, mission: {}}
    for r in cells:
        measured = r.get("victim_robustness") or {}
        if r["method"] == "clean" and r["defense"] in robust and measured.get("radius") == radius:
            robust[r["defense"]][int(r["seed"])] = float(measured["robust_acc"])
    rule = (
        f"clean victim, robust accuracy at {radius:g}/255: {mission} - none > 0 (95 % CI) and >= "
        f"{ROBUST_GAIN * 100:g} points"
    )
    test = stats.paired(robust[mission], robust["none"])
    if test.diff.n < 2:
        seeds = {d: sorted(v) for d, v in robust.items()}
        return Criterion("(b) adversarial training acts", rule, None, f"fewer than 2 common seeds recorded it {seeds}")
    means = {d: stats.mean_ci(list(v.values())) for d, v in robust.items()}
    met = test.diff.low > 0 and test.diff.mean >= ROBUST_GAIN
    measured = (
        f"standard victim {means['none'].mean * 100:.1f} %, {mission} victim {means[mission].mean * 100:.1f} %; "
        f"{mission} - none {_pp(test.diff.mean)} pp [{_pp(test.diff.low)}, {_pp(test.diff.high)}], p {test.p:.3g}, "
        f"seeds {' '.join(map(str, test.seeds))}"
    )
    return Criterion("(b) adversarial training acts", rule, met, measured)


def surrogates_fit(cells: Sequence[dict[str, Any]]) -> Criterion:
    """(c): the final surrogate's accuracy on its protected training images (generation stats)."""
    fit: dict[str, dict[int, float]] = {}
    for r in cells:
        value = (r.get("generation") or {}).get("surrogate_clean_acc")
        if r["method"] in MIN_MIN and isinstance(value, int | float):
            fit.setdefault(r["method"], {})[int(r["seed"])] = float(value)
    rule = f"EM's final surrogate fits at least {SURROGATE_FIT * 100:g} % of its protected training images"
    details = tuple(
        f"{m}: min {min(v.values()) * 100:.1f} %, mean {np.mean(list(v.values())) * 100:.1f} % over seeds "
        f"{' '.join(map(str, sorted(v)))}"
        for m, v in sorted(fit.items())
    )
    if "em" not in fit:
        return Criterion("(c) surrogates fit", rule, None, "no EM poison recorded its surrogate's accuracy", details)
    worst = min(fit["em"].values())
    return Criterion("(c) surrogates fit", rule, worst >= SURROGATE_FIT, f"EM worst seed {worst * 100:.1f} %", details)


def pool_makespan(jobs: Sequence[tuple[float, Sequence[float]]], workers: int) -> float:
    """Seconds until the last of ``jobs`` (generation seconds, its cells' seconds), in submission order, is done on
    ``workers`` processes, scheduled as :class:`benchmarks.executors.LocalExecutor` does: every generation queued
    first, a job's cells queued when its generation ends, a free worker takes the task queued longest."""
    free = [0.0] * workers  # when each worker is next free
    queue: list[tuple[float, int, float, int | None]] = [(0.0, j, g, j) for j, (g, _) in enumerate(jobs)]
    order = len(jobs)  # submission order breaks ties of queueing time
    end = 0.0
    while queue:
        queued, _, seconds, job = queue.pop(0)
        worker = min(range(workers), key=free.__getitem__)
        free[worker] = max(free[worker], queued) + seconds
        end = max(end, free[worker])
        if job is not None:  # its cells are queued when it ends
            for cell in jobs[job][1]:
                queue.append((free[worker], order, cell, None))
                order += 1
            queue.sort(key=lambda task: task[:2])
    return end


def mission_time(cells: Sequence[dict[str, Any]], mission: str = MISSION_DEFENSE) -> Criterion:
    """(d): seconds of the mission's command per seed, from the generation and training times its parts recorded:
    their sum (one process), or their schedule on the workers the cells ran in (``env.executor.workers``).

    Where no seed has all of its cells, the parts a seed has are a lower bound: over the budget, the criterion is
    not met (a protocol whose one adversarial training already takes longer is measured without the rest).
    """
    rule = f"the mission's command (sem rem under {mission}, seed 0) within {MISSION_BUDGET_S:g} s, from recorded times"
    parts: dict[int, dict[str, tuple[float, float]]] = {}
    workers: dict[int, int] = {}
    devices = set()
    for r in cells:
        if r["method"] in MISSION_METHODS and r["defense"] == mission:
            wall = r.get("wall_s") or {}
            train = float(wall.get("train") or math.nan) + float(wall.get("robust_eval") or 0.0)
            generate = float((r.get("generation") or {}).get("wall_s") or 0.0)
            seed = int(r["seed"])
            parts.setdefault(seed, {})[r["method"]] = (generate, train)
            workers[seed] = max(workers.get(seed, 1), int((r["env"].get("executor") or {}).get("workers") or 1))
            devices.add(machine(r["env"]))

    def seconds(seed: int) -> float:
        # the command's jobs in its order: the clean baseline first, then the methods as the command names them
        jobs = [parts[seed][m] for m in MISSION_METHODS if m in parts[seed]]
        if workers[seed] == 1:
            return sum(g + t for g, t in jobs)
        return pool_makespan([(g, [t]) for g, t in jobs], workers[seed])

    def where(seed: int) -> str:
        pool = f", {workers[seed]} workers" if workers[seed] > 1 else ""
        return f"on {' and '.join(sorted(devices))}{pool}"

    complete = {s: seconds(s) for s, v in parts.items() if set(v) == set(MISSION_METHODS)}
    if not complete or not all(math.isfinite(t) for t in complete.values()):
        bounds = {s: seconds(s) for s, v in parts.items() if all(math.isfinite(g + t) for g, t in v.values())}
        if bounds and min(bounds.values()) > MISSION_BUDGET_S:
            seed = min(bounds, key=bounds.__getitem__)
            have = " ".join(sorted(parts[seed]))
            alone = f"seed {seed}'s {have} cells alone (the rest not run)"
            measured = f"at least {bounds[seed]:.0f} s: {alone} {where(seed)}"
            return Criterion("(d) quick", rule, False, measured, value=bounds[seed])
        return Criterion("(d) quick", rule, None, f"no seed with clean, sem and rem cells under {mission}")
    seed = 0 if 0 in complete else min(complete)
    worst = max(complete.values())
    measured = (
        f"seed {seed}: {complete[seed]:.0f} s (every seed: {min(complete.values()):.0f} to {worst:.0f} s) {where(seed)}"
    )
    return Criterion("(d) quick", rule, complete[seed] <= MISSION_BUDGET_S, measured, value=complete[seed])


def evaluate_protocol(
    records: Sequence[dict[str, Any]], dataset: str, preset: str, timing: Sequence[dict[str, Any]] | None = None
) -> list[Criterion]:
    """The four criteria of ``preset`` on ``dataset`` from its whole-set ok cells among ``records``, under the
    protocol's own adversarial training and rho_a (``Protocol.mission_defense``, ``adv_radius``: at4 and 4/255 unless
    it scales its radii).

    ``timing``: cells of the mission's command run alone on the machine, if any; (d) is then judged on them, and (a)
    to (c) on ``records`` only (a campaign's cells, run side by side in one-thread processes, measure accuracy as
    well as any, but not the time a user waits; mixing the two would put one machine's seed among another's)."""
    protocol = PRESETS.get(preset)(dataset)
    mission, radius = protocol.mission_defense, protocol.adv_radius
    cells = main_variants(records, dataset, preset)
    timed = main_variants(timing, dataset, preset) if timing is not None else []
    return [
        plateau(cells, mission),
        adversarial_training_acts(cells, mission, radius),
        surrogates_fit(cells),
        mission_time(timed or cells, mission),
    ]


def met_count(criteria: Sequence[Criterion]) -> int:
    """How many of ``criteria`` are met (a criterion not measured is not)."""
    return sum(c.met is True for c in criteria)


def report(criteria: Sequence[Criterion], dataset: str, preset: str) -> list[str]:
    """The lines :func:`benchmarks.validate.main` prints."""
    lines = [f"protocol {preset} on {dataset}: validity criteria"]
    for c in criteria:
        verdict = "not measured" if c.met is None else ("met" if c.met else "NOT met")
        lines += [f"{c.name}: {verdict}. {c.measured}", f"    rule: {c.rule}"]
        lines += [f"    {d}" for d in c.details]
    met = met_count(criteria)
    lines.append(f"{met} of {len(criteria)} criteria met")
    return lines
