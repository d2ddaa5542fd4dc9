"""Fixed synthetic results cells for the leaderboard and analysis tests (no training)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.store import CellKey, ResultStore


def write_cell(
    root: Path,
    method: str = "em",
    method_hash: str = "aaaa0001",
    *,
    dataset: str = "fashion-mnist",
    preset: str = "smoke",
    victim: str = "tiny_cnn",
    defense: str = "none",
    seed: int = 0,
    final_acc: float = 0.5,
    status: str = "ok",
    generation: dict[str, Any] | None = None,
    method_cfg: dict[str, Any] | None = None,
    train_size: int = 1000,
    device: str = "cpu (2 threads)",
    recipe: str = "smoke-300",
    env: dict[str, Any] | None = None,
    protocol_hash: str = "0000abcd",
    budget: dict[str, Any] | None = None,
    extra_data: str | None = None,
    robust: tuple[float, float] | None = None,
    part: str = "",
) -> Path:
    """Write one valid cell the way ``benchmarks.run`` does and return its path; ``robust``: the victim's (robust
    accuracy, radius), as :func:`benchmarks.robustness.victim_robustness` gives them."""
    key = CellKey(dataset, preset, method, method_hash, victim, defense, protocol_hash, seed, part)
    ok = status == "ok"
    record: dict[str, Any] = {
        **{k: getattr(key, k) for k in ("dataset", "preset", "method", "method_hash", "victim", "defense", "seed")},
        "protocol_hash": protocol_hash,
        **({"part": part} if part else {}),
        "method_cfg": method_cfg if method_cfg is not None else {},
        "budget": budget if budget is not None else {"norm": "linf", "radius": 8.0},
        "recipe": {"name": recipe, "steps": 300},
        "train_size": train_size,
        "test_size": 500,
        "generation": generation if generation is not None else {"wall_s": 1.0, "device": device},
        "env": {
            "device": device,
            "torch": "2.14.1",
            "timestamp_utc": f"2026-01-01T00:00:0{seed}+00:00",
            "git_commit": "abc",
            **(env or {}),
        },
        **({"threat_model": {"extra_data": extra_data}} if extra_data is not None else {}),
        "status": status,
        "metrics": {"final_acc": float(final_acc), "peak_acc": float(final_acc) + 0.01, "train_acc": 0.9} if ok else {},
    }
    if ok and robust is not None:
        record["metrics"]["robust_acc"] = robust[0]
        record["victim_robustness"] = {"robust_acc": robust[0], "radius": robust[1]}
    if ok:
        record["wall_s"] = {"train": 12.5 + seed, "generate": record["generation"].get("wall_s")}
    if not ok:
        record["error"] = "NonFiniteLossError: loss is nan at step 7"
    return ResultStore(root).write(key, record)
