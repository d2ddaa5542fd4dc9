"""The protocol study's table: every candidate miniature protocol, its validity criteria and what it measures.

    python -m benchmarks.study --presets smoke [OTHER ...] [--dataset fashion-mnist]
        [--results-dir results/cells results/study/cells] [--timing-dir results/study/quiet]
        [--out results/protocol-study.md]

One row per candidate preset (every candidate, not only the one chosen): its design (victim, steps, training
images, noise radius), the four criteria of :mod:`benchmarks.criteria` with the numbers behind them ((d), the
mission's time, from ``--timing-dir`` where the mission's command was run alone on the machine), and the
mission's comparison under ``none`` and ``at4`` (EM, REM and SEM against clean, paired over seeds). A candidate is
chosen by the criteria, not by whether the papers' ranking appears; the table says which criteria each meets.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import stats
from benchmarks.criteria import Criterion, evaluate_protocol, main_variants, met_count, per_seed
from benchmarks.errors import HelpFormatter, Parser, UsageError, fail
from benchmarks.io import atomic_write_text, check_writable
from benchmarks.matrix import ResultsError, load_records, markdown_table
from benchmarks.plugins import load_plugins
from benchmarks.registry import DATASETS, PRESETS
from benchmarks.store import record_identity

PROG = "python -m benchmarks.study"
COMPARED = ("em", "rem", "sem")
#: the mission's comparison: no defense, and adversarial training at the protocol's rho_a ("AT": at4 unless the
#: candidate scales its radii)
DEFENSES = ("none", "AT")
HEADERS = [
    "candidate",
    "criteria met",
    "victim",
    "steps",
    "train images",
    "image side",
    "augmentation",
    "rho_u / rho_a (AT)",
    "(a) plateau",
    "(b) robust acc at rho_a: standard -> AT victim",
    "(c) EM surrogate fit",
    "(d) mission s",
    "clean acc none / AT",
    *(f"{m} - clean, {d} (pp)" for d in DEFENSES for m in COMPARED),
]


def _verdict(c: Criterion) -> str:
    mark = {None: "not measured", True: "met", False: "NOT met"}[c.met]
    return f"{mark}: {c.measured}" if c.met is not None else mark


def _gap(cells: Sequence[dict[str, Any]], method: str, defense: str) -> str:
    test = stats.paired(per_seed(cells, method, defense), per_seed(cells, "clean", defense))
    if test.diff.n == 0:
        return "—"
    if test.diff.n == 1:
        return f"{test.diff.mean * 100:+.1f} (1 seed)"
    return f"{test.diff.mean * 100:+.1f} [{test.diff.low * 100:+.1f}, {test.diff.high * 100:+.1f}] p {test.p:.2g}"


def _clean(cells: Sequence[dict[str, Any]], mission: str) -> str:
    out = []
    for defense in ("none", mission):
        acc = stats.mean_ci(
            [r["metrics"]["final_acc"] for r in cells if (r["method"], r["defense"]) == ("clean", defense)]
        )
        out.append("—" if acc.n == 0 else f"{acc.mean * 100:.1f}")
    return " / ".join(out)


def row(records: Sequence[dict[str, Any]], dataset: str, preset: str, found: Sequence[Criterion]) -> list[str]:
    """The table row of candidate ``preset``, whose criteria are ``found``."""
    protocol = PRESETS.get(preset)(dataset)
    cells = main_variants(records, dataset, preset)
    mission = protocol.mission_defense
    return [
        preset,
        f"{met_count(found)} of {len(found)}",
        protocol.victim,
        str(protocol.recipe.steps),
        str(protocol.train_size or "all"),
        str(protocol.image_size or "as loaded"),
        protocol.recipe.augment,
        f"{protocol.radius:g}/255 / {protocol.adv_radius:g}/255 ({mission})",
        *(_verdict(c) for c in found),
        _clean(cells, mission),
        *(_gap(cells, m, d) for d in ("none", mission) for m in COMPARED),
    ]


def choose(judged: dict[str, list[Criterion]]) -> str:
    """The candidate that meets the criteria best: the most met, then the fewest not measured, then the quickest
    mission (a candidate without a measured mission time last), then the order given."""

    def rank(item: tuple[int, tuple[str, list[Criterion]]]) -> tuple[int, int, float, int]:
        order, (_, found) = item
        seconds = found[-1].value
        return (
            -met_count(found),
            sum(c.met is None for c in found),
            seconds if math.isfinite(seconds) else math.inf,
            order,
        )

    return min(enumerate(judged.items()), key=rank)[1][0]


def build(
    records: Sequence[dict[str, Any]],
    dataset: str,
    presets: Sequence[str],
    command: str,
    timing: Sequence[dict[str, Any]] | None = None,
) -> str:
    judged = {p: evaluate_protocol(records, dataset, p, timing) for p in presets}
    rows = [row(records, dataset, p, found) for p, found in judged.items()]
    best = choose(judged)
    met = met_count(judged[best])
    return "\n".join(
        [
            f"<!-- generated by `{command}`; do not edit by hand -->",
            "# Protocol study",
            "",
            f"Candidate miniature protocols on {dataset}, each judged by the validity criteria of "
            "`benchmarks.criteria` (rules: `python -m benchmarks.validate --preset P`). Gaps: final clean test "
            "accuracy of the victim trained on protected data minus clean, paired over seeds (mean [95 % CI] and "
            "the paired t-test's p). Every candidate run is here, not only the one chosen.",
            "",
            markdown_table(HEADERS, rows),
            "",
            f"Chosen by the criteria: **{best}**, {met} of {len(judged[best])} met (rule: the most criteria met, then "
            "the fewest not measured, then the quickest mission).",
            "",
        ]
    )


def build_parser(prog: str = PROG) -> Parser:
    p = Parser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--presets", nargs="+", required=True, help="the candidate presets")
    p.add_argument("--dataset", default="fashion-mnist", help="their data set")
    p.add_argument("--results-dir", type=Path, nargs="+", default=[Path("results/cells")], help="results cells")
    p.add_argument(
        "--timing-dir",
        type=Path,
        nargs="+",
        default=[],
        help="cells of the mission's command run alone on the machine: criterion (d) is judged on them where a "
        "candidate has some (its other criteria and gaps on --results-dir)",
    )
    p.add_argument("--out", type=Path, default=Path("results/protocol-study.md"), help="the table (Markdown)")
    return p


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    try:
        args = build_parser(prog).parse_args(argv)
        load_plugins()
        unknown = [p for p in args.presets if p not in PRESETS]
        if unknown:
            raise UsageError(f"--presets: unknown {', '.join(unknown)}; accepted: {', '.join(PRESETS.accepted())}")
        if args.dataset not in DATASETS:
            raise UsageError(f"--dataset: unknown {args.dataset!r}; accepted: {', '.join(DATASETS.accepted())}")
        for what, roots in (("--results-dir", args.results_dir), ("--timing-dir", args.timing_dir)):
            for root in roots:
                if not root.is_dir():
                    raise UsageError(f"{what} {root} is not a directory")
        try:
            check_writable(args.out.parent)
        except PermissionError as err:
            raise UsageError(f"--out: {err}") from None
        # a cell in a later --results-dir replaces the same cell of an earlier one (as in validate)
        records, timing = (
            list({record_identity(r): r for root in roots for r in load_records(root)}.values())
            for roots in (args.results_dir, args.timing_dir)
        )
    except (UsageError, ResultsError) as err:
        return fail(prog, err)
    command = " ".join(["python -m benchmarks.study", *(argv if argv is not None else sys.argv[1:])])
    atomic_write_text(args.out, build(records, args.dataset, args.presets, command, timing or None))
    print(f"{prog}: {len(args.presets)} candidates -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
