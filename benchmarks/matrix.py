"""Results cells -> pandas frames: the one table (:func:`cells_frame`) the runner's matrix, the leaderboard,
the plots and :func:`benchmarks.campaign.run_campaign` all read."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.store import FIXED_RADIUS, ROBUSTNESS, ROBUSTNESS_FIXED, ResultStore, record_identity


def matrix(frame: pd.DataFrame, value: str = "final_acc") -> pd.DataFrame:
    """Method (label) x defense table of ``value`` in percent over the ok cells of a :func:`cells_frame`:
    ``mean`` for one seed, ``mean ± std (n)`` for several."""
    frame = frame[frame["status"] == "ok"]
    if frame.empty:
        return pd.DataFrame()

    def cell(values: pd.Series) -> str:
        pct = values.dropna() * 100
        if len(pct) <= 1:
            return f"{pct.mean():.1f}"
        return f"{pct.mean():.1f} ± {pct.std(ddof=1):.1f} (n={len(pct)})"

    methods = list(dict.fromkeys(frame["label"]))
    defenses = list(dict.fromkeys(frame["defense"]))
    table = frame.groupby(["label", "defense"])[value].agg(cell).unstack("defense")
    order = (["clean"] if "clean" in methods else []) + [m for m in methods if m != "clean"]
    return table.reindex(index=order, columns=defenses).fillna("").rename_axis(index="method")


# ------------------------------------------------------------------------------------------ all cells, one frame
# The leaderboard (benchmarks.leaderboard) and the analysis scripts (analysis.speed, .correlation) read the
# cells through the functions below, so that they agree on labels, poisons and missing values.


class ResultsError(ValueError):
    """No usable results (missing directory, no valid cells): reported on one line, exit code 2."""


def load_records(root: Path) -> list[dict[str, Any]]:
    """Every valid cell (any status) under ``root``, in path order; invalid files are skipped with a warning.

    Raises:
        ResultsError: ``root`` is not a directory or holds no valid cell.
    """
    root = Path(root)
    if not root.is_dir():
        raise ResultsError(f"results directory {root} does not exist (run python -m benchmarks.run first)")
    records = list(ResultStore(root).records())
    if not records:
        raise ResultsError(f"no valid results cells under {root}")
    return records


def load_merged(roots: Iterable[Path]) -> list[dict[str, Any]]:
    """:func:`load_records` of every root, a cell of a later root replacing the same cell (data set, preset, cell id:
    :func:`benchmarks.store.record_identity`) of an earlier one."""
    return list({record_identity(r): r for root in roots for r in load_records(Path(root))}.values())


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    """The options that define a method variant: ``method_cfg`` plus the budget (``budget.norm``, ...)."""
    cfg = dict(record.get("method_cfg") or {})
    budget = record.get("budget")
    if isinstance(budget, dict):
        cfg.update({f"budget.{k}": v for k, v in budget.items()})
    return cfg


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def method_labels(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str, str], str]:
    """``(dataset, preset, method, method_hash) -> label``: the method name, plus the options that differ when
    a method appears with several config hashes in one (dataset, preset), e.g. ``sem (samples=3)``.

    Labels are unique per (dataset, preset); a variant whose options cannot be told apart gets ``#hash``.
    """
    configs: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
    for r in records:
        configs.setdefault((r["dataset"], r["preset"], r["method"]), {}).setdefault(r["method_hash"], _flat(r))
    labels: dict[tuple[str, str, str, str], str] = {}
    for (dataset, preset, method), variants in sorted(configs.items()):
        if len(variants) == 1:
            labels[(dataset, preset, method, next(iter(variants)))] = method
            continue
        keys = sorted({k for cfg in variants.values() for k in cfg})

        def shown(cfg: dict[str, Any], key: str) -> str:
            return _show(cfg[key]) if key in cfg else "unset"

        differ = [k for k in keys if len({shown(cfg, k) for cfg in variants.values()}) > 1]
        named = {
            h: f"{method} ({', '.join(f'{k}={shown(cfg, k)}' for k in differ)})" if differ else method
            for h, cfg in variants.items()
        }
        counts = Counter(named.values())
        for h, label in sorted(named.items()):
            labels[(dataset, preset, method, h)] = label if counts[label] == 1 else f"{label} #{h}"
    return labels


def _number(value: Any) -> float:
    """A finite float, or NaN for anything else (absent, None, bool, text, inf)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return math.nan
    return float(value)


def _budget(value: Any) -> tuple[str, str]:
    """A cell's budget as ``(norm, description)``: ``("linf", "linf 8/255")``, ``("l2", "l2 ...")``,
    ``("l0", "l0 1 px")``, ``("blur", "blur 0.3")`` (a declared budget, see :class:`benchmarks.types.Budget`);
    ``("", "")`` when absent or malformed."""
    if not isinstance(value, dict):
        return "", ""
    norm, radius = value.get("norm"), _number(value.get("radius"))
    if not isinstance(norm, str) or not norm or math.isnan(radius):
        return "", ""
    if norm in ("linf", "l2"):
        return norm, f"{norm} {radius:.4g}/255"
    return norm, f"l0 {radius:g} px" if norm == "l0" else f"{norm} {radius:g}"


def _extra_data(record: dict[str, Any]) -> str:
    """What the cell's defense used beyond the protected set (:data:`benchmarks.train.EXTRA_DATA`); ``"none"`` for a
    cell written before the threat model was recorded (every defense then used the protected set alone)."""
    threat = record.get("threat_model")
    value = threat.get("extra_data") if isinstance(threat, dict) else None
    return value if isinstance(value, str) and value else "none"


