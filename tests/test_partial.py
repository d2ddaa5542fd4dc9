"""Partial protection: the published index lists, the parts a cell trains on, their keys and the campaign."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import partial
from benchmarks import run as runner
from benchmarks.campaign import run_campaign
from benchmarks.data import make_synthetic
from benchmarks.partial import check_fraction, index_digest, parse_part, protected_index, training_part
from benchmarks.plugins import load_plugins
from benchmarks.registry import METHODS
from benchmarks.spec import CampaignSpec
from benchmarks.store import CellKey
from benchmarks.types import Context, Poison

load_plugins()

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_lists_are_fixed_nested_and_depend_on_the_size_only() -> None:
    lists = {f: protected_index(1000, f) for f in (0.2, 0.4, 0.6, 0.8, 1.0)}
    assert [len(v) for v in lists.values()] == [200, 400, 600, 800, 1000]
    for small, large in ((0.2, 0.4), (0.4, 0.6), (0.6, 0.8)):
        assert set(lists[small].tolist()) <= set(lists[large].tolist()), "nested"
    assert torch.equal(lists[0.4], lists[0.4].sort().values)
    assert torch.equal(protected_index(1000, 0.4), lists[0.4])
    assert not torch.equal(protected_index(1001, 0.4)[:50], lists[0.4][:50])
    assert index_digest(lists[0.4]) == index_digest(torch.tensor(json.loads(json.dumps(lists[0.4].tolist()))))


@pytest.mark.parametrize("bad", [0, -0.2, 1.5, 0.333, float("nan"), True, "0.4"])
def test_bad_fractions(bad: object) -> None:
    with pytest.raises(ValueError, match="protected fraction"):
        check_fraction(bad)  # type: ignore[arg-type]


def test_part_names() -> None:
    assert parse_part("p40") == ("p", 0.4) and parse_part("rest5") == ("rest", 0.05)
    for bad in ("p0", "p100", "q40", "rest", "p4x"):
        with pytest.raises(ValueError, match="part"):
            parse_part(bad)


@pytest.mark.parametrize("method", ["random", "sc", "ops"])
def test_parts_of_the_training_set(method: str) -> None:
    train, _ = make_synthetic(n_train=50, n_test=4, num_classes=5, shape=(3, 8, 8))
    m = METHODS.get(method)()
    poison: Poison = m.generate(train, m.budget(train.shape, 8.0), Context(seed=0, progress=False))
    whole = poison.apply(train)
    index = protected_index(50, 0.4)
    rest = torch.ones(50, dtype=torch.bool)
    rest[index] = False
    mixed = training_part(poison, train, "p40")
    assert torch.equal(mixed.x[index], whole.x[index]), "the listed images are protected"
    assert torch.equal(mixed.x[rest], train.x[rest]), "the others stay clean"
    assert torch.equal(mixed.y, train.y)
    alone = training_part(poison, train, "rest40")
    assert torch.equal(alone.x, train.x[rest]) and torch.equal(alone.y, train.y[rest])
    assert torch.equal(training_part(poison, train, "").x, whole.x)


def test_cell_keys_of_parts() -> None:
    whole = CellKey("d", "p", "em", "h", "v", "none", "abcd", 0)
    part = CellKey("d", "p", "em", "h", "v", "none", "abcd", 0, "p40")
    assert whole.cell_id == "em-h__v__none-abcd__s0" and "part" not in whole.fields()
    assert part.cell_id == "em-h__v__none-abcd__p40__s0" and part.fields()["part"] == "p40"
    assert CellKey.of({**part.fields(), "seed": 0}) == part and CellKey.of(whole.fields()) == whole


@pytest.mark.timeout(300)
def test_a_campaign_with_a_fraction(tmp_path: Path) -> None:
    spec = CampaignSpec(
        dataset="synthetic", preset="tiny", methods=("random",), fractions=(1.0, 0.4), progress=False,
        results_dir=tmp_path / "cells", cache_dir=tmp_path / "cache",
    )  # fmt: skip
    frame = run_campaign(spec)
    assert sorted(frame["label"]) == ["clean", "clean [rest40]", "random", "random [p40]"]
    assert (frame["status"] == "ok").all() and set(frame["train_size"]) == {256.0}
    records = [json.loads(p.read_text()) for p in (tmp_path / "cells").rglob("*.json")]
    digest = index_digest(protected_index(256, 0.4))
    for r in records:
        if r.get("part"):
            assert r["partial"]["index_sha256"] == digest and r["partial"]["fraction"] == 0.4
            trained, protected = (256, 102) if r["part"] == "p40" else (154, 0)
            assert (r["partial"]["trained_images"], r["partial"]["protected_images"]) == (trained, protected)
        else:
            assert "partial" not in r and "part" not in r


def test_bad_fractions_are_refused_before_any_work(tmp_path: Path, capsys) -> None:
    argv = ["--dataset", "synthetic", "--preset", "tiny", "--methods", "random", "--fractions", "1", "0.333"]
    argv += ["--results-dir", str(tmp_path / "cells"), "--cache-dir", str(tmp_path / "c"), "--no-progress"]
    assert runner.main(argv) == 2
    assert "--fractions" in capsys.readouterr().err
    assert not (tmp_path / "cells").exists() or not any((tmp_path / "cells").rglob("*.json"))


def test_the_list_command(tmp_path: Path, capsys) -> None:
    out = tmp_path / "p40.json"
    assert partial.main(["--size", "20", "--fraction", "0.4", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == protected_index(20, 0.4).tolist()
    assert partial.main(["--size", "20", "--fraction", "1.5"]) == 2
    assert "--fraction" in capsys.readouterr().err


@pytest.mark.parametrize("size", [3000, 50000])
def test_the_published_lists_are_the_generators(size: int) -> None:
    """results/partial/size-N/pF.json: the smoke slice (3000) and CIFAR-10/100's training sets (50000)."""
    root = Path(__file__).resolve().parents[1] / "results" / "partial" / f"size-{size}"
    for fraction in partial.PAPER_FRACTIONS:
        path = root / f"p{round(fraction * 100)}.json"
        assert json.loads(path.read_text()) == protected_index(size, fraction).tolist(), path
