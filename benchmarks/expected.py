"""Reference protection numbers for the regression suite, built from measured cells.

    python -m benchmarks.expected --results-dir DIR --name smoke-fashion-mnist \\
        --command "python -m benchmarks.run --methods em sc random --defense none --seeds 0 1 2 --results-dir DIR"

writes ``results/expected/<name>.json`` (``--only '*/none' 'sem/at4'``: just the matching cells of a
larger campaign): per (method, defense) the mean, sample standard deviation
and values of the final clean test accuracy over the seeds, the victim, data set, protocol and
device they were measured on, and the command that produced the cells. ``tests/test_regression.py``
reruns those cells and fails when a number leaves ``mean ± K_STD x std``. The file is generated,
never hand-edited: a deliberate change of protection is re-measured and the file rebuilt.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.io import atomic_write_text
from benchmarks.matrix import ResultsError, load_records

EXPECTED_DIR = Path("results/expected")
K_STD = 3.0  # tolerance in seed standard deviations
#: the smallest tolerance, in accuracy: one test image of a 2000-image slice either way (a seed's std can be
#: tiny by chance with 3 seeds; this keeps the test from failing on a single flipped prediction)
MIN_TOL = 0.0005


def tolerance(entry: dict[str, Any]) -> float:
    """Allowed absolute deviation of a rerun from ``entry['mean']``."""
    return max(K_STD * float(entry["std"]), MIN_TOL)


def _main_variant(name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the method config measured on the most seeds (a campaign's config next to single-seed
    sweep variants of the same method); several configs with that many seeds are refused."""
    seeds: dict[str, set[int]] = {}
    for r in rows:
        seeds.setdefault(r["method_hash"], set()).add(r["seed"])
    most = max(len(s) for s in seeds.values())
    best = [h for h, s in seeds.items() if len(s) == most]
    if len(best) != 1:
        raise ResultsError(f"{name}: several method configs {sorted(best)} on {most} seeds each; one expected")
    return [r for r in rows if r["method_hash"] == best[0]]


def build(records: Sequence[dict[str, Any]], command: str, only: Sequence[str] = ()) -> dict[str, Any]:
    """The expected-numbers document of ``records`` (cells of one dataset, preset and victim).

    ``only``: shell-style patterns on ``method/defense`` (e.g. ``*/none``, ``sem/at4``); the cells that
    match none of them are left out (all are kept when ``only`` is empty).
    """
    ok = [r for r in records if r.get("status") == "ok"]
    if only:
        ok = [r for r in ok if any(fnmatch.fnmatchcase(f"{r['method']}/{r['defense']}", p) for p in only)]
    if not ok:
        raise ResultsError(f"no finished cells to build expected numbers from (patterns: {' '.join(only) or 'all'})")
    for field in ("dataset", "preset", "victim"):
        values = {r[field] for r in ok}
        if len(values) != 1:
            raise ResultsError(f"cells span several {field}s {sorted(values)}; pass one campaign's results")
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in ok:
        groups.setdefault(f"{r['method']}/{r['defense']}", []).append(r)
    cells = {}
    for name, rows in sorted(groups.items()):
        rows = _main_variant(name, rows)
        rows.sort(key=lambda r: r["seed"])
        values = [round(float(r["metrics"]["final_acc"]), 6) for r in rows]
        cells[name] = {
            "method_hash": rows[0]["method_hash"],
            "seeds": [r["seed"] for r in rows],
            "values": values,
            "mean": round(statistics.fmean(values), 6),
            "std": round(statistics.stdev(values), 6) if len(values) > 1 else 0.0,
        }
    first = ok[0]
    return {
        "generated_by": "python -m benchmarks.expected (never hand-edited)",
        "command": command,
        "dataset": first["dataset"],
        "preset": first["preset"],
        "victim": first["victim"],
        "recipe": first["recipe"]["name"],
        "train_size": first["train_size"],
        "test_size": first["test_size"],
        "device": sorted({r["env"]["device"] for r in ok}),
        "torch": sorted({r["env"]["torch"] for r in ok}),
        "metric": "final clean test accuracy",
        "tolerance": f"max({K_STD} x seed std, {MIN_TOL})",
        "cells": cells,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.expected", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", type=Path, required=True, help="cells of one measured campaign")
    parser.add_argument("--name", required=True, help="file name under results/expected (without .json)")
    parser.add_argument("--command", required=True, help="the command that produced the cells")
    parser.add_argument("--out-dir", type=Path, default=EXPECTED_DIR)
    parser.add_argument("--only", nargs="+", default=[], metavar="METHOD/DEFENSE", help="keep matching cells (globs)")
    args = parser.parse_args(argv)
    try:
        doc = build(load_records(args.results_dir), args.command, args.only)
    except ResultsError as err:
        print(f"expected: error: {err}", file=sys.stderr)
        return 2
    path = args.out_dir / f"{args.name}.json"
    atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path}: {len(doc['cells'])} cells")
    return 0


if __name__ == "__main__":
    sys.exit(main())
