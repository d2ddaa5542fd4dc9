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


def _rows(block: str) -> list[list[str]]:
    """The rows of the first markdown table in ``block``, header included, cells stripped."""
    table = block[block.index("\n| ") + 1 :].split("\n\n", 1)[0]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in table.splitlines() if ln.startswith("| ")]


def _section(markdown: str, defense: str) -> list[list[str]]:
    """The table rows (cells stripped) of the detail table for ``defense``."""
    body = markdown.split(f"· defense {defense}\n", 1)[1].split("\n#", 1)[0]
    return _rows(body)[1:]


def _caption(markdown: str, defense: str) -> str:
    return markdown.split(f"· defense {defense}\n\n", 1)[1].split("\n\n")[0]


@pytest.fixture
def cells(tmp_path: Path) -> Path:
    return campaign(tmp_path / "cells")


def test_other_budgets_are_marked_and_ranked_among_their_kind(tmp_path) -> None:
    """An L2, L0 or declared budget is not an L-inf ball: marked, its budget named, ranked only among its kind."""
    root = tmp_path / "cells"
    for seed in (0, 1):
        write_cell(root, "clean", "cccc0000", seed=seed, final_acc=0.80)
        write_cell(root, "em", "eeee0000", seed=seed, final_acc=(0.30, 0.31)[seed])
        # far lower than em, but under other budgets: each is rank 1 of its own kind, em stays rank 1 of linf
        write_cell(
            root, "cuda", "cd000000", seed=seed, final_acc=(0.10, 0.11)[seed], budget={"norm": "blur", "radius": 0.3}
        )
        write_cell(
            root, "ops", "0b000000", seed=seed, final_acc=(0.20, 0.22)[seed], budget={"norm": "l0", "radius": 1.0}
        )
    assert leaderboard.main(_args(tmp_path)) == 0
    md = (tmp_path / "out" / "LB.md").read_text()
    rows = {r[1]: r for r in _section(md, "none")}
    assert set(rows) == {"clean", "em", f"cuda {leaderboard.OTHER_BUDGET}", f"ops {leaderboard.OTHER_BUDGET}"}
    assert (
        rows["em"][0]
        == rows[f"cuda {leaderboard.OTHER_BUDGET}"][0]
        == rows[f"ops {leaderboard.OTHER_BUDGET}"][0]
        == "1"
    )
    assert [rows[k][-1] for k in sorted(rows)] == ["—", "blur 0.3", "linf 8/255", "l0 1 px"]
    assert leaderboard.BUDGET_NOTE in md
    overview = [ln for ln in md.split("## Details")[0].splitlines() if ln.startswith(("| cuda", "| ops", "| em"))]
    assert len(overview) == 6 and all(("**" in ln) == ln.startswith("| em") for ln in overview), "never bold"
    html = (tmp_path / "out" / "lb.html").read_text()
    assert "not an L-inf ball, ranked only against methods with a blur budget" in html


def test_defenses_that_use_more_than_the_protected_set_are_marked_and_come_last(tmp_path) -> None:
    """The threat model: a defense with extra clean data is marked, named in its table and placed after the others;
    a cell written before the field existed reads as "none"."""
    root = tmp_path / "cells"
    for seed in (0, 1):
        for defense, extra in (("none", None), ("at4", "none"), ("cutout", "clean-data")):
            robust = (0.6 + seed / 10, 4.0) if defense == "at4" else None
            write_cell(
                root, "clean", "cccc0000", defense=defense, seed=seed, final_acc=0.8, extra_data=extra, robust=robust
            )
            write_cell(root, "em", "eeee0000", defense=defense, seed=seed, final_acc=0.3 + seed / 10, extra_data=extra)
    frame = cells_frame(load_records(root))
    assert dict(zip(frame["defense"], frame["extra_data"], strict=True)) == {
        "none": "none",
        "at4": "none",
        "cutout": "clean-data",
    }
    assert leaderboard.main(_args(tmp_path)) == 0
    md = (tmp_path / "out" / "LB.md").read_text()
    mark = leaderboard.OTHER_THREAT
    assert f"| method | none | at4 | cutout {mark} |" in md
    assert f"· defense cutout {mark}\n" in md
    assert "It uses more than the protected training set: clean-data." in md
    assert leaderboard.THREAT_NOTE in md
    assert "· defense at4\n" in md and md.index("· defense at4") < md.index("· defense cutout")
    at4 = {r[1]: r for r in _section(md, "at4")}
    assert at4["clean"][8] == "65.00" and at4["em"][8] == "—"  # robust acc: mean of 60 and 70; em: not recorded
    assert "Robust acc: under L-inf PGD-10 at 4/255." in md


