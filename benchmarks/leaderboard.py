"""Leaderboard: results cells -> ``results/LEADERBOARD.md`` (+ a static HTML page), never edited by hand.

    python -m benchmarks.leaderboard                 # results/cells -> results/LEADERBOARD.md, results/leaderboard.html
    python -m benchmarks.leaderboard --check         # exit 1 when the committed files are out of date

Per (data set, preset, recipe, victim) the page opens with an overview: a method x defense matrix of the gap
to the clean baseline (method - clean under the same defense, paired over common seeds, in percentage points,
with its 95 % CI), coloured by protection, bold where a method is tied for the strongest protection. The
methods' papers follow, then one detail table per defense that ranks the methods by protection: the mean final
clean test accuracy over seeds of a victim trained on the protected data (lower = better protection), its CI,
the paired gap and p-value and the cost of generating the noise. Data set, training-set size, protocol, seeds
and devices are said once per section. Failed cells are listed separately, not ranked. The output is a pure
function of the cells and the methods' citations (sorted, fixed float formats, no timestamps), so ``--check``
can compare it byte for byte.
"""

from __future__ import annotations

import argparse
import html
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmarks import stats
from benchmarks.errors import HelpFormatter, Parser, UsageError, fail
from benchmarks.io import atomic_write_text, check_writable
from benchmarks.matrix import ResultsError, cells_frame, defense_order, load_records, markdown_table
from benchmarks.plugins import load_plugins
from benchmarks.registry import METHODS

DEFAULT_RESULTS = Path("results/cells")
DEFAULT_OUT = Path("results/LEADERBOARD.md")
DEFAULT_HTML = Path("results/leaderboard.html")
PROG = "python -m benchmarks.leaderboard"
SECTION_KEY = ["dataset", "preset", "recipe", "train_size", "victim"]
HEADERS = [
    "rank",
    "method",
    "final acc %",
    "95% CI ±",
    "n",
    "gap to clean (pp) [95% CI]",
    "p (paired)",
    "peak acc %",
    "robust acc %",
    "gen. wall s",
    "gen. passes",
    "train s",
    "budget",
]
RIGHT = (2, 3, 4, 6, 7, 8, 9, 10, 11)
ERROR_HEADERS = ["dataset", "preset", "victim", "defense", "method", "seed", "cell", "error"]
ONE_SEED = "†"
#: marks a method whose budget is not an L-inf ball (L2, L0, or declared: CUDA's blur)
OTHER_BUDGET = "‡"
BUDGET_NOTE = (
    f"{OTHER_BUDGET} a budget that is not an L-inf ball (L2, L0, or one the method declares, such as CUDA's blur "
    "parameter; the detail tables name it): such a method is not comparable with the L-inf methods as if it were, "
    "and it is ranked only against methods with the same kind of budget (never bold)."
)
#: marks a defense that uses more than the protected training set (extra clean data, a pretrained model)
OTHER_THREAT = "§"
THREAT_NOTE = (
    f"{OTHER_THREAT} a defense that uses more than the protected training set (extra clean images or a pretrained "
    "model, named in its detail table): it answers a weaker threat model, so its columns come after those of the "
    "defenses that see the protected set alone and are not to be compared with them as equals."
)
# Colour scale of the gap to clean: bin edges of |gap| in pp; a bin is one step darker per edge reached.
GAP_EDGES = (2.0, 10.0, 25.0, 50.0)
# level -> (background, text colour); negative = protection (blues), positive = the victim gains (oranges).
# Every pair has a WCAG contrast ratio of at least 5.6.
PALETTE = {
    -4: ("#08519c", "#ffffff"),
    -3: ("#4292c6", "#000000"),
    -2: ("#9ecae1", "#000000"),
    -1: ("#deebf7", "#000000"),
    0: ("#ffffff", "#000000"),
    1: ("#fdd0a2", "#000000"),
    2: ("#fdae6b", "#000000"),
    3: ("#e6550d", "#000000"),
    4: ("#a63603", "#ffffff"),
}
OVERVIEW_NOTES = (
    "**Gap to clean** = final clean test accuracy of a victim trained on the protected data − that of the clean "
    "baseline under the same defense, paired over their common seeds (victim initialisation, data order and "
    "augmentation are shared by seed), in percentage points: the mean, then its 95% confidence interval in "
    "brackets; **more negative = stronger protection**. The clean row gives the clean accuracy itself (%, mean ± "
    "95% CI half-width). **Bold**: tied for the strongest protection under that defense (rank 1 of its detail "
    f"table: no method is significantly lower, paired t-test, p < 0.05). {ONE_SEED} one common seed: no interval, "
    f"no rank. {BUDGET_NOTE} {THREAT_NOTE}"
)
DETAIL_NOTES = (
    "Protection = clean test accuracy (%) of a victim trained on the protected training set, final checkpoint, "
    "mean over seeds; **lower = better protection**. 95% CI ± is the half-width of the Student-t confidence "
    "interval of that mean over seeds (— for one seed), n the number of seeds (with the seeds, when they are not "
    "all of the section's). Gap to clean = method − clean baseline of the same defense on the same seeds, in "
    "percentage points, with the 95% CI of the mean paired difference and the p-value of the paired t-test. "
    "**Rank** = 1 + the number of methods whose accuracy is significantly lower (paired t-test over common "
    "seeds, p < 0.05): methods that share a rank are statistically tied (— : one seed, no test). Generation "
    "cost, mean over the poisons (one per seed): wall seconds, and passes = images forwarded through the "
    "generation models / training-set size (each forward pass with its backward pass where gradients are "
    "taken), on the generation device of the section. Robust acc % = the victim's accuracy on a fixed class-balanced "
    "head of the test set (1000 images) under L-inf PGD-10 (step radius/4, random start) at the radius its defense "
    "trains against, 4/255 without one (mean over seeds; — for cells measured before it was recorded): whether "
    "the defense made the victim robust. Train s = wall seconds of one victim training under the "
    "defense (mean over seeds): the defense's cost on the section's training device. A method listed with options "
    "is one of several "
    "configurations of that method in the same preset. Partial protection: `em [p40]` protected 40 % of the "
    "training images (a fixed published list, the rest clean); `clean [rest40]` is its control, the clean "
    "baseline trained on the clean 60 % alone. Budget = the bound the method's change of an image is "
    "held to: linf and l2 in 1/255 units, l0 in pixel positions, blur the CUDA filters' declared blur parameter; "
    f"rank 1 means strongest among the methods with the same kind of budget ({OTHER_BUDGET}: not an L-inf ball)."
)


