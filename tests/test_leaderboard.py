"""The leaderboard: ranked, deterministic, checkable output from fixed cells; clean one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from _cells import write_cell

from benchmarks import leaderboard
from benchmarks.matrix import cells_frame, load_records, method_labels

GEN_EM = {"wall_s": 60.0, "steps": 300, "forward_calls": 100, "images_forwarded": 150_000, "device": "cpu (2 threads)"}


def campaign(root: Path) -> Path:
    """clean, em, two sem configs and sc on one victim under none and at4, two seeds; one failed cell."""
    for seed in (0, 1):
        for defense, shift in (("none", 0.0), ("at4", 0.2)):
            write_cell(root, "clean", "cccc0000", defense=defense, seed=seed, final_acc=0.80 + shift / 10)
            write_cell(root, "em", "eeee0000", defense=defense, seed=seed, final_acc=(0.30, 0.40)[seed] + shift,
                       generation=GEN_EM)  # fmt: skip
            for h, samples, acc in (("5e000001", 1, 0.50), ("5e000003", 3, 0.20)):
                write_cell(root, "sem", h, defense=defense, seed=seed, final_acc=acc + shift,
                           method_cfg={"samples": samples, "steps": 300})  # fmt: skip
    write_cell(root, "sc", "5c000000", final_acc=0.45)
    write_cell(root, "sc", "5c000000", defense="at4", status="error")
    return root


def _args(tmp_path: Path, *extra: str) -> list[str]:
    out = ["--results-dir", str(tmp_path / "cells"), "--out", str(tmp_path / "out" / "LB.md")]
    return [*out, "--html", str(tmp_path / "out" / "lb.html"), *extra]


def _section(markdown: str, defense: str) -> list[list[str]]:
    """The table rows (cells stripped) of the section for ``defense``."""
    body = markdown.split(f"· defense {defense}\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in body.splitlines() if ln.startswith("| ")][1:]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]


@pytest.fixture
def cells(tmp_path: Path) -> Path:
    return campaign(tmp_path / "cells")


def test_ranking_numbers_and_gap(tmp_path, cells, capsys) -> None:
    assert leaderboard.main(_args(tmp_path)) == 0
    md = (tmp_path / "out" / "LB.md").read_text()
    rows = _section(md, "none")
    # em (30, 40) and sem samples=3 (20, 20) are tied: paired t-test over 2 seeds, p = 0.20; sem samples=1
    # (50, 50) is significantly weaker than sem samples=3 (the same 30-point difference on both seeds, p = 0)
    assert [r[0] for r in rows] == ["baseline", "1", "1", "2", "—"]
    assert [r[1] for r in rows] == ["clean", "sem (samples=3)", "em", "sem (samples=1)", "sc"]
    em = rows[2]
    # mean 35.00, CI half-width t(0.975, 1) * 7.07 / sqrt(2) = 63.53, n=2, seeds 0 1;
    # gap to clean (80, 80): -50, -40 -> mean -45, half-width 12.706 * 5 = 63.5, t = 9 on 1 df: p = 0.0704
    assert em[2:6] == ["35.00", "63.53", "2", "0 1"]
    assert em[6:8] == ["-45.00 [-108.5, +18.5]", "0.0704"]
    assert em[8:12] == ["36.00", "60.00", "150.0", "cpu (2 threads)"]  # peak, wall s, passes = 150000 / 1000
    assert rows[4][3:5] == ["—", "1"]  # one seed: no interval
    caption = md.split("· defense none\n", 1)[1].split("\n\n")[0]
    for fact in ("fashion-mnist", "preset smoke", "recipe smoke-300", "seeds 0 1", "cpu (2 threads)", "1000 training"):
        assert fact in caption


def test_errors_listed_not_ranked(tmp_path, cells) -> None:
    assert leaderboard.main(_args(tmp_path)) == 0
    md = (tmp_path / "out" / "LB.md").read_text()
    assert "sc" not in [r[1] for r in _section(md, "at4")]
    failed = md.split("## Failed cells (1)", 1)[1]
    assert "sc-5c000000__tiny_cnn__at4-0000abcd__s0" in failed and "NonFiniteLossError" in failed
    assert md.index("defense none") < md.index("defense at4") < md.index("Failed cells")


def test_deterministic_and_header(tmp_path, cells) -> None:
    assert leaderboard.main(_args(tmp_path)) == 0
    first = [(tmp_path / "out" / n).read_bytes() for n in ("LB.md", "lb.html")]
    assert leaderboard.main(_args(tmp_path)) == 0
    assert [(tmp_path / "out" / n).read_bytes() for n in ("LB.md", "lb.html")] == first
    md, page = (b.decode() for b in first)
    assert "never edit by hand" in md.lower() and "python -m benchmarks.leaderboard --results-dir" in md
    assert not re.search(r"20\d\d-\d\d-\d\d", md + page), "no timestamps"
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page and "sem (samples=3)" in page
    assert "<script" not in page and "src=" not in page and "href=" not in page, "self-contained"


def test_check_passes_then_fails_after_a_cell_changes(tmp_path, cells, capsys) -> None:
    assert leaderboard.main(_args(tmp_path, "--check")) == 1, "nothing generated yet"
    assert not (tmp_path / "out").exists()
    assert leaderboard.main(_args(tmp_path)) == 0
    assert leaderboard.main(_args(tmp_path, "--check")) == 0
    committed = (tmp_path / "out" / "LB.md").read_bytes()
    write_cell(cells, "em", "eeee0000", seed=1, final_acc=0.41, generation=GEN_EM)
    capsys.readouterr()
    assert leaderboard.main(_args(tmp_path, "--check")) == 1
    err = capsys.readouterr().err
    assert "out of date" in err and "python -m benchmarks.leaderboard" in err
    assert (tmp_path / "out" / "LB.md").read_bytes() == committed, "--check writes nothing"


def test_no_html_and_default_command(tmp_path, cells) -> None:
    args = ["--results-dir", str(cells), "--out", str(tmp_path / "LB.md"), "--no-html"]
    assert leaderboard.main(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LB.md", "cells"]
    assert leaderboard.command(leaderboard.build_parser().parse_args([])) == "python -m benchmarks.leaderboard"


def test_labels_disambiguate_variants(tmp_path) -> None:
    root = tmp_path / "cells"
    write_cell(root, "sem", "00000001", method_cfg={"samples": 1})
    write_cell(root, "sem", "00000002", method_cfg={"samples": 1})  # same options, other hash
    write_cell(root, "sem", "00000003", preset="paper", method_cfg={"samples": 9})  # alone in its preset
    labels = method_labels(load_records(root))
    assert labels[("fashion-mnist", "smoke", "sem", "00000001")] == "sem #00000001"
    assert labels[("fashion-mnist", "smoke", "sem", "00000002")] == "sem #00000002"
    assert labels[("fashion-mnist", "paper", "sem", "00000003")] == "sem"
    assert list(cells_frame(load_records(root))["preset"]) == ["paper", "smoke", "smoke"]


@pytest.mark.parametrize(
    ("setup", "extra", "expect"),
    [
        ("missing", [], "does not exist"),
        ("empty", [], "no valid results cells"),
        ("cells", ["--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, setup, extra, expect) -> None:
    if setup == "empty":
        (tmp_path / "cells").mkdir()
    elif setup == "cells":
        campaign(tmp_path / "cells")
    assert leaderboard.main(_args(tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leaderboard: error:") and expect in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_committed_leaderboard_is_up_to_date(monkeypatch: pytest.MonkeyPatch) -> None:
    """results/LEADERBOARD.md and the HTML page match the committed cells (regenerate, never hand-edit)."""
    repo = Path(__file__).resolve().parent.parent
    if not (repo / "results" / "LEADERBOARD.md").exists():
        pytest.skip("no committed leaderboard")
    monkeypatch.chdir(repo)
    assert leaderboard.main(["--check"]) == 0, "stale: run python -m benchmarks.leaderboard and commit"


def test_overview_matrix_with_intervals_and_ties(tmp_path, cells) -> None:
    assert leaderboard.main(_args(tmp_path)) == 0
    md = (tmp_path / "out" / "LB.md").read_text()
    assert md.index("## Overview: fashion-mnist") < md.index("· defense none\n")
    body = md.split("## Overview: fashion-mnist", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in body.splitlines() if ln.startswith("| ")]
    assert lines[0] == "| method | none | at4 |"
    rows = {r[0]: r[1:] for r in ([c.strip() for c in ln.strip("|").split(" | ")] for ln in lines[1:])}
    assert list(rows) == ["clean", "em", "sc", "sem (samples=1)", "sem (samples=3)"]
    assert rows["em"][0] == "**35.00 ± 63.53 (2)**"  # tied with sem (samples=3) for the strongest protection
    assert rows["sem (samples=3)"][0] == "**20.00 ± 0.00 (2)**"
    assert rows["sem (samples=1)"][0] == "50.00 ± 0.00 (2)" and rows["sc"] == ["45.00 (1)", ""]