def test_ranking_numbers_and_gap(tmp_path, cells, capsys) -> None:
    assert leaderboard.main(_args(tmp_path)) == 0
    md = (tmp_path / "out" / "LB.md").read_text()
    rows = _section(md, "none")
    # em (30, 40) and sem samples=3 (20, 20) are tied: paired t-test over 2 seeds, p = 0.20; sem samples=1
    # (50, 50) is significantly weaker than sem samples=3 (the same 30-point difference on both seeds, p = 0)
    assert [r[0] for r in rows] == ["baseline", "1", "1", "2", "—"]
    assert [r[1] for r in rows] == ["clean", "sem (samples=3)", "em", "sem (samples=1)", "sc"]
    em = rows[2]
    # mean 35.00, CI half-width t(0.975, 1) * 7.07 / sqrt(2) = 63.53, n=2 (the section's seeds 0 1);
    # gap to clean (80, 80): -50, -40 -> mean -45, half-width 12.706 * 5 = 63.5, t = 9 on 1 df: p = 0.0704
    assert em[2:5] == ["35.00", "63.53", "2"]
    assert em[5:7] == ["-45.00 [-108.5, +18.5]", "0.0704"]
    # peak, robust (not recorded), generation wall s, passes = 150000 / 1000, train s (12.5 and 13.5 on seeds 0 and 1),
    # budget
    assert em[7:] == ["36.00", "—", "60.00", "150.0", "13.0", "linf 8/255"]
    assert rows[4][3:7] == ["—", "1 (seed 0)", "-35.00", "—"]  # one seed: no interval, no test; its seed named
    assert _caption(md, "none") == "Defense none: methods ranked by protection, strongest first."


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
    assert not re.search(r"<script|<link|src=|url\(|@import", page), "self-contained"
    links = re.findall(r'href="([^"]*)"', page)
    assert {h for h in links if not h.startswith("#")} == {
        "https://arxiv.org/abs/2101.04898",
        "https://arxiv.org/abs/2111.00898",
        "https://arxiv.org/abs/2311.13091",
    }, "the only links that leave the page are the papers"
    assert {h[1:] for h in links if h.startswith("#")} <= set(re.findall(r' id="([^"]*)"', page)), "no dangling link"


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
    body = md.split("**Final clean test accuracy (%).**", 1)[1]
    header, *lines = _rows(body.split("\n#", 1)[0])
    assert header == ["method", "none", "at4"]
    rows = {r[0]: r[1:] for r in lines}
    assert list(rows) == ["clean", "em", "sc", "sem (samples=1)", "sem (samples=3)"]
    assert rows["em"][0] == "**35.00 ± 63.53 (2)**"  # tied with sem (samples=3) for the strongest protection
    assert rows["sem (samples=3)"][0] == "**20.00 ± 0.00 (2)**"
    assert rows["sem (samples=1)"][0] == "50.00 ± 0.00 (2)" and rows["sc"] == ["45.00 (1)", ""]


def test_gap_overview_then_methods_details_failed(tmp_path, cells) -> None:
    assert leaderboard.main(_args(tmp_path)) == 0
    md = (tmp_path / "out" / "LB.md").read_text()
    heads = ["## Overview", "**Gap to clean (pp).**", "**Final clean test accuracy (%).**", "## Methods", "## Details"]
    assert [md.index(h) for h in [*heads, "#### fashion-mnist", "## Failed cells"]] == sorted(
        md.index(h) for h in [*heads, "#### fashion-mnist", "## Failed cells"]
    )
    header, *lines = _rows(md.split("**Gap to clean (pp).**", 1)[1])
    assert header == ["method", "none", "at4"]
    # method - clean per seed, in pp: em -50, -40 (none) and -30, -24 (at4); sem samples=3 -60 on both seeds
    assert {r[0]: r[1:] for r in lines} == {
        "clean": ["80.0 ± 0.0", "82.0 ± 0.0"],  # the baseline row: its accuracy
        "em": ["**-45.0** [-108.5, +18.5]", "**-27.0** [-90.5, +36.5]"],
        "sc": ["-35.0 †", ""],  # one seed: no interval, no rank
        "sem (samples=1)": ["-30.0 [-30.0, -30.0]", "-12.0 [-12.0, -12.0]"],
        "sem (samples=3)": ["**-60.0** [-60.0, -60.0]", "**-42.0** [-42.0, -42.0]"],
    }
    methods = md.split("## Methods\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert methods == [
        "- **em**: [Huang et al., Unlearnable Examples: Making Personal Data Unexploitable, ICLR 2021]"
        "(https://arxiv.org/abs/2101.04898)",
        "- **sc**: [Yu et al., Availability Attacks Create Shortcuts, KDD 2022](https://arxiv.org/abs/2111.00898)",
        "- **sem**: [Liu et al., Stable Unlearnable Example: Enhancing the Robustness of Unlearnable Examples via "
        "Stable Error-Minimizing Noise, AAAI 2024](https://arxiv.org/abs/2311.13091)",
    ]


