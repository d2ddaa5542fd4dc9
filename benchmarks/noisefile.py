"""Poisons made elsewhere: ``--noise-file PATH`` evaluates a file instead of generating noise.

Accepted files (all read without pickle):

- ``.npz`` with ``delta``: int8 noise in 1/255 units, ``(N, C, H, W)`` sample-wise or ``(K, C, H, W)`` class-wise;
- ``.npz`` with ``x``: the protected images, uint8 ``(N, C, H, W)``; the noise is ``x - clean``;
- a folder of PNGs, one protected image per training image in data-set order: ``0.png, 1.png, ...``, or any
  names in natural sort order (``img2.png`` before ``img10.png``).

An ``.npz`` may also hold ``y``: it must equal the training labels. The images are those of the run's training
slice (the preset's class-balanced head of the data set, see :func:`benchmarks.run.load_data`), and the noise is
held to the run's L-inf budget (``--radius``): an over-budget file is refused with its measured norm.

The cells of a file are recorded as method ``file:<stem>`` with the first 8 hex digits of the file's sha256 as
``method_hash``: two different files never share cells, and rerunning with the same file resumes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from benchmarks.noise import Meter, NoiseMethod, PoisonError, validate_poison
from benchmarks.types import Budget, Context, ImageSet, Poison

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
_DIGITS = re.compile(r"([0-9]+)")


def add_noise_file_option(parser: argparse.ArgumentParser, help: str) -> None:
    """``--noise-file PATH`` (repeatable) into ``args.noise_files``, as the runner and the gallery take it."""
    parser.add_argument(
        "--noise-file", dest="noise_files", action="append", default=[], type=Path, metavar="PATH", help=help
    )


class NoiseFileError(ValueError):
    """A noise file that cannot be read or does not fit the run (shape, labels, budget): one line, exit code 2."""


def _natural_key(name: str) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(name) if part]


def png_files(folder: Path) -> list[Path]:
    """The ``*.png`` files of ``folder`` in data-set order: numeric names by number, others in natural order.

    Raises:
        NoiseFileError: no PNG, or numeric names that are not exactly ``0 .. n-1``.
    """
    files = [p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file()]
    if not files:
        raise NoiseFileError(f"--noise-file {folder}: the folder holds no .png files")
    if all(p.stem.isdigit() for p in files):
        files.sort(key=lambda p: int(p.stem))
        numbers = [int(p.stem) for p in files]
        if numbers != list(range(len(files))):
            first = next(i for i, n in enumerate(numbers) if n != i)
            raise NoiseFileError(
                f"--noise-file {folder}: numbered PNGs must be 0.png .. {len(files) - 1}.png, "
                f"but image {first} is {files[first].name}"
            )
        return files
    return sorted(files, key=lambda p: _natural_key(p.name))


def file_digest(path: Path) -> str:
    """sha256 of a file, or of a PNG folder (names and bytes of its PNGs in order)."""
    h = hashlib.sha256()
    try:
        if path.is_dir():
            for png in png_files(path):
                data = png.read_bytes()
                h.update(f"{png.name}\0{len(data)}\0".encode())
                h.update(data)
        else:
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    except OSError as err:
        raise NoiseFileError(f"--noise-file {path}: cannot read it ({err.strerror or err})") from None
    return h.hexdigest()


class FileNoise(NoiseMethod):
    """A poison read from a file (see the module docstring); :meth:`load` reads and checks it.

    Example:
        >>> FileNoise("runs/rem-cifar10.npz").name  # doctest: +SKIP
        'file:rem-cifar10'
    """

    name = "file"
    norms = ("linf",)

    @dataclass(frozen=True)
    class Config:
        source: str = ""  # the path as given
        sha256: str = ""  # of the file (or of the PNG folder's names and bytes)
        format: str = ""  # npz-delta, npz-x or png (known after load)

    def __init__(self, path: Path | str) -> None:
        path = Path(path).expanduser()
        try:
            if not path.exists():
                raise NoiseFileError(f"--noise-file {path}: no such file or directory")
            if not (path.is_file() or path.is_dir()):
                raise NoiseFileError(f"--noise-file {path}: not a regular file or folder")
            if not os.access(path, os.R_OK):
                raise NoiseFileError(f"--noise-file {path}: permission denied")
            if path.is_file() and not zipfile.is_zipfile(path):
                raise NoiseFileError(f"--noise-file {path}: not an .npz archive (not a zip file, or truncated)")
        except (OSError, ValueError) as err:  # a name too long, a NUL byte, ...
            if isinstance(err, NoiseFileError):
                raise
            raise NoiseFileError(f"--noise-file {path}: {getattr(err, 'strerror', None) or err}") from None
        super().__init__(source=str(path), sha256=file_digest(path), format="png" if path.is_dir() else "npz")
        self.path = path
        stem = path.resolve().name if path.is_dir() else path.stem
        self.name = f"file:{_UNSAFE.sub('_', stem).strip('._') or 'noise'}"
        self._poison: Poison | None = None

    @property
    def hash(self) -> str:
        """The cells' ``method_hash``: the file's sha256, 8 hex digits."""
        return self.config.sha256[:8]

    @property
    def classwise(self) -> bool:
        return self._poison.classwise if self._poison is not None else False

    def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
        raise NotImplementedError("file noise is read, not computed: use load()")

    def generate(self, train: ImageSet, budget: Budget, ctx: Context) -> Poison:
        """The file's poison (read once); ``ctx`` is unused."""
        poison = self.load(train, budget)
        return Poison(poison.delta, poison.classwise, dict(poison.stats))

    def load(self, train: ImageSet, budget: Budget) -> Poison:
        """Read the file and check it against ``train`` and ``budget``; the result is kept for later calls.

        Raises:
            NoiseFileError: unreadable file, wrong keys, dtype or shape, other labels, or noise over the budget.
        """
        if self._poison is not None:
            validate_poison(self._poison, train, budget)
            return self._poison
        train = train.to("cpu")
        if self.path.is_dir():
            delta, classwise, fmt = self._from_pngs(train), False, "png"
        else:
            delta, classwise, fmt = self._from_npz(train)
        norms = budget.norms(delta)
        worst = float(norms.max()) if len(norms) else 0.0
        if worst > budget.radius + 1e-6:
            count = int((norms > budget.radius + 1e-6).sum())
            raise NoiseFileError(
                f"--noise-file {self.path}: noise exceeds the budget: max {budget.norm} norm {worst:.3f}/255 > "
                f"{budget.radius:g}/255 (--radius) in {count} of {len(norms)} {'classes' if classwise else 'images'}"
            )
        poison = Poison(delta.to(torch.int8), classwise, {"source": "file", "file_format": fmt})
        try:
            validate_poison(poison, train, budget)
        except PoisonError as err:
            raise NoiseFileError(f"--noise-file {self.path}: {err}") from None
        self.config = replace(self.config, format=fmt)
        self._poison = poison
        return poison

    def _from_npz(self, train: ImageSet) -> tuple[Tensor, bool, str]:
        where = f"--noise-file {self.path}"
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                if not isinstance(npz, np.lib.npyio.NpzFile):
                    raise NoiseFileError(f"{where}: not an .npz archive")
                keys = set(npz.files)
                arrays = {k: npz[k] for k in ("delta", "x", "y") if k in keys}
        except NoiseFileError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            raise NoiseFileError(f"{where}: cannot read it as an .npz without pickle ({err})") from None
        if ("delta" in arrays) == ("x" in arrays):
            raise NoiseFileError(
                f"{where}: expected exactly one of the arrays 'delta' (int8 noise) or 'x' (uint8 protected images), "
                f"found {', '.join(sorted(keys)) or 'none'}"
            )
        if "y" in arrays:
            self._check_labels(arrays["y"], train)
        n_chw = tuple(train.x.shape)
        k_chw = (train.num_classes, *train.shape)
        if "x" in arrays:
            x = arrays["x"]
            if x.dtype != np.uint8 or tuple(x.shape) != n_chw:
                raise NoiseFileError(
                    f"{where}: 'x' must be the protected training images, uint8 {n_chw}, got {x.dtype} {tuple(x.shape)}"
                )
            return torch.from_numpy(x).to(torch.int16) - train.x.to(torch.int16), False, "npz-x"
        delta = arrays["delta"]
        if delta.dtype != np.int8:
            raise NoiseFileError(f"{where}: 'delta' must be int8 noise in 1/255 units, got {delta.dtype}")
        if tuple(delta.shape) not in (n_chw, k_chw):
            raise NoiseFileError(
                f"{where}: 'delta' has shape {tuple(delta.shape)}; the training slice needs {n_chw} (sample-wise) "
                f"or {k_chw} (class-wise)"
            )
        classwise = tuple(delta.shape) != n_chw
        return torch.from_numpy(delta.copy()).to(torch.int16), classwise, "npz-delta"

    def _check_labels(self, y: np.ndarray, train: ImageSet) -> None:
        where = f"--noise-file {self.path}"
        if y.dtype.kind not in "iu" or y.shape != (len(train),):
            raise NoiseFileError(f"{where}: 'y' must be {len(train)} integer labels, got {y.dtype} {tuple(y.shape)}")
        differ = np.flatnonzero(y.astype(np.int64) != train.y.numpy())
        if len(differ):
            raise NoiseFileError(
                f"{where}: labels 'y' differ from the training labels at {len(differ)} of {len(train)} positions "
                f"(first at index {differ[0]}); the file must follow the training slice's order"
            )

    def _from_pngs(self, train: ImageSet) -> Tensor:
        from torchvision.io import ImageReadMode, decode_png, read_file

        where = f"--noise-file {self.path}"
        files = png_files(self.path)
        if len(files) != len(train):
            raise NoiseFileError(f"{where}: {len(files)} PNGs, but the training slice has {len(train)} images")
        x = torch.empty_like(train.x, device="cpu")
        for i, png in enumerate(files):
            try:
                image = decode_png(read_file(str(png)), ImageReadMode.UNCHANGED)
            except (RuntimeError, OSError) as err:
                raise NoiseFileError(f"{where}: cannot decode {png.name} ({' '.join(str(err).split())})") from None
            if image.dtype != torch.uint8 or tuple(image.shape) != train.shape:
                raise NoiseFileError(
                    f"{where}: {png.name} is {image.dtype} {tuple(image.shape)}, expected 8-bit {train.shape} "
                    f"({'grayscale' if train.shape[0] == 1 else 'RGB'}, as the data set)"
                )
            x[i] = image
        return x.to(torch.int16) - train.x.to(torch.int16)