# ------------------------------------------------------------------------------------------------ the page model
@dataclass(frozen=True)
class Cell:
    """One table cell: ``text`` plus what the HTML page adds (the markdown keeps text, note and bold)."""

    text: str
    note: str = ""  # secondary text: beside the text in markdown, under it on the page
    title: str = ""  # shown on hover
    css: str = ""  # HTML class
    strong: bool = False
    href: str = ""


@dataclass(frozen=True)
class Row:
    cells: list[Cell]
    baseline: bool = False


@dataclass(frozen=True)
class Table:
    """A titled table, rendered to markdown and HTML alike."""

    title: str
    caption: str
    headers: list[str]
    rows: list[Row]
    right: tuple[int, ...] = ()
    row_header: int = 0  # the column that names its row


@dataclass(frozen=True)
class Reference:
    """A method's paper."""

    method: str
    citation: str
    url: str


@dataclass(frozen=True)
class Section:
    """One (data set, preset, recipe, victim): the facts said once, the overview tables and one table per defense."""

    title: str
    facts: str
    gaps: Table
    accuracy: Table
    details: list[Table]


@dataclass(frozen=True)
class Page:
    sections: list[Section]
    references: list[Reference]
    errors: Table | None


@dataclass(frozen=True)
class Entry:
    """One method variant under one defense of a section: its detail-table row and overview cell."""

    label: str
    method: str
    acc: stats.Interval
    seeds: tuple[int, ...]
    gap: stats.Paired | None  # against the clean baseline; None for the baseline itself or without one
    rank: int | None  # tied rank among the methods; None for the baseline and with one seed (no test)
    peak: float
    gen_wall_s: float
    gen_passes: float
    train_s: float = math.nan  # mean wall seconds of one victim training under this defense
    robust: float = math.nan  # mean robust accuracy of the victims (:func:`benchmarks.robustness.victim_robustness`)
    budget: str = ""  # e.g. "linf 8/255"
    norm: str = "linf"
    part: str = ""  # partial protection: "p40", or "rest40" (the clean rest alone); "" the whole set

    @property
    def baseline(self) -> bool:
        """The clean baseline on the whole set (the control ``clean [rest40]`` is compared with it, like a method)."""
        return self.method == "clean" and not self.part

    @property
    def other_budget(self) -> bool:
        """A method whose budget is not an L-inf ball (marked, ranked only among its kind)."""
        return not self.baseline and self.norm not in ("linf", "")

    @property
    def best(self) -> bool:
        """Tied for the strongest protection among the L-inf methods (shown bold); other budgets are never bold."""
        return self.rank == 1 and not self.other_budget


