"""The papers' claims tested on cells (analysis.claims): each verdict from its paired test, the table, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from _cells import write_cell

from analysis import claims
from benchmarks import stats

SEEDS = (0, 1, 2, 3, 4)


def _test(diffs: list[float]) -> stats.Paired:
    return stats.paired({s: 0.5 + d for s, d in enumerate(diffs)}, {s: 0.5 for s in range(len(diffs))})


@pytest.mark.parametrize(
    ("kind", "diffs", "expected"),
    [
        ("keeps", [-0.10, -0.12, -0.09], "holds"),
        ("keeps", [-0.10, +0.12, -0.01], "does not hold: tied with clean"),
        ("keeps", [+0.10, +0.12, +0.09], "does not hold: above clean"),
        ("loses", [-0.01, +0.02, -0.005], "holds"),  # tied with clean: nothing measurable is left
        ("loses", [+0.03, +0.04, +0.035], "holds"),  # above clean: no protection either
        ("loses", [-0.10, -0.12, -0.09], "does not hold: a protection remains"),
        ("at_least", [+0.01, -0.03, +0.00], "holds"),  # tied: as strong
        ("at_least", [-0.10, -0.12, -0.09], "holds"),
        ("at_least", [+0.10, +0.12, +0.09], "does not hold: significantly weaker"),
        ("stronger", [-0.10, -0.12, -0.09], "holds"),
        ("stronger", [-0.10, +0.12, -0.01], "does not hold: tied"),
        ("stronger", [+0.10, +0.12, +0.09], "does not hold: the reverse"),
        ("keeps", [-0.10], "not measured"),  # one common seed: no test
    ],
)
def test_each_verdict_follows_the_paired_test(kind: str, diffs: list[float], expected: str) -> None:
    assert claims.verdict(kind, _test(diffs)) == expected


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="accepted: keeps"):
        claims.verdict("beats", _test([0.1, 0.2]))


def _campaign(root: Path) -> None:
    """EM keeps 10 points under AT (the papers say it loses them), TAP none, REM and SEM 10 and 12, on 5 seeds."""
    for seed in SEEDS:
        wobble = (seed - 2) / 1000
        for method, none, adv in (
            ("clean", 0.84, 0.82),
            ("em", 0.50, 0.72),
            ("tap", 0.74, 0.82),
            ("rem", 0.60, 0.72),
            ("sem", 0.58, 0.70),
        ):
            tap_noise = (seed % 2) / 100 - 0.005 if method == "tap" else 0.0  # tied with clean, not identical
            write_cell(root, method, method[0] * 8, defense="none", seed=seed, final_acc=none + wobble)
            write_cell(root, method, method[0] * 8, defense="at4", seed=seed, final_acc=adv + wobble + tap_noise)
    write_cell(root, "sem", "s0000002", defense="at4", seed=0, final_acc=0.10)  # a one-seed sweep variant: ignored


def test_the_table_tests_every_claim_under_the_protocols_training(tmp_path: Path, capsys) -> None:
    _campaign(tmp_path / "cells")
    out = tmp_path / "claims.md"
    assert claims.main(["--preset", "smoke", "--results-dir", str(tmp_path / "cells"), "--out", str(out)]) == 0
    text = out.read_text()
    assert text == capsys.readouterr().out.split(f"{claims.PROG}: ->")[0].rstrip("\n") + "\n"
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in text.splitlines() if line.startswith("| ")}
    assert rows["EM loses its protection"][5] == "does not hold: a protection remains"
    assert rows["EM loses its protection"][3].startswith("-10.0 [")
    assert rows["TAP loses its protection"][5] == "holds"
    assert rows["REM keeps its protection"][5] == rows["SEM keeps its protection"][5] == "holds"
    assert rows["SEM is at least as strong as REM"][5] == "holds"  # SEM - REM = -2 points on every seed
    assert rows["SEM is stronger than EM"][5] == "holds"
    assert rows["REM is stronger than EM"][5] == "does not hold: tied"  # identical under at4: p = 1
    assert rows["REM is stronger than EM"][2] == "0 1 2 3 4"
    assert rows["SEM keeps its protection"][6].startswith("-26.0 [")  # the comparison under none, for scale
    assert "under at4" in text and "5 of 7 measured claims hold" in text
    assert "0.0 (1 seed)" not in text  # the sweep variant never enters


def test_the_protection_table_has_every_defense_and_method(tmp_path: Path) -> None:
    root = tmp_path / "cells"
    _campaign(root)
    for seed in (0, 1, 2):  # a third defense on 3 seeds: EM loses all of it, SEM keeps 5 points
        write_cell(root, "clean", "cccccccc", defense="cutout", seed=seed, final_acc=0.80 + seed / 1000)
        write_cell(root, "em", "eeeeeeee", defense="cutout", seed=seed, final_acc=0.80 - (seed % 2) / 100)
        write_cell(root, "sem", "ssssssss", defense="cutout", seed=seed, final_acc=0.75 + seed / 1000)
    write_cell(root, "rem", "rrrrrrrr", defense="at2", seed=0, final_acc=0.6)  # no clean cell under at2: no column
    out = tmp_path / "claims.md"
    assert claims.main(["--preset", "smoke", "--results-dir", str(root), "--out", str(out)]) == 0
    table = out.read_text().split("## Protection under every defense measured")[1]
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[0] == "| method − clean (pp) | none | at4 | cutout |"  # none, then AT by radius, then the rest
    rows = {line.split(" | ")[0].lstrip("| "): line.rstrip(" |").split(" | ")[1:] for line in lines[1:]}
    assert list(rows) == ["em", "tap", "rem", "sem"]  # the claims' order
    assert rows["em"][0].startswith("**-34.0 [") and rows["em"][0].endswith("** (5)")  # none: significant, bold
    assert not rows["tap"][1].startswith("**") and rows["tap"][1].endswith("] (5)")  # at4: tied, not bold
    assert rows["em"][2].startswith("-0.") and "**" not in rows["em"][2] and rows["em"][2].endswith("(3)")
    assert rows["sem"][2] == "**-5.0 [-5.0, -5.0]** (3)"
    assert rows["rem"][2] == rows["tap"][2] == "—"


def test_a_scaled_protocol_is_judged_under_its_own_training(tmp_path: Path) -> None:
    root = tmp_path / "r16"
    for seed in SEEDS:
        for method in ("clean", "rem"):
            acc = 0.82 if method == "clean" else 0.70 + seed / 1000
            write_cell(root, method, method[0] * 8, preset="smoke-r16", defense="at8", seed=seed, final_acc=acc)
    out = tmp_path / "r16.md"
    assert claims.main(["--preset", "smoke-r16", "--results-dir", str(root), "--out", str(out)]) == 0
    text = out.read_text()
    assert "under `at8`" in text and "| REM keeps its protection | rem - clean | 0 1 2 3 4 |" in text
    assert "| EM loses its protection | em - clean | — | — | — | not measured | — |" in text
    assert "1 of 1 measured claims hold (6 not measured)" in text


def test_bad_input_exits_2_and_writes_nothing(tmp_path: Path, capsys) -> None:
    _campaign(tmp_path / "cells")
    out = tmp_path / "claims.md"
    common = ["--results-dir", str(tmp_path / "cells"), "--out", str(out)]  # the default preset: smoke-600
    for argv, message in (
        (["--preset", "nope", *common], "accepted: "),
        (["--dataset", "mnist", *common], "accepted: "),
        (["--results-dir", str(tmp_path / "missing"), "--out", str(out)], "is not a directory"),
        (["--defense", "at16", "--preset", "smoke", *common], "no finished cell"),
        (common, "no finished cell of fashion-mnist/smoke-600"),  # these cells are smoke's
    ):
        assert claims.main(argv) == 2
        assert message in capsys.readouterr().err
    assert not out.exists()
