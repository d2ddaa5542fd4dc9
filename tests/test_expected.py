"""``python -m benchmarks.expected``: reference numbers and measured tolerances built from cells."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scipy import stats as st

from benchmarks import expected, validate
from benchmarks.matrix import load_records
from tests._cells import write_cell

CLEAN = [0.80, 0.82, 0.81, 0.83, 0.80]
EM = [0.52, 0.54, 0.53, 0.50, 0.56]
EM_AT4 = [0.70, 0.72, 0.74, 0.71, 0.73]


def _campaign(root: Path, shift: float = 0.0, seeds: range = range(5), dirty: bool = False) -> Path:
    for seed in seeds:
        env = {"dirty": dirty}
        write_cell(root, "clean", "c0000000", seed=seed, final_acc=CLEAN[seed] + shift, env=env)
        write_cell(root, "clean", "c0000000", defense="at4", seed=seed, final_acc=CLEAN[seed] - 0.01 + shift, env=env)
        write_cell(root, "em", "e0000000", seed=seed, final_acc=EM[seed] + shift, env=env)
        write_cell(root, "em", "e0000000", defense="at4", seed=seed, final_acc=EM_AT4[seed] + shift, env=env)
    write_cell(root, "em", "e0000001", defense="at4", final_acc=0.6, env={"dirty": False})  # a one-seed sweep variant
    return root


def _half(samples: list[float], alpha: float) -> float:
    n = len(samples)
    s = float(st.tstd(samples))
    return float(st.t.ppf(1 - alpha / 2, n - 1)) * s * math.sqrt(1 + 1 / n)


def test_build_mean_ci_and_prediction_tolerance(tmp_path: Path) -> None:
    doc = expected.build(load_records(_campaign(tmp_path)), "python -m benchmarks.run --seeds 0 1 2 3 4")
    assert sorted(doc["cells"]) == ["clean/at4", "clean/none", "em/at4", "em/none"]
    at4 = doc["cells"]["em/at4"]
    assert at4["method_hash"] == "e0000000" and at4["values"] == EM_AT4 and at4["seeds"] == [0, 1, 2, 3, 4]
    assert at4["mean"] == pytest.approx(0.72)
    assert at4["ci95"] == pytest.approx(st.t.ppf(0.975, 4) * st.tstd(EM_AT4) / math.sqrt(5), abs=1e-6)
    alpha = expected.FAMILY_ALPHA / 4  # four cells
    gaps = [a - (c - 0.01) for a, c in zip(EM_AT4, CLEAN, strict=True)]
    new = at4["candidates"]
    assert new["accuracy, new draw"]["half_width"] == pytest.approx(_half(EM_AT4, alpha), abs=1e-6)
    assert new["gap_to_clean, new draw"]["half_width"] == pytest.approx(_half(gaps, alpha), abs=1e-6)
    assert new["accuracy, new draw"]["centers"] == {"0": pytest.approx(0.72)}
    assert not any(k.endswith("same seed") for k in new)  # no other machine measured: no deviations
    chosen = min(new, key=lambda k: new[k]["half_width"])
    assert (at4["statistic"], at4["tolerance"]) == (chosen.split(",")[0], new[chosen])
    assert "gap_to_clean, new draw" not in doc["cells"]["clean/none"]["candidates"]
    assert doc["device"] == ["cpu (2 threads)"] and doc["preset"] == "smoke" and doc["rerun_seeds"] == [0]


def test_machines_join_the_sample_and_their_spread_is_reported(tmp_path: Path) -> None:
    ref = load_records(_campaign(tmp_path / "ref"))
    other = load_records(_campaign(tmp_path / "other", shift=0.02, seeds=range(2)))
    doc = expected.build(ref, "cmd", machines={"aten-default": other})
    em = doc["cells"]["em/none"]
    assert em["machines"]["aten-default"] == {"0": pytest.approx(0.54), "1": pytest.approx(0.56)}
    assert em["machine_spread"] == {"0": pytest.approx(0.02), "1": pytest.approx(0.02)}
    assert em["candidates"]["accuracy, new draw"]["n"] == 7
    pooled = [*EM, EM[0] + 0.02, EM[1] + 0.02]
    assert em["candidates"]["accuracy, new draw"]["centers"]["0"] == pytest.approx(sum(pooled) / 7, abs=1e-6)


def test_a_machine_folder_joins_only_the_reference_campaign_and_its_configs(tmp_path: Path) -> None:
    """smoke and smoke-600 share their noise, hence their method hashes: a machine folder that holds both protocols'
    cells must not put smoke's accuracies into smoke-600's cells; nor may a cell of another protocol config."""
    ref = load_records(_campaign(tmp_path / "ref"))
    other = _campaign(tmp_path / "other", shift=0.02, seeds=range(1))
    write_cell(other, "em", "e0000000", preset="smoke-600", seed=1, final_acc=0.1, env={"dirty": False})
    write_cell(other, "em", "e0000000", protocol_hash="ffff0000", seed=2, final_acc=0.1, env={"dirty": False})
    doc = expected.build(ref, "cmd", machines={"two-threads": load_records(other)})
    em = doc["cells"]["em/none"]
    assert em["machines"]["two-threads"] == {"0": pytest.approx(EM[0] + 0.02)}
    assert em["candidates"]["accuracy, new draw"]["n"] == 6


def test_same_seed_model_centers_on_the_seed_and_pools_machine_deviations(tmp_path: Path) -> None:
    """The rerun of seed 0 is predicted from the reference's seed 0 plus the machine deviations: pooled over
    the file's cells (8 accuracy deviations here), never below the cell's own."""
    ref = load_records(_campaign(tmp_path / "ref"))
    other = _campaign(tmp_path / "other", seeds=range(2))  # every cell, seeds 0 and 1, the same values ...
    write_cell(other, "em", "e0000000", seed=0, final_acc=EM[0] + 0.004, env={"dirty": False})  # ... but one
    doc = expected.build(ref, "cmd", machines={"sse41": load_records(other)})
    alpha = expected.FAMILY_ALPHA / 4
    t = float(st.t.ppf(1 - alpha / 2, 8))
    assert doc["machine_deviation_rms"]["accuracy"] == pytest.approx(math.sqrt(0.004**2 / 8), abs=1e-6)
    em = doc["cells"]["em/none"]["candidates"]["accuracy, same seed"]
    assert em["centers"] == {"0": EM[0]} and em["n"] == 8 and em["own_deviations"] == [pytest.approx(0.004), 0.0]
    assert em["scale"] == pytest.approx(math.sqrt(0.004**2 / 2), abs=1e-6)  # its own rms is the larger
    assert em["half_width"] == pytest.approx(t * math.sqrt(0.004**2 / 2), abs=1e-6)
    clean = doc["cells"]["clean/none"]["candidates"]["accuracy, same seed"]
    assert clean["scale"] == pytest.approx(math.sqrt(0.004**2 / 8), abs=1e-6)  # the pooled rms is the larger
    # the em/at4 gap moved by nothing on the other machine, em/none's by 0.004: pooled over 4 gap deviations
    gap = doc["cells"]["em/at4"]["candidates"]["gap_to_clean, same seed"]
    assert gap["centers"] == {"0": pytest.approx(EM_AT4[0] - CLEAN[0] + 0.01)} and gap["n"] == 4
    narrow = doc["cells"]["em/none"]
    assert narrow["tolerance"]["model"] == "same seed"
    assert narrow["tolerance"]["half_width"] < narrow["candidates"]["accuracy, new draw"]["half_width"] / 3
    runs = {"clean/none": CLEAN[0], "em/none": EM[0] + 0.002}
    assert expected.check(doc, "em/none", runs, 0) is None
    reason = expected.check(doc, "em/none", {**runs, "em/none": EM[0] + 0.03}, 0)
    assert reason is not None and "same seed" in reason
    with pytest.raises(KeyError):
        expected.check(doc, "em/none", runs, 3)  # not a rerun seed


def test_check_accepts_inside_and_rejects_outside(tmp_path: Path) -> None:
    doc = expected.build(load_records(_campaign(tmp_path)), "cmd")
    runs = {"clean/none": 0.80, "em/none": 0.52, "clean/at4": 0.79, "em/at4": 0.70}
    assert all(expected.check(doc, name, runs, 0) is None for name in doc["cells"])
    runs["em/none"] = 0.80  # protection gone
    reason = expected.check(doc, "em/none", runs, 0)
    assert reason is not None and reason.startswith("em/none:") and "outside" in reason


def test_too_few_seeds_dirty_cells_and_missing_rerun_seeds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(expected.ResultsError, match="at least 5 are needed"):
        expected.build(load_records(_campaign(tmp_path / "a", seeds=range(3))), "cmd")
    with pytest.raises(expected.ResultsError, match="not measured from a clean git tree"):
        expected.build(load_records(_campaign(tmp_path / "b", dirty=True)), "cmd")
    assert expected.build(load_records(tmp_path / "b"), "cmd", allow_dirty=True)["cells"]
    with pytest.raises(expected.ResultsError, match=r"rerun seeds \[7\]"):
        expected.build(load_records(tmp_path / "b"), "cmd", rerun_seeds=[7], allow_dirty=True)


def test_only_keeps_matching_cells(tmp_path: Path) -> None:
    _campaign(tmp_path)
    doc = expected.build(load_records(tmp_path), "cmd", only=["*/none"])
    assert sorted(doc["cells"]) == ["clean/none", "em/none"]
    with pytest.raises(expected.ResultsError, match="no finished cells"):
        expected.build(load_records(tmp_path), "cmd", only=["nope/*"])


def test_two_configs_on_the_same_seeds_are_refused(tmp_path: Path) -> None:
    for seed in range(5):
        write_cell(tmp_path, "em", "e0000000", seed=seed, env={"dirty": False})
        write_cell(tmp_path, "em", "e0000001", seed=seed, env={"dirty": False})
    with pytest.raises(expected.ResultsError, match="several configs"):
        expected.build(load_records(tmp_path), "cmd")


def test_cli_writes_the_file(tmp_path: Path, capsys) -> None:
    _campaign(tmp_path / "cells")
    _campaign(tmp_path / "emu", shift=0.01, seeds=range(2))
    argv = ["--results-dir", str(tmp_path / "cells"), "--name", "x", "--command", "cmd", "--out-dir", str(tmp_path)]
    assert expected.main([*argv, "--only", "em/*", "clean/*", "--machine", f"sse41={tmp_path / 'emu'}"]) == 0
    doc = json.loads((tmp_path / "x.json").read_text())
    assert sorted(doc["cells"]) == ["clean/at4", "clean/none", "em/at4", "em/none"] and doc["command"] == "cmd"
    assert set(doc["machines"]) == {"reference", "sse41"} and doc["schema"] == 2
    assert "em/at4" in capsys.readouterr().out
    assert expected.main([*argv, "--only", "zzz/*"]) == 2
    assert expected.main([*argv, "--family-alpha", "2"]) == 2
    with pytest.raises(SystemExit):
        expected.main([*argv, "--machine", "no-equals-sign"])


def test_report_is_a_markdown_table_of_every_cell(tmp_path: Path, capsys) -> None:
    ref = load_records(_campaign(tmp_path / "ref"))
    doc = expected.build(ref, "cmd", machines={"sse41": load_records(_campaign(tmp_path / "o", 0.02, range(1)))})
    path = tmp_path / "x.json"
    path.write_text(json.dumps(doc))
    assert expected.main(["--report", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 2 + len(doc["cells"])
    assert "| em/none | 53.00 ± " in out and "0: 54.00" in out and "2.00 pp" in out
    assert expected.main(["--report", str(tmp_path / "missing.json")]) == 2
    assert expected.main(["--name", "x"]) == 2


def test_validate_finds_each_expected_value_in_any_results_directory(tmp_path: Path) -> None:
    """The committed cells live in two directories (the campaign's and the study's), and a cell of the second may
    replace the same cell of the first for the tables (``uebench validate`` reads them all); the expected file must
    still be found to match its cells."""
    first = _campaign(tmp_path / "cells")
    doc = expected.build(load_records(first), "cmd")
    (tmp_path / "expected").mkdir()
    (tmp_path / "expected" / "x.json").write_text(json.dumps(doc))
    second = tmp_path / "study"
    write_cell(second, "em", "e0000000", seed=2, final_acc=0.99, env={"dirty": False})  # the same cell, re-measured
    both = [*load_records(first), *load_records(second)]
    assert validate.check_expected(tmp_path / "expected", both) == []
    problems = validate.check_expected(tmp_path / "expected", load_records(second))  # only the re-measured value
    assert any("em/none seed 2: 0.53 != the cells' [0.99]" in p for p in problems)
    assert any("em/none seed 0: no ok results cell" in p for p in problems)


def test_validate_reads_the_default_folders_that_exist(tmp_path: Path, monkeypatch, capsys) -> None:
    """A campaign of one's own has results/cells and no study folder: the default reads what is there; with neither,
    the error names results/cells."""
    monkeypatch.chdir(tmp_path)
    assert validate.main([]) == 2
    assert "--results-dir results/cells is not a directory" in capsys.readouterr().err
    (tmp_path / "results" / "cells").mkdir(parents=True)
    assert validate.main([]) == 0
    assert "0 valid cells under results/cells;" in capsys.readouterr().out
