"""Tests for benchmarks.store (ResultStore), benchmarks.cache (NoiseCache) and benchmarks.io (atomic writes)."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from benchmarks.cache import NoiseCache, _digest
from benchmarks.data import make_synthetic
from benchmarks.io import atomic_write, atomic_write_text, check_writable
from benchmarks.store import SCHEMA, CellKey, ResultStore, validate_cell
from benchmarks.types import Budget, ImageSet, Poison

# --------------------------------------------------------------------------------------------- helpers


@pytest.fixture
def key() -> CellKey:
    return CellKey("synthetic", "smoke", "em", "abcd1234", "tiny_cnn", "none", "0000abcd", 0)


def _record(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "dataset": "synthetic",
        "preset": "smoke",
        "method": "em",
        "method_hash": "abcd1234",
        "victim": "tiny_cnn",
        "defense": "none",
        "protocol_hash": "0000abcd",
        "seed": 0,
        "status": "ok",
        "metrics": {"final_acc": 0.5, "peak_acc": 0.75},
        "env": {"torch": "x"},
    }
    record.update(overrides)
    return record


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and (p.name.endswith(".tmp") or p.name.startswith("."))]


@pytest.fixture
def data() -> ImageSet:
    train, _ = make_synthetic(n_train=8, n_test=2, num_classes=2, shape=(3, 8, 8))
    return train


@pytest.fixture
def poison(data: ImageSet) -> Poison:
    delta = torch.randint(-8, 9, data.x.shape, generator=torch.Generator().manual_seed(0)).to(torch.int8)
    return Poison(delta, False, {"wall_s": 1.5, "steps": 3, "device": "cpu (2 threads)"})


# --------------------------------------------------------------------------------------------- ResultStore


def test_cell_key_paths(key: CellKey, tmp_path: Path) -> None:
    assert key.cell_id == "em-abcd1234__tiny_cnn__none-0000abcd__s0"
    expect = tmp_path / "synthetic" / "smoke" / "em-abcd1234__tiny_cnn__none-0000abcd__s0.json"
    assert ResultStore(tmp_path).path(key) == expect


def test_store_round_trip(key: CellKey, tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    assert store.load(key) is None and not store.is_done(key)
    path = store.write(key, _record())
    assert path == store.path(key) and path.is_file()
    loaded = store.load(key)
    assert loaded == {"schema": SCHEMA, "cell_id": key.cell_id, **_record()}
    assert store.is_done(key)
    assert json.loads(path.read_text()) == loaded  # valid JSON on disk
    assert _temp_files(tmp_path) == []


def test_store_overwrite_and_error_status(key: CellKey, tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.write(key, _record(status="error", metrics={}))
    assert store.load(key)["status"] == "error"
    assert not store.is_done(key)  # an error cell is not done
    store.write(key, _record())
    assert store.is_done(key)
    assert _temp_files(tmp_path) == []


@pytest.mark.parametrize(
    "content",
    [
        "",
        '{"schema": 1, "cell_id": "x"',  # truncated
        "not json at all",
        "[1, 2, 3]",
        "null",
        "\x00\x01\x02",
    ],
)
def test_store_unreadable_file_counts_as_absent(key: CellKey, tmp_path: Path, caplog, content: str) -> None:
    store = ResultStore(tmp_path)
    path = store.path(key)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with caplog.at_level(logging.WARNING, logger="benchmarks.store"):
        assert store.load(key) is None
    assert not store.is_done(key)
    assert any(str(path) in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_store_truncated_valid_file_counts_as_absent(key: CellKey, tmp_path: Path, caplog) -> None:
    store = ResultStore(tmp_path)
    path = store.write(key, _record())
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with caplog.at_level(logging.WARNING):
        assert store.load(key) is None
    assert "unreadable" in caplog.text


@pytest.mark.parametrize(
    "change",
    [
        {"schema": 1},
        {"schema": "1"},
        {"seed": "0"},
        {"metrics": {"final_acc": "0.5", "peak_acc": 0.5}},
        {"metrics": {"final_acc": 1.5, "peak_acc": 0.5}},
        {"metrics": {"peak_acc": 0.5}},
        {"env": None},
        {"status": 1},
    ],
)
def test_store_wrong_schema_counts_as_absent(key: CellKey, tmp_path: Path, caplog, change: dict[str, Any]) -> None:
    store = ResultStore(tmp_path)
    path = store.path(key)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"schema": SCHEMA, "cell_id": key.cell_id, **_record(), **change}))
    with caplog.at_level(logging.WARNING):
        assert store.load(key) is None
    assert "invalid" in caplog.text


def test_store_missing_field_counts_as_absent(key: CellKey, tmp_path: Path, caplog) -> None:
    record = {"schema": SCHEMA, "cell_id": key.cell_id, **_record()}
    del record["victim"]
    path = ResultStore(tmp_path).path(key)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING):
        assert ResultStore(tmp_path).load(key) is None
    assert "'victim'" in caplog.text


@pytest.mark.parametrize("metrics", [[], None, "0.5"])
def test_store_non_dict_metrics_counts_as_absent(key: CellKey, tmp_path: Path, metrics: Any) -> None:
    path = ResultStore(tmp_path).path(key)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"schema": SCHEMA, "cell_id": key.cell_id, **_record(metrics=metrics)}))
    assert ResultStore(tmp_path).load(key) is None


@pytest.mark.parametrize(
    "change",
    [
        {"metrics": {"final_acc": "0.5", "peak_acc": 0.5}},
        {"metrics": {"final_acc": 1.01, "peak_acc": 0.5}},
        {"metrics": {"final_acc": -0.1, "peak_acc": 0.5}},
        {"metrics": {"final_acc": 0.5, "peak_acc": float("nan")}},
        {"metrics": {"final_acc": 1, "peak_acc": 0.5}},  # int, not float
        {"status": 1},  # the key's own fields are taken from the key
        {"env": []},
    ],
)
def test_store_write_refuses_invalid_record(key: CellKey, tmp_path: Path, change: dict[str, Any]) -> None:
    """Invalid metrics, status or env are refused; the key's coordinates always come from the key."""
    store = ResultStore(tmp_path)
    with pytest.raises(ValueError, match="refusing to write"):
        store.write(key, _record(**change))
    assert not store.path(key).exists()
    assert store.load(key) is None


