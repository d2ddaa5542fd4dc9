"""Results store: one JSON file per cell, written atomically; a run skips cells that are done.

A cell is ``(dataset, preset, method + config hash, victim, defense, protocol hash, seed)``, plus the part of the
training set it trains on when only a fraction is protected. The method
hash covers the method's options and budget; the *protocol hash* covers everything else that decides the
number: the victim's training recipe, the defense's configuration, the training and test slice sizes and
the precision. Both are in the file name, so a changed hyperparameter anywhere makes a new cell instead
of being mistaken for (or overwriting) an old one.

Cells of schema 1 (before the protocol hash) are migrated in place by :func:`migrate`
(``uebench migrate DIR``): the hash is computed from what each cell recorded.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.io import atomic_write_text, check_writable

#: a generation block's robustness numbers (benchmarks.robustness) are at the surrogate's own rho_a; the same numbers
#: at this one radius for every variant carry this suffix (``surrogate_robust_acc_fixed``)
FIXED_RADIUS = 4.0
FIXED_SUFFIX = "_fixed"
#: the robustness numbers of a generation block, at the surrogate's own rho_a (4/255 without one) ...
ROBUSTNESS = ("surrogate_robust_acc", "noise_robustness")
#: ... and at FIXED_RADIUS for every variant: comparable across methods and sweeps of rho_a
ROBUSTNESS_FIXED = tuple(f"{k}{FIXED_SUFFIX}" for k in ROBUSTNESS)
SCHEMA = 2
log = logging.getLogger(__name__)
REQUIRED = {
    "schema": int,
    "cell_id": str,
    "dataset": str,
    "preset": str,
    "method": str,
    "method_hash": str,
    "victim": str,
    "defense": str,
    "protocol_hash": str,
    "seed": int,
    "status": str,
    "metrics": dict,
    "env": dict,
}


def protocol_hash(
    recipe: Mapping[str, Any], defense_cfg: Mapping[str, Any], train_size: int, test_size: int, precision: str
) -> str:
    """8 hex digits of everything besides the method that decides a cell's number (JSON-equal inputs agree:
    a recipe's tuples hash like the lists a stored cell holds)."""
    data = {
        "recipe": recipe,
        "defense": defense_cfg,
        "train_size": train_size,
        "test_size": test_size,
        "precision": precision,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class CellKey:
    """The coordinates of one results cell."""

    dataset: str
    preset: str
    method: str
    method_hash: str
    victim: str
    defense: str
    protocol_hash: str
    seed: int
    #: which part of the training set the cell trains on, for partial protection (:mod:`benchmarks.partial`):
    #: "" the whole set, protected (every cell before partial protection existed); ``p40`` 40 % of the images
    #: protected and the rest clean; ``rest40`` only the clean 60 % that ``p40`` leaves unprotected
    part: str = ""

    @property
    def cell_id(self) -> str:
        part = f"__{self.part}" if self.part else ""
        defense = f"{self.defense}-{self.protocol_hash}{part}"
        return f"{self.method}-{self.method_hash}__{self.victim}__{defense}__s{self.seed}"

    def fields(self) -> dict[str, Any]:
        """The key as a record's fields (``part`` only when the cell trains on a part of the set)."""
        out = asdict(self)
        if not self.part:
            del out["part"]
        return out

    def relpath(self) -> Path:
        return Path(self.dataset) / self.preset / f"{self.cell_id}.json"

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> CellKey:
        """The key a (schema 2) record was stored under."""
        return cls(*(record[f] for f in ("dataset", "preset", "method", "method_hash", "victim", "defense")),
                   record["protocol_hash"], record["seed"], str(record.get("part") or ""))  # fmt: skip


def record_identity(record: dict[str, Any]) -> tuple[str, str, str]:
    """Which cell a record is, across results directories: its data set, preset and cell id (the id names a cell
    within its data set and preset only)."""
    return record["dataset"], record["preset"], record["cell_id"]


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
        record = {**record, **key.fields(), "schema": SCHEMA, "cell_id": key.cell_id}
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

    def old_cells(self) -> list[Path]:
        """Cells of an earlier schema under the root (to migrate with :func:`migrate`)."""
        old = []
        for path in sorted(self.root.rglob("*.json")):
            try:
                schema = json.loads(path.read_text()).get("schema")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(schema, int) and schema < SCHEMA:
                old.append(path)
        return old


def _precision_of(record: Mapping[str, Any]) -> str:
    """The precision a schema-1 cell ran at: recorded in ``env.numerics``, else what the device implied then
    (bf16 autocast on CUDA, fp32 elsewhere)."""
    env = record.get("env") or {}
    recorded = (env.get("numerics") or {}).get("precision")
    if recorded:
        return str(recorded)
    return "fp32" if str(env.get("device", "cpu")).startswith("cpu") else "bf16-autocast"


def migrate(root: Path) -> list[tuple[Path, Path]]:
    """Rewrite every schema-1 cell under ``root`` as schema 2 (protocol hash added, file renamed).

    Each new file is written atomically before the old one is removed; a cell whose new path exists already
    is left alone (reported). Returns the ``(old, new)`` paths moved.
    """
    store = ResultStore(root)
    moved = []
    for path in store.old_cells():
        record = json.loads(path.read_text())
        try:
            record["protocol_hash"] = protocol_hash(
                record["recipe"],
                record["defense_cfg"],
                record["train_size"],
                record["test_size"],
                _precision_of(record),
            )
        except KeyError as err:
            log.warning("not migrating %s: it lacks %s", path, err)
            continue
        key = CellKey.of(record)
        record = {k: v for k, v in record.items() if k not in ("schema", "cell_id")}
        target = store.path(key)
        if target.exists():
            log.warning("not migrating %s: %s exists", path, target)
            continue
        store.write(key, record)
        path.unlink()
        moved.append((path, target))
    return moved