# ------------------------------------------------------------------------------------------------ numbers -> text
def _pct(value: float, signed: bool = False) -> str:
    if not math.isfinite(value):
        return "—"
    return f"{value * 100:+.2f}" if signed else f"{value * 100:.2f}"


def _num(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "—"


def _join(values: Iterable[object]) -> str:
    return " and ".join(sorted({str(v) for v in values if str(v)})) or "—"


def _seeds(values: Iterable[int]) -> str:
    return " ".join(str(s) for s in sorted({int(v) for v in values}))


def _size(value: float) -> str:
    return str(int(value)) if math.isfinite(value) else "?"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _interval(diff: stats.Interval) -> str:
    return f"[{diff.low * 100:+.1f}, {diff.high * 100:+.1f}]"


def gap_level(gap_pp: float) -> int:
    """The colour bin of a gap in pp: its sign times the number of :data:`GAP_EDGES` that ``|gap|`` reaches."""
    return int(math.copysign(sum(abs(gap_pp) >= edge for edge in GAP_EDGES), gap_pp))


def _level_label(level: int) -> str:
    """The range of gaps of a colour bin, e.g. ``-25 to -10`` or ``≤ -50``."""
    edges = (0.0, *GAP_EDGES)
    if level == 0:
        return f"-{edges[1]:g} to +{edges[1]:g}"
    sign = "-" if level < 0 else "+"
    low = edges[abs(level)]
    if abs(level) == len(GAP_EDGES):
        return f"{'≤' if level < 0 else '≥'} {sign}{low:g}"
    high = edges[abs(level) + 1]
    return f"-{high:g} to -{low:g}" if level < 0 else f"+{low:g} to +{high:g}"


# ------------------------------------------------------------------------------------------------ cells -> numbers
def _per_seed(cells: pd.DataFrame) -> dict[int, float]:
    return {int(k): float(v) for k, v in zip(cells["seed"], cells["final_acc"], strict=True) if math.isfinite(v)}


def _extra_data(part: pd.DataFrame) -> dict[str, str]:
    """defense -> what it uses beyond the protected set (``"none"``, ``"clean-data"``, ...)."""
    return {str(d): str(cells["extra_data"].iloc[0]) for d, cells in part.groupby("defense", sort=True)}


def _defenses(part: pd.DataFrame) -> list[str]:
    """The defenses of a section (:func:`benchmarks.matrix.defense_order`: ``none``, adversarial training by radius,
    the others); those that use more than the protected set (:data:`OTHER_THREAT`) after all of them."""
    extra = _extra_data(part)
    return sorted(extra, key=lambda d: (extra[d] != "none", *defense_order(d)))


def _defense_header(defense: str, extra_data: str) -> str:
    return defense if extra_data == "none" else f"{defense} {OTHER_THREAT}"


def _entries(part: pd.DataFrame) -> list[Entry]:
    """The variants of one (section, defense), baseline first, then by tied rank and mean accuracy."""
    clean = _per_seed(part[(part["method"] == "clean") & (part["part"] == "")])
    variants = dict(list(part.groupby(["method", "label"], sort=True)))
    norms = {label: str(cells["budget_norm"].iloc[0]) for (_, label), cells in variants.items()}
    parts = {label: str(cells["part"].iloc[0]) for (_, label), cells in variants.items()}
    compared = {label: _per_seed(c) for (method, label), c in variants.items() if method != "clean" or parts[label]}
    ranks: dict[str, int] = {}
    for norm in sorted(set(norms.values())):  # ranked only against methods with the same kind of budget
        ranks |= stats.tied_ranks({label: v for label, v in compared.items() if norms[label] == norm})
    entries = []
    for (method, label), cells in variants.items():
        acc = stats.mean_ci(cells["final_acc"].tolist())
        is_method = label in compared
        entries.append(
            Entry(
                label=label,
                method=method,
                acc=acc,
                seeds=tuple(sorted({int(s) for s in cells["seed"]})),
                gap=stats.paired(_per_seed(cells), clean) if is_method and clean else None,
                rank=ranks[label] if is_method and acc.n >= 2 else None,
                peak=float(cells["peak_acc"].mean()),
                gen_wall_s=float(cells["gen_wall_s"].mean()),
                train_s=float(cells["train_s"].mean()),
                robust=float(cells["robust_acc"].mean()),
                gen_passes=float(cells["gen_passes"].mean()),
                budget=str(cells["budget"].iloc[0]),
                norm=norms[label] or "linf",
                part=parts[label],
            )
        )

    def order(e: Entry) -> tuple:
        mean = round(e.acc.mean, 9) if math.isfinite(e.acc.mean) else math.inf
        return (not e.baseline, e.rank if e.rank is not None else math.inf, mean, e.label)

    return sorted(entries, key=order)


def _facts(part: pd.DataFrame) -> dict[str, str]:
    """What holds for a whole section (or one defense of it), said once in its header."""
    return {
        "seeds": _seeds(part["seed"]),
        "victims trained on": _join(part["device"]),
        "noise generated on": _join(part.loc[part["method"] != "clean", "gen_device"]),
    }


# ------------------------------------------------------------------------------------------------ numbers -> tables
def _method_cell(entry: Entry, refs: Mapping[str, Reference]) -> Cell:
    href = f"#method-{_slug(entry.method)}" if entry.method in refs else ""
    title = refs[entry.method].citation if href else ""
    if entry.other_budget:
        note = f"budget {entry.budget}: not an L-inf ball, ranked only against methods with a {entry.norm} budget"
        return Cell(f"{entry.label} {OTHER_BUDGET}", href=href, title=f"{title}; {note}" if title else note)
    return Cell(entry.label, href=href, title=title)


def _detail_row(entry: Entry, section_seeds: str, refs: Mapping[str, Reference]) -> Row:
    gap = gap_p = "—"
    if entry.gap is not None and entry.gap.diff.n:
        gap = _pct(entry.gap.diff.mean, signed=True)
        gap += f" {_interval(entry.gap.diff)}" if math.isfinite(entry.gap.diff.half) else ""
        gap_p = f"{entry.gap.p:.3g}" if math.isfinite(entry.gap.p) else "—"
    mine = _seeds(entry.seeds)
    texts = [
        "baseline" if entry.baseline else ("—" if entry.rank is None else str(entry.rank)),
        entry.label,
        _pct(entry.acc.mean),
        _pct(entry.acc.half),
        str(entry.acc.n) + ("" if mine == section_seeds else f" (seed{'s' * (len(entry.seeds) > 1)} {mine})"),
        gap,
        gap_p,
        _pct(entry.peak),
        _pct(entry.robust),
        _num(entry.gen_wall_s, 2),
        _num(entry.gen_passes),
        _num(entry.train_s),
        "—" if entry.baseline or entry.part.startswith("rest") else entry.budget or "?",
    ]
    cells = [Cell(t) for t in texts]
    cells[1] = _method_cell(entry, refs)
    return Row(cells, baseline=entry.baseline)


def _detail_table(
    defense: str, entries: list[Entry], part: pd.DataFrame, section: Mapping[str, str], refs: Mapping[str, Reference]
) -> Table:
    """The ranked table of one defense; its caption names only the facts that differ from the section's."""
    own = _facts(part)
    caption = f"Defense {defense}: methods ranked by protection, strongest first."
    radii = sorted({float(r) for r in part["robust_radius"] if math.isfinite(r)})
    if radii:
        caption += f" Robust acc: under L-inf PGD-10 at {' and '.join(f'{r:g}' for r in radii)}/255."
    extra = str(part["extra_data"].iloc[0]) if len(part) else "none"
    if extra != "none":
        caption += f" {OTHER_THREAT} It uses more than the protected training set: {extra}."
    differ = [f"{k} {v}" for k, v in own.items() if v != section[k]]
    if differ:
        caption += f" Under this defense: {'; '.join(differ)}."
    if not any(e.baseline for e in entries):
        caption += " No clean baseline under this defense: gaps are not available."
    rows = [_detail_row(e, section["seeds"], refs) for e in entries]
    return Table(f"defense {_defense_header(defense, extra)}", caption, HEADERS, rows, RIGHT, row_header=1)


def _gap_cell(entry: Entry | None, defense: str) -> Cell:
    """Overview cell: the gap to clean, coloured, with its interval (the clean row: the accuracy itself)."""
    if entry is None:
        return Cell("")
    where = f"{entry.label} under {defense}"
    if entry.baseline:
        acc = entry.acc
        if not math.isfinite(acc.half):
            return Cell(f"{acc.mean * 100:.1f} {ONE_SEED}", title=f"{where}: accuracy {_pct(acc.mean)} %, one seed")
        title = f"{where}: accuracy {_pct(acc.mean)} %, 95% CI ± {_pct(acc.half)}, seeds {_seeds(entry.seeds)}"
        return Cell(f"{acc.mean * 100:.1f}", f"± {acc.half * 100:.1f}", title)
    if entry.gap is None or entry.gap.diff.n == 0:
        return Cell("—", title=f"{where}: no clean baseline on a common seed")
    diff, mean = entry.gap.diff, entry.gap.diff.mean * 100
    css = f"g{gap_level(round(mean, 1))}"  # the bin of the number shown
    if not math.isfinite(diff.half):
        title = f"{where}: gap to clean {mean:+.2f} pp on one common seed (seed {entry.gap.seeds[0]}): no interval"
        return Cell(f"{mean:+.1f} {ONE_SEED}", title=title, css=css)
    best = entry.best
    title = (
        f"{where}: gap to clean {mean:+.2f} pp, 95% CI {_interval(diff)} pp, paired p = {entry.gap.p:.3g}, "
        f"seeds {_seeds(entry.gap.seeds)}; rank {entry.rank}"
        + (", tied for the strongest protection" if best else "")
        + (f" among {entry.norm} budgets" if entry.other_budget else "")
    )
    return Cell(f"{mean:+.1f}", _interval(diff), title, f"{css} best" if best else css, strong=best)


def _accuracy_cell(entry: Entry | None) -> Cell:
    """Accuracy overview cell: mean ± 95% CI half-width (seeds), bold when tied for the strongest protection."""
    if entry is None:
        return Cell("")
    half = f" ± {entry.acc.half * 100:.2f}" if math.isfinite(entry.acc.half) else ""
    return Cell(f"{_pct(entry.acc.mean)}{half} ({entry.acc.n})", strong=entry.best)


def _matrix(
    by_defense: Mapping[str, list[Entry]], cell: Callable[[Entry | None, str], Cell], refs: Mapping[str, Reference]
) -> list[Row]:
    """Method x defense rows, the baseline first, then the labels in order; ``cell(entry or None, defense)``."""
    index = {d: {e.label: e for e in entries} for d, entries in by_defense.items()}
    some = {e.label: e for entries in by_defense.values() for e in entries}  # label -> any of its entries
    labels = sorted(some, key=lambda label: (not some[label].baseline, label))
    return [
        Row(
            [_method_cell(some[label], refs), *(cell(index[d].get(label), d) for d in by_defense)], some[label].baseline
        )
        for label in labels
    ]


def _section(key: tuple, part: pd.DataFrame, refs: Mapping[str, Reference]) -> Section:
    dataset, preset, recipe, train_size, victim = key
    facts = _facts(part)
    by_defense = {d: _entries(part[part["defense"] == d]) for d in _defenses(part)}
    extra = _extra_data(part)
    header = ["method", *(_defense_header(d, extra[d]) for d in by_defense)]
    right = tuple(range(1, len(header)))
    gaps = Table(
        "Gap to clean (pp)",
        "Method − clean baseline under the same defense: mean and [95% CI]; clean row: its accuracy (%), mean ± "
        "95% CI half-width. Bold: tied for the strongest protection under that defense.",
        header,
        _matrix(by_defense, _gap_cell, refs),
        right,
    )
    accuracy = Table(
        "Final clean test accuracy (%)",
        "Mean ± 95% CI half-width (seeds). Bold: tied for the strongest protection under that defense.",
        header,
        _matrix(by_defense, lambda entry, _: _accuracy_cell(entry), refs),
        right,
    )
    details = [_detail_table(d, entries, part[part["defense"] == d], facts, refs) for d, entries in by_defense.items()]
    said_once = (
        f"{dataset}, {_size(train_size)} training images; preset {preset}, recipe {recipe or '?'}; victim {victim}; "
        + "; ".join(f"{k} {v}" for k, v in facts.items())
        + "."
    )
    return Section(f"{dataset} · {preset} ({recipe or '?'}) · {victim}", said_once, gaps, accuracy, details)


def sections(frame: pd.DataFrame, refs: Mapping[str, Reference]) -> list[Section]:
    """The sections of the ok cells of ``frame`` (:func:`benchmarks.matrix.cells_frame`), in sorted order."""
    ok = frame[frame["status"] == "ok"]
    return [_section(key, part, refs) for key, part in ok.groupby(SECTION_KEY, sort=True, dropna=False)]


def error_table(frame: pd.DataFrame) -> Table | None:
    """The failed cells (status != ok), or None when there are none."""
    bad = frame[frame["status"] != "ok"]
    if bad.empty:
        return None
    fields = ("dataset", "preset", "victim", "defense", "label", "seed", "cell_id")
    rows = [
        Row([*(Cell(str(getattr(r, f))) for f in fields), Cell(f"{r.status}: {r.error}")]) for r in bad.itertuples()
    ]
    caption = "Cells whose training failed; they are not ranked above. Rerun with `--retry-errors`."
    return Table(f"Failed cells ({len(rows)})", caption, ERROR_HEADERS, rows)


def references(methods: Iterable[str]) -> list[Reference]:
    """The papers of the registered methods among ``methods`` (the baseline and noise files have none)."""
    load_plugins()  # the methods register themselves on import (which imports torch: only done here)
    refs = []
    for name in sorted(set(methods)):
        cls = METHODS.get(name) if name in METHODS else None
        if cls is not None and cls.citation:
            refs.append(Reference(name, cls.citation, cls.url))
    return refs


def build_page(frame: pd.DataFrame, refs: Sequence[Reference]) -> Page:
    """The whole leaderboard of ``frame``: a pure function of the cells and the methods' papers."""
    return Page(sections(frame, {r.method: r for r in refs}), list(refs), error_table(frame))


# ------------------------------------------------------------------------------------------------ rendering
def command(args: argparse.Namespace) -> str:
    """The command line that regenerates the files (default options left out)."""
    parts = [PROG]
    if args.results_dir != DEFAULT_RESULTS:
        parts += ["--results-dir", str(args.results_dir)]
    if args.out != DEFAULT_OUT:
        parts += ["--out", str(args.out)]
    if args.no_html:
        parts.append("--no-html")
    elif args.html != DEFAULT_HTML:
        parts += ["--html", str(args.html)]
    return " ".join(parts)


def _header(cmd: str) -> str:
    return f"Generated from the results cells by `{cmd}`. Never edit by hand: rerun the command (check: `--check`)."


def _md_cell(cell: Cell) -> str:
    text = f"**{cell.text}**" if cell.strong and cell.text else cell.text
    return f"{text} {cell.note}" if cell.note else text


def _md_table(table: Table) -> str:
    return markdown_table(table.headers, ([_md_cell(c) for c in row.cells] for row in table.rows), table.right)


def _md_reference(ref: Reference) -> str:
    return f"- **{ref.method}**: " + (f"[{ref.citation}]({ref.url})" if ref.url else ref.citation)


def render_markdown(page: Page, cmd: str) -> str:
    """The leaderboard as markdown, in the order of the page: overview, methods, details, failed cells."""
    out = [f"<!-- generated by `{cmd}`; do not edit by hand -->", "# uebench leaderboard", "", _header(cmd)]
    if not page.sections:
        out += ["", "No finished cells yet."]
    else:
        out += ["", "## Overview"]
        for s in page.sections:
            out += ["", f"### {s.title}", "", s.facts]
            for table in (s.gaps, s.accuracy):
                out += ["", f"**{table.title}.** {table.caption}", "", _md_table(table)]
        out += ["", OVERVIEW_NOTES]
    if page.references:
        out += ["", "## Methods", "", *map(_md_reference, page.references)]
    if page.sections:
        out += ["", "## Details", "", DETAIL_NOTES]
    for s in page.sections:
        out += ["", f"### {s.title}", "", s.facts]
        for table in s.details:
            out += ["", f"#### {s.title} · {table.title}", "", table.caption, "", _md_table(table)]
    if page.errors:
        out += ["", f"## {page.errors.title}", "", page.errors.caption, "", _md_table(page.errors)]
    return "\n".join(out) + "\n"


def _css() -> str:
    colours = "".join(f".g{level}{{background:{bg};color:{fg}}}" for level, (bg, fg) in PALETTE.items())
    return (
        "body{font-family:system-ui,sans-serif;color:#111;background:#fff;margin:1.5em auto;max-width:96em;"
        "padding:0 1.5em;line-height:1.4}"
        "a{color:#0645ad}.facts{border-left:4px solid #9ecae1;padding-left:.6em}.notes{max-width:60em;color:#333}"
        "table{border-collapse:collapse;margin:.4em 0 1.2em}"
        "th,td{border:1px solid #bbb;padding:.25em .5em;font-size:.9em;vertical-align:top}"
        "thead th{background:#eee}th[scope=row]{text-align:left;font-weight:normal;background:#fafafa}"
        "td.r{text-align:right;font-variant-numeric:tabular-nums}"
        "tr.baseline th,tr.baseline td{background:#f7f7e8}caption{text-align:left;padding:.3em 0;color:#333}"
        ".overview caption{width:max-content;max-width:min(60em,90vw)}"
        ".overview td{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}"
        ".overview td small{display:block;font-size:.8em}"
        ".overview td.best{outline:2px solid #111;outline-offset:-3px}"
        ".legend span{display:inline-block;border:1px solid #bbb;padding:0 .4em;margin:.1em 0;font-size:.9em}"
        ".scroll{overflow-x:auto}details{margin:.3em 0}summary{cursor:pointer;font-weight:600}"
        "nav ol{margin:.3em 0}" + colours
    )


def _inline(text: str) -> str:
    """Escaped text, with the markdown of the notes (``**bold**``, backquoted code) as HTML."""
    out = html.escape(text, quote=False)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out))


