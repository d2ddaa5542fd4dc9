"""``uebench validate``: are the results what they claim to be? ``uebench migrate``: bring old cells up to date.

    uebench validate [--results-dir results/cells results/study/cells] [--expected-dir results/expected]

checks every cell file (readable JSON, schema, required fields, metrics in range, a file name that is its
key, a protocol hash that matches the recipe, defense, slice sizes and precision the cell recorded) and
every expected-numbers file (each cell, seed and value present among the results cells of the same
config, in any of the directories). It prints one line per problem and exits 1 when there is any, 0 otherwise.

    uebench validate --preset smoke [--dataset fashion-mnist] [--results-dir DIR [DIR ...]]

adds the validity criteria of a miniature protocol, computed from that preset's cells
(:mod:`benchmarks.criteria`: victims trained to a plateau, adversarial training that changes the victim,
surrogates that fit their data, the mission's command within 10 minutes); a criterion not met or not measured
makes the exit code 1.

    uebench migrate DIR

rewrites cells of an earlier schema under DIR (schema 1: no protocol hash) in place.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.criteria import evaluate_protocol, report
from benchmarks.errors import HelpFormatter, Parser, UsageError, fail
from benchmarks.plugins import load_plugins
from benchmarks.registry import DATASETS, PRESETS
from benchmarks.store import SCHEMA, CellKey, ResultStore, migrate, protocol_hash, record_identity, validate_cell

DEFAULT_EXPECTED = Path("results/expected")
#: the committed cells: the campaigns' (smoke) and the protocol study's (the default protocol among them)
DEFAULT_RESULTS = (Path("results/cells"), Path("results/study/cells"))


def check_cells(root: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Problems of the cell files under ``root`` and the valid records."""
    problems, records = [], []
    for path in sorted(Path(root).rglob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            problems.append(f"{path}: unreadable ({err})")
            continue
        if isinstance(record, dict) and isinstance(record.get("schema"), int) and record["schema"] < SCHEMA:
            problems.append(f"{path}: schema {record['schema']}; run: uebench migrate {root}")
            continue
        found = validate_cell(record)
        if found:
            problems.append(f"{path}: {'; '.join(found)}")
            continue
        key = CellKey.of(record)
        if path != ResultStore(root).path(key) or record["cell_id"] != key.cell_id:
            problems.append(f"{path}: stored under another name than its key {key.relpath()}")
        precision = (record["env"].get("numerics") or {}).get("precision")
        try:
            expect = protocol_hash(
                record["recipe"], record["defense_cfg"], record["train_size"], record["test_size"], str(precision)
            )
        except KeyError as err:
            problems.append(f"{path}: no {err} to check its protocol hash against")
        else:
            if precision is not None and expect != record["protocol_hash"]:
                problems.append(f"{path}: protocol hash {record['protocol_hash']} does not match its record ({expect})")
        records.append(record)
    return problems, records


def check_expected(directory: Path, records: Sequence[dict[str, Any]]) -> list[str]:
    """Problems of the expected-numbers files: every (cell, seed, value) must be among ``records`` (several
    records of one cell, from several directories, may stand there: one of them must have the value)."""
    ok: dict[tuple[Any, ...], list[float]] = {}
    for r in records:
        if r["status"] == "ok":
            key = (r["dataset"], r["preset"], r["victim"], r["method"], r["method_hash"], r["defense"], r["seed"])
            ok.setdefault(key, []).append(float(r["metrics"]["final_acc"]))
    problems = []
    for path in sorted(Path(directory).glob("*.json")):
        doc = json.loads(path.read_text())
        for name, entry in doc.get("cells", {}).items():
            method, defense = name.split("/")
            for seed, value in zip(entry["seeds"], entry["values"], strict=True):
                where = (doc["dataset"], doc["preset"], doc["victim"], method, entry["method_hash"], defense, seed)
                found = ok.get(where)
                if found is None:
                    problems.append(f"{path}: {name} seed {seed}: no ok results cell of config {entry['method_hash']}")
                elif all(abs(acc - value) > 5e-7 for acc in found):
                    problems.append(f"{path}: {name} seed {seed}: {value} != the cells' {sorted(set(found))}")
    return problems


def build_parser(prog: str) -> Parser:
    p = Parser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument(
        "--results-dir",
        type=Path,
        nargs="+",
        default=None,
        help="results cells: one directory or several, read together (a cell in a later one replaces the same cell "
        "of an earlier one; default: those of results/cells and results/study/cells that exist)",
    )
    p.add_argument("--expected-dir", type=Path, default=DEFAULT_EXPECTED, help="expected numbers ('' to skip)")
    p.add_argument("--preset", default=None, help="also print this preset's validity criteria (e.g. smoke)")
    p.add_argument("--dataset", default="fashion-mnist", help="the data set of --preset's cells")
    return p


def main(argv: Sequence[str] | None = None, prog: str = "python -m benchmarks.validate") -> int:
    try:
        args = build_parser(prog).parse_args(argv)
        if args.results_dir is None:  # a campaign of one's own has no study folder: read what is there
            args.results_dir = [root for root in DEFAULT_RESULTS if root.is_dir()] or [DEFAULT_RESULTS[0]]
        for root in args.results_dir:
            if not root.is_dir():
                raise UsageError(f"--results-dir {root} is not a directory")
        if args.preset is not None:
            load_plugins()
        if args.preset is not None and args.preset not in PRESETS:
            raise UsageError(f"--preset: unknown preset {args.preset!r}; accepted: {', '.join(PRESETS.accepted())}")
        if args.preset is not None and args.dataset not in DATASETS:
            raise UsageError(f"--dataset: unknown {args.dataset!r}; accepted: {', '.join(DATASETS.accepted())}")
    except UsageError as err:
        return fail(prog, err)
    problems, by_id, every = [], {}, []
    for root in args.results_dir:  # a cell in a later directory replaces the same cell of an earlier one
        found, valid = check_cells(root)
        problems += found
        every += valid
        by_id |= {record_identity(r): r for r in valid}
    records = list(by_id.values())
    if str(args.expected_dir) not in ("", ".") and args.expected_dir.is_dir():
        problems += check_expected(args.expected_dir, every)
    for line in problems:
        print(line)
    where = " and ".join(str(root) for root in args.results_dir)
    print(f"{prog}: {len(records)} valid cells under {where}; {len(problems)} problems")
    if args.preset is None:
        return 1 if problems else 0
    found = evaluate_protocol(records, args.dataset, args.preset)
    print("\n".join(report(found, args.dataset, args.preset)))
    return 1 if problems or not all(c.met for c in found) else 0


def migrate_main(argv: Sequence[str] | None = None, prog: str = "uebench migrate") -> int:
    p = Parser(prog=prog, description="Rewrite the results cells of an earlier schema under DIR in place.")
    p.add_argument("dir", type=Path, help="a results directory")
    try:
        args = p.parse_args(argv)
        if not args.dir.is_dir():
            raise UsageError(f"{args.dir} is not a directory")
    except UsageError as err:
        return fail(prog, err)
    moved = migrate(args.dir)
    left = ResultStore(args.dir).old_cells()
    print(f"{prog}: {len(moved)} cells migrated to schema {SCHEMA} under {args.dir}; {len(left)} left (see warnings)")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
