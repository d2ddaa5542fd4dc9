"""The typed campaign API (``CampaignSpec`` -> ``run_campaign`` -> DataFrame), the ``uebench`` command, and
what keeps old results usable: ``uebench validate`` and ``uebench migrate``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from benchmarks import cli
from benchmarks import run as runner
from benchmarks.campaign import run_campaign
from benchmarks.errors import UsageError
from benchmarks.spec import CampaignSpec
from benchmarks.store import SCHEMA, ResultStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _spec(tmp_path: Path, **fields) -> CampaignSpec:
    base = dict(dataset="synthetic", preset="tiny", methods=("random",), defenses=("none",), progress=False)
    return CampaignSpec(**{**base, "results_dir": tmp_path / "cells", "cache_dir": tmp_path / "cache", **fields})


@pytest.mark.timeout(300)
def test_run_campaign_returns_the_cells_and_the_cli_goes_through_the_same_engine(tmp_path: Path) -> None:
    frame = run_campaign(_spec(tmp_path / "api", methods=("random", "em"), seeds=(0, 1)))
    assert isinstance(frame, pd.DataFrame) and len(frame) == 6  # (clean, random, em) x seeds 0 1
    assert set(frame["method"]) == {"clean", "random", "em"} and (frame["status"] == "ok").all()
    assert frame["final_acc"].between(0, 1).all() and frame["protocol_hash"].str.len().eq(8).all()
    argv = ["--dataset", "synthetic", "--preset", "tiny", "--methods", "random", "em", "--seeds", "0", "1"]
    argv += ["--no-progress", "--results-dir", str(tmp_path / "cli" / "cells"), "--cache-dir", str(tmp_path / "c")]
    assert runner.main(argv) == 0
    cli_cells = {
        json.loads(p.read_text())["cell_id"]: json.loads(p.read_text()) for p in (tmp_path / "cli").rglob("*.json")
    }
    for row in frame.itertuples():
        assert cli_cells[row.cell_id]["metrics"]["final_acc"] == row.final_acc  # the same cell, the same number


def test_a_bad_spec_raises_usage_error_before_anything_is_written(tmp_path: Path) -> None:
    for fields, message in [
        ({"methods": ("nope",)}, "unknown method 'nope'"),
        ({"options": {"random": {"nope": 1}}}, "unknown option 'nope'"),
        ({"precision": "fp16"}, "--precision must be one of fp32, tf32, bf16"),
        ({"precision": "tf32", "device": "cpu"}, "--precision tf32 needs CUDA"),
        ({"compile_mode": "jit"}, "--compile must be one of eager, compile, graphs"),
        ({"compile_mode": "graphs", "device": "cpu"}, "--compile graphs needs CUDA"),
        ({"seeds": (-1,)}, "non-negative"),
        ({"victims": ("timm/not_a_model",)}, "is not a timm model"),
        ({"executor": "dask"}, "--executor must be local or ray"),
        ({"channels_last": "yes"}, "channels_last must be true, false or null"),
    ]:
        with pytest.raises(UsageError, match=message):
            run_campaign(_spec(tmp_path, **fields))
    assert not any(tmp_path.iterdir())


def test_the_uebench_command_dispatches_and_every_help_lists_defaults(capsys) -> None:
    assert cli.main([]) == 2 and "commands:" in capsys.readouterr().out
    assert cli.main(["nope"]) == 2 and "unknown command 'nope'" in capsys.readouterr().err
    for command in ("run", "leaderboard", "correlation", "speed", "gallery", "validate", "study", "claims"):
        with pytest.raises(SystemExit) as info:
            cli.main([command, "--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: uebench {command}") and "(default: " in out, command


def test_pip_install_gives_the_uebench_console_script() -> None:
    """``[project.scripts]`` of pyproject.toml (what ``pip install .`` turns into the ``uebench`` command)."""
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"] == {"uebench": "benchmarks.cli:main"}
    module, _, function = pyproject["project"]["scripts"]["uebench"].partition(":")
    assert getattr(__import__(module, fromlist=[function]), function) is cli.main


@pytest.mark.timeout(300)
def test_validate_accepts_a_campaign_and_names_a_broken_cell(tmp_path: Path, capsys) -> None:
    run_campaign(_spec(tmp_path))
    cells = tmp_path / "cells"
    assert cli.main(["validate", "--results-dir", str(cells), "--expected-dir", ""]) == 0
    assert "2 valid cells" in capsys.readouterr().out
    path = sorted(cells.rglob("*.json"))[0]
    record = json.loads(path.read_text())
    record["train_size"] = 7  # no longer what its protocol hash says
    path.write_text(json.dumps(record))
    assert cli.main(["validate", "--results-dir", str(cells), "--expected-dir", ""]) == 1
    assert "does not match its record" in capsys.readouterr().out


@pytest.mark.timeout(300)
def test_migrate_turns_schema_1_cells_into_the_cells_a_run_finds(tmp_path: Path, capsys) -> None:
    spec = _spec(tmp_path)
    run_campaign(spec)
    store = ResultStore(spec.results_dir)
    for path in sorted(spec.results_dir.rglob("*.json")):  # make them look like schema-1 cells
        record = json.loads(path.read_text())
        old_id = record["cell_id"].replace(f"-{record.pop('protocol_hash')}__s", "__s")
        record.update(schema=1, cell_id=old_id)
        path.unlink()
        (path.parent / f"{old_id}.json").write_text(json.dumps(record))
    with pytest.raises(UsageError, match="uebench migrate"):
        run_campaign(spec)
    assert cli.main(["migrate", str(spec.results_dir)]) == 0
    assert "2 cells migrated" in capsys.readouterr().out
    records = list(store.records())
    assert len(records) == 2 and {r["schema"] for r in records} == {SCHEMA}
    stamps = {p: p.stat().st_mtime_ns for p in spec.results_dir.rglob("*.json")}
    run_campaign(spec)  # the migrated cells are found: nothing is trained again
    assert {p: p.stat().st_mtime_ns for p in spec.results_dir.rglob("*.json")} == stamps
