"""Plumbing shared by the analysis CLIs: output checks, atomic PNG and CSV writes (one-line usage errors:
:mod:`benchmarks.errors`).

Every figure is drawn with matplotlib's non-interactive ``Agg`` backend, so the scripts run headless.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd

from benchmarks.errors import UsageError
from benchmarks.io import atomic_write, atomic_write_text, check_writable

BACKEND = "Agg"


def check_out_dir(directory: Path) -> None:
    """Raise :class:`UsageError` unless files can be written under ``directory`` (creates nothing)."""
    try:
        check_writable(directory)
    except PermissionError as err:
        raise UsageError(str(err)) from None


def subplots(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """``pyplot.subplots`` on the ``Agg`` backend."""
    matplotlib.use(BACKEND)
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_png(fig: Any, path: Path, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    try:
        atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return Path(path)


def save_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` as CSV (no index) atomically."""
    atomic_write_text(Path(path), frame.to_csv(index=False, lineterminator="\n"))
    return Path(path)