CELL_COLUMNS = [
    "dataset",
    "preset",
    "recipe",
    "train_size",
    "method",
    "method_hash",
    "label",
    "part",
    "budget_norm",
    "budget",
    "victim",
    "defense",
    "extra_data",
    "protocol_hash",
    "seed",
    "status",
    "final_acc",
    "peak_acc",
    "train_acc",
    "robust_acc",
    "robust_radius",
    "train_s",
    "device",
    "precision",
    "gen_wall_s",
    "gen_steps",
    "gen_images_forwarded",
    "gen_passes",
    "gen_device",
    "surrogate_robust_acc",
    "noise_robustness",
    "surrogate_robust_acc_fixed",
    "noise_robustness_fixed",
    "cell_id",
    "error",
]


def _fixed(gen: dict[str, Any], key: str, fixed: str) -> float:
    """``key`` measured at FIXED_RADIUS (recorded as ``fixed``), or the own-radius number where that radius is it
    (noise generated before both were recorded); NaN otherwise."""
    if fixed in gen:
        return _number(gen[fixed])
    return _number(gen.get(key)) if _number(gen.get("robustness_radius")) == FIXED_RADIUS else math.nan


def cells_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per cell of any status (see :data:`CELL_COLUMNS`), sorted by cell coordinates.

    ``gen_*`` come from the cell's ``generation`` block; ``gen_passes`` is ``images_forwarded / train_size``
    (forward passes through the generation models, in units of the training set). Absent or non-numeric
    numbers are NaN, absent text is ``""``. A cell that trains on a part of the set (partial protection) has
    its ``part`` (``p40``, ``rest40``) in its label: ``em [p40]``, ``clean [rest40]``.
    """
    records = list(records)
    labels = method_labels(records)
    rows = []
    for r in records:
        gen = r.get("generation") if isinstance(r.get("generation"), dict) else {}
        metrics = r["metrics"]
        train_size = _number(r.get("train_size"))
        images = _number(gen.get("images_forwarded"))
        recipe = r.get("recipe") if isinstance(r.get("recipe"), dict) else {}
        norm, budget = _budget(r.get("budget"))
        part = str(r.get("part") or "")
        label = labels[(r["dataset"], r["preset"], r["method"], r["method_hash"])]
        rows.append(
            {
                **{k: r[k] for k in ("dataset", "preset", "method", "method_hash", "victim", "defense", "seed")},
                "budget_norm": norm,
                "budget": budget,
                "recipe": str(recipe.get("name", "")),
                "train_size": train_size,
                "label": f"{label} [{part}]" if part else label,
                "part": part,
                "extra_data": _extra_data(r),
                "status": r["status"],
                "protocol_hash": str(r.get("protocol_hash", "")),
                "final_acc": _number(metrics.get("final_acc")),
                "peak_acc": _number(metrics.get("peak_acc")),
                "train_acc": _number(metrics.get("train_acc")),
                "robust_acc": _number(metrics.get("robust_acc")),
                "robust_radius": _number((r.get("victim_robustness") or {}).get("radius")),
                "train_s": _number((r.get("wall_s") or {}).get("train")),
                "device": str(r["env"].get("device") or ""),
                "precision": str((r["env"].get("numerics") or {}).get("precision") or ""),
                "gen_wall_s": _number(gen.get("wall_s")),
                "gen_steps": _number(gen.get("steps")),
                "gen_images_forwarded": images,
                "gen_passes": images / train_size if train_size > 0 else math.nan,
                "gen_device": str(gen.get("device") or ""),
                **{k: _number(gen.get(k)) for k in ROBUSTNESS},
                **{f: _fixed(gen, k, f) for k, f in zip(ROBUSTNESS, ROBUSTNESS_FIXED, strict=True)},
                "cell_id": r["cell_id"],
                "error": str(r.get("error") or "") if r["status"] != "ok" else "",
            }
        )
    frame = pd.DataFrame(rows, columns=CELL_COLUMNS)
    keys = ["dataset", "preset", "recipe", "victim", "defense", "method", "method_hash", "seed", "cell_id"]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


POISON_KEY = ["dataset", "preset", "method", "method_hash", "seed"]


def poison_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct poison (same data set, preset, method hash and seed = one generated noise).

    Every victim and defense of a poison reuses the same noise, so its generation cost and robustness are
    taken once, from its first cell (in :func:`cells_frame` order).
    """
    columns = [*POISON_KEY, "label", "train_size", "gen_wall_s", "gen_steps", "gen_images_forwarded", "gen_passes"]
    columns += ["gen_device", *ROBUSTNESS, *ROBUSTNESS_FIXED]
    return frame.drop_duplicates(POISON_KEY)[columns].reset_index(drop=True)


def defense_order(name: str) -> tuple[int, int, str]:
    """Sort key of defense names: ``none``, then adversarial training (``at<k>``, by its radius k), then the rest by
    name."""
    if name == "none":
        return (0, 0, name)
    if name.startswith("at"):
        radius = re.match(r"\d*", name[2:]).group()
        return (1, int(radius) if radius else 0, name)
    return (2, 0, name)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[int] = ()) -> str:
    """A GitHub markdown table of text cells (``|`` escaped); columns in ``right`` are right-aligned."""
    right = set(right)

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    rule = ["---:" if i in right else "---" for i in range(len(headers))]
    return "\n".join([line(headers), "|" + "|".join(rule) + "|", *(line(r) for r in rows)])
