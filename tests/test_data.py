"""Tests for benchmarks.data: file parsers on small files in the real formats, safety, subsets, synthetic data."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import encode_jpeg, write_png

from benchmarks import data
from benchmarks.data import (
    DatasetFormatError,
    DatasetMissingError,
    SafeUnpickler,
    load_dataset,
    make_synthetic,
    pad_to,
    stratified_head,
)
from benchmarks.registry import DATASETS, UnknownNameError
from benchmarks.types import ImageSet

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")

# ----------------------------------------------------------------------------------------------- Fashion-MNIST


def _idx_bytes(magic: int, arr: np.ndarray) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_idx(path: Path, magic: int, arr: np.ndarray, gz: bool) -> None:
    raw = _idx_bytes(magic, arr)
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


def _fake_fmnist(directory: Path, n_train: int = 12, n_test: int = 7, seed: int = 0) -> dict[str, np.ndarray]:
    """Write the four idx files (train plain, test gzipped) and return the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        _write_idx(directory / name, 2051 if "images" in name else 2049, arr, gz=name.startswith("t10k"))
    return arrays


@pytest.fixture
def no_debian(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-such-debian-dir")


@pytest.mark.parametrize("layout", ["torchvision", "flat"])
def test_fashion_mnist_idx_round_trip(tmp_path: Path, no_debian: None, layout: str) -> None:
    directory = tmp_path / "FashionMNIST" / "raw" if layout == "torchvision" else tmp_path
    arrays = _fake_fmnist(directory)
    train, test = load_dataset("fashion-mnist", root=tmp_path)
    assert (train.name, test.name) == ("fashion-mnist/train", "fashion-mnist/test")
    for split, prefix in ((train, "train"), (test, "t10k")):
        assert split.x.dtype == torch.uint8 and split.y.dtype == torch.int64 and split.num_classes == 10
        assert split.x.shape == (len(arrays[f"{prefix}-labels-idx1-ubyte"]), 1, 28, 28)
        assert torch.equal(split.x[:, 0], torch.from_numpy(arrays[f"{prefix}-images-idx3-ubyte"]))
        assert torch.equal(split.y, torch.from_numpy(arrays[f"{prefix}-labels-idx1-ubyte"]).long())


def test_fashion_mnist_prefers_torchvision_layout(tmp_path: Path, no_debian: None) -> None:
    _fake_fmnist(tmp_path, seed=1)
    arrays = _fake_fmnist(tmp_path / "FashionMNIST" / "raw", seed=2)
    train, _ = load_dataset("fashion-mnist", root=tmp_path)
    assert torch.equal(train.x[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda raw: (2049).to_bytes(4, "big") + raw[4:],  # labels magic on an images file
        lambda raw: raw[:-5],  # truncated data
        lambda raw: raw[:10],  # truncated header
        lambda raw: b"",
    ],
)
def test_fashion_mnist_malformed(tmp_path: Path, no_debian: None, corrupt) -> None:
    directory = tmp_path / "FashionMNIST" / "raw"
    _fake_fmnist(directory)
    path = directory / "train-images-idx3-ubyte"
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(DatasetFormatError, match="train-images-idx3-ubyte"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_fashion_mnist_bad_gzip_and_count_mismatch(tmp_path: Path, no_debian: None) -> None:
    directory = tmp_path / "FashionMNIST" / "raw"
    _fake_fmnist(directory)
    (directory / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DatasetFormatError, match="t10k-labels"):
        load_dataset("fashion-mnist", root=tmp_path)
    _write_idx(directory / "t10k-labels-idx1-ubyte", 2049, np.zeros(3, np.uint8), gz=True)
    with pytest.raises(DatasetFormatError, match="3 labels for 7 images"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_fashion_mnist_download_path(tmp_path: Path, no_debian: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    calls = []

    def fake(root, train=True, download=False):
        calls.append((Path(root), train, download))
        _fake_fmnist(Path(root) / "FashionMNIST" / "raw")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", fake)
    train, test = load_dataset("fashion-mnist", root=tmp_path, download=True)
    assert (len(train), len(test)) == (12, 7)
    assert calls == [(tmp_path, True, True), (tmp_path, False, True)]


def test_download_failure_is_missing(tmp_path: Path, no_debian: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading\nno network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DatasetMissingError, match="no network") as info:
        load_dataset("cifar10", root=tmp_path, download=True)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10", "cifar100", "imagenet-subset"])
def test_missing_data(tmp_path: Path, no_debian: None, name: str) -> None:
    with pytest.raises(DatasetMissingError) as info:
        load_dataset(name, root=tmp_path / "empty", download=False)
    message = str(info.value)
    assert "\n" not in message and "--data-root" in message
    assert isinstance(info.value, FileNotFoundError)
    if name != "imagenet-subset":
        assert "--download" in message
    if name == "fashion-mnist":
        assert "apt-get install dataset-fashion-mnist" in message


def test_unknown_name() -> None:
    with pytest.raises(UnknownNameError, match="cifar10"):
        load_dataset("no-such-set")
    assert {"fashion-mnist", "cifar10", "cifar100", "imagenet-subset", "synthetic"} <= set(DATASETS.list())


@pytest.mark.skipif(not data.DEBIAN_FASHION_MNIST.is_dir(), reason="Debian dataset-fashion-mnist not installed")
def test_real_debian_fashion_mnist(tmp_path: Path) -> None:
    train, test = load_dataset("fashion-mnist", root=tmp_path)
    assert (len(train), len(test)) == (60000, 10000)
    assert train.shape == test.shape == (1, 28, 28)
    assert torch.equal(torch.bincount(train.y), torch.full((10,), 6000))


# ----------------------------------------------------------------------------------------------- CIFAR


def _cifar_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """HWC images and their CIFAR rows: the R plane, then G, then B, each 32x32 row-major."""
    hwc = np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    rows = np.stack([np.concatenate([img[:, :, 0].ravel(), img[:, :, 1].ravel(), img[:, :, 2].ravel()]) for img in hwc])
    return hwc, rows


def _dump(path: Path, entry: dict, legacy_global: bool = False) -> None:
    raw = pickle.dumps(entry, protocol=2)
    if legacy_global:  # the originals (numpy 1.x) name numpy.core.multiarray
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(raw)


def _fake_cifar10(root: Path, per_batch: int = 3, legacy_global: bool = False) -> tuple[np.ndarray, list[int]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    all_hwc, all_labels = [], []
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        hwc, rows = _cifar_images(per_batch, seed=i)
        labels = [(i + j) % 10 for j in range(per_batch)]
        entry = {
            "batch_label": f"training batch {i + 1} of 5".encode(),
            "labels": labels,
            "data": rows,
            "filenames": [f"img_{i}_{j}.png" for j in range(per_batch)],
        }
        _dump(folder / name, entry, legacy_global)
        all_hwc.append(hwc)
        all_labels += labels
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": ["airplane"] * 10}, protocol=2))
    return np.concatenate(all_hwc), all_labels


@pytest.mark.parametrize("legacy_global", [False, True])
def test_cifar10_round_trip(tmp_path: Path, legacy_global: bool) -> None:
    hwc, labels = _fake_cifar10(tmp_path, legacy_global=legacy_global)
    train, test = load_dataset("cifar10", root=tmp_path)
    assert (train.name, test.name, train.num_classes) == ("cifar10/train", "cifar10/test", 10)
    assert train.x.shape == (15, 3, 32, 32) and test.x.shape == (3, 3, 32, 32)
    assert train.x.dtype == torch.uint8 and train.y.dtype == torch.int64
    x = torch.cat([train.x, test.x])
    assert torch.equal(x, torch.from_numpy(hwc).permute(0, 3, 1, 2))  # channel 0 is R, 1 is G, 2 is B
    assert torch.cat([train.y, test.y]).tolist() == labels


def test_cifar100_round_trip(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    expected = {}
    for split, n, seed in (("train", 5, 0), ("test", 4, 1)):
        hwc, rows = _cifar_images(n, seed)
        fine = [99 - 7 * j for j in range(n)]
        entry = {
            "filenames": [f"f{j}.png" for j in range(n)],
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": fine,
            "coarse_labels": [f // 5 for f in fine],
            "data": rows,
        }
        _dump(folder / split, entry)
        expected[split] = (hwc, fine)
    train, test = load_dataset("cifar100", root=tmp_path)
    for split, got in (("train", train), ("test", test)):
        hwc, fine = expected[split]
        assert got.num_classes == 100 and got.name == f"cifar100/{split}"
        assert torch.equal(got.x, torch.from_numpy(hwc).permute(0, 3, 1, 2))
        assert got.y.tolist() == fine
    assert int(train.x[1, 2, 3, 4]) == int(expected["train"][0][1, 3, 4, 2])


def test_cifar_bad_content(tmp_path: Path) -> None:
    _fake_cifar10(tmp_path)
    _dump(tmp_path / "cifar-10-batches-py" / "test_batch", {"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]})
    with pytest.raises(DatasetFormatError, match="test_batch"):
        load_dataset("cifar10", root=tmp_path)
    for junk in (b"\x80\x02}q\x00", b"\x80\x02}q\x00X\x04\x00\x00\x00da", b"garbage"):  # truncated / not pickles
        (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(junk)
        with pytest.raises(DatasetFormatError, match="test_batch"):
            load_dataset("cifar10", root=tmp_path)


class _Shell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Opener:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("evil", ["shell", "open"])
def test_cifar_malicious_pickle_is_refused(tmp_path: Path, evil: str) -> None:
    _fake_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    payload = _Shell(f"touch {marker}") if evil == "shell" else _Opener(str(marker))
    _, rows = _cifar_images(2, 0)
    _dump(tmp_path / "cifar-10-batches-py" / "data_batch_1", {"data": rows, "labels": [0, 1], "x": payload})
    with pytest.raises(pickle.UnpicklingError, match="refused global") as info:
        load_dataset("cifar10", root=tmp_path)
    assert "data_batch_1" in str(info.value)
    assert not marker.exists()


def test_safe_unpickler_refuses_other_globals(tmp_path: Path) -> None:
    import collections
    import io

    raw = pickle.dumps(collections.OrderedDict(a=1), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="collections.OrderedDict"):
        SafeUnpickler(io.BytesIO(raw), encoding="latin1").load()
    arr = np.arange(12, dtype=np.int32).reshape(3, 4)
    assert np.array_equal(SafeUnpickler(io.BytesIO(pickle.dumps(arr, protocol=2))).load(), arr)


# ----------------------------------------------------------------------------------------------- ImageNet subset


def _write_image(path: Path, img: torch.Tensor) -> None:
    if path.suffix == ".png":
        write_png(img, str(path))
    else:
        path.write_bytes(encode_jpeg(img, quality=95).numpy().tobytes())


def _fake_image_folder(root: Path, classes: dict[str, list[str]]) -> None:
    for i, (split, wnids) in enumerate(classes.items()):
        for j, wnid in enumerate(wnids):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            value = 40 * (j + 1) + i
            _write_image(folder / "a.png", torch.full((3, 40, 30), value, dtype=torch.uint8))
            _write_image(folder / "b.JPEG", torch.full((3, 300, 200), value, dtype=torch.uint8))
            _write_image(folder / "c.png", torch.full((1, 20, 20), value, dtype=torch.uint8))  # grayscale
            (folder / "notes.txt").write_text("not an image")


def test_imagenet_subset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wnids = ["n03", "n01", "n02"]  # created unsorted
    _fake_image_folder(tmp_path, {"train": wnids, "val": wnids})
    train, test = load_dataset("imagenet-subset", root=tmp_path)
    assert (train.name, test.name) == ("imagenet-subset/train", "imagenet-subset/test")
    for split, offset in ((train, 0), (test, 1)):
        assert split.x.shape == (9, 3, 256, 256) and split.x.dtype == torch.uint8 and split.num_classes == 3
        assert split.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # sorted wnids: n01, n02, n03
        for k, wnid in enumerate(sorted(wnids)):
            value = 40 * (wnids.index(wnid) + 1) + offset
            block = split.x[split.y == k].int()
            assert (block - value).abs().max() <= 2, wnid  # constant images stay constant after resize/JPEG
    monkeypatch.setattr(data, "IMAGENET_SUBSET_CLASSES", 2)
    train2, _ = load_dataset("imagenet-subset", root=tmp_path)
    assert train2.num_classes == 2 and torch.equal(train2.x, train.x[:6])


def test_imagenet_subset_class_mismatch(tmp_path: Path) -> None:
    _fake_image_folder(tmp_path, {"train": ["n01", "n02", "n03"], "val": ["n01", "n03"]})
    with pytest.raises(DatasetFormatError, match="n02"):
        load_dataset("imagenet-subset", root=tmp_path)


def test_imagenet_subset_corrupt_image(tmp_path: Path) -> None:
    _fake_image_folder(tmp_path, {"train": ["n01"], "val": ["n01"]})
    (tmp_path / "val" / "n01" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DatasetFormatError, match="broken.jpg"):
        load_dataset("imagenet-subset", root=tmp_path)


# ----------------------------------------------------------------------------------------------- synthetic


def test_synthetic_deterministic_and_valid() -> None:
    a_train, a_test = make_synthetic(seed=3)
    b_train, b_test = make_synthetic(seed=3)
    c_train, _ = make_synthetic(seed=4)
    assert torch.equal(a_train.x, b_train.x) and torch.equal(a_train.y, b_train.y)
    assert torch.equal(a_test.x, b_test.x) and torch.equal(a_test.y, b_test.y)
    assert not torch.equal(a_train.x, c_train.x)
    assert a_train.x.shape == (256, 3, 32, 32) and a_test.x.shape == (128, 3, 32, 32)
    assert a_train.x.dtype == torch.uint8 and a_train.y.dtype == torch.int64
    assert set(a_train.y.tolist()) == {0, 1, 2, 3} and torch.equal(torch.bincount(a_train.y), torch.full((4,), 64))
    train, test = load_dataset("synthetic")
    ref_train, ref_test = make_synthetic()
    assert torch.equal(train.x, ref_train.x) and torch.equal(test.y, ref_test.y)
    small, _ = make_synthetic(n_train=10, n_test=5, num_classes=3, shape=(1, 8, 8), seed=1)
    assert small.x.shape == (10, 1, 8, 8) and int(small.y.max()) <= 2


def test_synthetic_is_separable_under_small_noise() -> None:
    train, test = make_synthetic()
    centroids = torch.stack([train.x[train.y == k].float().mean(0) for k in range(train.num_classes)]).flatten(1)
    signs = torch.where(torch.rand(test.x.shape, generator=torch.Generator().manual_seed(0)) < 0.5, -8.0, 8.0)
    for x in (test.x.float(), (test.x.float() + signs).clamp(0, 255)):
        pred = torch.cdist(x.flatten(1), centroids).argmin(1)
        assert (pred == test.y).float().mean() > 0.95


# ----------------------------------------------------------------------------------------------- stratified_head


def _labelled(y: list[int], num_classes: int) -> ImageSet:
    n = len(y)
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return ImageSet(x, torch.tensor(y, dtype=torch.int64), num_classes, "toy/train")


def test_stratified_head_balance_and_order() -> None:
    y = [2, 0, 1, 2, 0, 0, 1, 2, 1, 0, 2, 1, 0, 1, 2]
    toy = _labelled(y, 3)
    sub = stratified_head(toy, 7)  # quotas 3, 2, 2
    expected = sorted([1, 4, 5] + [2, 6] + [0, 3])
    assert sub.x[:, 0, 0, 0].tolist() == expected  # original indices, in dataset order
    assert sub.y.tolist() == [y[i] for i in expected]
    assert torch.equal(torch.bincount(sub.y), torch.tensor([3, 2, 2]))
    assert sub.fingerprint() == stratified_head(toy, 7).fingerprint()
    assert stratified_head(toy, None) is toy and stratified_head(toy, 15) is toy and stratified_head(toy, 99) is toy
    train, _ = make_synthetic()
    counts = torch.bincount(stratified_head(train, 50).y)
    assert counts.tolist() == [13, 13, 12, 12]


def test_stratified_head_errors() -> None:
    toy = _labelled([0, 1, 2, 0, 1, 0, 0, 0, 0], 3)
    for n in (0, -1, 2):
        with pytest.raises(ValueError, match="num_classes"):
            stratified_head(toy, n)
    assert stratified_head(toy, 5).y.tolist() == [0, 1, 2, 0, 1]  # quotas 2, 2, 1
    with pytest.raises(ValueError, match="class 2"):
        stratified_head(toy, 6)  # quotas 2, 2, 2 but class 2 has one image


# ------------------------------------------------------------------------------------------------------- pad_to


def test_pad_to_centres_the_images_on_a_zero_border() -> None:
    train, _ = make_synthetic(n_train=8, shape=(1, 28, 28))
    padded = pad_to(train, 32)
    assert padded.shape == (1, 32, 32) and torch.equal(padded.y, train.y) and padded.num_classes == train.num_classes
    assert torch.equal(padded.x[:, :, 2:30, 2:30], train.x)  # 2 pixels each side
    assert int(padded.x.sum()) == int(train.x.sum())  # the border is black
    assert pad_to(train, None) is train and torch.equal(pad_to(train, 28).x, train.x)
    odd = pad_to(train, 31)  # an odd margin: the extra row and column go to the bottom and right
    assert torch.equal(odd.x[:, :, 1:29, 1:29], train.x)
    with pytest.raises(ValueError, match="smaller than the images"):
        pad_to(train, 27)


def test_a_protocols_image_size_pads_both_slices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from benchmarks import plan as plan_module
    from benchmarks.spec import CampaignSpec

    small = make_synthetic(n_train=40, n_test=20, num_classes=10, shape=(1, 28, 28))
    monkeypatch.setattr(plan_module, "load_dataset", lambda *_: small)
    spec = CampaignSpec(
        dataset="fashion-mnist", preset="smoke-32", methods=("random",), defenses=("none",), results_dir=tmp_path / "r",
        cache_dir=tmp_path / "c", progress=False,
    )  # fmt: skip
    train, test = plan_module.load_data(plan_module.make_plan(spec))
    assert train.shape == test.shape == (1, 32, 32) and (len(train), len(test)) == (40, 20)
