"""Reference protection numbers for the regression suite, built from measured cells, with measured tolerances.

    python -m benchmarks.expected --results-dir DIR --name smoke-fashion-mnist --only '*/none' 'sem/at4' \\
        --machine aten-default=DIR2 --machine onednn-sse41=DIR3 --command "python -m benchmarks.run ..."

writes ``results/expected/<name>.json``: per (method, defense) the final clean test accuracy of every
seed (at least ``--min-seeds``), its mean and 95 % confidence interval, the same cells re-measured under
other (emulated) machines, and the **tolerance** the regression test applies when it reruns
``--rerun-seeds`` on whatever machine it runs on.

A run is deterministic on one machine but moves with the kernels torch dispatches to: on another machine
the same seed follows another path through the same chaotic training. The regression test reruns
``--rerun-seeds`` on whatever machine it gets, and its tolerance is a prediction interval for that one
run, at a false-alarm rate ``a`` = the file's family-wise rate split over its cells (Bonferroni). Two
models of the rerun are estimated, each for two statistics (the accuracy, and its paired gap to the
clean baseline of the same seed and machine), and each cell uses the narrowest of the four intervals:

* **new draw**: the rerun is one more draw of the cell's population of runs (the seeds on the reference
  machine and every run on the emulated machines, pooled):
  ``mean ± t(1 - a/2, n-1) s sqrt(1 + 1/n)``. Valid however far a machine moves a seed; wide, because
  seeds differ by several points.
* **same seed**: the rerun is the reference machine's value of that seed plus a machine deviation
  ``d``, measured as (emulated machine - reference) on every seed both ran. Deviations of one cell are
  few, so their scale is pooled over the file's cells (``sqrt(mean d^2)``, ``n_d`` deviations) and never
  below the cell's own: ``x_ref(seed) ± t(1 - a/2, n_d) max(rms_pooled, rms_cell)``.

Cells and expected numbers are refused when they were measured from a dirty tree.

The file is generated, never hand-edited: a deliberate change of protection is re-measured and the file
rebuilt.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scipy import stats as st

from benchmarks import stats
from benchmarks.io import atomic_write_text
from benchmarks.matrix import ResultsError, load_records, markdown_table

EXPECTED_DIR = Path("results/expected")
SCHEMA = 2
FAMILY_ALPHA = 0.01  # chance that a correct code base fails the regression test on a new machine, whole file
MIN_SEEDS = 5
#: the smallest tolerance, in accuracy: one test image of a 2000-image slice either way
MIN_TOL = 0.0005
REFERENCE = "reference"  # the machine name of ``--results-dir``


def _main_variant(name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the method config measured on the most seeds (a campaign's config next to single-seed
    sweep variants of the same method); several configs with that many seeds are refused."""
    seeds: dict[tuple[str, str], set[int]] = {}
    for r in rows:
        seeds.setdefault(_config(r), set()).add(r["seed"])
    most = max(len(s) for s in seeds.values())
    best = [h for h, s in seeds.items() if len(s) == most]
    if len(best) != 1:
        shown = sorted("/".join(filter(None, h)) for h in best)
        raise ResultsError(f"{name}: several configs (method/protocol) {shown} on {most} seeds each; one expected")
    return [r for r in rows if _config(r) == best[0]]


def _ok(records: Sequence[dict[str, Any]], only: Sequence[str], allow_dirty: bool, where: str) -> list[dict]:
    ok = [r for r in records if r.get("status") == "ok"]
    if only:
        ok = [r for r in ok if any(fnmatch.fnmatchcase(f"{r['method']}/{r['defense']}", p) for p in only)]
    dirty = sorted({r["cell_id"] for r in ok if r.get("env", {}).get("dirty") is not False})
    if dirty and not allow_dirty:
        raise ResultsError(
            f"{where}: {len(dirty)} cells were not measured from a clean git tree (env.dirty is not false), e.g. "
            f"{dirty[0]}; commit the code and re-measure (or pass --allow-dirty for a file you will not commit)"
        )
    return ok


