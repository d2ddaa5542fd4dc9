"""The protocol study's table (benchmarks.study): one row per candidate, its criteria and its paired gaps."""

from __future__ import annotations

import dataclasses
import math
import shlex
from pathlib import Path

from _cells import write_cell

import methods  # noqa: F401  (registers the methods)
from benchmarks import study
from benchmarks.criteria import Criterion, evaluate_protocol
from benchmarks.matrix import load_merged
from benchmarks.registry import METHODS, PRESETS
from benchmarks.spec import DEFAULT_PRESET


def test_a_row_per_candidate_with_its_criteria_and_gaps(tmp_path: Path, capsys) -> None:
    root = tmp_path / "cells"
    for seed in (0, 1, 2):
        for defense in ("none", "at4"):
            robust = (0.3 if defense == "none" else 0.7, 4.0)
            write_cell(root, "clean", "c0", defense=defense, seed=seed, final_acc=0.84, robust=robust)
            write_cell(root, "em", "e0", defense=defense, seed=seed, final_acc=0.50 + seed / 100)
        # a candidate that doubles the radii is judged at its own: at8, robust accuracy at 8/255
        for defense, robust in (("none", (0.40, 8.0)), ("at4", (0.9, 4.0)), ("at8", (0.45, 8.0))):
            write_cell(root, "clean", "c0", preset="smoke-r16", defense=defense, seed=seed, robust=robust)
    out = tmp_path / "study.md"
    argv = ["--presets", "smoke", "tiny", "smoke-r16", "--results-dir", str(root), "--out", str(out)]
    assert study.main(argv) == 0
    text = out.read_text()
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith(("| smoke", "| tiny"))]
    assert [r[0] for r in rows] == ["| smoke", "| tiny", "| smoke-r16"]  # every candidate, even one without cells
    smoke, _, r16 = (dict(zip(study.HEADERS, [c.strip("| ") for c in r], strict=True)) for r in rows)
    assert smoke["victim"] == "tiny_cnn" and smoke["steps"] == "300" and smoke["train images"] == "3000"
    assert smoke["image side"] == "as loaded" and smoke["augmentation"] == "none"
    assert smoke["rho_u / rho_a (AT)"] == "8/255 / 4/255 (at4)"
    assert smoke["(b) robust acc at rho_a: standard -> AT victim"].startswith("met: standard victim 30.0 %")
    assert smoke["clean acc none / AT"] == "84.0 / 84.0"
    # em - clean under none: -34, -33, -32 points: mean -33, CI half-width t(0.975, 2) * 1 / sqrt(3) = 2.48
    assert smoke["em - clean, none (pp)"].startswith("-33.0 [-35.5, -30.5] p")
    assert smoke["rem - clean, AT (pp)"] == "—"
    assert r16["rho_u / rho_a (AT)"] == "16/255 / 8/255 (at8)"
    # +5 points at 8/255 (at4's cells, robust at 4/255, are not the comparison): measured, not enough
    assert r16["(b) robust acc at rho_a: standard -> AT victim"].startswith("NOT met: standard victim 40.0 %, at8")
    assert smoke["criteria met"] == "1 of 4" and r16["criteria met"] == "0 of 4"
    assert "Chosen by the criteria: **smoke**, 1 of 4 met" in text
    assert "python -m benchmarks.study --presets smoke tiny smoke-r16" in text


def test_the_choice_ranks_met_then_measured_then_the_missions_time() -> None:
    def judged(*verdicts: bool | None, seconds: float = math.nan) -> list[Criterion]:
        found = [Criterion(f"({k})", "rule", met, "measured") for k, met in enumerate(verdicts)]
        return [*found, Criterion("(d) quick", "rule", seconds <= 600, "measured", value=seconds)]

    assert study.choose({"a": judged(True, False, None), "b": judged(True, True, False)}) == "b"  # 3 met beats 2
    # as many met: the fewer not measured, then the quicker mission, then the order given
    assert study.choose({"a": judged(True, None, True), "b": judged(True, False, True)}) == "b"
    assert study.choose({"a": judged(True, True, True, seconds=590), "b": judged(True, True, True, seconds=300)}) == "b"
    assert study.choose({"a": judged(True, False, False, seconds=900), "b": judged(True, False, False)}) == "a"
    assert study.choose({"a": judged(True, True, True, seconds=300), "b": judged(True, True, True, seconds=300)}) == "a"


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


