"""Noise cache: one compressed ``.npz`` of int8 noise (or uint8 protected images) per (data set, method config, seed).

Loaded with ``allow_pickle=False``; the noise carries a sha256 checksum and its budget is re-checked
on load. A corrupted, truncated or mismatched file is reported and regenerated, never used.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from benchmarks.io import atomic_write
from benchmarks.noise import PoisonError, validate_poison
from benchmarks.types import Budget, ImageSet, Poison

log = logging.getLogger(__name__)


def _digest(delta: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(delta).tobytes()).hexdigest()


class NoiseCache:
    """Poisons under ``root/<dataset>/<key>.npz``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, dataset: str, key: str) -> Path:
        return self.root / dataset / f"{key}.npz"

    def save(self, path: Path, poison: Poison) -> None:
        delta = poison.delta.cpu().numpy()
        meta = json.dumps(
            {"classwise": poison.classwise, "images": poison.images, "stats": poison.stats, "sha256": _digest(delta)}
        )

        def write(f: io.BufferedWriter) -> None:
            np.savez_compressed(f, delta=delta, meta=np.array(meta))

        atomic_write(path, write)

    def load(self, path: Path, data: ImageSet, budget: Budget) -> Poison | None:
        """The cached poison, or None when absent or invalid (a warning says why)."""
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                delta, meta = npz["delta"], json.loads(str(npz["meta"]))
            if _digest(delta) != meta["sha256"]:
                raise PoisonError("checksum mismatch")
            poison = Poison(
                torch.from_numpy(delta.copy()),
                bool(meta["classwise"]),
                dict(meta["stats"]),
                images=bool(meta.get("images", False)),
            )
            validate_poison(poison, data, budget)
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            log.warning("noise cache %s is unusable (%s); regenerating", path, err)
            return None
        poison.stats["cache"] = "hit"
        return poison
