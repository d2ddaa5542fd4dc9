"""The protocol study's table (benchmarks.study): one row per candidate, its criteria and its paired gaps."""

from __future__ import annotations

from pathlib import Path

from _cells import write_cell

from benchmarks import study


def test_a_row_per_candidate_with_its_criteria_and_gaps(tmp_path: Path, capsys) -> None:
    root = tmp_path / "cells"
    for seed in (0, 1, 2):
        for defense in ("none", "at4"):
            robust = (0.3 if defense == "none" else 0.7, 4.0)
            write_cell(root, "clean", "c0", defense=defense, seed=seed, final_acc=0.84, robust=robust)
            write_cell(root, "em", "e0", defense=defense, seed=seed, final_acc=0.50 + seed / 100)
    out = tmp_path / "study.md"
    assert study.main(["--presets", "smoke", "tiny", "--results-dir", str(root), "--out", str(out)]) == 0
    text = out.read_text()
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| smoke") or line.startswith("| tiny")]
    assert [r[0] for r in rows] == ["| smoke", "| tiny"]  # every candidate, even one without cells
    smoke = dict(zip(study.HEADERS, [c.strip("| ") for c in rows[0]], strict=True))
    assert smoke["victim"] == "tiny_cnn" and smoke["steps"] == "300" and smoke["train images"] == "3000"
    assert smoke["(b) robust acc at 4/255: standard -> at4 victim"].startswith("met: standard victim 30.0 %")
    assert smoke["clean acc none / at4"] == "84.0 / 84.0"
    # em - clean under none: -34, -33, -32 points: mean -33, CI half-width t(0.975, 2) * 1 / sqrt(3) = 2.48
    assert smoke["em - clean, none (pp)"].startswith("-33.0 [-35.5, -30.5] p")
    assert smoke["rem - clean, at4 (pp)"] == "—"
    assert "python -m benchmarks.study --presets smoke tiny" in text


def test_bad_input_exits_2(tmp_path: Path, capsys) -> None:
    assert study.main(["--presets", "nope", "--results-dir", str(tmp_path)]) == 2
    assert "unknown nope" in capsys.readouterr().err
    assert study.main(["--presets", "smoke", "--results-dir", str(tmp_path / "missing")]) == 2
    assert study.main(["--presets", "smoke", "--results-dir", str(tmp_path)]) == 2  # no cells in it
    write_cell(tmp_path / "cells", "clean", "c0")
    cells = ["--presets", "smoke", "--results-dir", str(tmp_path / "cells")]
    assert study.main([*cells, "--dataset", "nonsense"]) == 2
    assert "--dataset: unknown 'nonsense'" in capsys.readouterr().err
    a_file = next((tmp_path / "cells").rglob("*.json"))
    assert study.main([*cells, "--out", str(a_file / "s.md")]) == 2  # a file is not a directory
    assert "--out: cannot write" in capsys.readouterr().err
    written = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {a_file}  # nothing but the cell this test wrote
