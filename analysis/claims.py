"""The papers' qualitative claims, tested on a campaign's cells: does what they report for CIFAR-10 hold here?

    python -m analysis.claims [--preset smoke-600] [--dataset fashion-mnist] [--defense at4]
        [--results-dir results/cells [DIR ...]] [--out results/claims/<dataset>-<preset>-<defense>.md]

The REM and SEM papers report, on CIFAR-10 with ResNet-18 under adversarial training at rho_a = rho_u / 2 (at4 for
8/255 noise): error-minimising noise (EM) and targeted adversarial poisoning (TAP) lose their protection, robust
error-minimising noise (REM) and stable error-minimising noise (SEM) keep it, and SEM protects at least as well as
REM. Each claim is one paired comparison over the seeds both sides have (final clean test accuracy of the victim
trained on the protected data, ``benchmarks.stats.paired``), under the protocol's adversarial training
(``Protocol.mission_defense``: ``at4``, or ``at8`` where the radii are doubled; ``--defense`` names another):

* *X keeps its protection*: X - clean is significantly below zero. Tied with clean: it does not hold.
* *X loses its protection*: X - clean is tied with zero. Significantly below zero: it does not hold (a measurable
  protection remains; the table gives how much).
* *A at least as strong as B*: A - B is not significantly above zero.
* *A stronger than B*: A - B is significantly below zero (the contrast the papers draw between REM/SEM and EM).

A claim whose sides share fewer than 2 seeds is "not measured". "Tied" means only that the paired t-test did not
reject equality at p < 0.05 on these seeds: with few seeds it is weak evidence of equality; the interval says how
large a difference the seeds leave possible. Each comparison under ``none`` is shown beside it, for scale.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import stats
from benchmarks.criteria import main_variants, per_seed
from benchmarks.env import machine
from benchmarks.errors import HelpFormatter, Parser, UsageError, fail
from benchmarks.io import atomic_write_text, check_writable
from benchmarks.matrix import ResultsError, defense_order, load_merged, markdown_table
from benchmarks.plugins import load_plugins
from benchmarks.registry import DATASETS, PRESETS
from benchmarks.spec import DEFAULT_PRESET

PROG = "python -m analysis.claims"


@dataclass(frozen=True)
class Claim:
    """``a - b`` under the adversarial training, and what the papers say about it (``kind``)."""

    text: str
    a: str
    b: str
    kind: str  # "keeps" (a - b < 0), "loses" (a - b tied), "at_least" (a - b not > 0), "stronger" (a - b < 0)


#: the papers' qualitative claims (REM: Fu et al., ICLR 2022; SEM: Liu et al., 2023), in the order they are tested
CLAIMS = (
    Claim("EM loses its protection", "em", "clean", "loses"),
    Claim("TAP loses its protection", "tap", "clean", "loses"),
    Claim("REM keeps its protection", "rem", "clean", "keeps"),
    Claim("SEM keeps its protection", "sem", "clean", "keeps"),
    Claim("SEM is at least as strong as REM", "sem", "rem", "at_least"),
    Claim("REM is stronger than EM", "rem", "em", "stronger"),
    Claim("SEM is stronger than EM", "sem", "em", "stronger"),
)
HEADERS = ["claim (papers, CIFAR-10)", "comparison", "seeds", "under {at} (pp) [95 % CI]", "p", "verdict", "none (pp)"]


def verdict(kind: str, test: stats.Paired) -> str:
    """``holds``, ``does not hold: ...`` or ``not measured`` for a claim of ``kind`` given its paired test."""
    if test.diff.n < 2 or not math.isfinite(test.p):
        return "not measured"
    below = test.significant and test.diff.mean < 0
    above = test.significant and test.diff.mean > 0
    if kind == "keeps":
        return "holds" if below else ("does not hold: tied with clean" if not above else "does not hold: above clean")
    if kind == "loses":
        return "does not hold: a protection remains" if below else "holds"
    if kind == "at_least":
        return "does not hold: significantly weaker" if above else "holds"
    if kind == "stronger":
        return "holds" if below else ("does not hold: tied" if not above else "does not hold: the reverse")
    raise ValueError(f"unknown claim kind {kind!r}; accepted: keeps, loses, at_least, stronger")


def _diff(test: stats.Paired) -> str:
    d = test.diff
    if d.n == 0:
        return "—"
    if d.n == 1:
        return f"{d.mean * 100:+.1f} (1 seed)"
    return f"{d.mean * 100:+.1f} [{d.low * 100:+.1f}, {d.high * 100:+.1f}]"


def evaluate(cells: Sequence[dict[str, Any]], defense: str) -> list[tuple[Claim, stats.Paired, stats.Paired, str]]:
    """Every claim: ``(claim, test under defense, the same comparison under none, verdict)``."""
    out = []
    for claim in CLAIMS:
        test = stats.paired(per_seed(cells, claim.a, defense), per_seed(cells, claim.b, defense))
        plain = stats.paired(per_seed(cells, claim.a, "none"), per_seed(cells, claim.b, "none"))
        out.append((claim, test, plain, verdict(claim.kind, test)))
    return out


def protection(cells: Sequence[dict[str, Any]]) -> str:
    """Every method's protection under every defense it was measured under: ``method - clean`` in points, paired
    over the seeds both have (mean [95 % CI] (seeds)); **bold** where the paired test rejects zero at ALPHA."""
    defenses = sorted({r["defense"] for r in cells if r["method"] == "clean"}, key=defense_order)
    first = [m for c in CLAIMS for m in (c.a, c.b) if m != "clean"]
    methods = sorted(
        {r["method"] for r in cells} - {"clean"}, key=lambda m: (m not in first, first.index(m) if m in first else 0, m)
    )
    rows = []
    for method in methods:
        row = [method]
        for defense in defenses:
            test = stats.paired(per_seed(cells, method, defense), per_seed(cells, "clean", defense))
            text = _diff(test)
            if test.diff.n >= 2:
                text = f"**{text}**" if test.significant else text
                text += f" ({test.diff.n})"
            row.append(text)
        rows.append(row)
    return markdown_table(["method − clean (pp)", *defenses], rows)


def build(records: Sequence[dict[str, Any]], dataset: str, preset: str, defense: str, command: str) -> str:
    """The claims' table for ``preset`` on ``dataset`` under ``defense``, as Markdown."""
    cells = main_variants(records, dataset, preset)
    judged = evaluate(cells, defense)
    rows = [
        [
            claim.text,
            f"{claim.a} - {claim.b}",
            " ".join(map(str, test.seeds)) or "—",
            _diff(test),
            f"{test.p:.2g}" if math.isfinite(test.p) else "—",
            result,
            _diff(plain),
        ]
        for claim, test, plain, result in judged
    ]
    used = [r for r in cells if r["defense"] in (defense, "none")]
    devices = sorted({machine(r.get("env", {})) for r in used})
    commits = sorted({str(r.get("env", {}).get("git_commit", "?"))[:7] for r in used})
    held = sum(result == "holds" for *_, result in judged)
    measured = sum(result != "not measured" for *_, result in judged)
    headers = [h.format(at=defense) for h in HEADERS]
    return "\n".join(
        [
            f"<!-- generated by `{command}`; do not edit by hand -->",
            f"# The papers' claims on {dataset}, `{preset}`, under `{defense}`",
            "",
            f"Final clean test accuracy of the victim trained on protected data, paired differences over the seeds "
            f"both sides have, in percentage points (mean [95 % CI], paired t-test p; tied: p >= {stats.ALPHA}). "
            f"Cells: {len(used)} (devices: {'; '.join(devices) or '—'}; code: {', '.join(commits) or '—'}). "
            f"Rules: `{PROG}` (module docstring).",
            "",
            markdown_table(headers, rows),
            "",
            f"{held} of {measured} measured claims hold ({len(judged) - measured} not measured).",
            "",
            "## Protection under every defense measured",
            "",
            "The gap to the clean victim under each defense, paired over the seeds both have (in parentheses): "
            f"mean [95 % CI] in points; **bold** where the paired t-test rejects 0 (p < {stats.ALPHA}): a "
            "protection remains. Cells of every defense on this protocol's main variants "
            f"({len(cells)} cells).",
            "",
            protection(cells),
            "",
        ]
    )