def test_store_write_refuses_invalid_record_keeps_old(key: CellKey, tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.write(key, _record())
    with pytest.raises(ValueError):
        store.write(key, _record(metrics={"final_acc": 2.0, "peak_acc": 0.5}))
    assert store.load(key)["metrics"]["final_acc"] == 0.5


def test_validate_cell() -> None:
    assert validate_cell({"schema": SCHEMA, "cell_id": "c", **_record()}) == []
    assert validate_cell([]) == ["cell is not a JSON object"]
    assert validate_cell({"schema": SCHEMA, "cell_id": "c", **_record(status="error", metrics={})}) == []


def test_store_records_yields_only_valid(tmp_path: Path, caplog) -> None:
    store = ResultStore(tmp_path)
    keys = [CellKey("synthetic", "smoke", "em", "h", "tiny_cnn", d, "0000abcd", 0) for d in ("none", "at4", "jpeg10")]
    for k in keys:
        store.write(k, _record(defense=k.defense))
    store.path(keys[1]).write_text("{ broken")
    (tmp_path / "synthetic" / "smoke" / "notes.json").write_text('{"hello": 1}')
    (tmp_path / "synthetic" / "smoke" / "readme.txt").write_text("not a cell")
    with caplog.at_level(logging.WARNING):
        records = list(store.records())
    assert sorted(r["defense"] for r in records) == ["jpeg10", "none"]
    assert all(validate_cell(r) == [] for r in records)
    assert list(ResultStore(tmp_path / "missing").records()) == []


def test_check_writable_ok_and_leaves_no_probe(tmp_path: Path) -> None:
    ResultStore(tmp_path).check_writable()
    ResultStore(tmp_path / "a" / "b").check_writable()  # not created yet: checked through an existing ancestor
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # the probe files are removed


def test_check_writable_raises_under_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="cannot write"):
        ResultStore(blocker / "sub").check_writable()
    with pytest.raises(PermissionError):
        check_writable(blocker)


# --------------------------------------------------------------------------------------------- NoiseCache


def test_cache_round_trip(tmp_path: Path, data: ImageSet, poison: Poison) -> None:
    cache = NoiseCache(tmp_path)
    path = cache.path("synthetic", "em-abc-s0")
    assert path == tmp_path / "synthetic" / "em-abc-s0.npz"
    assert cache.load(path, data, Budget()) is None
    cache.save(path, poison)
    loaded = cache.load(path, data, Budget())
    assert loaded is not None
    assert loaded.delta.dtype == torch.int8 and torch.equal(loaded.delta, poison.delta)
    assert loaded.classwise is False
    assert loaded.stats == {**poison.stats, "cache": "hit"}
    assert "cache" not in poison.stats
    assert _temp_files(tmp_path) == []


