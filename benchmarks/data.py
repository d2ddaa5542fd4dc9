"""Data-set loaders: Fashion-MNIST, CIFAR-10/100, an ImageNet subset and a synthetic set for tests.

Every loader is registered in :data:`benchmarks.registry.DATASETS` as ``load(root, download) -> (train, test)`` and
returns whole CPU :class:`~benchmarks.types.ImageSet` s (uint8 images, int64 labels). Files are parsed here, without
torchvision's loaders: idx files with numpy, CIFAR pickles with an unpickler that refuses every global that a numpy
array does not need, so a tampered file cannot run code.
"""

from __future__ import annotations

import gzip
import pickle
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.registry import DATASETS
from benchmarks.types import ImageSet

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_DATA_ROOT = Path("~/.cache/uebench/data")
IMAGENET_SUBSET_CLASSES = 100
IMAGENET_SIZE = 256
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".JPEG"})

_IDX_IMAGES, _IDX_LABELS = 2051, 2049
_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DatasetMissingError(FileNotFoundError):
    """The data set's files are not where the loader looked; the message says how to get them."""


class DatasetFormatError(ValueError):
    """A data file exists but is malformed; the message names the file and the problem."""


def _root(root: Path | str | None) -> Path:
    return Path(root if root is not None else DEFAULT_DATA_ROOT).expanduser()


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def _download(what: str, root: Path, fetch: Callable[[], Any]) -> None:
    try:
        fetch()
    except Exception as err:  # torchvision raises assorted errors offline
        raise DatasetMissingError(f"downloading {what} into {root} failed ({_one_line(err)})") from err


# ----------------------------------------------------------------------------------------------- Fashion-MNIST


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one uint8 idx file (plain or ``.gz``) and check its magic number and size.

    Shape:
        ``(N, rows, cols)`` for images (magic 2051), ``(N,)`` for labels (magic 2049).
    """
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise DatasetFormatError(f"{path}: cannot read ({_one_line(err)})") from err
    if len(raw) < 4:
        raise DatasetFormatError(f"{path}: {len(raw)} bytes, too short for an idx header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DatasetFormatError(f"{path}: idx magic number {found}, expected {magic}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetFormatError(f"{path}: truncated idx header ({len(raw)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, offset=4))
    size = int(np.prod(dims))
    if len(raw) - header != size:
        raise DatasetFormatError(f"{path}: {len(raw) - header} data bytes, but the header says {dims} = {size}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _find_idx(directory: Path) -> dict[str, Path] | None:
    """The four Fashion-MNIST files in ``directory`` (plain preferred over ``.gz``), or None if any is missing."""
    found = {}
    for name in (n for pair in _FMNIST_FILES.values() for n in pair):
        path = next((p for p in (directory / name, directory / f"{name}.gz") if p.is_file()), None)
        if path is None:
            return None
        found[name] = path
    return found


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(root: Path | None, download: bool) -> tuple[ImageSet, ImageSet]:
    """Fashion-MNIST from ``root/FashionMNIST/raw``, ``root`` or the Debian package, else torchvision's download.

    Shape:
        x: uint8 ``(N, 1, 28, 28)`` with N = 60000 (train) and 10000 (test); 10 classes.
    """
    base = _root(root)
    candidates = [base / "FashionMNIST" / "raw", base, DEBIAN_FASHION_MNIST]
    files = next((f for f in map(_find_idx, candidates) if f is not None), None)
    if files is None and download:
        import torchvision

        for train in (True, False):
            _download(
                "Fashion-MNIST", base, partial(torchvision.datasets.FashionMNIST, base, train=train, download=True)
            )
        files = _find_idx(candidates[0])
    if files is None:
        raise DatasetMissingError(
            f"Fashion-MNIST idx files not found in {', '.join(map(str, candidates))}; "
            "apt-get install dataset-fashion-mnist, or pass --data-root DIR --download"
        )
    out = []
    for split, (images_name, labels_name) in _FMNIST_FILES.items():
        x = read_idx(files[images_name], _IDX_IMAGES)
        y = read_idx(files[labels_name], _IDX_LABELS)
        if len(x) != len(y):
            raise DatasetFormatError(f"{files[labels_name]}: {len(y)} labels for {len(x)} images")
        if len(y) and int(y.max()) >= 10:
            raise DatasetFormatError(f"{files[labels_name]}: label {int(y.max())} outside [0, 10)")
        x_t = torch.from_numpy(x.copy()).unsqueeze(1)
        out.append(ImageSet(x_t, torch.from_numpy(y.astype(np.int64)), 10, f"fashion-mnist/{split}"))
    return out[0], out[1]


# ----------------------------------------------------------------------------------------------- CIFAR


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global that :class:`SafeUnpickler` does not allow (it was not called)."""


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays, dicts and lists but refuses every other global."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # bytes pickled by Python 3 with protocol 2
        }
        | {(mod, name) for mod in ("builtins", "__builtin__") for name in ("list", "dict", "tuple", "set", "bytearray")}
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise UnsafePickleError(f"refused global {module}.{name}: only numpy arrays and containers allowed")
        return super().find_class(module, name)