def _html_cell(cell: Cell, tag: str, right: bool) -> str:
    classes = " ".join(c for c in (cell.css, "r" if right else "") if c)
    attrs = ' scope="row"' if tag == "th" else ""
    attrs += (f' class="{classes}"' if classes else "") + (f' title="{html.escape(cell.title)}"' if cell.title else "")
    body = html.escape(cell.text)
    if cell.href:
        body = f'<a href="{html.escape(cell.href)}">{body}</a>'
    if cell.strong:
        body = f"<strong>{body}</strong>"
    if cell.note:
        body += f" <small>{html.escape(cell.note)}</small>"
    return f"<{tag}{attrs}>{body}</{tag}>"


def _html_table(table: Table, css: str = "", caption: str = "") -> str:
    head = "".join(f'<th scope="col">{html.escape(h)}</th>' for h in table.headers)
    body = []
    for row in table.rows:
        cells = "".join(
            _html_cell(c, "th" if i == table.row_header else "td", i in table.right) for i, c in enumerate(row.cells)
        )
        body.append(('<tr class="baseline">' if row.baseline else "<tr>") + f"{cells}</tr>")
    opening = f'<table class="{css}">' if css else "<table>"
    return (
        f'<div class="scroll">{opening}\n<caption>{caption or _inline(table.caption)}</caption>\n'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table></div>"
    )


