"""Regression suite of protection numbers: rerun measured cells, fail when a number leaves its tolerance.

Every ``results/expected/*.json`` (built by ``python -m benchmarks.expected`` from a measured
campaign) lists per (method, defense) the final clean test accuracy of each seed, its mean and seed
spread. This test reruns the first seed's cells with the runner, exactly as the command in the file
did, and checks each against ``mean ± max(3 std, 0.05 %)``. Files whose protocol is ``paper`` are the
GPU tier (marked ``gpu``): they skip without CUDA or the data set.

Changing a method so that its protection moves is a deliberate act: the failure message says how to
re-measure and rebuild the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks import run as runner
from benchmarks.data import DEBIAN_FASHION_MNIST
from benchmarks.expected import K_STD, MIN_TOL, tolerance
from benchmarks.matrix import load_records

EXPECTED = sorted((Path(__file__).parent.parent / "results" / "expected").glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _params() -> list[Any]:
    params = []
    for path in EXPECTED:
        doc = _load(path)
        marks = [pytest.mark.timeout(1800)]
        if doc["preset"] == "paper":
            marks.append(pytest.mark.gpu)
        params.append(pytest.param(path, id=path.stem, marks=marks))
    return params


def test_expected_files_exist_and_are_consistent() -> None:
    assert EXPECTED, "results/expected holds no measured reference numbers"
    for path in EXPECTED:
        doc = _load(path)
        assert doc["generated_by"].startswith("python -m benchmarks.expected")
        for name, entry in doc["cells"].items():
            assert len(entry["values"]) == len(entry["seeds"]) >= 3, f"{path.name} {name}: fewer than 3 seeds"
            assert min(entry["values"]) <= entry["mean"] <= max(entry["values"])


def _rerun_argv(doc: dict[str, Any], seed: int, out: Path) -> list[str]:
    methods = sorted({name.split("/")[0] for name in doc["cells"]} - {"clean"})
    defenses = sorted({name.split("/")[1] for name in doc["cells"]})
    return [
        "--dataset", doc["dataset"], "--preset", doc["preset"], "--victims", doc["victim"],
        "--methods", *methods, "--defense", *defenses, "--seeds", str(seed), "--no-progress",
        "--results-dir", str(out / "cells"), "--cache-dir", str(out / "cache"),
    ]  # fmt: skip


@pytest.mark.parametrize("path", _params())
def test_protection_numbers_hold(path: Path, tmp_path: Path) -> None:
    doc = _load(path)
    if doc["dataset"] == "fashion-mnist" and not Path(DEBIAN_FASHION_MNIST).is_dir():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    if doc["preset"] == "paper" and not torch.cuda.is_available():
        pytest.skip("the paper tier needs a GPU")
    if not any(d.startswith("cpu") for d in doc["device"]) and not torch.cuda.is_available():
        pytest.skip(f"measured on {doc['device']}; no comparable device here")
    seed = min(entry["seeds"][0] for entry in doc["cells"].values())
    assert runner.main(_rerun_argv(doc, seed, tmp_path)) == 0
    got = {f"{r['method']}/{r['defense']}": r for r in load_records(tmp_path / "cells")}
    failures = []
    for name, entry in doc["cells"].items():
        record = got.get(name)
        assert record is not None, f"{name}: the rerun produced no cell"
        assert record["method_hash"] == entry["method_hash"], (
            f"{name}: the method's config changed ({entry['method_hash']} -> {record['method_hash']}); "
            "re-measure (see below)"
        )
        acc, tol = float(record["metrics"]["final_acc"]), tolerance(entry)
        if abs(acc - entry["mean"]) > tol:
            failures.append(
                f"{name}: {acc:.2%} is outside {entry['mean']:.2%} ± {tol:.2%} "
                f"(max({K_STD} x seed std {entry['std']:.2%}, {MIN_TOL:.2%}); seeds {entry['seeds']}: "
                f"{', '.join(f'{v:.2%}' for v in entry['values'])})"
            )
    assert not failures, (
        f"protection numbers of {path.name} moved:\n  "
        + "\n  ".join(failures)
        + "\nIf the change is deliberate, re-measure and rebuild the expected file:\n  "
        + doc["command"].replace("DIR", "/tmp/remeasure")
        + f"\n  python -m benchmarks.expected --results-dir /tmp/remeasure --name {path.stem} "
        + f"--command {json.dumps(doc['command'])}\nand commit results/expected/{path.name} with the change."
    )
