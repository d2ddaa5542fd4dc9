"""Results cells -> pandas frames: the one table the matrix, leaderboard and plots all read."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

COLUMNS = [
    "dataset",
    "preset",
    "method",
    "method_hash",
    "victim",
    "defense",
    "seed",
    "final_acc",
    "peak_acc",
    "train_acc",
    "generate_s",
    "train_s",
    "device",
]


def to_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per finished (``status == "ok"``) cell."""
    rows = [
        {
            **{k: r[k] for k in ("dataset", "preset", "method", "method_hash", "victim", "defense", "seed")},
            **{k: r["metrics"].get(k) for k in ("final_acc", "peak_acc", "train_acc")},
            "generate_s": r.get("generation", {}).get("wall_s"),
            "train_s": r.get("wall_s", {}).get("train"),
            "device": r["env"].get("device"),
        }
        for r in records
        if r.get("status") == "ok"
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def matrix(frame: pd.DataFrame, value: str = "final_acc") -> pd.DataFrame:
    """Method x defense table of ``value`` in percent: ``mean`` or ``mean ± std (n)`` over seeds."""
    if frame.empty:
        return pd.DataFrame()

    def cell(values: pd.Series) -> str:
        pct = values.dropna() * 100
        if len(pct) <= 1:
            return f"{pct.mean():.1f}"
        return f"{pct.mean():.1f} ± {pct.std(ddof=1):.1f} (n={len(pct)})"

    methods = list(dict.fromkeys(frame["method"]))
    defenses = list(dict.fromkeys(frame["defense"]))
    table = frame.groupby(["method", "defense"])[value].agg(cell).unstack("defense")
    order = (["clean"] if "clean" in methods else []) + [m for m in methods if m != "clean"]
    return table.reindex(index=order, columns=defenses).fillna("")