def _legend() -> str:
    swatches = " ".join(f'<span class="g{k}">{html.escape(_level_label(k))}</span>' for k in sorted(PALETTE))
    return (
        f'<p class="legend">Colour of the gap to clean, pp (a boundary value takes the darker colour): {swatches}. '
        "<strong>Bold, framed</strong>: tied for the strongest protection. Hover a cell for its interval, paired "
        "p-value and seeds.</p>"
    )


def _link_list(items: Sequence[tuple[str, str]]) -> str:
    return "<ol>" + "".join(f'<li><a href="#{a}">{html.escape(text)}</a></li>' for a, text in items) + "</ol>"


def _nav(page: Page) -> str:
    titles = [s.title for s in page.sections]
    items = []
    if page.sections:
        items.append(("overview", "Overview: gap to clean", [(f"overview-{i}", t) for i, t in enumerate(titles, 1)]))
    if page.references:
        items.append(("methods", "Methods", []))
    if page.sections:
        items.append(("details", "Detail tables", [(f"details-{i}", t) for i, t in enumerate(titles, 1)]))
    if page.errors:
        items.append(("failed", page.errors.title, []))
    lis = "".join(
        f'<li><a href="#{a}">{html.escape(text)}</a>{_link_list(sub) if sub else ""}</li>' for a, text, sub in items
    )
    return f'<nav aria-label="Contents"><ol>{lis}</ol></nav>'


