"""Leaderboard: results cells -> ``results/LEADERBOARD.md`` (+ a static HTML page), never edited by hand.

    python -m benchmarks.leaderboard                 # results/cells -> results/LEADERBOARD.md, results/leaderboard.html
    python -m benchmarks.leaderboard --check         # exit 1 when the committed files are out of date

One section per (data set, preset, recipe, victim, defense) ranks the methods by protection: the mean final
clean test accuracy over seeds of a victim trained on the protected data (lower = better protection), with
its spread over seeds, the gap to the clean baseline of the same section and the cost of generating the
noise. Failed cells are listed separately, not ranked. The output is a pure function of the cells (sorted,
fixed float formats, no timestamps), so ``--check`` can compare it byte for byte.
"""

from __future__ import annotations

import argparse
import html
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmarks import stats
from benchmarks.errors import HelpFormatter, Parser, UsageError, fail
from benchmarks.io import atomic_write_text, check_writable
from benchmarks.matrix import ResultsError, cells_frame, load_records, markdown_table

DEFAULT_RESULTS = Path("results/cells")
DEFAULT_OUT = Path("results/LEADERBOARD.md")
DEFAULT_HTML = Path("results/leaderboard.html")
PROG = "python -m benchmarks.leaderboard"
SECTION_KEY = ["dataset", "preset", "recipe", "train_size", "victim", "defense"]
HEADERS = [
    "rank",
    "method",
    "final acc %",
    "95% CI ±",
    "n",
    "seeds",
    "gap to clean (pp) [95% CI]",
    "p (paired)",
    "peak acc %",
    "gen. wall s",
    "gen. passes",
    "gen. device",
]
RIGHT = (2, 3, 4, 7, 8, 9, 10)
ERROR_HEADERS = ["dataset", "preset", "victim", "defense", "method", "seed", "cell", "error"]
NOTES = (
    "Protection = clean test accuracy (%) of a victim trained on the protected training set, final checkpoint, "
    "mean over seeds; **lower = better protection**. 95% CI ± is the half-width of the Student-t confidence "
    "interval of that mean over seeds (— for one seed), n the number of seeds. Gap to clean = method − clean "
    "baseline of the same section on the same seeds (victim initialisation, data order and augmentation are "
    "shared by seed), in percentage points, with the 95% CI of the mean paired difference and the p-value of "
    "the paired t-test. **Rank** = 1 + the number of methods whose accuracy is significantly lower (paired "
    "t-test over common seeds, p < 0.05): methods that share a rank are statistically tied (— : one seed, "
    "no test). Generation cost, "
    "mean over the poisons (one per seed): wall seconds, and passes = images forwarded through the "
    "generation models / training-set size (each forward pass with its backward pass where gradients are "
    "taken), on the generation device. A method listed with options is one of several configurations of that "
    "method in the same preset."
)


@dataclass(frozen=True)
class Table:
    """A titled table of text cells, rendered to markdown and HTML alike."""

    title: str
    caption: str
    headers: list[str]
    rows: list[list[str]]
    right: tuple[int, ...] = ()


def _pct(value: float, signed: bool = False) -> str:
    if not math.isfinite(value):
        return "—"
    return f"{value * 100:+.2f}" if signed else f"{value * 100:.2f}"


