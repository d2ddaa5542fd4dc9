"""Generation cost per method: a table (CSV, and markdown on stdout) and a bar plot (PNG).

    python -m analysis.speed [--results-dir results/cells] [--out-dir results/figures]

One row per method variant (data set, preset, method, config hash). Cost comes from the cells'
``generation`` block, counted once per poison (the same method hash, seed and data set is one generated
noise, reused by every victim and defense): wall seconds, and passes = images forwarded through the
generation models / training-set size. Ratios are to SEM of the same data set and preset (the SEM paper
reports REM at about 3.91x SEM's time; with several SEM configurations, to the first by label); the
wall-time ratio is left empty when the devices differ.
The clean baseline is not a noise method and is left out.

Writes ``speed.csv`` and ``speed.png`` under ``--out-dir``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import seaborn as sns

from analysis._cli import check_out_dir, save_csv, save_png, subplots
from benchmarks.errors import HelpFormatter, Parser, UsageError, fail
from benchmarks.matrix import ResultsError, cells_frame, load_records, markdown_table, poison_frame

PROG = "python -m analysis.speed"
REFERENCE = "sem"
VARIANT = ["dataset", "preset", "method", "method_hash", "label"]
COLUMNS = [
    *VARIANT,
    "n_poisons",
    "seeds",
    "train_size",
    "wall_s_mean",
    "wall_s_std",
    "passes_mean",
    "images_forwarded_mean",
    "steps_mean",
    "device",
    "wall_vs_sem",
    "passes_vs_sem",
    "sem_label",
]


def _joined(values: pd.Series) -> str:
    return "; ".join(sorted({str(v) for v in values if str(v)}))


def generation_poisons(frame: pd.DataFrame) -> pd.DataFrame:
    """The distinct poisons of every noise method (clean left out) with a measured wall time.

    Raises:
        ResultsError: no poison carries a generation cost.
    """
    poisons = poison_frame(frame)
    poisons = poisons[(poisons["method"] != "clean") & poisons["gen_wall_s"].notna()].reset_index(drop=True)
    if poisons.empty:
        raise ResultsError("no generation cost in the cells: only the clean baseline, or no generation block")
    return poisons


def speed_table(poisons: pd.DataFrame) -> pd.DataFrame:
    """Cost per method variant (see :data:`COLUMNS`) from :func:`generation_poisons`, sorted by variant."""
    rows = []
    for key, part in poisons.groupby(VARIANT, sort=True):
        wall = part["gen_wall_s"]
        rows.append(
            {
                **dict(zip(VARIANT, key, strict=True)),
                "n_poisons": len(part),
                "seeds": " ".join(str(s) for s in sorted(part["seed"])),
                "train_size": float(part["train_size"].mean()),
                "wall_s_mean": float(wall.mean()),
                "wall_s_std": float(wall.std(ddof=1)) if len(wall) > 1 else math.nan,
                "passes_mean": float(part["gen_passes"].mean()),
                "images_forwarded_mean": float(part["gen_images_forwarded"].mean()),
                "steps_mean": float(part["gen_steps"].mean()),
                "device": _joined(part["gen_device"]),
            }
        )
    table = pd.DataFrame(rows)
    table["wall_vs_sem"] = math.nan
    table["passes_vs_sem"] = math.nan
    table["sem_label"] = ""
    for _, part in table.groupby(["dataset", "preset"], sort=False):
        # the reference: the SEM variant with the most poisons (a campaign's config, not a one-seed sweep value)
        ref = part[part["method"] == REFERENCE].sort_values(["n_poisons", "label"], ascending=[False, True])
        if ref.empty:
            continue
        sem = ref.iloc[0]
        table.loc[part.index, "sem_label"] = sem["label"]
        if sem["passes_mean"] > 0:
            table.loc[part.index, "passes_vs_sem"] = part["passes_mean"] / sem["passes_mean"]
        same_device = part["device"] == sem["device"]
        if sem["wall_s_mean"] > 0:
            table.loc[part.index[same_device], "wall_vs_sem"] = part["wall_s_mean"][same_device] / sem["wall_s_mean"]
    return table[COLUMNS]


def _fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) and math.isfinite(value) else "—"


def to_markdown(table: pd.DataFrame) -> str:
    """The speed table as markdown, one block per (data set, preset)."""
    headers = ["method", "poisons", "wall s", "± std", "passes", "wall / sem", "passes / sem", "device"]
    blocks = []
    for (dataset, preset), part in table.groupby(["dataset", "preset"], sort=True):
        rows = [
            [
                r.label,
                str(r.n_poisons),
                _fmt(r.wall_s_mean, 2),
                _fmt(r.wall_s_std, 2),
                _fmt(r.passes_mean, 1),
                _fmt(r.wall_vs_sem, 2),
                _fmt(r.passes_vs_sem, 2),
                r.device,
            ]
            for r in part.sort_values(["wall_s_mean", "label"]).itertuples()
        ]
        sizes = " ".join(sorted({str(int(s)) for s in part["train_size"] if math.isfinite(s)})) or "?"
        title = f"Noise generation cost on {dataset} ({sizes} training images), preset {preset}"
        refs = sorted({str(v) for v in part["sem_label"] if isinstance(v, str) and v})
        if refs:
            title += f"; ratios to {refs[0]} (wall time only on the same device)"
        blocks.append(f"{title}\n\n{markdown_table(headers, rows, right=range(1, 7))}")
    return "\n\n".join(blocks)


def plot(poisons: pd.DataFrame, path: Path) -> Path:
    """Bars of wall seconds and passes per method (mean ± sd over poisons), one row per (data set, preset)."""
    groups = list(poisons.groupby(["dataset", "preset"], sort=True))
    fig, axes = subplots(len(groups), 2, figsize=(12, 3.8 * len(groups)), squeeze=False, layout="constrained")
    for row, ((dataset, preset), part) in zip(axes, groups, strict=True):
        order = part.groupby("label")["gen_wall_s"].mean().sort_values(kind="stable").index.tolist()
        devices = _joined(part["gen_device"]) or "device unknown"
        panels = ((row[0], "gen_wall_s", "wall seconds"), (row[1], "gen_passes", "passes (images forwarded / N)"))
        for ax, column, what in panels:
            sns.barplot(data=part, x="label", y=column, hue="label", order=order, hue_order=order, errorbar="sd", ax=ax)
            for container in ax.containers:
                ax.bar_label(container, fmt="%.3g", fontsize=8)
            ax.set_xlabel("")
            ax.set_ylabel(what)
            for tick in ax.get_xticklabels():
                tick.set_rotation(30)
                tick.set_horizontalalignment("right")
            ax.set_title(f"{dataset} / {preset}: generation {what}\ndevice: {devices}", fontsize=10)
    return save_png(fig, path)


def build_parser(prog: str = PROG) -> Parser:
    p = Parser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--results-dir", type=Path, default=Path("results/cells"), help="results cells")
    p.add_argument("--out-dir", type=Path, default=Path("results/figures"), help="where speed.csv/.png go")
    return p


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    try:
        args = build_parser(prog).parse_args(argv)
        poisons = generation_poisons(cells_frame(load_records(args.results_dir)))
        check_out_dir(args.out_dir)
    except (UsageError, ResultsError) as err:
        return fail(prog, err)
    table = speed_table(poisons)
    print(to_markdown(table))
    csv = save_csv(table, args.out_dir / "speed.csv")
    png = plot(poisons, args.out_dir / "speed.png")
    print(f"\nwrote {csv} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