def _html_facts(facts: str) -> str:
    return f'<p class="facts">{html.escape(facts)}</p>'


def _html_overview(page: Page) -> list[str]:
    """The gap matrices first, after their colour legend; the notes that explain them after the tables."""
    out = ['<section id="overview">\n<h2>Overview: gap to clean</h2>', _legend()]
    for i, s in enumerate(page.sections, 1):
        caption = f"<b>{html.escape(s.gaps.title)}.</b> {_inline(s.gaps.caption)}"
        out += [f'<section id="overview-{i}">\n<h3>{html.escape(s.title)}</h3>', _html_facts(s.facts)]
        out += [_html_table(s.gaps, "overview", caption), "</section>"]
    return [*out, f'<p class="notes">{_inline(OVERVIEW_NOTES)}</p>\n</section>']


def _html_methods(page: Page) -> list[str]:
    items = [
        f'<li id="method-{_slug(r.method)}"><b>{html.escape(r.method)}</b>: '
        + (f'<a href="{html.escape(r.url)}">{html.escape(r.citation)}</a>' if r.url else html.escape(r.citation))
        + "</li>"
        for r in page.references
    ]
    return ['<section id="methods">\n<h2>Methods</h2>\n<ul>', *items, "</ul>\n</section>"]


def _html_details(page: Page) -> list[str]:
    out = ['<section id="details">\n<h2>Detail tables</h2>', f'<p class="notes">{_inline(DETAIL_NOTES)}</p>']
    for i, s in enumerate(page.sections, 1):
        out += [f'<section id="details-{i}">\n<h3>{html.escape(s.title)}</h3>', _html_facts(s.facts)]
        for table in s.details:
            summary = f'<details id="details-{i}-{_slug(table.title)}"><summary>{html.escape(table.title)}</summary>'
            out += [summary, _html_table(table), "</details>"]
        out.append("</section>")
    return [*out, "</section>"]


