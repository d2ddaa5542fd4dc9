"""The runner CLI: bad input fails cleanly; a small campaign writes cells, prints the matrix, resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import run as runner

FAST = ["--dataset", "synthetic", "--preset", "tiny", "--no-progress"]


def _run(tmp_path: Path, *args: str) -> int:
    return runner.main([*args, "--results-dir", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache")])


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--methods", "nope"], "unknown method 'nope'; accepted:"),
        (["--methods", "x*"], "matches nothing"),
        (["--victims", "nope"], "unknown victim 'nope'"),
        (["--victims", "timm/not_a_model"], "unknown victim"),
        (["--defense", "nope"], "unknown defense 'nope'; accepted:"),
        (["--defense", "jpeg0"], "quality must be in 1..100"),
        (["--defense", "at0"], "radius k must be in 1..64"),
        (["--dataset", "nope"], "unknown dataset 'nope'"),
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--radius", "abc"], "--radius must be a number"),
        (["--radius", "-1"], "--radius must be in (0, 127]"),
        (["--radius", "400"], "--radius must be in (0, 127]"),
        (["--seeds", "x"], "invalid int value"),
        (["--seeds", "-3"], "non-negative"),
        (["--methods"], "expected at least one argument"),
        (["--set", "em.nope=1", "--methods", "em"], "unknown option 'nope'"),
        (["--set", "em.steps=abc", "--methods", "em"], "expected int"),
        (["--set", "sem.steps=1", "--methods", "em"], "not in --methods"),
        (["--set", "garbage", "--methods", "em"], "METHOD.KEY=VALUE"),
        (["--set", "em.augment=bogus", "--methods", "em"], "expected one of 'crop_flip', 'resized_crop_flip', 'none'"),
        (["--set", "tap.augment=bogus", "--methods", "tap"], "expected one of"),
        (["--set", "em.surrogate=nosuch", "--methods", "em"], "unknown surrogate 'nosuch'; accepted:"),
        (["--set", "sem.surrogate=nosuch", "--methods", "sem"], "unknown surrogate 'nosuch'"),
        (["--set", "em-cw.surrogate=timm/not_a_model", "--methods", "em-cw"], "is not a timm model"),
        (["--device", "tpu"], "--device must be"),
        (["--device", "cuda:0"], "CUDA is not available"),
        (["--bogus-flag"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, args, expect) -> None:
    if "cuda" in " ".join(args):
        pytest.importorskip("torch")
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA present")
    assert _run(tmp_path, "--dataset", "synthetic", *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("uebench: error:") and expect in err and "\n" not in err
    assert not any(tmp_path.iterdir()), "nothing may be written on bad input"


def test_unwritable_results_dir(tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = runner.main(["--dataset", "synthetic", "--results-dir", str(blocker / "sub"), "--cache-dir", str(tmp_path)])
    assert code == 2
    assert "--results-dir: cannot write" in capsys.readouterr().err


def test_missing_dataset_is_a_clear_error(tmp_path, capsys) -> None:
    assert _run(tmp_path, "--dataset", "cifar10", "--data-root", str(tmp_path / "nothing")) == 2
    err = capsys.readouterr().err
    assert "--download" in err and not (tmp_path / "res").exists()


@pytest.mark.timeout(300)
def test_campaign_writes_cells_prints_matrix_and_resumes(tmp_path, capsys) -> None:
    args = [*FAST, "--methods", "em", "random", "--defense", "none", "cutout"]
    assert _run(tmp_path, *args) == 0
    out = capsys.readouterr().out
    cells = sorted((tmp_path / "res" / "synthetic" / "tiny").glob("*.json"))
    assert len(cells) == 6  # (clean, em, random) x (none, cutout)
    for line in ("clean", "em", "random", "none", "cutout", "results:"):
        assert line in out
    record = json.loads(cells[0].read_text())
    assert record["status"] == "ok" and 0.0 <= record["metrics"]["final_acc"] <= 1.0
    assert record["env"]["torch"] and record["recipe"]["name"] == "tiny-20"
    stamps = {p: p.stat().st_mtime_ns for p in cells}
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 3

    assert _run(tmp_path, *args, "--defense", "none", "cutout", "mixup") == 0  # resume: only mixup is new
    out = capsys.readouterr().out
    assert out.count("test acc final") == 3
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items()), "finished cells must not be redone"


@pytest.mark.parametrize(
    "change",
    [{"recipe": {"eval_every": 5}}, {"defenses": {"at<k>": {"steps": 2}}}, {"train_size": 128}],
    ids=["recipe", "defense-options", "slice"],
)
def test_a_cell_of_another_protocol_is_a_new_cell(tmp_path, capsys, monkeypatch, change) -> None:
    """The protocol hash (recipe, defense options, slice sizes, precision) is part of the cell's key: a changed
    preset measures new cells and never mistakes the old ones for them (which stay, under their own key)."""
    from dataclasses import replace

    from benchmarks.registry import PRESETS

    args = [*FAST, "--methods", "random", "--defense", "at1"]
    assert _run(tmp_path, *args) == 0
    before = {p.name for p in (tmp_path / "res").rglob("*.json")}
    tiny = PRESETS.get("tiny")

    def changed(dataset: str):
        protocol = tiny(dataset)
        if "recipe" in change:
            return replace(protocol, recipe=replace(protocol.recipe, **change["recipe"]))
        if "defenses" in change:
            return replace(protocol, defenses=change["defenses"])
        return replace(protocol, **change)

    monkeypatch.setitem(PRESETS._items, "tiny", changed)
    capsys.readouterr()
    assert _run(tmp_path, *args) == 0
    assert capsys.readouterr().out.count("test acc final") == 2, "both cells are measured anew"
    after = {p.name for p in (tmp_path / "res").rglob("*.json")}
    assert before < after and len(after) == 4
    assert len({name.split("__")[2] for name in after}) == 2  # at1-<hash>: two protocol hashes


def test_precision_is_part_of_the_key(tmp_path, caplog, monkeypatch) -> None:
    """fp32 is the default on every device; bf16 is another cell (protocol hash) and another poison (cache key),
    and on a CPU without native bf16 a warned-about choice; tf32 is refused off CUDA before anything is written."""
    args = [*FAST, "--methods", "em", "--no-clean", "--defense", "none", "--set", "em.steps=2"]
    assert _run(tmp_path, *args) == 0
    assert _run(tmp_path, *args, "--precision", "fp32") == 0  # the default: the same cell, nothing redone
    assert len(list((tmp_path / "res").rglob("*.json"))) == 1
    monkeypatch.setattr("benchmarks.plan.cpu_bf16", lambda: "amx")  # native bf16: nothing to warn about
    with caplog.at_level("WARNING"):
        assert _run(tmp_path, *args, "--precision", "bf16") == 0
    assert "--precision bf16 on the CPU" not in caplog.text
    monkeypatch.setattr("benchmarks.plan.cpu_bf16", lambda: None)
    with caplog.at_level("WARNING"):
        assert _run(tmp_path, *args, "--precision", "bf16") == 0  # the same cell: resumed, but warned first
    assert "--precision bf16 on the CPU: this CPU has no native bf16" in caplog.text
    cells = sorted((json.loads(p.read_text()) for p in (tmp_path / "res").rglob("*.json")), key=lambda r: r["cell_id"])
    assert sorted(c["env"]["numerics"]["precision"] for c in cells) == ["bf16-autocast", "fp32"]
    assert len({c["protocol_hash"] for c in cells}) == 2
    entries = sorted(p.name for p in (tmp_path / "cache").rglob("*.npz"))
    assert len(entries) == 2 and sum(name.endswith("-bf16-autocast.npz") for name in entries) == 1
    assert _run(tmp_path / "tf32", *args, "--precision", "tf32") == 2
    assert not (tmp_path / "tf32").exists()


def test_channels_last_is_the_users_choice_and_recorded(tmp_path) -> None:
    """--channels-last turns the NHWC layout on where the default leaves it off (the CPU): the cells record it, the
    numbers stay within rounding of the default's, and it is not another cell or poison (like the thread count)."""
    args = [*FAST, "--methods", "em", "--defense", "none", "--set", "em.steps=2"]
    assert _run(tmp_path / "a", *args) == 0
    assert _run(tmp_path / "b", *args, "--channels-last") == 0
    cells = {
        side: sorted(
            (json.loads(p.read_text()) for p in (tmp_path / side / "res").rglob("*.json")), key=lambda r: r["cell_id"]
        )
        for side in ("a", "b")
    }
    assert [c["env"]["numerics"]["channels_last"] for c in cells["a"]] == [False, False]
    assert [c["env"]["numerics"]["channels_last"] for c in cells["b"]] == [True, True]
    assert [c["cell_id"] for c in cells["a"]] == [c["cell_id"] for c in cells["b"]]
    for a, b in zip(cells["a"], cells["b"], strict=True):  # 20 SGD steps: rounding has not had time to grow
        assert abs(a["metrics"]["final_acc"] - b["metrics"]["final_acc"]) <= 0.05
    noise = {side: next((tmp_path / side / "cache").rglob("*.npz")).name for side in ("a", "b")}
    assert noise["a"] == noise["b"]  # the same cache key