def _num(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "—"


def _join(values: pd.Series) -> str:
    return "; ".join(sorted({str(v) for v in values if str(v)})) or "—"


def _seeds(values: pd.Series) -> str:
    return " ".join(str(s) for s in sorted(set(int(v) for v in values)))


def _size(value: float) -> str:
    return str(int(value)) if math.isfinite(value) else "?"


def _section_order(key: tuple) -> tuple:
    """Sections sorted by their key, with defense ``none`` first within a victim."""
    *head, defense = key
    return (*[str(k) for k in head], defense != "none", defense)


def _per_seed(cells: pd.DataFrame) -> dict[int, float]:
    return {int(k): float(v) for k, v in zip(cells["seed"], cells["final_acc"], strict=True) if math.isfinite(v)}


def _gap(cells: pd.DataFrame, clean: pd.DataFrame) -> tuple[str, str]:
    """The paired gap to the clean baseline, ``"-12.30 [-14.1, -10.5]"``, and its p-value."""
    test = stats.paired(_per_seed(cells), _per_seed(clean))
    if test.diff.n == 0:
        return "—", "—"
    text = _pct(test.diff.mean, signed=True)
    if math.isfinite(test.diff.half):
        text += f" [{test.diff.low * 100:+.1f}, {test.diff.high * 100:+.1f}]"
    return text, (f"{test.p:.3g}" if math.isfinite(test.p) else "—")


def section_tables(frame: pd.DataFrame) -> list[Table]:
    """The ranked tables of the ok cells of ``frame`` (:func:`benchmarks.matrix.cells_frame`), in sorted order."""
    ok = frame[frame["status"] == "ok"]
    tables = []
    groups = sorted(ok.groupby(SECTION_KEY, sort=True, dropna=False), key=lambda kv: _section_order(kv[0]))
    for key, part in groups:
        dataset, preset, recipe, train_size, victim, defense = key
        clean = part[part["method"] == "clean"]
        variants = {label: cells for (_, label), cells in part.groupby(["method", "label"], sort=True)}
        ranks = stats.tied_ranks({label: _per_seed(c) for label, c in variants.items() if label != "clean"})
        rows = []
        for label, cells in variants.items():
            ci = stats.mean_ci(cells["final_acc"].tolist())
            is_method = label != "clean"
            gap, p = _gap(cells, clean) if is_method and len(clean) else ("—", "—")
            rank = ranks.get(label, 0) if ci.n >= 2 else math.inf  # one seed: no test, no rank
            row = [
                ("—" if rank == math.inf else str(rank)) if is_method else "baseline",
                label,
                _pct(ci.mean),
                _pct(ci.half),
                str(ci.n),
                _seeds(cells["seed"]),
                gap,
                p,
                _pct(float(cells["peak_acc"].mean())),
                _num(float(cells["gen_wall_s"].mean()), 2),
                _num(float(cells["gen_passes"].mean())),
                _join(cells["gen_device"]),
            ]
            order = round(ci.mean, 9) if math.isfinite(ci.mean) else math.inf
            rows.append((is_method, rank, order, label, row))
        rows.sort(key=lambda t: t[:4])
        seeds = _seeds(part["seed"])
        caption = (
            f"Clean test accuracy (%) on {dataset} ({_size(train_size)} training images), protocol preset "
            f"{preset} / recipe {recipe or '?'}, victim {victim}, defense {defense}; seeds {seeds}; "
            f"training device {_join(part['device'])}."
        )
        if not len(clean):
            caption += " No clean baseline in this section: gaps are not available."
        title = f"{dataset} · {preset} ({recipe or '?'}) · {victim} · defense {defense}"
        tables.append(Table(title, caption, HEADERS, [r[-1] for r in rows], RIGHT))
    return tables


def overview_tables(frame: pd.DataFrame) -> list[Table]:
    """Per (data set, preset, recipe, victim): method x defense, mean accuracy ± 95 % CI half-width (n seeds).

    A value in bold is tied for the strongest protection of its column (rank 1 of that section)."""
    ok = frame[frame["status"] == "ok"]
    tables = []
    for key, part in ok.groupby(SECTION_KEY[:-1], sort=True, dropna=False):
        dataset, preset, recipe, train_size, victim = key
        defenses = sorted(part["defense"].unique(), key=lambda d: (d != "none", not d.startswith("at"), d))
        labels = sorted(set(part["label"]), key=lambda label: (label != "clean", label))
        best: dict[str, set[str]] = {}
        for defense in defenses:
            column = part[(part["defense"] == defense) & (part["label"] != "clean")]
            ranks = stats.tied_ranks({label: _per_seed(c) for label, c in column.groupby("label")})
            best[defense] = {label for label, rank in ranks.items() if rank == 1}
        rows = []
        for label in labels:
            row = [label]
            for defense in defenses:
                cells = part[(part["label"] == label) & (part["defense"] == defense)]
                ci = stats.mean_ci(cells["final_acc"].tolist())
                if ci.n == 0:
                    row.append("")
                    continue
                text = _pct(ci.mean) + (f" ± {ci.half * 100:.2f}" if math.isfinite(ci.half) else "") + f" ({ci.n})"
                row.append(f"**{text}**" if label in best[defense] and ci.n > 1 else text)
            rows.append(row)
        caption = (
            f"Final clean test accuracy (%) on {dataset} ({_size(train_size)} training images), preset {preset} / "
            f"recipe {recipe or '?'}, victim {victim}: mean ± 95% CI half-width (seeds). Bold: tied for the "
            "strongest protection under that defense (rank 1: no method is significantly lower, paired t-test)."
        )
        title = f"Overview: {dataset} · {preset} ({recipe or '?'}) · {victim}"
        tables.append(Table(title, caption, ["method", *defenses], rows, tuple(range(1, len(defenses) + 1))))
    return tables


def error_table(frame: pd.DataFrame) -> Table | None:
    """The failed cells (status != ok), or None when there are none."""
    bad = frame[frame["status"] != "ok"]
    if bad.empty:
        return None
    rows = [
        [r.dataset, r.preset, r.victim, r.defense, r.label, str(r.seed), r.cell_id, f"{r.status}: {r.error}"]
        for r in bad.itertuples()
    ]
    caption = "Cells whose training failed; they are not ranked above. Rerun with `--retry-errors`."
    return Table(f"Failed cells ({len(rows)})", caption, ERROR_HEADERS, rows)


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


def render_markdown(tables: Sequence[Table], errors: Table | None, cmd: str) -> str:
    """The leaderboard as markdown."""
    out = [f"<!-- generated by `{cmd}`; do not edit by hand -->", "# uebench leaderboard", "", _header(cmd), "", NOTES]
    if not tables:
        out += ["", "No finished cells yet."]
    for table in [*tables, *([errors] if errors else [])]:
        out += ["", f"## {table.title}", "", table.caption, "", markdown_table(table.headers, table.rows, table.right)]
    return "\n".join(out) + "\n"


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}"
    "table{border-collapse:collapse;margin:.5em 0 2em}"
    "th,td{border:1px solid #ccc;padding:.25em .6em;font-size:.9em}"
    "th{background:#f0f0f0}td.r{text-align:right;font-variant-numeric:tabular-nums}"
    "tr.baseline{background:#f7f7e8}caption{text-align:left;padding:.3em 0;color:#444}"
)


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = []
    for row in table.rows:
        cells = "".join(
            f'<td class="r">{html.escape(c)}</td>' if i in table.right else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(row)
        )
        attr = ' class="baseline"' if row and row[0] == "baseline" else ""
        body.append(f"<tr{attr}>{cells}</tr>")
    return (
        f"<h2>{html.escape(table.title)}</h2>\n<table>\n<caption>{html.escape(table.caption)}</caption>\n"
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"
    )