def test_devices_and_seeds_said_once_per_section(tmp_path, cells) -> None:
    write_cell(cells, "clean", "cccc0000", defense="at4", seed=2, final_acc=0.81, device="cuda:0 (NVIDIA H100)")
    assert leaderboard.main(_args(tmp_path)) == 0
    md = (tmp_path / "out" / "LB.md").read_text()
    facts = (
        "fashion-mnist, 1000 training images; preset smoke, recipe smoke-300; victim tiny_cnn; seeds 0 1 2; victims "
        "trained on cpu (2 threads) and cuda:0 (NVIDIA H100); noise generated on cpu (2 threads)."
    )
    assert md.count(f"\n{facts}\n") == 2  # under the overview's heading and the details'
    assert "cpu (2 threads)" not in "".join(ln for ln in md.splitlines() if ln.startswith("|")), "no device column"
    assert _caption(md, "none") == (
        "Defense none: methods ranked by protection, strongest first. Under this defense: seeds 0 1; victims "
        "trained on cpu (2 threads)."
    )
    assert _caption(md, "at4") == "Defense at4: methods ranked by protection, strongest first."
    assert _section(md, "at4")[0][4] == "3" and _section(md, "at4")[1][4] == "2 (seeds 0 1)"


def test_colour_bins_legend_and_contrast() -> None:
    gaps = [0.0, -1.99, -2.0, -9.9, -10.0, -24.9, -25.0, -49.9, -50.0, -80.0, 1.99, 3.0, 12.0, 30.0, 60.0]
    assert [leaderboard.gap_level(g) for g in gaps] == [0, 0, -1, -1, -2, -2, -3, -3, -4, -4, 0, 1, 2, 3, 4]
    labels = {level: leaderboard._level_label(level) for level in sorted(leaderboard.PALETTE)}
    assert list(labels.values()) == [
        "≤ -50", "-50 to -25", "-25 to -10", "-10 to -2", "-2 to +2", "+2 to +10", "+10 to +25", "+25 to +50", "≥ +50"
    ]  # fmt: skip

    def luminance(colour: str) -> float:
        channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    for background, text in leaderboard.PALETTE.values():
        bright, dark = sorted((luminance(background), luminance(text)), reverse=True)
        assert (bright + 0.05) / (dark + 0.05) >= 4.5, f"{text} on {background}: below WCAG AA contrast"


def test_noise_files_and_the_baseline_have_no_paper(tmp_path) -> None:
    root = tmp_path / "cells"
    for seed in (0, 1):
        write_cell(root, "clean", "cccc0000", seed=seed, final_acc=0.8)
        write_cell(root, "file:rem-cifar10", "f11e0000", seed=seed, final_acc=0.3 + seed / 10)
        write_cell(root, "em-cw", "ecw00000", seed=seed, final_acc=0.6)
    refs = leaderboard.references(["clean", "file:rem-cifar10", "em-cw", "em-cw"])
    assert [(r.method, r.url) for r in refs] == [("em-cw", "https://arxiv.org/abs/2101.04898")]
    assert leaderboard.main(_args(tmp_path)) == 0
    page = (tmp_path / "out" / "lb.html").read_text()
    assert re.findall(r'<th scope="row"[^>]*>(.*?)</th>', page.split('<section id="methods">')[0]) == [
        "clean",
        '<a href="#method-em-cw">em-cw</a>',
        "file:rem-cifar10",
    ]
    assert '<li id="method-em-cw"><b>em-cw</b>: <a href="https://arxiv.org/abs/2101.04898">Huang et al.' in page


def test_without_clean_baseline_no_gaps(tmp_path) -> None:
    root = tmp_path / "cells"
    for seed in (0, 1):
        write_cell(root, "em", "eeee0000", seed=seed, final_acc=0.3 + seed / 10)
    assert leaderboard.main(_args(tmp_path)) == 0
    md = (tmp_path / "out" / "LB.md").read_text()
    assert _rows(md.split("**Gap to clean (pp).**", 1)[1])[1:] == [["em", "—"]]
    assert _caption(md, "none").endswith("No clean baseline under this defense: gaps are not available.")
    assert _section(md, "none")[0][:7] == ["1", "em", "35.00", "63.53", "2", "—", "—"]