def safe_load_pickle(path: Path) -> Any:
    """Unpickle ``path`` with :class:`SafeUnpickler` (``encoding="latin1"`` as torchvision does)."""
    with open(path, "rb") as fh:
        try:
            return SafeUnpickler(fh, encoding="latin1").load()
        except UnsafePickleError as err:
            raise UnsafePickleError(f"{path}: {err}") from err
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
            raise DatasetFormatError(f"{path}: not a valid pickle ({_one_line(err)})") from err


def _cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    entry = safe_load_pickle(path)
    if not isinstance(entry, dict) or "data" not in entry or label_key not in entry:
        raise DatasetFormatError(f"{path}: expected a dict with keys 'data' and {label_key!r}")
    data, labels = entry["data"], np.asarray(entry[label_key])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetFormatError(f"{path}: 'data' must be a uint8 (N, 3072) array, got {desc}")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetFormatError(
            f"{path}: {label_key!r} must hold {len(data)} integers, got {labels.dtype} {labels.shape}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetFormatError(f"{path}: labels outside [0, {num_classes})")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _load_cifar(root: Path | None, download: bool, num_classes: int) -> tuple[ImageSet, ImageSet]:
    base = _root(root)
    name = f"cifar{num_classes}"
    if num_classes == 10:
        folder, label_key = base / "cifar-10-batches-py", "labels"
        splits = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    else:
        folder, label_key = base / "cifar-100-python", "fine_labels"
        splits = {"train": ["train"], "test": ["test"]}

    def present() -> bool:
        return all((folder / f).is_file() for files in splits.values() for f in files)

    if not present() and download:
        import torchvision

        cls = torchvision.datasets.CIFAR10 if num_classes == 10 else torchvision.datasets.CIFAR100
        _download(name, base, lambda: cls(base, train=True, download=True))
    if not present():
        raise DatasetMissingError(
            f"{name} not found in {folder}; pass --data-root DIR --download (needs internet) "
            "or put the torchvision files under DIR"
        )
    out = []
    for split, files in splits.items():
        parts = [_cifar_batch(folder / f, label_key, num_classes) for f in files]
        x = torch.from_numpy(np.concatenate([p[0] for p in parts]))
        y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
        out.append(ImageSet(x, y, num_classes, f"{name}/{split}"))
    return out[0], out[1]


@DATASETS.register("cifar10")
def load_cifar10(root: Path | None, download: bool) -> tuple[ImageSet, ImageSet]:
    """CIFAR-10 from ``root/cifar-10-batches-py``. Shape: x uint8 ``(N, 3, 32, 32)``, N = 50000 / 10000."""
    return _load_cifar(root, download, 10)


@DATASETS.register("cifar100")
def load_cifar100(root: Path | None, download: bool) -> tuple[ImageSet, ImageSet]:
    """CIFAR-100 (fine labels) from ``root/cifar-100-python``. Shape: x uint8 ``(N, 3, 32, 32)``."""
    return _load_cifar(root, download, 100)


# ----------------------------------------------------------------------------------------------- ImageNet subset


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir())


def _load_image_folder(split_dir: Path, classes: list[str], name: str) -> ImageSet:
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import resize
    from tqdm import tqdm

    files = [
        (p, k)
        for k, c in enumerate(classes)
        for p in sorted((split_dir / c).iterdir())
        if p.is_file() and p.suffix in IMAGE_EXTENSIONS
    ]
    if not files:
        raise DatasetMissingError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {split_dir}")
    x = torch.empty((len(files), 3, IMAGENET_SIZE, IMAGENET_SIZE), dtype=torch.uint8)
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of torchcodec
        warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
        for i, (path, _) in enumerate(tqdm(files, desc=name, unit="img", disable=None)):
            try:
                img = decode_image(str(path), mode=ImageReadMode.RGB)
            except RuntimeError as err:
                raise DatasetFormatError(f"{path}: cannot decode image ({_one_line(err)})") from err
            if img.shape[1:] != (IMAGENET_SIZE, IMAGENET_SIZE):
                img = resize(img, [IMAGENET_SIZE, IMAGENET_SIZE], antialias=True)
            x[i] = img
    y = torch.tensor([k for _, k in files], dtype=torch.int64)
    return ImageSet(x, y, len(classes), name)


