"""Regression suite of protection numbers: rerun measured cells, fail when a number leaves its tolerance.

Every ``results/expected/*.json`` (built by ``python -m benchmarks.expected`` from a measured campaign,
at least 5 seeds, plus the same cells re-measured under emulated machines) lists per (method, defense)
the accuracy of each seed and a measured tolerance: a prediction interval for the rerun of a seed on
another machine (``benchmarks.expected``: a new draw of the cell's runs, or the seed's reference value
plus the measured machine-to-machine deviation, whichever is narrower). This test reruns the file's
``rerun_seeds`` with the runner, exactly as the command in the file did, and checks each cell with
:func:`benchmarks.expected.check`. Files
whose protocol is ``paper`` are the GPU tier (marked ``gpu``): they skip without CUDA or the data set.

The mutation tests prove the tolerance is tight enough to matter: the same file must reject a poison
whose method was weakened (random noise of the same budget instead of EM or SEM; SEM with a tenth of
its steps).

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
from benchmarks.expected import check
from benchmarks.matrix import load_records
from benchmarks.plugins import load_plugins
from benchmarks.registry import METHODS
from benchmarks.spec import DEFAULT_PRESET

EXPECTED_ROOT = Path(__file__).parent.parent / "results" / "expected"
EXPECTED = sorted(EXPECTED_ROOT.glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _params(paths: list[Path] = EXPECTED) -> list[Any]:
    params = []
    for path in paths:
        doc = _load(path)
        marks = [pytest.mark.timeout(3600)]  # thirteen generations (REM: 5 min) and seventeen victims on 2 cores
        if doc["preset"] == "paper":
            marks.append(pytest.mark.gpu)
        params.append(pytest.param(path, id=path.stem, marks=marks))
    return params


def test_expected_files_exist_and_are_consistent() -> None:
    assert EXPECTED, "results/expected holds no measured reference numbers"
    for path in EXPECTED:
        doc = _load(path)
        assert doc["generated_by"].startswith("python -m benchmarks.expected") and doc["schema"] == 2
        for name, entry in doc["cells"].items():
            assert len(entry["values"]) == len(entry["seeds"]) >= 5, f"{path.name} {name}: fewer than 5 seeds"
            assert min(entry["values"]) <= entry["mean"] <= max(entry["values"])
            assert set(doc["rerun_seeds"]) <= set(entry["seeds"])
            tol = entry["tolerance"]
            assert tol["half_width"] > 0 and tol == entry["candidates"][f"{entry['statistic']}, {tol['model']}"]
            assert set(tol["centers"]) == {str(s) for s in doc["rerun_seeds"]}


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


def _skip_unless_runnable(doc: dict[str, Any]) -> None:
    if doc["dataset"] == "fashion-mnist" and not Path(DEBIAN_FASHION_MNIST).is_dir():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    if doc["preset"] == "paper" and not torch.cuda.is_available():
        pytest.skip("the paper tier needs a GPU")
    if not any(d.startswith("cpu") for d in doc["device"]) and not torch.cuda.is_available():
        pytest.skip(f"measured on {doc['device']}; no comparable device here")


def _rerun(doc: dict[str, Any], seed: int, out: Path) -> dict[str, float]:
    """Rerun the file's cells for ``seed`` into ``out``; return ``method/defense -> accuracy`` of the cells
    whose method config is the file's."""
    for argv in _rerun_argvs(doc, [seed], out):
        assert runner.main(argv) == 0
    return {
        f"{r['method']}/{r['defense']}": float(r["metrics"]["final_acc"])
        for r in load_records(out / "cells")
        if (r["dataset"], r["preset"], r["victim"], r["seed"]) == (doc["dataset"], doc["preset"], doc["victim"], seed)
        and r["status"] == "ok"
        and _same_config(r, doc["cells"].get(f"{r['method']}/{r['defense']}", {}))
    }


def _same_config(record: dict[str, Any], entry: dict[str, Any]) -> bool:
    """The cell was measured with the file's method config and protocol (recipe, defense, slices, precision)."""
    same_protocol = entry.get("protocol_hash") in (None, record.get("protocol_hash"))
    return record["method_hash"] == entry.get("method_hash") and same_protocol