def _html_errors(errors: Table) -> list[str]:
    return [f'<section id="failed">\n<h2>{html.escape(errors.title)}</h2>', _html_table(errors), "</section>"]


def render_html(page: Page, cmd: str) -> str:
    """The leaderboard as one self-contained static HTML page (inline CSS, no scripts, no external resources)."""
    parts = [
        "<!DOCTYPE html>",
        f"<!-- generated by `{html.escape(cmd)}`; do not edit by hand -->",
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n<meta name="viewport" content="width=device-width">',
        f"<title>uebench leaderboard</title>\n<style>{_css()}</style>\n</head>\n<body>",
        f"<header>\n<h1>uebench leaderboard</h1>\n<p>{_inline(_header(cmd))}</p>\n{_nav(page)}\n</header>\n<main>",
    ]
    if not page.sections:
        parts.append("<p>No finished cells yet.</p>")
    else:
        parts += _html_overview(page)
    if page.references:
        parts += _html_methods(page)
    if page.sections:
        parts += _html_details(page)
    if page.errors:
        parts += _html_errors(page.errors)
    parts.append("</main>\n</body>\n</html>")
    return "\n".join(parts) + "\n"


def build(results_dir: Path, cmd: str) -> tuple[str, str]:
    """``(markdown, html)`` for the cells under ``results_dir``; raises ResultsError when there are none."""
    frame = cells_frame(load_records(results_dir))
    page = build_page(frame, references(frame["method"]))
    return render_markdown(page, cmd), render_html(page, cmd)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = Parser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS, help="cells directory")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file")
    p.add_argument("--html", type=Path, default=DEFAULT_HTML, help="static HTML page")
    p.add_argument("--no-html", action="store_true", help="write (or check) the markdown only")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if the files differ from the cells")
    return p


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    try:
        args = build_parser(prog).parse_args(argv)
        markdown, page = build(args.results_dir, command(args))
        outputs = [(args.out, markdown)] + ([] if args.no_html else [(args.html, page)])
        if not args.check:
            for path, _ in outputs:
                check_writable(path.parent)
    except (UsageError, ResultsError, PermissionError) as err:
        return fail(prog, err)
    if args.check:
        stale = [str(p) for p, text in outputs if not p.is_file() or p.read_text(encoding="utf-8") != text]
        if stale:
            print(
                f"leaderboard: {', '.join(stale)} out of date with {args.results_dir}; regenerate with: "
                f"{command(args)}",
                file=sys.stderr,
            )
            return 1
        print(f"leaderboard: {', '.join(str(p) for p, _ in outputs)} up to date")
        return 0
    for path, text in outputs:
        atomic_write_text(path, text)
        print(f"leaderboard: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