def render_html(tables: Sequence[Table], errors: Table | None, cmd: str) -> str:
    """The leaderboard as one self-contained static HTML page (inline CSS, no scripts)."""
    notes = html.escape(NOTES).replace("**lower = better protection**", "<b>lower = better protection</b>")
    parts = [
        "<!DOCTYPE html>",
        f"<!-- generated by `{html.escape(cmd)}`; do not edit by hand -->",
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>uebench leaderboard</title>',
        f"<style>{_CSS}</style>\n</head>\n<body>\n<h1>uebench leaderboard</h1>",
        f"<p>{html.escape(_header(cmd)).replace('`', '')}</p>",
        f"<p>{notes}</p>",
    ]
    if not tables:
        parts.append("<p>No finished cells yet.</p>")
    parts += [_html_table(t) for t in [*tables, *([errors] if errors else [])]]
    parts.append("</body>\n</html>")
    return "\n".join(parts) + "\n"


def build(results_dir: Path, cmd: str) -> tuple[str, str]:
    """``(markdown, html)`` for the cells under ``results_dir``; raises ResultsError when there are none."""
    frame = cells_frame(load_records(results_dir))
    tables, errors = [*overview_tables(frame), *section_tables(frame)], error_table(frame)
    return render_markdown(tables, errors, cmd), render_html(tables, errors, cmd)


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