@pytest.mark.parametrize("path", _params())
def test_protection_numbers_hold(path: Path, smoke_runs: Path) -> None:
    doc = _load(path)
    _skip_unless_runnable(doc)
    failures = []
    for seed in doc["rerun_seeds"]:
        got = _rerun(doc, seed, smoke_runs)
        for name in doc["cells"]:
            if name not in got:
                failures.append(
                    f"{name}: no cell of the file's config (seed {seed}): the method's config or the protocol changed?"
                )
            elif (reason := check(doc, name, got, seed)) is not None:
                failures.append(f"seed {seed}: {reason}")
    assert not failures, f"protection numbers of {path.name} moved:\n  " + "\n  ".join(failures) + _remeasure(doc, path)


#: the regression tier's files (README "Regression tests of protection numbers"): the embedded default protocol's,
#: every method; and smoke's, whose 300-step victims a machine moves less under at4 (SEM: up to 2.8 points on one
#: seed, against 4.7 on smoke-600), so that only its tolerance of SEM under at4 is tight enough to catch a weakened SEM
DEFAULT = EXPECTED_ROOT / f"{DEFAULT_PRESET}-fashion-mnist.json"
SMOKE = EXPECTED_ROOT / "smoke-fashion-mnist.json"


def test_the_regression_tier_covers_every_method_on_the_default_protocol() -> None:
    """Every registered method under ``none``, and the mission's comparison under ``at4``, on :data:`DEFAULT_PRESET`."""
    load_plugins()
    doc = _load(DEFAULT)
    assert (doc["dataset"], doc["preset"]) == ("fashion-mnist", DEFAULT_PRESET)
    assert {f"{m}/none" for m in METHODS.list()} | {"clean/at4", "sem/at4", "rem/at4"} == set(doc["cells"])


@pytest.mark.timeout(3600)
@pytest.mark.parametrize(
    ("path", "cell", "mutant"),
    [
        (SMOKE, "em/none", ["--methods", "random", "--defense", "none"]),  # EM replaced by random noise of its budget
        (SMOKE, "sem/at4", ["--methods", "random", "--defense", "at4"]),  # SEM replaced by random noise of its budget
        (SMOKE, "sem/at4", ["--methods", "sem", "--defense", "at4", "--set", "sem.steps=30"]),  # a tenth of its steps
        (DEFAULT, "em/none", ["--methods", "random", "--defense", "none"]),
        (DEFAULT, "sem/none", ["--methods", "random", "--defense", "none"]),
    ],
    ids=["smoke-em-random", "smoke-sem-at4-random", "smoke-sem-at4-steps30", "default-em-random", "default-sem-random"],
)
def test_the_tolerance_catches_a_weakened_poison(path: Path, cell: str, mutant: list[str], smoke_runs: Path) -> None:
    """Mutation test: the committed tolerance of ``cell`` must reject the accuracy of a weakened poison."""
    doc = _load(path)
    _skip_unless_runnable(doc)
    seed = doc["rerun_seeds"][0]
    dirs = ["--results-dir", str(smoke_runs / "cells"), "--cache-dir", str(smoke_runs / "cache")]
    protocol = ["--dataset", doc["dataset"], "--preset", doc["preset"], "--victims", doc["victim"]]  # the file's
    assert runner.main([*mutant, *protocol, "--seeds", str(seed), "--no-progress", *dirs]) == 0  # clean comes along
    method, defense = mutant[1], mutant[3]
    original = doc["cells"][cell]["method_hash"]
    rows = [
        r
        for r in load_records(smoke_runs / "cells")
        if (r["defense"], r["seed"], r["preset"], r["status"]) == (defense, seed, doc["preset"], "ok")
    ]
    # the mutant's cells: its method under the defense, other than the tested cell's own config
    mutated = {
        r["method_hash"]: float(r["metrics"]["final_acc"])
        for r in rows
        if r["method"] == method and not (f"{method}/{defense}" == cell and r["method_hash"] == original)
    }
    assert mutated, f"the mutant {mutant} produced no cell"
    clean = next(float(r["metrics"]["final_acc"]) for r in rows if r["method"] == "clean")
    for acc in mutated.values():
        reason = check(doc, cell, {cell: acc, f"clean/{defense}": clean}, seed)
        assert reason is not None, f"the tolerance of {cell} accepts a weakened poison ({mutant}: {acc:.2%})"


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
        + f"--command {json.dumps(doc['command'])} --machine NAME=DIR ...\n(the machines: the same commands under "
        + "each emulated machine, as scripts/study.sh step 6 runs them) and commit results/expected/"
        + f"{path.name} with the change."
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
