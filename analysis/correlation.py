"""Robustness of the noise vs. protection: the SEM paper's correlation study, from the results cells.

    python -m analysis.correlation [--results-dir results/cells] [--defense at4] [--out-dir results/figures]

One point per poison variant (data set, preset, method, config hash) and victim: x is a robustness number
from the cells' ``generation`` block (``surrogate_robust_acc``, ``noise_robustness``; see
:mod:`benchmarks.robustness`), at the surrogate's own rho_a and, with the suffix ``_fixed``, at 4/255 for
every variant (a sweep of rho_a compares on one scale), averaged over the variant's poisons (seeds); y is the
victim's mean final clean test accuracy under ``--defense``. Variants without robustness numbers (clean, random,
sc, or cells generated before they were recorded) are skipped and named. Each (data set, preset, victim) with at
least 3 points gets a regression plot per robustness number with Pearson's r, its 95 % confidence interval (Fisher's z)
and its p-value.

Writes ``correlation_<defense>.png``, ``correlation_<defense>.csv`` (the points) and
``correlation_<defense>_stats.csv`` (n, r, p, r_low, r_high per panel) under ``--out-dir``.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import seaborn as sns
from scipy import stats

from analysis._cli import check_out_dir, save_csv, save_png, subplots
from benchmarks.errors import HelpFormatter, Parser, UsageError, fail
from benchmarks.matrix import ROBUSTNESS, ROBUSTNESS_FIXED, ResultsError, cells_frame, load_records, poison_frame

PROG = "python -m analysis.correlation"
MIN_POINTS = 3
GROUP = ["dataset", "preset", "victim"]
VARIANT = ["dataset", "preset", "method", "method_hash"]
#: every robustness number, at each method's own rho_a and at 4/255 for every variant
METRICS = (*ROBUSTNESS, *ROBUSTNESS_FIXED)
AXIS = {
    "surrogate_robust_acc": "surrogate robust accuracy (PGD on x+δ), own rho_a",
    "noise_robustness": "noise robustness (−mean CE rise under PGD), own rho_a",
    "surrogate_robust_acc_fixed": "surrogate robust accuracy (PGD on x+δ), 4/255",
    "noise_robustness_fixed": "noise robustness (−mean CE rise under PGD), 4/255",
}


def points(frame: pd.DataFrame, defense: str) -> tuple[pd.DataFrame, list[str]]:
    """``(points, skipped)``: one row per (variant, victim) under ``defense`` with at least one robustness number.

    ``skipped`` names the variants (``dataset/preset/label``) that have none. Cells of partial protection (a part of
    the training set protected) are left out: their accuracy is not the poison's.

    Raises:
        ResultsError: no finished cell under ``defense``.
    """
    # a cell that trains on a partly protected set (partial protection: part p40, rest40) is not a poison variant
    ok = frame[(frame["status"] == "ok") & (frame["part"] == "")]
    cells = ok[ok["defense"] == defense]
    if cells.empty:
        present = ", ".join(sorted(set(ok["defense"]))) or "none finished"
        raise ResultsError(f"no finished cells under defense {defense!r}; defenses present: {present}")
    robust = poison_frame(cells).groupby(VARIANT, sort=True)[list(METRICS)].mean()
    acc = cells.groupby([*VARIANT, "label", "victim"], sort=True)["final_acc"].agg(["mean", "count"])
    acc = acc.rename(columns={"mean": "final_acc_mean", "count": "n_cells"}).reset_index()
    n_poisons = poison_frame(cells).groupby(VARIANT).size().rename("n_poisons")
    table = acc.join(robust, on=VARIANT).join(n_poisons, on=VARIANT)
    table.insert(3, "defense", defense)
    has_any = table[list(METRICS)].notna().any(axis=1)
    skipped = sorted({f"{r.dataset}/{r.preset}/{r.label}" for r in table[~has_any].itertuples()})
    columns = [*GROUP, "defense", "method", "method_hash", "label", "n_poisons", *METRICS, "final_acc_mean"]
    return table[has_any][[*columns, "n_cells"]].sort_values([*GROUP, "label"]).reset_index(drop=True), skipped


class Pearson(NamedTuple):
    """Pearson's r, its two-sided p-value and the 95 % confidence interval of r (Fisher's z, as scipy gives it)."""

    r: float
    p: float
    low: float
    high: float


def pearson(x: Sequence[float], y: Sequence[float]) -> Pearson:
    """Pearson's r with its p-value and 95 % CI (scipy); NaN for fewer than 3 points or constant input. With 3
    points the interval is the whole of [-1, 1]: Fisher's z has no spread estimate below 4."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < MIN_POINTS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Pearson(math.nan, math.nan, math.nan, math.nan)
    result = stats.pearsonr(x, y)
    if len(x) > MIN_POINTS:
        ci = result.confidence_interval(confidence_level=0.95)
        low, high = float(ci.low), float(ci.high)
    else:
        low, high = -1.0, 1.0
    return Pearson(float(result.statistic), float(result.pvalue), low, high)