def build_parser(prog: str = PROG) -> Parser:
    p = Parser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--preset", default=DEFAULT_PRESET, help="the protocol whose cells are judged")
    p.add_argument("--dataset", default="fashion-mnist", help="its data set")
    p.add_argument("--defense", help="the adversarial training to judge under (default: the protocol's, e.g. at4)")
    p.add_argument("--results-dir", type=Path, nargs="+", default=[Path("results/cells")], help="results cells")
    p.add_argument("--out", type=Path, help="the table (default: results/claims/<dataset>-<preset>-<defense>.md)")
    return p


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    try:
        args = build_parser(prog).parse_args(argv)
        load_plugins()
        if args.preset not in PRESETS:
            raise UsageError(f"--preset: unknown {args.preset!r}; accepted: {', '.join(PRESETS.accepted())}")
        if args.dataset not in DATASETS:
            raise UsageError(f"--dataset: unknown {args.dataset!r}; accepted: {', '.join(DATASETS.accepted())}")
        defense = args.defense or PRESETS.get(args.preset)(args.dataset).mission_defense
        for root in args.results_dir:
            if not root.is_dir():
                raise UsageError(f"--results-dir {root} is not a directory")
        out = args.out or Path("results/claims") / f"{args.dataset}-{args.preset}-{defense}.md"
        try:
            check_writable(out.parent)
        except PermissionError as err:
            raise UsageError(f"--out: {err}") from None
        # a cell in a later --results-dir replaces the same cell of an earlier one (as in benchmarks.study)
        records = load_merged(args.results_dir)
        if not any(r["defense"] == defense for r in main_variants(records, args.dataset, args.preset)):
            raise UsageError(
                f"--defense {defense}: no finished cell of {args.dataset}/{args.preset} under it in "
                f"{' '.join(map(str, args.results_dir))}"
            )
    except (UsageError, ResultsError) as err:
        return fail(prog, err)
    command = " ".join([PROG, *(argv if argv is not None else sys.argv[1:])])
    text = build(records, args.dataset, args.preset, defense, command)
    atomic_write_text(out, text)
    print(text)
    print(f"{prog}: -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