def test_sweep_makes_one_poison_variant_per_value(tmp_path: Path, capsys) -> None:
    """--sweep expands into variants with distinct hashes and configs; the matrix labels them by option."""
    results = tmp_path / "cells"
    argv = [
        "--dataset", "synthetic", "--preset", "tiny", "--methods", "random", "--defense", "none",
        "--sweep", "random.classwise=false,true", "--no-progress", "--no-clean",
        "--results-dir", str(results), "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    assert runner.main(argv) == 0
    records = [json.loads(p.read_text()) for p in sorted(results.rglob("*.json"))]
    assert sorted(r["method_cfg"]["classwise"] for r in records) == [False, True]
    assert len({r["method_hash"] for r in records}) == 2 and {r["method"] for r in records} == {"random"}
    out = capsys.readouterr().out
    assert "random (classwise=false)" in out and "random (classwise=true)" in out
    assert runner.main(argv) == 0  # resumes: nothing redone
    assert "test acc final" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "sweep",
    ["random.classwise", "random.classwise=", "em.steps=1,2", "random.classwise=true,true", "random.nope=1,2"],
)
def test_sweep_errors(tmp_path: Path, capsys, sweep: str) -> None:
    argv = ["--dataset", "synthetic", "--preset", "tiny", "--methods", "random", "--sweep", sweep,
            "--results-dir", str(tmp_path / "cells"), "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    assert runner.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("uebench: error:") and err.count("\n") == 1
    assert not (tmp_path / "cells").exists()


def test_a_failing_generation_is_an_error_row_and_the_campaign_goes_on(tmp_path, capsys, monkeypatch) -> None:
    """Any exception inside a noise generation: that poison's cells are error rows with the reason, the other
    cells are measured, the run ends with exit code 1 and a summary; --retry-errors redoes exactly those."""
    from methods.em import ErrorMinimizing

    def broken(self, *args, **kwargs):
        raise RuntimeError("a bug inside the method")

    monkeypatch.setattr(ErrorMinimizing, "perturb", broken)
    args = [*FAST, "--methods", "em", "random", "--defense", "none", "cutout"]
    assert _run(tmp_path, *args) == 1
    captured = capsys.readouterr()
    assert "2 of 6 cells failed" in captured.err and "--retry-errors" in captured.err
    records = {p.name.split("-")[0]: json.loads(p.read_text()) for p in (tmp_path / "res").rglob("*.json")}
    cells = [json.loads(p.read_text()) for p in (tmp_path / "res").rglob("*.json")]
    failed = [r for r in cells if r["status"] == "error"]
    assert {r["method"] for r in failed} == {"em"} and len(failed) == 2
    assert all(r["error"] == "generation failed: RuntimeError: a bug inside the method" for r in failed)
    assert all(r["train_size"] == 256 and r["budget"]["radius"] == 8.0 for r in failed)
    assert sum(r["status"] == "ok" for r in cells) == 4 and records
    assert not list((tmp_path / "cache").rglob("em-*.npz")), "a failed generation is not cached"

    monkeypatch.undo()
    assert _run(tmp_path, *args) == 1  # without --retry-errors the error rows stay
    assert _run(tmp_path, *args, "--retry-errors") == 0
    assert all(json.loads(p.read_text())["status"] == "ok" for p in (tmp_path / "res").rglob("*.json"))


def test_a_failing_cell_is_an_error_row(tmp_path, capsys, monkeypatch) -> None:
    """Any exception while training one victim (not only divergence or OOM) is that cell's error row."""
    import benchmarks.cells as run_module

    real = run_module.fit

    def flaky(model, train, test, defense, recipe, ctx, desc=""):
        if defense.name == "cutout":
            raise IndexError("index 9 is out of bounds")
        return real(model, train, test, defense, recipe, ctx, desc)

    monkeypatch.setattr(run_module, "fit", flaky)
    assert _run(tmp_path, *FAST, "--methods", "random", "--defense", "none", "cutout") == 1
    cells = [json.loads(p.read_text()) for p in (tmp_path / "res").rglob("*.json")]
    assert sorted((r["defense"], r["status"]) for r in cells) == [
        ("cutout", "error"), ("cutout", "error"), ("none", "ok"), ("none", "ok")
    ]  # fmt: skip
    assert all(r["error"] == "IndexError: index 9 is out of bounds" for r in cells if r["status"] == "error")