def correlations(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (data set, preset, victim, robustness number) with at least 3 points: n, r, p and r's 95 % CI."""
    rows = []
    for key, part in table.groupby(GROUP, sort=True):
        for metric in METRICS:
            usable = part[part[metric].notna()]
            if len(usable) >= MIN_POINTS:
                found = pearson(usable[metric], usable["final_acc_mean"])
                group = dict(zip(GROUP, key, strict=True))
                rows.append({**group, "robustness": metric, "n": len(usable), **found._asdict()})
    renamed = pd.DataFrame(rows, columns=[*GROUP, "robustness", "n", *Pearson._fields])
    return renamed.rename(columns={"low": "r_low", "high": "r_high"})


def _title(metric: str, n: int, r: float, p: float, low: float, high: float) -> str:
    if not math.isfinite(r):
        return f"{metric}: r undefined (constant values), n={n}"
    return f"{metric}: Pearson r = {r:+.3f} [{low:+.2f}, {high:+.2f}], p = {p:.3g}, n={n}"


def plot(table: pd.DataFrame, found: pd.DataFrame, defense: str, path: Path) -> Path:
    """Regression plots: a row per (data set, preset, victim) in ``found``, a column per robustness number."""
    stat = {
        (r.dataset, r.preset, r.victim, r.robustness): (r.n, r.r, r.p, r.r_low, r.r_high)
        for r in found.itertuples(index=False)
    }
    groups = [(key, part) for key, part in table.groupby(GROUP, sort=True) if any(k[:3] == key for k in stat)]
    width, height = 6 * len(METRICS), 4.5 * len(groups)
    fig, axes = subplots(len(groups), len(METRICS), figsize=(width, height), squeeze=False, layout="constrained")
    for row, (key, part) in zip(axes, groups, strict=True):
        for ax, metric in zip(row, METRICS, strict=True):
            usable = part[part[metric].notna()]
            ax.set_xlabel(AXIS[metric])
            ax.set_ylabel(f"victim clean test acc % ({defense})")
            name = "/".join(map(str, key))
            if (*key, metric) not in stat:
                ax.text(0.5, 0.5, f"fewer than {MIN_POINTS} points", ha="center", va="center", transform=ax.transAxes)
                ax.set_title(f"{name}\n{metric}: n={len(usable)}", fontsize=10)
                continue
            x, y = usable[metric].to_numpy(float), usable["final_acc_mean"].to_numpy(float) * 100
            sns.regplot(x=x, y=y, ax=ax, ci=None if np.ptp(x) == 0 else 95, seed=0)
            for xi, yi, label in zip(x, y, usable["label"], strict=True):
                ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
            ax.set_title(f"{name}\n{_title(metric, *stat[(*key, metric)])}", fontsize=10)
    return save_png(fig, path)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def build_parser(prog: str = PROG) -> Parser:
    p = Parser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--results-dir", type=Path, default=Path("results/cells"), help="results cells")
    p.add_argument("--defense", default="at4", help="the victims' defense")
    p.add_argument("--out-dir", type=Path, default=Path("results/figures"), help="where the figure and CSV go")
    return p


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    try:
        args = build_parser(prog).parse_args(argv)
        table, skipped = points(cells_frame(load_records(args.results_dir)), args.defense)
        found = correlations(table)
        if found.empty:
            have = ", ".join(f"{r.dataset}/{r.preset}/{r.victim}/{r.label}" for r in table.itertuples()) or "none"
            raise ResultsError(
                f"need at least {MIN_POINTS} poison variants with robustness numbers (surrogate_robust_acc or "
                f"noise_robustness) and finished cells under defense {args.defense!r} for one data set, preset "
                f"and victim; have {len(table)} ({have}); skipped without robustness numbers: "
                f"{', '.join(skipped) or 'none'}"
            )
        check_out_dir(args.out_dir)
    except (UsageError, ResultsError) as err:
        return fail(prog, err)
    if skipped:
        print(f"skipped (no robustness numbers in their generation block): {', '.join(skipped)}")
    for r in found.itertuples():
        title = _title(r.robustness, r.n, r.r, r.p, r.r_low, r.r_high)
        print(f"{r.dataset}/{r.preset}/{r.victim} under {args.defense}: {title}")
    stem = f"correlation_{_slug(args.defense)}"
    written = [
        save_csv(table, args.out_dir / f"{stem}.csv"),
        save_csv(found, args.out_dir / f"{stem}_stats.csv"),
        plot(table, found, args.defense, args.out_dir / f"{stem}.png"),
    ]
    print(f"wrote {', '.join(map(str, written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