def test_cache_round_trip_classwise(tmp_path: Path, data: ImageSet) -> None:
    cache = NoiseCache(tmp_path)
    poison = Poison(torch.full((2, 3, 8, 8), -4, dtype=torch.int8), True, {"steps": 1})
    path = cache.path("synthetic", "cw")
    cache.save(path, poison)
    loaded = cache.load(path, data, Budget("linf", 4))
    assert loaded is not None and loaded.classwise and torch.equal(loaded.delta, poison.delta)


def test_cache_file_is_plain_npz(tmp_path: Path, poison: Poison) -> None:
    path = tmp_path / "p.npz"
    NoiseCache(tmp_path).save(path, poison)
    with np.load(path, allow_pickle=False) as npz:
        assert set(npz.files) == {"delta", "meta"}
        meta = json.loads(str(npz["meta"]))
        assert meta["sha256"] == _digest(npz["delta"])


def _load_quietly(cache: NoiseCache, path: Path, data: ImageSet, budget: Budget, caplog) -> Poison | None:
    with caplog.at_level(logging.WARNING, logger="benchmarks.cache"):
        return cache.load(path, data, budget)


def test_cache_truncated_file_is_rejected(tmp_path: Path, data: ImageSet, poison: Poison, caplog) -> None:
    cache = NoiseCache(tmp_path)
    path = tmp_path / "p.npz"
    cache.save(path, poison)
    raw = path.read_bytes()
    for keep in (0, 10, len(raw) // 2, len(raw) - 10):
        path.write_bytes(raw[:keep])
        assert _load_quietly(cache, path, data, Budget(), caplog) is None, keep
    assert "unusable" in caplog.text


def test_cache_corrupted_central_directory_is_rejected(tmp_path: Path, data: ImageSet, poison: Poison, caplog) -> None:
    cache = NoiseCache(tmp_path)
    path = tmp_path / "p.npz"
    cache.save(path, poison)
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) - 40, len(raw)):  # the end-of-central-directory record and the tail of the directory
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert _load_quietly(cache, path, data, Budget(), caplog) is None


