"""Named defense grids (``--defense @iss``): every member is a defense the plan builds; unknown grids are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import run as runner
from benchmarks.plan import build_defense, resolve_defenses
from benchmarks.plugins import load_plugins
from benchmarks.registry import DEFENSES, PRESETS, Registry, UnknownNameError
from benchmarks.train import COMPOSE

load_plugins()


@pytest.mark.parametrize("grid", sorted(DEFENSES.groups()))
def test_every_member_of_every_grid_builds(grid: str) -> None:
    protocol = PRESETS.get("smoke")("fashion-mnist")
    members, about = DEFENSES.groups()[grid]
    assert about and resolve_defenses([f"@{grid}"]) == list(members)
    assert [build_defense(name, protocol).name for name in members] == list(members)


def test_the_iss_grid_is_the_papers() -> None:
    members = DEFENSES.members("@iss")
    assert {"grayscale", "jpeg10", "jpeg90", "bdr2"} <= set(members)
    assert [m for m in members if COMPOSE in m] == ["grayscale+jpeg10"]  # grayscale first, then JPEG


def test_grids_expand_in_place_without_duplicates() -> None:
    assert resolve_defenses(["jpeg10", "@ueraser", "none", "ueraser-max"]) == [
        "jpeg10",
        "ueraser-lite",
        "ueraser-max",
        "none",
    ]


def test_bad_grids() -> None:
    r: Registry = Registry("thing")
    r.group("g", ("a", "b"), "two things")
    with pytest.raises(KeyError, match="a new lower-case name"):
        r.group("g", ("c",), "again")
    with pytest.raises(ValueError, match="once each"):
        r.group("h", ("a", "a"), "twice")
    with pytest.raises(UnknownNameError, match="grids: @g"):
        r.members("@nope")
    with pytest.raises(UnknownNameError, match="unknown defense grid '@nope'"):
        resolve_defenses(["@nope"])


def test_an_unknown_grid_on_the_command_line_exits_2(tmp_path: Path, capsys) -> None:
    argv = ["--dataset", "synthetic", "--preset", "tiny", "--methods", "random", "--defense", "@nope"]
    argv += ["--results-dir", str(tmp_path / "cells"), "--cache-dir", str(tmp_path / "c"), "--no-progress"]
    assert runner.main(argv) == 2
    assert "grids: @at, @iss, @lowpass, @ueraser" in capsys.readouterr().err
    assert not (tmp_path / "cells").exists()
