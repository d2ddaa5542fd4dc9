"""Results store: one JSON file per cell, written atomically; a run skips cells that are done.

A cell is ``(dataset, preset, method + config hash, victim, defense, seed)``. Its path holds the
config hash, so a changed hyperparameter makes a new cell instead of overwriting an old one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.io import atomic_write_text, check_writable

SCHEMA = 1
log = logging.getLogger(__name__)
REQUIRED = {
    "schema": int,
    "cell_id": str,
    "dataset": str,
    "preset": str,
    "method": str,
    "victim": str,
    "defense": str,
    "seed": int,
    "status": str,
    "metrics": dict,
    "env": dict,
}


@dataclass(frozen=True)
class CellKey:
    """The coordinates of one results cell."""

    dataset: str
    preset: str
    method: str
    method_hash: str
    victim: str
    defense: str
    seed: int

    @property
    def cell_id(self) -> str:
        return f"{self.method}-{self.method_hash}__{self.victim}__{self.defense}__s{self.seed}"

    def relpath(self) -> Path:
        return Path(self.dataset) / self.preset / f"{self.cell_id}.json"


def validate_cell(record: Any) -> list[str]:
    """Problems of a cell record (empty when valid)."""
    if not isinstance(record, dict):
        return ["cell is not a JSON object"]
    problems = [
        f"field {k!r} missing or not {t.__name__}" for k, t in REQUIRED.items() if not isinstance(record.get(k), t)
    ]
    if record.get("schema") != SCHEMA:
        problems.append(f"schema {record.get('schema')!r} is not {SCHEMA}")
    if record.get("status") == "ok":
        metrics = record.get("metrics")
        for name in ("final_acc", "peak_acc"):
            value = metrics.get(name) if isinstance(metrics, dict) else None
            if not isinstance(value, float) or not 0.0 <= value <= 1.0:
                problems.append(f"metrics.{name} must be a float in [0, 1], got {value!r}")
    return problems


class ResultStore:
    """Cells under ``root/<dataset>/<preset>/<cell_id>.json``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def check_writable(self) -> None:
        check_writable(self.root)

    def path(self, key: CellKey) -> Path:
        return self.root / key.relpath()

    def load(self, key: CellKey) -> dict[str, Any] | None:
        """The stored record, or None if absent; an unreadable or invalid file counts as absent (logged)."""
        return self._read(self.path(key))

    def _read(self, path: Path) -> dict[str, Any] | None:
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            log.warning("ignoring unreadable results file %s (%s); the cell will be redone", path, err)
            return None
        problems = validate_cell(record)
        if problems:
            log.warning("ignoring invalid results file %s (%s); the cell will be redone", path, "; ".join(problems))
            return None
        return record

    def is_done(self, key: CellKey) -> bool:
        record = self.load(key)
        return record is not None and record["status"] == "ok"

    def write(self, key: CellKey, record: dict[str, Any]) -> Path:
        record = {"schema": SCHEMA, "cell_id": key.cell_id, **record}
        problems = validate_cell(record)
        if problems:
            raise ValueError(f"refusing to write an invalid cell {key.cell_id}: {'; '.join(problems)}")
        path = self.path(key)
        atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
        return path

    def records(self) -> Iterator[dict[str, Any]]:
        """Every valid cell under the root, in path order."""
        for path in sorted(self.root.rglob("*.json")):
            record = self._read(path)
            if record is not None:
                yield record
