"""The validity criteria of a miniature protocol (benchmarks.criteria), on hand-made cells with known answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _cells import write_cell

from benchmarks import criteria
from benchmarks import validate as validate_cli


def _cell(method: str, defense: str, seed: int, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "dataset": "fashion-mnist",
        "preset": "smoke",
        "method": method,
        "method_hash": extra.pop("method_hash", f"{method}-main"),
        "defense": defense,
        "seed": seed,
        "status": "ok",
        "metrics": {"final_acc": extra.pop("final_acc", 0.8)},
        "curve": extra.pop("curve", [[100, 0.8], [200, 0.8]]),
        "generation": extra.pop("generation", {}),
        "wall_s": extra.pop("wall_s", {"train": 10.0}),
        "env": {"device": "cpu (2 threads)"},
    }
    return {**record, **extra}


def test_plateau_compares_the_last_change_with_the_seed_spread() -> None:
    def flat(method: str, defense: str) -> list[dict[str, Any]]:
        curve = [[[1, 0.5], [2, 0.5 + s / 100]] for s in range(3)]
        return [_cell(method, defense, s, final_acc=0.50 + s / 100, curve=curve[s]) for s in range(3)]

    found = criteria.plateau(flat("em", "none"))  # last changes 0, 1, 2 points: mean 1 point, seed SD 1 point
    # within the spread, but the mission's other methods and defenses were not run: not judged
    assert found.met is None and found.measured.startswith("1 of 1 (method, defense) pairs within the seed spread")
    assert "not run on 2 seeds: clean/none clean/at4 em/at4 rem/none" in found.measured
    every = [c for m in ("clean", "em", "rem", "sem") for d in ("none", "at4") for c in flat(m, d)]
    found = criteria.plateau(every)
    assert found.met is True and "8 of 8" in found.measured
    # a candidate that scales its radii is judged under its own adversarial training
    scaled = [{**c, "defense": "at8"} if c["defense"] == "at4" else c for c in every]
    assert criteria.plateau(scaled, "at8").met is True and criteria.plateau(scaled).met is None
    # another method still moving is shown, not judged: every candidate is judged on the same four victims
    moving = [_cell("tap", "at4", s, final_acc=0.80 + s / 1000, curve=[[1, 0.7], [2, 0.8]]) for s in range(3)]
    found = criteria.plateau(every + moving)
    assert found.met is True and "8 of 8" in found.measured
    assert "tap/at4: last change +10.00 pp, seed SD 0.10 pp (n 3), beyond the spread (not judged)" in found.details
    rising = [_cell("em", "none", s, final_acc=0.50 + s / 1000, curve=[[1, 0.4], [2, 0.5]]) for s in range(3)]
    found = criteria.plateau(rising)  # still climbing 10 points, seeds 0.1 point apart
    assert found.met is False and "em/none: last change +10.00 pp" in found.details[0]
    assert criteria.plateau([_cell("em", "none", 0)]).met is None  # one seed: no spread


def test_adversarial_training_must_make_the_clean_victim_robust() -> None:
    def robust(defense: str, seed: int, acc: float) -> dict[str, Any]:
        return _cell("clean", defense, seed, victim_robustness={"radius": 4.0, "robust_acc": acc})

    strong = [robust("none", s, 0.40 + s / 100) for s in range(3)] + [robust("at4", s, 0.70) for s in range(3)]
    found = criteria.adversarial_training_acts(strong)
    assert found.met is True and "standard victim 41.0 %, at4 victim 70.0 %" in found.measured
    weak = [robust("none", s, 0.70 + s / 100) for s in range(3)] + [robust("at4", s, 0.75) for s in range(3)]
    assert criteria.adversarial_training_acts(weak).met is False  # 4 points: more robust, not well more robust
    assert criteria.adversarial_training_acts([_cell("clean", "none", 0)]).met is None


def test_surrogates_must_fit_their_data() -> None:
    cells = [_cell("em", "none", s, generation={"surrogate_clean_acc": 0.99 - s / 100}) for s in range(3)]
    cells.append(_cell("sem", "none", 0, generation={"surrogate_clean_acc": 0.9}))
    found = criteria.surrogates_fit(cells)
    assert found.met is False and found.measured == "EM worst seed 97.0 %"
    assert any(d.startswith("sem: min 90.0 %") for d in found.details)
    assert criteria.surrogates_fit(cells[:2]).met is True
    assert criteria.surrogates_fit(cells[3:]).met is None


def test_the_missions_time_sums_its_parts_of_the_main_variants() -> None:
    cells = [
        _cell("clean", "at4", 0, wall_s={"train": 50.0, "robust_eval": 10.0}),
        _cell("sem", "at4", 0, wall_s={"train": 50.0}, generation={"wall_s": 100.0}),
        _cell("sem", "at4", 1, wall_s={"train": 50.0}, generation={"wall_s": 100.0}),
        _cell("rem", "at4", 0, wall_s={"train": 50.0}, generation={"wall_s": 200.0}),
        # one seed of a sweep's variant: not what the mission's command runs
        _cell("sem", "at4", 0, method_hash="sweep", wall_s={"train": 50.0}, generation={"wall_s": 9000.0}),
    ]
    found = criteria.evaluate_protocol(cells, "fashion-mnist", "smoke")[3]
    assert found.met is True and found.measured.startswith("seed 0: 460 s")
    cells[3]["generation"]["wall_s"] = 400.0
    assert criteria.evaluate_protocol(cells, "fashion-mnist", "smoke")[3].met is False  # 660 s
    assert criteria.mission_time(cells[1:]).met is None  # no clean cell
    # a protocol whose parts alone exceed the budget is measured without the rest: a lower bound, not met
    slow = [_cell("clean", "at8", 0, wall_s={"train": 700.0, "robust_eval": 5.0})]
    found = criteria.mission_time(slow, "at8")
    assert found.met is False and found.measured.startswith("at least 705 s: seed 0's clean cells alone")
    assert criteria.mission_time(slow[:1], "at4").met is None  # another protocol's defense: nothing measured


def test_the_pool_schedule_of_the_missions_parts() -> None:
    # clean (no generation), sem, rem: on two workers clean's cell runs while rem's generation does, and the
    # command takes as long as its longest chain of generation and cell plus what waited for a worker
    jobs = [(0.0, [60.0]), (100.0, [50.0]), (200.0, [50.0])]
    assert criteria.pool_makespan(jobs, 1) == 460.0
    assert criteria.pool_makespan(jobs, 2) == 250.0  # rem: 200 s then its cell at 200 -> 250
    assert criteria.pool_makespan(jobs, 3) == 250.0
    assert criteria.pool_makespan([(10.0, [100.0])] * 3, 2) == 210.0  # the third generation before any cell
    assert criteria.pool_makespan([(10.0, [100.0, 20.0])], 2) == 110.0  # a job's cells side by side
    pool = {"device": "cpu (1 threads)", "executor": {"name": "local", "workers": 2}}
    cells = [
        _cell("clean", "at4", 0, wall_s={"train": 50.0, "robust_eval": 10.0}, env=pool),
        _cell("sem", "at4", 0, wall_s={"train": 50.0}, generation={"wall_s": 100.0}, env=pool),
        _cell("rem", "at4", 0, wall_s={"train": 50.0}, generation={"wall_s": 200.0}, env=pool),
    ]
    found = criteria.mission_time(cells)
    assert found.met is True and found.value == 250.0
    assert found.measured == "seed 0: 250 s (every seed: 250 to 250 s) on cpu (1 threads), 2 workers"
    for cell in cells:
        cell["env"] = {"device": "cpu (2 threads)"}  # one process: the parts' sum
    assert criteria.mission_time(cells).value == 460.0


def test_the_command(tmp_path: Path, capsys) -> None:
    root = tmp_path / "cells"
    for seed in (0, 1):
        write_cell(root, "clean", "cccc0000", preset="smoke", seed=seed, robust=(0.5, 4.0))
    assert validate_cli.main(["--results-dir", str(root), "--expected-dir", "", "--preset", "smoke"]) == 1
    out = capsys.readouterr().out
    assert "protocol smoke on fashion-mnist: validity criteria" in out and "0 of 4 criteria met" in out
    validate_cli.main(["--results-dir", str(root), "--expected-dir", ""])  # without --preset: the file checks only
    assert "validity criteria" not in capsys.readouterr().out
    other = tmp_path / "more"
    write_cell(other, "clean", "cccc0000", preset="smoke", defense="at4", seed=0, robust=(0.7, 4.0))
    write_cell(other, "clean", "cccc0000", preset="smoke", seed=0, robust=(0.5, 4.0))  # replaces root's seed-0 cell
    validate_cli.main(["--results-dir", str(root), str(other), "--expected-dir", "", "--preset", "smoke"])
    assert f"3 valid cells under {root} and {other}" in capsys.readouterr().out
    assert validate_cli.main(["--results-dir", str(root), str(tmp_path / "none"), "--preset", "smoke"]) == 2
    assert validate_cli.main(["--results-dir", str(root), "--preset", "smoke", "--dataset", "nonsense"]) == 2
    assert validate_cli.main(["--results-dir", str(root), "--preset", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["(a) plateau", "(b) adversarial training acts", "(c) surrogates fit", "(d) quick"])
def test_every_criterion_is_reported(name: str) -> None:
    lines = criteria.report(criteria.evaluate_protocol([], "fashion-mnist", "smoke"), "fashion-mnist", "smoke")
    assert any(line.startswith(f"{name}: not measured") for line in lines)
