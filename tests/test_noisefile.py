"""``--noise-file``: a poison made elsewhere (.npz of int8 noise or uint8 images, or PNGs) is checked and evaluated."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import write_png

from benchmarks import run as runner
from benchmarks.data import load_dataset, stratified_head
from benchmarks.noisefile import FileNoise, NoiseFileError, png_files
from benchmarks.registry import PRESETS
from benchmarks.types import Budget, ImageSet

FAST = ["--dataset", "synthetic", "--preset", "tiny", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def train() -> ImageSet:
    """The training slice a ``--dataset synthetic --preset tiny`` run uses."""
    protocol = PRESETS.get("tiny")("synthetic")
    return stratified_head(load_dataset("synthetic")[0], protocol.train_size)


def _delta(train: ImageSet, radius: int = 8, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-radius, radius + 1, train.x.shape, generator=g).to(torch.int8)


def _protected(train: ImageSet, delta: torch.Tensor) -> torch.Tensor:
    return (train.x.to(torch.int16) + delta).clamp(0, 255).to(torch.uint8)


def _pngs(folder: Path, x: torch.Tensor, names: list[str] | None = None) -> Path:
    folder.mkdir(parents=True)
    for i, image in enumerate(x):
        write_png(image, str(folder / (names[i] if names else f"{i}.png")))
    return folder


def _run(tmp_path: Path, *args: str) -> int:
    return runner.main([*FAST, *args, "--results-dir", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache")])


def _cells(tmp_path: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((tmp_path / "res").rglob("*.json"))}


# ----------------------------------------------------------------------------------------------- reading


def test_npz_delta_images_and_pngs_give_the_same_poison(tmp_path: Path, train: ImageSet) -> None:
    delta = _delta(train)
    x = _protected(train, delta)
    np.savez(tmp_path / "delta.npz", delta=delta.numpy(), y=train.y.numpy())
    np.savez_compressed(tmp_path / "images.npz", x=x.numpy())
    _pngs(tmp_path / "pngs", x)
    budget = Budget("linf", 8)
    protected = {}
    for name in ("delta.npz", "images.npz", "pngs"):
        method = FileNoise(tmp_path / name)
        poison = method.load(train, budget)
        assert poison.delta.dtype == torch.int8 and not poison.classwise
        protected[name] = poison.apply(train).x
    assert torch.equal(protected["delta.npz"], x)
    assert torch.equal(protected["images.npz"], x) and torch.equal(protected["pngs"], x)
    assert FileNoise(tmp_path / "pngs").name == "file:pngs"
    assert FileNoise(tmp_path / "images.npz").config.format == "npz"


def test_classwise_delta(tmp_path: Path, train: ImageSet) -> None:
    delta = torch.randint(-4, 5, (train.num_classes, *train.shape), generator=torch.Generator().manual_seed(0))
    np.savez(tmp_path / "cw.npz", delta=delta.to(torch.int8).numpy())
    poison = FileNoise(tmp_path / "cw.npz").load(train, Budget("linf", 4))
    assert poison.classwise and tuple(poison.delta.shape) == (train.num_classes, *train.shape)


def test_png_order_numeric_then_natural(tmp_path: Path) -> None:
    folder = tmp_path / "n"
    folder.mkdir()
    for i in (10, 2, 0, 1, 3, 4, 5, 6, 7, 8, 9):
        (folder / f"{i}.png").write_bytes(b"")
    assert [p.stem for p in png_files(folder)] == [str(i) for i in range(11)]
    other = tmp_path / "m"
    other.mkdir()
    for name in ("img10.png", "img2.png", "img1.png", "notes.txt"):
        (other / name).write_bytes(b"")
    assert [p.name for p in png_files(other)] == ["img1.png", "img2.png", "img10.png"]


def test_file_hash_is_the_content(tmp_path: Path, train: ImageSet) -> None:
    a, b = tmp_path / "a" / "p.npz", tmp_path / "b" / "p.npz"
    for path, seed in ((a, 1), (b, 2)):
        path.parent.mkdir()
        np.savez(path, delta=_delta(train, seed=seed).numpy())
    fa, fb = FileNoise(a), FileNoise(b)
    assert fa.name == fb.name == "file:p" and fa.hash != fb.hash and len(fa.hash) == 8
    assert FileNoise(a).hash == fa.hash


# -------------------------------------------------------------------------------------------------- the CLI


@pytest.mark.timeout(120)
def test_campaign_with_noise_files_records_resumes_and_never_collides(tmp_path: Path, train: ImageSet, capsys) -> None:
    delta = _delta(train)
    x = _protected(train, delta)
    files = tmp_path / "files"
    files.mkdir()
    np.savez(files / "delta.npz", delta=delta.numpy(), y=train.y.numpy())
    np.savez_compressed(files / "images.npz", x=x.numpy())
    _pngs(files / "pngs", x)
    args = ["--noise-file", str(files / "delta.npz"), "--noise-file", str(files / "images.npz")]
    args += ["--noise-file", str(files / "pngs"), "--no-clean"]
    assert _run(tmp_path, *args) == 0
    out = capsys.readouterr().out
    cells = _cells(tmp_path)
    assert len(cells) == 3 and "file:delta" in out and "file:pngs" in out
    for record in cells.values():
        assert record["method"].startswith("file:") and record["status"] == "ok"
        sha = record["method_cfg"]["sha256"]
        assert record["method_hash"] == sha[:8] and record["cell_id"].startswith(f"{record['method']}-{sha[:8]}__")
        assert record["budget"] == {"norm": "linf", "radius": 8.0}
        assert record["generation"]["source"] == "file" and "wall_s" not in record["generation"]
    formats = sorted(r["method_cfg"]["format"] for r in cells.values())
    assert formats == ["npz-delta", "npz-x", "png"]
    curves = {json.dumps(r["curve"]) for r in cells.values()}
    assert len(curves) == 1, "the same protected images must train the same victim"
    assert not (tmp_path / "cache").exists(), "file noise is never cached"

    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "res").rglob("*.json")}
    assert _run(tmp_path, *args) == 0  # resume: nothing to do
    assert "test acc final" not in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())

    np.savez(files / "delta.npz", delta=_delta(train, seed=7).numpy())  # same name, other content: new cells
    assert _run(tmp_path, "--noise-file", str(files / "delta.npz"), "--no-clean") == 0
    names = sorted(n for n in _cells(tmp_path) if n.startswith("file:delta"))
    assert len(names) == 2 and names[0].split("__")[0] != names[1].split("__")[0]


def test_budget_follows_radius(tmp_path: Path, train: ImageSet, capsys) -> None:
    np.savez(tmp_path / "big.npz", delta=(_delta(train) * 3).numpy())
    assert _run(tmp_path / "a", "--noise-file", str(tmp_path / "big.npz"), "--no-clean") == 2
    err = capsys.readouterr().err
    assert "max linf norm 24.000/255 > 8/255" in err and "\n" not in err.strip()
    assert not (tmp_path / "a").exists()
    assert _run(tmp_path / "b", "--noise-file", str(tmp_path / "big.npz"), "--no-clean", "--radius", "24") == 0


def _write_bad(kind: str, folder: Path, train: ImageSet) -> Path:
    """A broken or mismatched noise file of ``kind``; returns its path."""
    delta, n = _delta(train), len(train)
    path = folder / f"{kind}.npz"
    if kind == "missing":
        return folder / "nope.npz"
    if kind == "text":
        path.write_text("not a zip")
    elif kind == "truncated":
        np.savez(path, delta=delta.numpy())
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "corrupt":  # a flipped byte in the middle: the zip's CRC catches it
        np.savez(path, delta=delta.numpy())
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
    elif kind == "pickle":
        np.savez(path, delta=np.array([{"a": 1}], dtype=object))
    elif kind == "nokeys":
        np.savez(path, noise=delta.numpy())
    elif kind == "bothkeys":
        np.savez(path, delta=delta.numpy(), x=train.x.numpy())
    elif kind == "float":
        np.savez(path, delta=delta.numpy().astype(np.float32) / 255)
    elif kind == "int16x":
        np.savez(path, x=train.x.numpy().astype(np.int16))
    elif kind == "shape":
        np.savez(path, delta=delta.numpy()[: n - 1])
    elif kind == "labels":
        y = train.y.numpy().copy()
        y[5] = (y[5] + 1) % train.num_classes
        np.savez(path, delta=delta.numpy(), y=y)
    elif kind == "overbudget":
        big = delta.clone()
        big[3, 0, 0, 0] = 9
        np.savez(path, delta=big.numpy())
    elif kind == "overbudget-x":
        x = train.x.clone()
        x[0, 0, 0, 0] = 255 if x[0, 0, 0, 0] < 128 else 0
        np.savez(path, x=x.numpy())
    elif kind == "emptydir":
        path = folder / "empty"
        path.mkdir()
    elif kind == "pngcount":
        path = _pngs(folder / "few", train.x[:10])
    elif kind == "pnggray":
        path = _pngs(folder / "gray", train.x[:, :1])
    elif kind == "pnggap":
        path = _pngs(folder / "gap", train.x, [f"{i + 1}.png" for i in range(n)])
    elif kind == "pngcorrupt":
        path = _pngs(folder / "bad", train.x)
        (path / "7.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    elif kind == "pngorder":  # right images, wrong order: far over the budget
        path = _pngs(folder / "shuffled", train.x.flip(0))
    return path


@pytest.mark.parametrize(
    ("kind", "expect"),
    [
        ("missing", "no such file or directory"),
        ("text", "not an .npz archive"),
        ("truncated", "not an .npz archive (not a zip file, or truncated)"),
        ("corrupt", "cannot read it as an .npz"),
        ("pickle", "cannot read it as an .npz without pickle"),
        ("nokeys", "expected exactly one of the arrays 'delta'"),
        ("bothkeys", "expected exactly one of the arrays 'delta'"),
        ("float", "'delta' must be int8 noise in 1/255 units, got float32"),
        ("int16x", "'x' must be the protected training images, uint8 (256, 3, 32, 32)"),
        ("shape", "the training slice needs (256, 3, 32, 32) (sample-wise) or (4, 3, 32, 32) (class-wise)"),
        ("labels", "labels 'y' differ from the training labels at 1 of 256 positions (first at index 5)"),
        ("overbudget", "max linf norm 9.000/255 > 8/255 (--radius) in 1 of 256 images"),
        ("overbudget-x", "noise exceeds the budget: max linf norm"),
        ("emptydir", "the folder holds no .png files"),
        ("pngcount", "10 PNGs, but the training slice has 256 images"),
        ("pnggray", "0.png is torch.uint8 (1, 32, 32), expected 8-bit (3, 32, 32) (RGB"),
        ("pnggap", "numbered PNGs must be 0.png .. 255.png, but image 0 is 1.png"),
        ("pngcorrupt", "cannot decode 7.png"),
        ("pngorder", "noise exceeds the budget"),
    ],
)
def test_bad_noise_file_is_one_line_exit_2_nothing_written(tmp_path, train, capsys, kind, expect) -> None:
    folder = tmp_path / "files"
    folder.mkdir()
    path = _write_bad(kind, folder, train)
    out = tmp_path / "out"
    assert _run(out, "--noise-file", str(path)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("uebench: error: --noise-file") and expect in err and "\n" not in err, err
    assert not out.exists(), "nothing may be written on a bad noise file"


def test_same_name_different_content_is_refused(tmp_path: Path, train: ImageSet, capsys) -> None:
    for sub, seed in (("a", 1), ("b", 2)):
        (tmp_path / sub).mkdir()
        np.savez(tmp_path / sub / "p.npz", delta=_delta(train, seed=seed).numpy())
    out = tmp_path / "out"
    assert _run(out, "--noise-file", str(tmp_path / "a" / "p.npz"), "--noise-file", str(tmp_path / "b" / "p.npz")) == 2
    assert "same name 'file:p' but different contents" in capsys.readouterr().err
    assert not out.exists()


def test_loader_never_unpickles(tmp_path: Path, train: ImageSet, monkeypatch) -> None:
    np.savez(tmp_path / "obj.npz", delta=np.array([object()], dtype=object))
    calls = []
    real = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: calls.append(k) or real(*a, **k))
    with pytest.raises(NoiseFileError, match="without pickle"):
        FileNoise(tmp_path / "obj.npz").load(train, Budget("linf", 8))
    assert calls and all(k.get("allow_pickle") is False for k in calls)
    assert zipfile.is_zipfile(tmp_path / "obj.npz")
