"""Core types: ImageSet, Budget, Poison, Context.

Pixel convention everywhere: images are uint8 in [0, 255]; models take float input in [0, 1] and
normalise inside; noise is int8 in 1/255 units and is applied with exact integer arithmetic.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

#: the float working set of whole-set elementwise work (quantising, checking and applying noise, preprocessing a
#: training set): such work runs a chunk of rows at a time, so its float temporaries stay this small
CHUNK_BYTES = 1 << 23

#: a training set whose uint8 images and int8 noise bank (2 bytes per pixel) take more than this share of the
#: device's memory stays on the host (pinned); its batches are copied to the device as used (:meth:`Context.place`)
RESIDENT_SHARE = 0.5


def row_chunks(n: int, row_bytes: int, chunk_bytes: int = CHUNK_BYTES) -> Iterator[slice]:
    """Consecutive slices of ``range(n)`` whose rows take at most ``chunk_bytes`` (at least one row each)."""
    step = max(1, chunk_bytes // max(row_bytes, 1))
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


def take_rows(x: Tensor, index: Tensor, device: torch.device) -> Tensor:
    """``x[index]`` on ``device``, wherever ``x`` lives (a pinned host copy is copied asynchronously)."""
    return x[index.to(x.device)].to(device, non_blocking=True)


@dataclass(frozen=True)
class ImageSet:
    """A whole labelled image set as tensors on one device.

    Shape:
        x: uint8 ``(N, C, H, W)`` in [0, 255]; y: int64 ``(N,)`` in [0, num_classes).
    """

    x: Tensor
    y: Tensor
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.dim() != 4:
            raise ValueError(
                f"ImageSet {self.name}: x must be uint8 (N,C,H,W), got {self.x.dtype} {tuple(self.x.shape)}"
            )
        if self.y.dtype != torch.int64 or self.y.shape != (self.x.shape[0],):
            raise ValueError(f"ImageSet {self.name}: y must be int64 (N,), got {self.y.dtype} {tuple(self.y.shape)}")
        if len(self.y) and (int(self.y.min()) < 0 or int(self.y.max()) >= self.num_classes):
            raise ValueError(f"ImageSet {self.name}: labels outside [0, {self.num_classes})")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> ImageSet:
        return ImageSet(self.x.to(device), self.y.to(device), self.num_classes, self.name)

    def subset(self, index: Tensor, name: str | None = None) -> ImageSet:
        index = index.to(self.x.device)
        return ImageSet(self.x[index], self.y[index], self.num_classes, name or self.name)

    def take(self, index: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
        """One batch on ``device``, wherever the set lives (the device, or pinned host memory when streamed).

        Shape:
            index: int64 ``(B,)`` on any device; result: uint8 ``(B, C, H, W)`` and int64 ``(B,)``.
        """
        return take_rows(self.x, index, device), take_rows(self.y, index, device)

    def with_images(self, x: Tensor, name: str | None = None) -> ImageSet:
        return ImageSet(x, self.y, self.num_classes, name or self.name)

    def fingerprint(self) -> str:
        """A content hash of images and labels (sha256, 16 hex digits)."""
        h = hashlib.sha256()
        h.update(self.x.cpu().contiguous().numpy().tobytes())
        h.update(self.y.cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class Budget:
    """Noise budget: ``norm`` and ``radius``.

    Measured budgets, which the base class checks on every poison:

    - ``linf``: the largest change of any pixel value, in 1/255 units (the papers' rho_u = 8/255 is 8);
    - ``l2``: the L2 norm of one image's noise, in 1/255 units;
    - ``l0``: the number of pixel positions (all channels of one ``(h, w)``) that change in one image.

    A declared budget names the parameter that bounds a method that is not additive noise in an L-p ball, and no
    norm of the difference can check it; the method's own test checks its defining property:

    - ``blur``: the blur parameter of CUDA's class-wise random filters (their off-peak weights are uniform in
      ``[0, radius]``).
    """

    norm: Literal["linf", "l2", "l0", "blur"] = "linf"
    radius: float = 8.0

    #: the norms the base class measures on every poison
    MEASURED: ClassVar[tuple[str, ...]] = ("linf", "l2", "l0")
    #: the budgets a method declares and no norm measures
    DECLARED: ClassVar[tuple[str, ...]] = ("blur",)

    def __post_init__(self) -> None:
        accepted = self.MEASURED + self.DECLARED
        if self.norm not in accepted:
            raise ValueError(f"budget norm must be one of {', '.join(map(repr, accepted))}, got {self.norm!r}")
        if not (isinstance(self.radius, int | float) and math.isfinite(self.radius) and self.radius > 0):
            raise ValueError(f"budget radius must be a positive number, got {self.radius!r}")
        if self.norm == "linf" and self.radius > 127:
            raise ValueError(f"linf radius {self.radius} exceeds 127/255, the int8 noise range")
        if self.norm == "l0" and self.radius != int(self.radius):
            raise ValueError(f"l0 radius counts pixel positions: a whole number, got {self.radius!r}")

    @property
    def measured(self) -> bool:
        """Whether :meth:`norms` measures this budget (an L-p ball), or it is only declared (``blur``)."""
        return self.norm in self.MEASURED

    @property
    def eps(self) -> float:
        """Radius in [0, 1] pixel units (L-inf and L2 budgets)."""
        return self.radius / 255

    def norms(self, delta: Tensor) -> Tensor:
        """Per-sample norm of int/float noise in 1/255 units, a chunk of rows at a time. Shape: ``(N,)``.

        ``l0`` counts the positions ``(h, w)`` where any channel changes.

        Raises:
            ValueError: for a declared budget, which no norm measures.
        """
        if not self.measured:
            raise ValueError(f"a {self.norm!r} budget is declared by its method, not measured by a norm")
        out = torch.empty(len(delta), device=delta.device)
        for rows in row_chunks(len(delta), 4 * delta[0].numel() if len(delta) else 1):
            chunk = delta[rows]
            if self.norm == "l0":
                out[rows] = chunk.ne(0).any(1).flatten(1).sum(1).float()
                continue
            flat = chunk.flatten(1).float()
            out[rows] = torch.linalg.vector_norm(flat, math.inf if self.norm == "linf" else 2, dim=1)
        return out


@dataclass
class Poison:
    """Protective noise for a training set, or the protected images themselves.

    Most methods add bounded noise: ``delta`` is int8 noise in 1/255 units. A method that transforms images
    instead (OPS sets a pixel to a colour, CUDA convolves with a filter) changes pixels by more than int8 holds:
    its poison keeps the protected images (``images`` True), 1 byte per pixel as well.

    Shape:
        delta: int8 ``(N, C, H, W)`` in 1/255 units, or class-wise ``(K, C, H, W)`` when ``classwise``; uint8
        ``(N, C, H, W)`` protected images when ``images``.
    """

    delta: Tensor
    classwise: bool = False
    stats: dict[str, Any] = field(default_factory=dict)
    images: bool = False

    def __post_init__(self) -> None:
        if self.images and self.classwise:
            raise ValueError("a poison of protected images is sample-wise, not class-wise")

    def per_sample(self, y: Tensor) -> Tensor:
        """Sample-wise int8 noise ``(N, C, H, W)`` (class-wise noise expanded by label); noise only."""
        if self.images:
            raise ValueError("this poison holds protected images: use difference(data) for the change")
        return self.delta[y.to(self.delta.device)] if self.classwise else self.delta

    def subset(self, index: Tensor) -> Poison:
        """The poison of the images ``index`` (class-wise noise is the same for every subset)."""
        if self.classwise:
            return self
        return Poison(self.delta[index.to(self.delta.device)], False, self.stats, self.images)

    def _check_shape(self, data: ImageSet) -> None:
        expect = (self.delta.shape[0], *data.shape) if self.classwise else tuple(data.x.shape)
        if tuple(self.delta.shape) != expect:
            raise ValueError(f"noise shape {tuple(self.delta.shape)} does not match images {tuple(data.x.shape)}")

    def difference(self, data: ImageSet, rows: slice = slice(None)) -> Tensor:
        """What the poison changes in ``data[rows]``: ``protected - clean`` as int16 (in 1/255 units).

        Shape:
            result: int16 ``(n, C, H, W)`` for the ``n`` rows, where ``data`` lives.
        """
        self._check_shape(data)
        x = data.x[rows]
        if self.images:
            return self.delta[rows].to(x.device, torch.int16) - x.to(torch.int16)
        d = self.delta.to(x.device)
        d = d[data.y[rows].to(x.device)] if self.classwise else d[rows]
        return (x.to(torch.int16) + d).clamp_(0, 255) - x.to(torch.int16)

    def norms(self, data: ImageSet, budget: Budget) -> Tensor:
        """Per-image (per-class for class-wise noise) norms of the change under ``budget``, a chunk at a time.

        Shape:
            result: float ``(N,)`` (``(K,)`` for class-wise noise).
        """
        if not self.images:
            return budget.norms(self.delta)
        out = torch.empty(len(data))
        for rows in row_chunks(len(data), 2 * math.prod(data.shape)):
            out[rows] = budget.norms(self.difference(data, rows)).cpu()
        return out

    def apply(self, data: ImageSet) -> ImageSet:
        """The protected set a data owner would publish: ``clip(int16(x) + delta, 0, 255)`` as uint8 (the
        protected images themselves when :attr:`images`).

        Computed a chunk of images at a time where ``data`` lives: besides the result (1 byte per pixel), the
        working set is one chunk's int16 sums.
        """
        self._check_shape(data)
        if self.images:
            return data.with_images(self.delta.to(data.x.device))
        delta = self.delta.to(data.x.device)
        y = data.y.to(data.x.device)
        out = torch.empty_like(data.x)
        for rows in row_chunks(len(data), 2 * math.prod(data.shape)):
            d = delta[y[rows]] if self.classwise else delta[rows]
            out[rows] = (data.x[rows].to(torch.int16) + d).clamp_(0, 255)
        return data.with_images(out)


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts; stable across runs, processes and machines."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


#: the precisions a user chooses from, and how cells record each
PRECISIONS = ("fp32", "tf32", "bf16")
ARITHMETIC = {"fp32": "fp32", "tf32": "tf32", "bf16": "bf16-autocast"}
#: how the min-min surrogates run: eagerly, under ``torch.compile`` (inductor), or compiled and replayed as CUDA
#: graphs (inductor's ``reduce-overhead`` mode; CUDA only)
COMPILE_MODES = ("eager", "compile", "graphs")


@dataclass
class Context:
    """Where and how to compute: device, seed, precision, progress bars.

    Every random draw in methods and training comes from :meth:`generator`, so a run is a function of
    ``seed`` and the tags that name what is drawn.

    ``precision`` is the user's choice, never implied by the device: ``fp32`` (the reference's arithmetic;
    on CUDA strictly fp32, TF32 off for matmuls and convolutions), ``tf32`` (CUDA: TF32 tensor cores for
    matmuls and convolutions) or ``bf16`` (bf16 autocast of forward passes). :meth:`set_numerics` applies
    the process-wide TF32 switches; the engine calls it before any work.

    ``compile_mode`` (:data:`COMPILE_MODES`) is how min-min surrogates run (:meth:`compiled`). Like
    ``channels_last`` it changes the rounding, not the method, and is recorded in every cell, not in keys.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    precision: str = "fp32"
    channels_last: bool | None = None  # None = on for CUDA
    progress: bool = True
    #: a training set whose images take more than this share of the device's memory is streamed (:meth:`place`)
    resident_share: float = RESIDENT_SHARE
    compile_mode: str = "eager"

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}")
        if self.channels_last is None:
            self.channels_last = self.device.type == "cuda"

    @property
    def amp(self) -> bool:
        """bf16 autocast of forward passes."""
        return self.precision == "bf16"

    @property
    def arithmetic(self) -> str:
        """The arithmetic as cells record it (and as it enters protocol hashes and noise cache keys):
        ``fp32``, ``tf32`` or ``bf16-autocast``."""
        return ARITHMETIC[self.precision]

    def set_numerics(self) -> None:
        """Set torch's process-wide TF32 switches for CUDA matmuls and cuDNN convolutions from ``precision``
        (on only for ``tf32``; torch's own default turns cuDNN's on). Nothing changes on the CPU."""
        if self.device.type == "cuda":
            tf32 = self.precision == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32

    def generator(self, *tags: object) -> torch.Generator:
        """A fresh generator on ``device`` seeded from ``(seed, *tags)``."""
        g = torch.Generator(device=self.device)
        g.manual_seed(derive_seed(self.seed, *tags))
        return g

    def manual_seed(self, *tags: object) -> None:
        """Seed torch's global RNG (used only by model constructors) from ``(seed, *tags)``."""
        torch.manual_seed(derive_seed(self.seed, "init", *tags))

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """bf16 autocast when enabled, else nothing."""
        if self.amp:
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                yield
        else:
            yield

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move a model to the device (channels_last where enabled)."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def compiled(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` as ``compile_mode`` runs it: itself (``eager``), under ``torch.compile`` (``compile``), or
        compiled in inductor's ``reduce-overhead`` mode, which replays each captured graph as one CUDA graph
        (``graphs``). The wrapper shares the model's parameters; build optimisers on the model itself.

        Measured in the speed suite on an H200 (ResNet-18, batch 128, bf16): SEM's generation step 166.9 ms
        eager, 130.4 ms compiled, 70.5 ms with CUDA graphs (README "Speed")."""
        if self.compile_mode == "eager":
            return model
        return torch.compile(model, mode="reduce-overhead" if self.compile_mode == "graphs" else None)

    def place(self, data: ImageSet) -> ImageSet:
        """``data`` where the engine keeps it: on the device, unless its images and a noise bank for them (2
        bytes per pixel) take more than ``resident_share`` of a CUDA device's memory; then on the host, pinned,
        with the noise bank next to it, and every consumer copies one batch at a time (:meth:`ImageSet.take`).
        The device then holds only the model and the work of a batch."""
        if not self.streams(data):
            return data.to(self.device)
        x, y = data.x.cpu(), data.y.cpu()
        return ImageSet(x if x.is_pinned() else x.pin_memory(), y, data.num_classes, data.name)

    def device_memory(self) -> int:
        """Total memory of the device in bytes (CUDA); 0 elsewhere, where the host is the device."""
        return torch.cuda.get_device_properties(self.device).total_memory if self.device.type == "cuda" else 0

    def streams(self, data: ImageSet) -> bool:
        """Whether :meth:`place` keeps ``data`` on the host."""
        return self.device.type == "cuda" and 2 * data.x.numel() > self.resident_share * self.device_memory()

    def with_seed(self, seed: int) -> Context:
        return dataclasses.replace(self, seed=seed)