@DATASETS.register("imagenet-subset")
def load_imagenet_subset(root: Path | None, download: bool) -> tuple[ImageSet, ImageSet]:
    """The first 100 classes (sorted wnids) of an ImageFolder root with ``train/`` and ``val/``; no download.

    Shape:
        x: uint8 ``(N, 3, 256, 256)`` (resized with antialiasing where the files are another size).
    """
    base = Path(root).expanduser() if root is not None else None
    if base is None or not (base / "train").is_dir() or not (base / "val").is_dir():
        raise DatasetMissingError(
            f"ImageNet subset not found (looked for train/ and val/ in {base or 'no --data-root'}); "
            "pass --data-root DIR with DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG (cannot be downloaded)"
        )
    train_classes = _class_dirs(base / "train")[:IMAGENET_SUBSET_CLASSES]
    val_classes = _class_dirs(base / "val")[:IMAGENET_SUBSET_CLASSES]
    if train_classes != val_classes:
        diff = sorted(set(train_classes) ^ set(val_classes))[:5]
        raise DatasetFormatError(f"{base}: class folders of train/ and val/ differ (e.g. {', '.join(diff)})")
    return (
        _load_image_folder(base / "train", train_classes, "imagenet-subset/train"),
        _load_image_folder(base / "val", val_classes, "imagenet-subset/test"),
    )


# ----------------------------------------------------------------------------------------------- synthetic


def make_synthetic(
    n_train: int = 256,
    n_test: int = 128,
    num_classes: int = 4,
    shape: tuple[int, int, int] = (3, 32, 32),
    seed: int = 0,
) -> tuple[ImageSet, ImageSet]:
    """A small learnable set for unit tests: one smooth random pattern (±60 around 128) per class plus noise.

    Each class pattern is a random 4x4 grid per channel, upsampled bilinearly and scaled to peak amplitude 60;
    every image adds Gaussian noise of std 20. Labels are balanced and shuffled. Deterministic in ``seed``.

    Shape:
        x: uint8 ``(N, *shape)``; y: int64 ``(N,)`` in ``[0, num_classes)``.
    """
    if n_train < 1 or n_test < 1 or num_classes < 2:
        raise ValueError("make_synthetic needs n_train >= 1, n_test >= 1 and num_classes >= 2")
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    low = torch.rand((num_classes, c, 4, 4), generator=g) * 2 - 1
    patterns = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=True)
    patterns = patterns * (60 / patterns.flatten(1).abs().amax(1).clamp_min(1e-6)).view(-1, 1, 1, 1)
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        y = torch.randperm(n, generator=g) % num_classes
        noise = torch.randn((n, c, h, w), generator=g) * 20
        x = (128 + patterns[y] + noise).round_().clamp_(0, 255).to(torch.uint8)
        out.append(ImageSet(x, y, num_classes, f"synthetic/{split}"))
    return out[0], out[1]


@DATASETS.register("synthetic")
def load_synthetic(root: Path | None, download: bool) -> tuple[ImageSet, ImageSet]:
    """:func:`make_synthetic` with its defaults; ``root`` and ``download`` are ignored."""
    return make_synthetic()


# ----------------------------------------------------------------------------------------------- helpers


def load_dataset(name: str, root: Path | None = None, download: bool = False) -> tuple[ImageSet, ImageSet]:
    """``(train, test)`` of the data set registered as ``name`` (unknown names raise ``UnknownNameError``)."""
    return DATASETS.get(name)(Path(root).expanduser() if root is not None else None, download)


def stratified_head(data: ImageSet, n: int | None) -> ImageSet:
    """A deterministic class-balanced subset: the first images of each class, in dataset order.

    Class ``k`` keeps its first ``n // K`` images, plus one for the ``n % K`` lowest class ids. No randomness, so
    the subset is the same for every seed and machine. ``n`` None or ``>= len(data)`` returns ``data`` itself.

    Raises:
        ValueError: ``n <= 0``, ``n < num_classes``, or a class with fewer images than its share.
    """
    if n is None or n >= len(data):
        return data
    return data.subset(stratified_index(data, n))


def pad_to(data: ImageSet, size: int | None) -> ImageSet:
    """``data`` with its images zero-padded, centred, to ``size`` x ``size`` (28 x 28 Fashion-MNIST to CIFAR's 32 x 32);
    ``size`` None returns ``data`` itself.

    Raises:
        ValueError: ``size`` smaller than an image side.
    """
    if size is None:
        return data
    height, width = data.shape[1:]
    if size < max(height, width):
        raise ValueError(f"pad_to: size {size} is smaller than the images ({height} x {width})")
    top, left = (size - height) // 2, (size - width) // 2
    x = F.pad(data.x, (left, size - width - left, top, size - height - top))
    return ImageSet(x, data.y, data.num_classes, data.name)


def stratified_index(data: ImageSet, n: int) -> Tensor:
    """The sorted indices of :func:`stratified_head` ``(data, n)`` for ``n < len(data)``. Shape: int64 ``(n,)``."""
    k_count = data.num_classes
    if n <= 0 or n < k_count:
        raise ValueError(f"stratified_head: n={n} must be >= num_classes={k_count}")
    base, rem = divmod(n, k_count)
    y = data.y.cpu()
    keep = []
    for k in range(k_count):
        quota = base + (1 if k < rem else 0)
        idx = (y == k).nonzero().flatten()
        if len(idx) < quota:
            raise ValueError(f"stratified_head: {data.name} has {len(idx)} images of class {k}, need {quota}")
        keep.append(idx[:quota])
    return torch.cat(keep).sort().values
