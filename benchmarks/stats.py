"""Uncertainty over seeds: confidence intervals, paired comparisons and statistically tied ranks (scipy).

Every accuracy the suite reports is a mean over seeds with a 95 % confidence interval (Student t, the
seeds as the sample). Methods measured on the same seeds are compared *paired*: victim initialisation,
data order and augmentation depend only on (seed, victim, defense), so the per-seed differences remove
the part of the seed-to-seed variation the methods share. Two methods are "different" only when the
paired t-test over their common seeds rejects equality at ``ALPHA``; otherwise they are tied, and ranks
say so: a method's rank is one plus the number of methods that are *significantly* stronger than it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

LEVEL = 0.95  # confidence level of every interval
ALPHA = 0.05  # significance level of every paired test


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` seeds with its two-sided ``LEVEL`` confidence interval (``half``: half-width)."""

    mean: float
    half: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half


def mean_ci(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean and Student-t confidence interval; the half-width is NaN for fewer than 2 values."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return Interval(math.nan, math.nan, 0)
    if len(x) == 1:
        return Interval(float(x[0]), math.nan, 1)
    sem = float(x.std(ddof=1)) / math.sqrt(len(x))
    return Interval(float(x.mean()), float(st.t.ppf(0.5 + level / 2, len(x) - 1)) * sem, len(x))


@dataclass(frozen=True)
class Paired:
    """``a - b`` over their common seeds: mean difference, its confidence interval and the paired t-test."""

    diff: Interval
    p: float  # two-sided p-value of the paired t-test (NaN with fewer than 2 common seeds)
    seeds: tuple[int, ...]

    @property
    def significant(self) -> bool:
        return math.isfinite(self.p) and self.p < ALPHA


def paired(a: Mapping[int, float], b: Mapping[int, float], level: float = LEVEL) -> Paired:
    """Compare two methods measured per seed (``seed -> value``) on the seeds both have.

    Identical differences on every seed (zero spread) give p = 0 when they are non-zero and p = 1
    when they are zero, instead of scipy's NaN.
    """
    seeds = tuple(sorted(s for s in set(a) & set(b) if math.isfinite(a[s]) and math.isfinite(b[s])))
    d = np.asarray([a[s] - b[s] for s in seeds], dtype=float)
    ci = mean_ci(d.tolist(), level)
    if len(d) < 2:
        return Paired(ci, math.nan, seeds)
    if np.allclose(d, d[0], rtol=0, atol=1e-12):
        return Paired(ci, 1.0 if abs(d[0]) < 1e-12 else 0.0, seeds)
    return Paired(ci, float(st.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue), seeds)


def tied_ranks(scores: Mapping[str, Mapping[int, float]], lower_is_better: bool = True) -> dict[str, int]:
    """Ranks where statistical ties share a rank: one plus the number of entries significantly better.

    Args:
        scores: name -> (seed -> value); entries are compared paired on their common seeds.
        lower_is_better: protection is *lower* victim accuracy.

    Example:
        >>> tied_ranks({"a": {0: .50, 1: .52, 2: .51}, "b": {0: .51, 1: .52, 2: .50}, "c": {0: .9, 1: .91, 2: .92}})
        {'a': 1, 'b': 1, 'c': 3}
    """
    sign = 1.0 if lower_is_better else -1.0
    ranks = {}
    for name, mine in scores.items():
        better = 0
        for other, theirs in scores.items():
            if other == name:
                continue
            test = paired(theirs, mine)
            if test.significant and sign * test.diff.mean < 0:
                better += 1
        ranks[name] = 1 + better
    return ranks


def prediction_half_width(values: Sequence[float], alpha: float) -> float:
    """Half-width of the two-sided ``1 - alpha`` prediction interval of one new draw from the population
    that ``values`` sample (Student t): ``t(1 - alpha/2, n-1) * s * sqrt(1 + 1/n)``."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan
    return float(st.t.ppf(1 - alpha / 2, len(x) - 1) * x.std(ddof=1) * math.sqrt(1 + 1 / len(x)))