def _by_cell(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(f"{r['method']}/{r['defense']}", []).append(r)
    return groups


def _config(record: dict[str, Any]) -> tuple[str, str]:
    """What makes two cells the same measurement: the method's config and the protocol's (recipe, defense, slices)."""
    return record["method_hash"], record.get("protocol_hash", "")


def _of(record: dict[str, Any], campaign: Mapping[str, Any]) -> bool:
    return all(record[field] == value for field, value in campaign.items())


def _series(rows: Sequence[dict[str, Any]], config: tuple[str, str]) -> dict[int, float]:
    return {int(r["seed"]): float(r["metrics"]["final_acc"]) for r in rows if _config(r) == config}


def new_draw(samples: Sequence[float], seeds: Sequence[int], alpha: float) -> dict[str, Any]:
    """Prediction interval of one new run from ``samples`` (every measured run of the cell)."""
    half = max(stats.prediction_half_width(samples, alpha), MIN_TOL)
    center = round(statistics.fmean(samples), 6)
    return {"model": "new draw", "centers": {str(s): center for s in seeds}, "half_width": round(half, 6),
            "n": len(samples)}  # fmt: skip


def rms(deviations: Sequence[float]) -> float:
    return math.sqrt(statistics.fmean(d * d for d in deviations)) if deviations else math.nan


def same_seed(
    reference: Mapping[int, float], own: Sequence[float], pooled: Sequence[float], seeds: Sequence[int], alpha: float
) -> dict[str, Any] | None:
    """Prediction interval of a rerun of each of ``seeds`` on a new machine: the reference value of the
    seed ± ``t(1 - alpha/2, n_d)`` times the machine deviations' scale (pooled, never below the cell's own);
    None without deviations."""
    if not pooled or not own:
        return None
    scale = max(rms(pooled), rms(own))
    half = max(float(st.t.ppf(1 - alpha / 2, len(pooled))) * scale, MIN_TOL)
    return {
        "model": "same seed", "centers": {str(s): round(reference[s], 6) for s in seeds}, "half_width": round(half, 6),
        "n": len(pooled), "scale": round(scale, 6), "own_deviations": [round(d, 6) for d in own],
    }  # fmt: skip


def build(
    records: Sequence[dict[str, Any]],
    command: str,
    only: Sequence[str] = (),
    machines: Mapping[str, Sequence[dict[str, Any]]] | None = None,
    rerun_seeds: Sequence[int] = (0,),
    family_alpha: float = FAMILY_ALPHA,
    min_seeds: int = MIN_SEEDS,
    allow_dirty: bool = False,
) -> dict[str, Any]:
    """The expected-numbers document of ``records`` (cells of one dataset, preset and victim).

    Args:
        only: shell-style patterns on ``method/defense`` (e.g. ``*/none``, ``sem/at4``); cells that match
            none are left out (all are kept when empty).
        machines: name -> cells of the same campaign re-measured on another (emulated) machine.
        rerun_seeds: the seeds the regression test reruns; each must be among every cell's seeds.
    """
    ok = _ok(records, only, allow_dirty, "--results-dir")
    if not ok:
        raise ResultsError(f"no finished cells to build expected numbers from (patterns: {' '.join(only) or 'all'})")
    for field in ("dataset", "preset", "victim"):
        values = {r[field] for r in ok}
        if len(values) != 1:
            raise ResultsError(f"cells span several {field}s {sorted(values)}; pass one campaign's results")
    campaign = {field: ok[0][field] for field in ("dataset", "preset", "victim")}
    # a machine's folder may hold other protocols' cells too (smoke and smoke-600 share their noise, hence their
    # method hashes): only the reference's campaign is compared, and below only the same method and protocol configs
    other = {
        name: _by_cell([r for r in _ok(rows, only, allow_dirty, f"--machine {name}") if _of(r, campaign)])
        for name, rows in (machines or {}).items()
    }
    groups = {name: _main_variant(name, rows) for name, rows in sorted(_by_cell(ok).items())}
    alpha = family_alpha / len(groups)
    runs: dict[str, dict[str, dict[int, float]]] = {}  # cell -> machine -> seed -> accuracy
    for name, rows in groups.items():
        config = _config(rows[0])
        runs[name] = {REFERENCE: _series(rows, config)}
        for machine, cells in other.items():
            series = _series(cells.get(name, []), config)
            if series:
                runs[name][machine] = series
    # the statistic of every run: cell -> statistic -> machine -> seed -> value
    values_of: dict[str, dict[str, dict[str, dict[int, float]]]] = {}
    for name in groups:
        clean = runs.get(f"clean/{name.split('/')[1]}")
        values_of[name] = {"accuracy": runs[name]}
        if clean is not None and not name.startswith("clean/"):
            values_of[name]["gap_to_clean"] = {
                machine: {s: v - clean[machine][s] for s, v in series.items() if s in clean.get(machine, {})}
                for machine, series in runs[name].items()
            }
    deviations: dict[str, dict[str, list[float]]] = {}  # statistic -> cell -> (machine - reference, same seed)
    for name, by_statistic in values_of.items():
        for statistic, by_machine in by_statistic.items():
            ref = by_machine[REFERENCE]
            deviations.setdefault(statistic, {})[name] = [
                v - ref[s] for machine, series in by_machine.items() if machine != REFERENCE
                for s, v in series.items() if s in ref
            ]  # fmt: skip
    pooled = {k: [d for ds in by_cell.values() for d in ds] for k, by_cell in deviations.items()}
    cells = {}
    for name, rows in groups.items():
        seeds = sorted(runs[name][REFERENCE])
        if len(seeds) < min_seeds:
            raise ResultsError(f"{name}: measured on {len(seeds)} seeds {seeds}; at least {min_seeds} are needed")
        missing = sorted(set(rerun_seeds) - set(seeds))
        if missing:
            raise ResultsError(f"{name}: the rerun seeds {missing} were not measured")
        values = [round(runs[name][REFERENCE][s], 6) for s in seeds]
        ci = stats.mean_ci(values)
        candidates = {}
        for statistic, by_machine in values_of[name].items():
            samples = [v for series in by_machine.values() for v in series.values()]
            if statistic != "accuracy" and len(by_machine[REFERENCE]) < min_seeds:
                continue  # the clean baseline lacks seeds
            rerun = sorted(set(rerun_seeds))
            candidates[f"{statistic}, new draw"] = new_draw(samples, rerun, alpha)
            if set(rerun) <= set(by_machine[REFERENCE]):
                tol = same_seed(by_machine[REFERENCE], deviations[statistic][name], pooled[statistic], rerun, alpha)
                if tol is not None:
                    candidates[f"{statistic}, same seed"] = tol
        chosen = min(candidates, key=lambda k: candidates[k]["half_width"])
        spread = {
            str(s): round(max(vals) - min(vals), 6)
            for s in seeds
            if len(vals := [series[s] for series in runs[name].values() if s in series]) > 1
        }
        cells[name] = {
            "method_hash": rows[0]["method_hash"],
            "protocol_hash": rows[0].get("protocol_hash"),
            "seeds": seeds,
            "values": values,
            "mean": round(ci.mean, 6),
            "ci95": round(ci.half, 6),
            "std": round(statistics.stdev(values), 6),
            "machines": {
                m: {str(s): round(v, 6) for s, v in sorted(series.items())} for m, series in runs[name].items()
            },
            "machine_spread": spread,  # seed -> max - min over the machines that measured it
            "statistic": chosen.split(",")[0],
            "tolerance": candidates[chosen],
            "candidates": candidates,
        }
    first = ok[0]
    return {
        "schema": SCHEMA,
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
        "git_commit": sorted({str(r["env"].get("git_commit")) for r in ok}),
        "machines": {REFERENCE: _machine(ok), **{m: _machine(list(_flatten(c))) for m, c in other.items()}},
        "metric": "final clean test accuracy",
        "rerun_seeds": sorted(set(rerun_seeds)),
        "family_alpha": family_alpha,
        "tolerance_rule": (
            f"per cell the narrowest of: (new draw) mean ± t(1 - a/2, n-1) s sqrt(1 + 1/n) over every measured run "
            f"(seeds x machines); (same seed) the reference value of the rerun seed ± t(1 - a/2, n_d) max(rms of the "
            f"file's machine deviations, rms of the cell's own); each for the accuracy and for its paired gap to the "
            f"clean baseline (same seed and machine); a = family_alpha / cells = {alpha:.3g}; never below {MIN_TOL}"
        ),
        "machine_deviation_rms": {k: round(rms(v), 6) for k, v in pooled.items() if v},
        "cells": cells,
    }


def _flatten(groups: Mapping[str, Sequence[dict[str, Any]]]) -> Sequence[dict[str, Any]]:
    return [r for rows in groups.values() for r in rows]


def _machine(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What described the machine of these cells' numerics (the distinct values seen)."""
    out: dict[str, set[str]] = {}
    for r in rows:
        num = r.get("env", {}).get("numerics") or {}
        for key in ("cpu", "cpu_capability", "threads", "precision"):
            out.setdefault(key, set()).add(str(num.get(key)))
        out.setdefault("variables", set()).add(json.dumps(num.get("variables", {}), sort_keys=True))
    return {k: sorted(v) for k, v in out.items()}


def statistic_of(doc: dict[str, Any], name: str, runs: Mapping[str, float]) -> float:
    """The value of cell ``name``'s statistic for one rerun: ``runs`` maps ``method/defense`` to accuracy."""
    entry = doc["cells"][name]
    if entry["statistic"] == "gap_to_clean":
        return runs[name] - runs[f"clean/{name.split('/')[1]}"]
    return runs[name]


def check(doc: dict[str, Any], name: str, runs: Mapping[str, float], seed: int) -> str | None:
    """None when the rerun of cell ``name`` on ``seed`` is inside its tolerance, else a one-line reason.

    Raises KeyError when the file has no tolerance for ``seed`` (not one of its ``rerun_seeds``) or, for a gap
    statistic, ``runs`` lacks the clean cell.
    """
    entry = doc["cells"][name]
    tol = entry["tolerance"]
    value, center = statistic_of(doc, name, runs), tol["centers"][str(seed)]
    if abs(value - center) <= tol["half_width"]:
        return None
    what = "accuracy" if entry["statistic"] == "accuracy" else "gap to clean"
    return (
        f"{name}: {what} {value:+.2%} is outside {center:+.2%} ± {tol['half_width']:.2%} ({tol['model']}; accuracy "
        f"{runs[name]:.2%}; measured {entry['mean']:.2%} ± {entry['ci95']:.2%} (95% CI) over seeds {entry['seeds']})"
    )


def report(doc: dict[str, Any]) -> str:
    """A Markdown table of the file: per cell the seeds' mean and 95 % CI, the runs of each machine, the
    largest machine-to-machine spread of one seed, and the tolerance the regression test applies."""
    machines = list(doc["machines"])
    head = ["cell", "mean ± 95% CI (seeds)", *[f"{m} (seed: acc)" for m in machines], "max spread, one seed"]
    head += ["tested statistic, model", "tolerance (seed: center)"]
    rows = []
    for name, entry in doc["cells"].items():
        runs = [
            ", ".join(f"{s}: {v * 100:.2f}" for s, v in entry["machines"].get(m, {}).items()) or "—" for m in machines
        ]
        spread = max(entry["machine_spread"].values(), default=float("nan")) * 100
        tol = entry["tolerance"]
        rows.append(
            [
                name,
                f"{entry['mean'] * 100:.2f} ± {entry['ci95'] * 100:.2f} ({len(entry['seeds'])})",
                *runs,
                f"{spread:.2f} pp",
                f"{entry['statistic']}, {tol['model']}",
                ", ".join(f"{s}: {c * 100:+.2f}" for s, c in tol["centers"].items())
                + f" ± {tol['half_width'] * 100:.2f} pp (n={tol['n']})",
            ]
        )
    return markdown_table(head, rows)


def _machine_arg(text: str) -> tuple[str, Path]:
    name, eq, path = text.partition("=")
    if not (eq and name and path) or name == REFERENCE:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR with NAME not {REFERENCE!r}, got {text!r}")
    return name, Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.expected", description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", type=Path, metavar="FILE", help="print FILE's cells as a Markdown table and exit")
    parser.add_argument("--results-dir", type=Path, help="cells of one measured campaign")
    parser.add_argument("--name", help="file name under results/expected (without .json)")
    parser.add_argument("--command", help="the command that produced the cells")
    parser.add_argument("--out-dir", type=Path, default=EXPECTED_DIR)
    parser.add_argument("--only", nargs="+", default=[], metavar="METHOD/DEFENSE", help="keep matching cells (globs)")
    parser.add_argument(
        "--machine", action="append", default=[], type=_machine_arg, metavar="NAME=DIR",
        help="the same cells re-measured on another (emulated) machine (repeatable)",
    )  # fmt: skip
    parser.add_argument("--rerun-seeds", nargs="+", type=int, default=[0], help="seeds the regression test reruns")
    parser.add_argument("--family-alpha", type=float, default=FAMILY_ALPHA, help="false-alarm rate of the whole file")
    parser.add_argument("--min-seeds", type=int, default=MIN_SEEDS)
    parser.add_argument("--allow-dirty", action="store_true", help="accept cells measured from a dirty tree")
    args = parser.parse_args(argv)
    if args.report is not None:
        try:
            print(report(json.loads(args.report.read_text())))
        except (OSError, ValueError, KeyError) as err:
            print(f"expected: error: cannot report {args.report}: {err!r}", file=sys.stderr)
            return 2
        return 0
    missing = [f"--{k.replace('_', '-')}" for k in ("results_dir", "name", "command") if getattr(args, k) is None]
    if missing:
        print(f"expected: error: {', '.join(missing)} required (or --report FILE)", file=sys.stderr)
        return 2
    if not 0 < args.family_alpha < 1:
        print(f"expected: error: --family-alpha must be in (0, 1), got {args.family_alpha}", file=sys.stderr)
        return 2
    try:
        machines = {name: load_records(path) for name, path in args.machine}
        doc = build(
            load_records(args.results_dir), args.command, args.only, machines, args.rerun_seeds,
            args.family_alpha, args.min_seeds, args.allow_dirty,
        )  # fmt: skip
    except ResultsError as err:
        print(f"expected: error: {err}", file=sys.stderr)
        return 2
    path = args.out_dir / f"{args.name}.json"
    atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path}: {len(doc['cells'])} cells")
    for name, entry in doc["cells"].items():
        tol = entry["tolerance"]
        centers = " ".join(f"{c:+.4f}" for c in tol["centers"].values())
        statistic, model = entry["statistic"], tol["model"]
        print(f"  {name:<14} {statistic:<13} {model:<9} {centers} ± {tol['half_width']:.4f} (n={tol['n']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
