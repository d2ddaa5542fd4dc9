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


def _params(paths: list[Path] = EXPECTED) -> list[Any]:
    params = []
    for path in paths:
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


def _rerun_argvs(doc: dict[str, Any], seeds: list[int], out: Path) -> list[list[str]]:
    """One runner command per defense, for exactly the file's methods under it (cells resume, so the
    clean baseline and the noise of a method are made once)."""
    by_defense: dict[str, set[str]] = {}
    for name in doc["cells"]:
        method, defense = name.split("/")
        by_defense.setdefault(defense, set()).add(method)
    common = [
        "--seeds", *map(str, seeds), "--no-progress", "--dataset", doc["dataset"], "--preset", doc["preset"],
        "--victims", doc["victim"], "--results-dir", str(out / "cells"), "--cache-dir", str(out / "cache"),
    ]  # fmt: skip
    return [
        ["--methods", *sorted(methods - {"clean"}), "--defense", defense, *common]
        for defense, methods in sorted(by_defense.items())
    ]


@pytest.mark.parametrize("path", _params())
def test_protection_numbers_hold(path: Path, smoke_runs: Path) -> None:
    doc = _load(path)
    if doc["dataset"] == "fashion-mnist" and not Path(DEBIAN_FASHION_MNIST).is_dir():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    if doc["preset"] == "paper" and not torch.cuda.is_available():
        pytest.skip("the paper tier needs a GPU")
    if not any(d.startswith("cpu") for d in doc["device"]) and not torch.cuda.is_available():
        pytest.skip(f"measured on {doc['device']}; no comparable device here")
    seed = min(entry["seeds"][0] for entry in doc["cells"].values())
    for argv in _rerun_argvs(doc, [seed], smoke_runs):
        assert runner.main(argv) == 0
    got = {
        f"{r['method']}/{r['defense']}": r
        for r in load_records(smoke_runs / "cells")
        if (r["dataset"], r["preset"], r["victim"], r["seed"]) == (doc["dataset"], doc["preset"], doc["victim"], seed)
    }
    failures = []
    for name, entry in doc["cells"].items():
        record = got.get(name)
        assert record is not None, f"{name}: the rerun produced no cell"
        if record["method_hash"] != entry["method_hash"]:
            failures.append(f"{name}: the method's config changed ({entry['method_hash']} -> {record['method_hash']})")
            continue
        acc, tol = float(record["metrics"]["final_acc"]), tolerance(entry)
        if abs(acc - entry["mean"]) > tol:
            failures.append(
                f"{name}: {acc:.2%} is outside {entry['mean']:.2%} ± {tol:.2%} "
                f"(max({K_STD} x seed std {entry['std']:.2%}, {MIN_TOL:.2%}); seeds {entry['seeds']}: "
                f"{', '.join(f'{v:.2%}' for v in entry['values'])})"
            )
    assert not failures, f"protection numbers of {path.name} moved:\n  " + "\n  ".join(failures) + _remeasure(doc, path)


def _remeasure(doc: dict[str, Any], path: Path) -> str:
    """How to re-measure exactly the file's cells on all its seeds and rebuild it."""
    seeds = sorted({s for entry in doc["cells"].values() for s in entry["seeds"]})
    argvs = _rerun_argvs(doc, seeds, Path("/tmp/remeasure"))
    commands = [" ".join(["python -m benchmarks.run", *argv]) for argv in argvs]
    patterns = " ".join(f"'{name}'" for name in sorted(doc["cells"]))
    return (
        "\nIf the change is deliberate, re-measure and rebuild the expected file:\n  "
        + "\n  ".join(commands)
        + f"\n  python -m benchmarks.expected --results-dir /tmp/remeasure/cells --name {path.stem} --only {patterns} "
        + f"--command {json.dumps(doc['command'])}\nand commit results/expected/{path.name} with the change."
    )


def test_paper_files_form_the_gpu_tier(tmp_path: Path) -> None:
    for preset in ("paper", "smoke"):
        (tmp_path / f"{preset}.json").write_text(json.dumps({"preset": preset}))
    params = {p.id: {m.name for m in p.marks} for p in _params(sorted(tmp_path.glob("*.json")))}
    assert params == {"paper": {"timeout", "gpu"}, "smoke": {"timeout"}}


def test_remeasure_message_names_every_cell_and_seed() -> None:
    doc = {
        "dataset": "fashion-mnist", "preset": "smoke", "victim": "tiny_cnn", "command": "python -m benchmarks.run x",
        "cells": {n: {"seeds": [0, 1, 2]} for n in ("clean/none", "em/none", "clean/at4", "sem/at4")},
    }  # fmt: skip
    text = _remeasure(doc, Path("results/expected/x.json"))
    assert "--methods sem --defense at4 --seeds 0 1 2 --no-progress" in text
    assert "--methods em --defense none --seeds 0 1 2" in text
    assert "--only 'clean/at4' 'clean/none' 'em/none' 'sem/at4'" in text and "results/expected/x.json" in text
