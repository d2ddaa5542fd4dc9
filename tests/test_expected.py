"""``python -m benchmarks.expected``: reference numbers built from measured cells."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import expected
from benchmarks.matrix import load_records
from tests._cells import write_cell


def _campaign(root: Path) -> None:
    for seed, (clean, em, em_at4) in enumerate([(0.80, 0.52, 0.70), (0.82, 0.54, 0.72), (0.81, 0.53, 0.74)]):
        write_cell(root, "clean", "c0000000", seed=seed, final_acc=clean)
        write_cell(root, "em", "e0000000", seed=seed, final_acc=em)
        write_cell(root, "em", "e0000000", defense="at4", seed=seed, final_acc=em_at4)
    write_cell(root, "em", "e0000001", defense="at4", final_acc=0.6)  # a one-seed sweep variant


def test_build_takes_mean_and_sample_std_and_leaves_sweep_variants_out(tmp_path: Path) -> None:
    _campaign(tmp_path)
    doc = expected.build(load_records(tmp_path), "python -m benchmarks.run --seeds 0 1 2")
    assert sorted(doc["cells"]) == ["clean/none", "em/at4", "em/none"]
    at4 = doc["cells"]["em/at4"]
    assert at4["method_hash"] == "e0000000" and at4["values"] == [0.70, 0.72, 0.74]
    assert at4["mean"] == pytest.approx(0.72) and at4["std"] == pytest.approx(0.02)
    assert expected.tolerance(at4) == pytest.approx(0.06)
    assert doc["device"] == ["cpu (2 threads)"] and doc["preset"] == "smoke"


def test_only_keeps_matching_cells(tmp_path: Path) -> None:
    _campaign(tmp_path)
    doc = expected.build(load_records(tmp_path), "cmd", only=["*/none"])
    assert sorted(doc["cells"]) == ["clean/none", "em/none"]
    with pytest.raises(expected.ResultsError, match="no finished cells"):
        expected.build(load_records(tmp_path), "cmd", only=["nope/*"])


def test_two_configs_on_the_same_seeds_are_refused(tmp_path: Path) -> None:
    for seed in (0, 1):
        write_cell(tmp_path, "em", "e0000000", seed=seed)
        write_cell(tmp_path, "em", "e0000001", seed=seed)
    with pytest.raises(expected.ResultsError, match="several method configs"):
        expected.build(load_records(tmp_path), "cmd")


def test_cli_writes_the_file(tmp_path: Path) -> None:
    _campaign(tmp_path / "cells")
    argv = ["--results-dir", str(tmp_path / "cells"), "--name", "x", "--command", "cmd", "--out-dir", str(tmp_path)]
    assert expected.main([*argv, "--only", "em/*"]) == 0
    doc = json.loads((tmp_path / "x.json").read_text())
    assert sorted(doc["cells"]) == ["em/at4", "em/none"] and doc["command"] == "cmd"
    assert expected.main([*argv, "--only", "zzz/*"]) == 2