def test_cache_flipped_bytes_in_the_middle_are_rejected(tmp_path: Path, data: ImageSet, poison: Poison, caplog) -> None:
    cache = NoiseCache(tmp_path)
    path = tmp_path / "p.npz"
    cache.save(path, poison)
    raw = path.read_bytes()
    for offset in range(100, len(raw) - 100, max(1, len(raw) // 25)):
        corrupted = bytearray(raw)
        corrupted[offset] ^= 0xFF
        path.write_bytes(bytes(corrupted))
        loaded = _load_quietly(cache, path, data, Budget(), caplog)
        assert loaded is None or torch.equal(loaded.delta, poison.delta), offset


def test_cache_flipped_bytes_never_yield_wrong_noise(tmp_path: Path, data: ImageSet, poison: Poison, caplog) -> None:
    """Whatever a flipped byte does (error or not), the cache never returns noise that differs from what was saved."""
    cache = NoiseCache(tmp_path)
    path = tmp_path / "p.npz"
    cache.save(path, poison)
    raw = path.read_bytes()
    for offset in range(0, len(raw), max(1, len(raw) // 50)):
        corrupted = bytearray(raw)
        corrupted[offset] ^= 0xFF
        path.write_bytes(bytes(corrupted))
        try:
            loaded = _load_quietly(cache, path, data, Budget(), caplog)
        except Exception:  # noqa: BLE001 - a crash is a failure of the test above
            continue
        assert loaded is None or torch.equal(loaded.delta, poison.delta), offset


def _write_npz(path: Path, **arrays: Any) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path.write_bytes(buf.getvalue())


def test_cache_swapped_delta_with_old_checksum_is_rejected(
    tmp_path: Path, data: ImageSet, poison: Poison, caplog
) -> None:
    path = tmp_path / "p.npz"
    NoiseCache(tmp_path).save(path, poison)
    with np.load(path, allow_pickle=False) as npz:
        meta = str(npz["meta"])
    other = poison.delta.numpy().copy()
    other[0, 0, 0, 0] = -other[0, 0, 0, 0] if other[0, 0, 0, 0] != 0 else 1
    _write_npz(path, delta=other, meta=np.array(meta))
    assert _load_quietly(NoiseCache(tmp_path), path, data, Budget(), caplog) is None
    assert "checksum" in caplog.text


def test_cache_over_budget_with_matching_checksum_is_rejected(tmp_path: Path, data: ImageSet, caplog) -> None:
    path = tmp_path / "p.npz"
    NoiseCache(tmp_path).save(path, Poison(torch.full(data.x.shape, 12, dtype=torch.int8)))
    assert NoiseCache(tmp_path).load(path, data, Budget("linf", 16)) is not None
    assert _load_quietly(NoiseCache(tmp_path), path, data, Budget("linf", 8), caplog) is None
    assert "budget" in caplog.text


def test_cache_wrong_shape_or_dtype_is_rejected(tmp_path: Path, data: ImageSet, caplog) -> None:
    cache = NoiseCache(tmp_path)
    path = tmp_path / "p.npz"
    cache.save(path, Poison(torch.zeros((3, 3, 8, 8), dtype=torch.int8)))
    assert _load_quietly(cache, path, data, Budget(), caplog) is None
    delta = np.zeros(tuple(data.x.shape), dtype=np.int16)
    meta = json.dumps({"classwise": False, "stats": {}, "sha256": _digest(delta)})
    _write_npz(path, delta=delta, meta=np.array(meta))
    assert _load_quietly(cache, path, data, Budget(), caplog) is None


def test_cache_object_array_is_rejected(tmp_path: Path, data: ImageSet, caplog) -> None:
    path = tmp_path / "p.npz"
    obj = np.empty(2, dtype=object)
    obj[0], obj[1] = {"a": 1}, [1, 2]
    _write_npz(path, delta=obj, meta=np.array("{}"))
    assert _load_quietly(NoiseCache(tmp_path), path, data, Budget(), caplog) is None
    assert "pickle" in caplog.text.lower()


@pytest.mark.parametrize(
    "meta",
    [
        "not json",
        "[]",
        '{"classwise": false, "stats": {}}',  # no checksum
        "5",
    ],
)
def test_cache_bad_metadata_is_rejected(tmp_path: Path, data: ImageSet, caplog, meta: str) -> None:
    path = tmp_path / "p.npz"
    _write_npz(path, delta=np.zeros(tuple(data.x.shape), dtype=np.int8), meta=np.array(meta))
    assert _load_quietly(NoiseCache(tmp_path), path, data, Budget(), caplog) is None


def test_cache_missing_array_is_rejected(tmp_path: Path, data: ImageSet, caplog) -> None:
    path = tmp_path / "p.npz"
    _write_npz(path, delta=np.zeros(tuple(data.x.shape), dtype=np.int8))
    assert _load_quietly(NoiseCache(tmp_path), path, data, Budget(), caplog) is None


def test_cache_not_a_zip_is_rejected(tmp_path: Path, data: ImageSet, caplog) -> None:
    path = tmp_path / "p.npz"
    path.write_bytes(b"hello world, not a zip file at all")
    assert _load_quietly(NoiseCache(tmp_path), path, data, Budget(), caplog) is None
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("other.txt", "x")
    assert _load_quietly(NoiseCache(tmp_path), path, data, Budget(), caplog) is None


# --------------------------------------------------------------------------------------------- atomic writes


def test_atomic_write_creates_parents_and_writes(tmp_path: Path) -> None:
    path = tmp_path / "x" / "y" / "out.bin"
    atomic_write(path, lambda f: f.write(b"abc"))
    assert path.read_bytes() == b"abc"
    atomic_write_text(path, "héllo")
    assert path.read_text(encoding="utf-8") == "héllo"
    assert _temp_files(tmp_path) == []


def test_atomic_write_failure_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "out.json"

    def fail(f) -> None:
        f.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(path, fail)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_failure_keeps_old_content(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    path.write_text("old")

    def fail(f) -> None:
        f.write(b"new but partial")
        raise KeyboardInterrupt  # BaseException too

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, fail)
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]


def test_cache_save_failure_keeps_old_file(tmp_path: Path, data: ImageSet, poison: Poison) -> None:
    cache = NoiseCache(tmp_path)
    path = tmp_path / "p.npz"
    cache.save(path, poison)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        cache.save(path, Poison(poison.delta, False, {"bad": object()}))  # stats not JSON-able
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]