def test_the_scaled_candidate_doubles_every_radius_and_step_size() -> None:
    """smoke-r16 is smoke with the radii doubled: every option in 1/255 units of every method doubles with them
    (a step size left at smoke's value would travel half as far inside a ball twice as wide)."""
    base, scaled = PRESETS.get("smoke")("fashion-mnist"), PRESETS.get("smoke-r16")("fashion-mnist")
    assert (scaled.radius, scaled.adv_radius) == (2 * base.radius, 2 * base.adv_radius)
    units = ("step_size", "adv_radius", "inner_radius")  # option names in 1/255 units end with these
    checked = 0
    for name in sorted(set(base.methods) | {"em", "rem", "sem", "tap", "hypo", "asr", "em-cw"}):
        small = METHODS.get(name)(**base.method_options(name)).config
        large = METHODS.get(name)(**scaled.method_options(name)).config
        inert = {"adv_step_size"} if not getattr(small, "adv_radius", 1) else set()  # standard training: unused
        for f in dataclasses.fields(small):
            if f.name.endswith(units) and getattr(small, f.name) and f.name not in inert:
                assert getattr(large, f.name) == 2 * getattr(small, f.name), (name, f.name)
                checked += 1
    assert checked >= 12


def test_the_missions_time_comes_from_cells_run_alone(tmp_path: Path) -> None:
    """--timing-dir: (d) is judged on the mission's command run alone (2 threads, quicker); accuracy, (a)-(c) and
    the gaps on the campaign's cells only, even for the seed both directories have."""
    campaign, quiet = tmp_path / "cells", tmp_path / "quiet"
    for seed in (0, 1, 2):
        for method in ("clean", "rem", "sem"):
            acc = 0.84 if method == "clean" else 0.70
            # one-thread lanes: 300 s generations, 100 s trainings (wall_s.train = 12.5 + seed in write_cell)
            gen = {"wall_s": 300.0} if method != "clean" else {"wall_s": 0.0}
            write_cell(campaign, method, method[0] * 2, defense="at4", seed=seed, final_acc=acc, generation=gen)
    for method in ("clean", "rem", "sem"):  # seed 0 alone on the machine: another accuracy, another time
        gen = {"wall_s": 150.0} if method != "clean" else {"wall_s": 0.0}
        write_cell(quiet, method, method[0] * 2, defense="at4", seed=0, final_acc=0.10, generation=gen)
    out = tmp_path / "study.md"
    base = ["--presets", "smoke", "--results-dir", str(campaign), "--out", str(out)]
    assert study.main(base) == 0
    without = out.read_text()
    assert study.main([*base, "--timing-dir", str(quiet)]) == 0
    text = out.read_text()
    assert "seed 0: 638 s" in without  # 2 x 300 + 3 x 12.5
    assert "seed 0: 338 s" in text  # 2 x 150 + 3 x 12.5
    assert "-14.0 [-14.0, -14.0]" in text  # rem - clean from the campaign alone: the quiet 10 % never enters
    assert study.main([*base, "--timing-dir", str(tmp_path / "missing")]) == 2


def test_the_default_preset_is_the_committed_studys_choice() -> None:
    """results/protocol-study.md is what the committed cells give, and the embedded default is its choice: cells that
    move the choice must move the default (or say why not) in the same change."""
    repo = Path(__file__).resolve().parent.parent
    committed = (repo / "results" / "protocol-study.md").read_text()
    command = committed.splitlines()[0].split("`")[1]  # <!-- generated by `python -m benchmarks.study ...` ... -->
    args = study.build_parser().parse_args(shlex.split(command)[3:])

    def cells(roots: list[Path]) -> list[dict]:
        return load_merged(repo / root for root in roots)

    timing = cells(args.timing_dir) or None
    assert study.build(cells(args.results_dir), args.dataset, args.presets, command, timing) == committed
    judged = {p: evaluate_protocol(cells(args.results_dir), args.dataset, p, timing) for p in args.presets}
    assert study.choose(judged) == DEFAULT_PRESET
