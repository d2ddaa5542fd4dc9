"""The environment a number was measured in: code version, library versions, device."""

from __future__ import annotations

import datetime
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from benchmarks import __version__
from benchmarks.noise import device_name

REPO = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def environment(device: torch.device) -> dict[str, Any]:
    """Git commit (and whether the tree was dirty), versions, device, time."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "uebench": __version__,
        "git_commit": _git("rev-parse", "--short=12", "HEAD"),
        "dirty": bool(status) if status is not None else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device_name(device),
        "timestamp_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
