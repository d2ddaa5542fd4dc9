"""The one noise interface: ``NoiseMethod.generate(train, budget, ctx) -> Poison``.

A method implements :meth:`NoiseMethod.perturb` and returns float noise in [0, 1] pixel units, or int8
noise in 1/255 units (what a method that fills a noise bank batch by batch returns: 1 byte per pixel), or
the uint8 protected images themselves (a method that transforms images rather than adding bounded noise). The
base class owns everything a method could get wrong: it quantises to int8 1/255 units exactly as the
reference code stores noise, projects onto the budget, and then refuses any result whose shape,
dtype or norm is off, or that changed the labels or images it was given. It also records the cost.

Memory: the noise stays int8 from the method to the cache to :meth:`Poison.apply`; quantising, checking
and applying it run a chunk of images at a time (:data:`benchmarks.types.CHUNK_BYTES`), so the float
working set of the whole-set steps is one chunk, whatever the data set's size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from benchmarks.data import stratified_index
from benchmarks.env import device_name
from benchmarks.robustness import DEFAULT_RADIUS, ROBUSTNESS_IMAGES, robustness
from benchmarks.store import FIXED_RADIUS, ROBUSTNESS, ROBUSTNESS_FIXED
from benchmarks.types import Budget, Context, ImageSet, Poison, row_chunks


class PoisonError(ValueError):
    """Noise that breaks the contract (shape, dtype, budget, labels, inputs)."""


@dataclasses.dataclass
class Meter:
    """Cost of a generation: steps, and forward calls / images through the watched models."""

    steps: int = 0
    forward_calls: int = 0
    images_forwarded: int = 0
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # method-specific facts, e.g. converged
    #: the final surrogate, if the method has one: generate() measures its robustness on the poison
    surrogate: nn.Module | None = None

    @contextmanager
    def watch(self, model: nn.Module) -> Iterator[None]:
        """Count every forward call of ``model`` while inside the block."""

        def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
            self.forward_calls += 1
            self.images_forwarded += int(args[0].shape[0])

        handle = model.register_forward_pre_hook(hook)
        try:
            yield
        finally:
            handle.remove()


#: field metadata of a config option that says how to compute, never what: it is left out of the config's hash
#: and of the recorded method config (a test shows the result does not depend on it)
EXECUTION_ONLY = {"execution_only": True}


def result_config(config: Any) -> dict[str, Any]:
    """The options of a config dataclass that determine its result (``asdict`` without execution-only fields)."""
    data = dataclasses.asdict(config)
    for f in dataclasses.fields(config):
        if f.metadata.get("execution_only"):
            del data[f.name]
    return data


def config_hash(config: Any) -> str:
    """8 hex digits identifying a config dataclass (its :func:`result_config`) or any JSON-able mapping."""
    data = result_config(config) if dataclasses.is_dataclass(config) else config
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _accepts(kind: Any, value: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits the annotation ``kind``, and the value converted (int -> float, list -> tuple)."""
    if kind is Any:
        return True, value
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        for arm in typing.get_args(kind):
            ok, converted = _accepts(arm, value)
            if ok:
                return True, converted
        return False, value
    if kind is type(None):
        return value is None, value
    if typing.get_origin(kind) is typing.Literal:
        return value in typing.get_args(kind) and not isinstance(value, bool), value
    if kind is bool:
        return isinstance(value, bool), value
    if isinstance(value, bool):
        return False, value
    if kind is float:
        return isinstance(value, int | float), float(value) if isinstance(value, int | float) else value
    origin = typing.get_origin(kind) or kind
    if origin is tuple:
        if isinstance(value, list):
            value = tuple(value)
        if not isinstance(value, tuple):
            return False, value
        args = typing.get_args(kind)
        item = args[0] if args else Any
        pairs = [_accepts(item, v) for v in value]
        return all(ok for ok, _ in pairs), tuple(v for _, v in pairs)
    if isinstance(origin, type):
        return isinstance(value, origin), value
    return True, value


def check_options(cls: type, options: dict[str, Any] | None) -> dict[str, Any]:
    """Validate option overrides for the config dataclass ``cls`` against its annotations.

    ints are accepted (and converted) for float fields, lists for tuple fields; ``X | None`` fields
    take ``None`` or an ``X``.

    Raises:
        ValueError: naming the unknown key and the accepted ones, or the expected type.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key not in fields:
            raise ValueError(f"{cls.__qualname__}: unknown option {key!r}; accepted: {', '.join(sorted(fields))}")
        kind = hints.get(key, Any)
        ok, converted = _accepts(kind, value)
        if not ok:
            if typing.get_origin(kind) is typing.Literal:
                accepted = ", ".join(map(repr, typing.get_args(kind)))
                raise ValueError(f"{cls.__qualname__}.{key}: expected one of {accepted}, got {value!r}")
            name = getattr(kind, "__name__", None) or str(kind).replace("typing.", "")
            raise ValueError(f"{cls.__qualname__}.{key}: expected {name}, got {value!r}")
        out[key] = converted
    return out


def quantize(delta: Tensor, budget: Budget, x_u8: Tensor | None = None) -> Tensor:
    """Float noise in [0, 1] units -> int8 in 1/255 units inside the budget.

    Rounds to the nearest 1/255 (as the REM/SEM code stores noise), clamps L-inf noise to
    ``floor(radius)``; L2 noise whose rounded norm exceeds the radius is rescaled and truncated toward
    zero, which can only shrink it. With ``x_u8`` (sample-wise noise) the noise is also clipped so
    that ``x + delta`` stays in [0, 255]: the stored noise is then exactly what the published image
    carries.
    """
    q = delta.detach().float().mul(255).round_()
    if budget.norm == "linf":
        q = q.clamp_(-int(budget.radius), int(budget.radius))
    else:
        over = budget.norms(q) > budget.radius
        if over.any():
            raw = delta.detach().float()[over] * 255
            scale = (budget.radius / budget.norms(raw).clamp_min(1e-12)).clamp(max=1.0)
            q[over] = torch.trunc(raw * scale.view(-1, *[1] * (raw.dim() - 1)))
        q = q.clamp_(-127, 127)
    if x_u8 is not None:  # clamp q to [-x, 255 - x], in place (exact: integer values)
        x = x_u8.to(q.device, torch.float32)
        q = q.add_(x).clamp_(0, 255).sub_(x)
    return q.to(torch.int8)


def quantize_bank(delta: Tensor, budget: Budget, x_u8: Tensor | None = None) -> Tensor:
    """:func:`quantize` over a whole noise bank, a chunk of rows at a time.

    Float noise (``[0, 1]`` units) is written to a new int8 bank; int8 noise (1/255 units, already rounded) is
    clamped in place, with the same result as quantising its float value. Either way the float working set is
    one chunk.

    Shape:
        delta: float or int8 ``(N, C, H, W)`` (or class-wise ``(K, C, H, W)`` with ``x_u8`` None); x_u8: uint8
        ``(N, C, H, W)`` on any device; result: int8 like ``delta``, on its device.
    """
    out = delta if delta.dtype == torch.int8 else torch.empty(delta.shape, dtype=torch.int8, device=delta.device)
    for rows in row_chunks(len(delta), 4 * delta[0].numel() if len(delta) else 1):
        d = delta[rows]
        d = d.float().div_(255) if d.dtype == torch.int8 else d
        out[rows] = quantize(d, budget, None if x_u8 is None else x_u8[rows])
    return out


def validate_poison(poison: Poison, data: ImageSet, budget: Budget) -> None:
    """Raise :class:`PoisonError` unless ``poison`` is valid for ``data`` within ``budget``: int8 noise, or uint8
    protected images (:attr:`Poison.images`) whose change from ``data`` is within a measured budget.

    A declared budget (``blur``) has no norm to check: only the form is checked here.
    """
    d = poison.delta
    expect = (data.num_classes, *data.shape) if poison.classwise else tuple(data.x.shape)
    if poison.images and d.dtype != torch.uint8:
        raise PoisonError(f"protected images must be uint8, got {d.dtype}")
    if not poison.images and d.dtype != torch.int8:
        raise PoisonError(f"noise dtype must be int8 (1/255 units), got {d.dtype}")
    if tuple(d.shape) != expect:
        raise PoisonError(f"noise shape {tuple(d.shape)} does not match {expect}")
    if not poison.images and budget.norm not in ("linf", "l2"):
        raise PoisonError(f"a {budget.norm!r} budget needs the protected images, not int8 noise")
    if not budget.measured:
        return
    norms = poison.norms(data, budget)
    if len(norms) and float(norms.max()) > budget.radius + 1e-6:
        unit = " pixels" if budget.norm == "l0" else "/255"
        raise PoisonError(
            f"noise exceeds its budget: max {budget.norm} norm {float(norms.max()):.3f}{unit} > {budget.radius}{unit}"
        )


def _fingerprint(x: Tensor) -> str:
    """A digest of every pixel (about 1 s per GB on the CPU), to detect in-place edits exactly."""
    digest = hashlib.blake2b(digest_size=16)
    flat = x.detach().reshape(-1)
    chunk = 1 << 24
    for start in range(0, flat.numel(), chunk):
        digest.update(flat[start : start + chunk].cpu().numpy())  # the buffer itself: no copy on the host
    return digest.hexdigest()


class NoiseMethod(ABC):
    """Base class of every noise method.

    Subclasses set ``name`` and ``Config`` (a frozen dataclass whose defaults are the paper's CIFAR
    hyperparameters, each commented) and implement :meth:`perturb`.
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    citation: ClassVar[str] = ""  # the paper, "Authors, Title, Venue Year" (the leaderboard lists it)
    url: ClassVar[str] = ""  # the paper's address (arXiv or proceedings), linked from the leaderboard
    norms: ClassVar[tuple[str, ...]] = ("linf",)

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        base = config if config is not None else self.Config()
        self.config = dataclasses.replace(base, **check_options(self.Config, overrides))

    def budget(self, shape: tuple[int, ...], radius: float) -> Budget:
        """The budget this method is held to for images of ``shape`` at the run's L-inf ``radius``."""
        return Budget("linf", radius)

    @property
    def classwise(self) -> bool:
        """Whether :meth:`perturb` returns one pattern per class ``(K, C, H, W)``."""
        return bool(getattr(self.config, "classwise", False))

    @abstractmethod
    def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
        """Compute float noise in [0, 1] pixel units.

        Args:
            train: the training set as :meth:`Context.place` keeps it: on ``ctx.device``, or pinned on the
                host when it is too large for the device (take batches with :meth:`ImageSet.take`); must
                not be modified.
            budget: the norm ball the result is projected onto.
            ctx: device, RNG and precision; every random draw uses ``ctx.generator(...)``.
            meter: record steps and watch the models whose forward passes are the cost.

        Shape:
            float ``(N, C, H, W)`` in [0, 1] units or int8 in 1/255 units (for sample-wise noise on large
            sets: a bank filled batch by batch with :func:`quantize`), or ``(K, C, H, W)`` when :attr:`classwise`;
            or uint8 ``(N, C, H, W)``: the protected images themselves, for a method that transforms images
            rather than adding noise (its budget is ``l0`` or declared, see :class:`Budget`).
        """

    def generate(self, train: ImageSet, budget: Budget, ctx: Context) -> Poison:
        """Run the method and return checked int8 noise with its cost in ``stats``."""
        if budget.norm not in self.norms:
            raise PoisonError(f"method {self.name!r} supports norms {self.norms}, not {budget.norm!r}")
        train = ctx.place(train)
        labels, pixels = train.y.clone(), _fingerprint(train.x)
        meter = Meter()
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        start = time.perf_counter()
        delta = self.perturb(train, budget, ctx, meter)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        wall = time.perf_counter() - start
        if not torch.equal(train.y, labels):
            raise PoisonError(f"method {self.name!r} changed the training labels")
        if _fingerprint(train.x) != pixels:
            raise PoisonError(f"method {self.name!r} modified the training images in place")
        expect = (train.num_classes, *train.shape) if self.classwise else tuple(train.x.shape)
        if tuple(delta.shape) != expect:
            raise PoisonError(f"method {self.name!r} returned noise of shape {tuple(delta.shape)}, expected {expect}")
        if delta.dtype == torch.uint8:  # the protected images themselves
            poison = Poison(delta, self.classwise, images=True)
        elif budget.norm not in ("linf", "l2"):
            raise PoisonError(f"method {self.name!r}: a {budget.norm!r} budget needs protected images (uint8)")
        else:
            poison = Poison(quantize_bank(delta, budget, None if self.classwise else train.x), self.classwise)
        del delta
        validate_poison(poison, train, budget)
        robust = self._robustness(meter.surrogate, poison, train, ctx)
        poison.delta = poison.delta.cpu()
        poison.stats = {
            "wall_s": wall,
            "steps": meter.steps,
            "forward_calls": meter.forward_calls,
            "images_forwarded": meter.images_forwarded,
            "device": device_name(ctx.device),
            **meter.extra,
            **robust,
        }
        return poison

    def _robustness(self, model: nn.Module | None, poison: Poison, train: ImageSet, ctx: Context) -> dict[str, Any]:
        """Surrogate and noise robustness (benchmarks.robustness) at the surrogate's rho_a and at FIXED_RADIUS (4/255),
        timed separately."""
        if model is None:
            return {}
        start = time.perf_counter()
        radius = float(getattr(self.config, "adv_radius", 0.0)) or DEFAULT_RADIUS
        if len(train) > ROBUSTNESS_IMAGES:  # protect only the images measured, not the whole set
            head = stratified_index(train, ROBUSTNESS_IMAGES)
            train, poison = train.subset(head), poison.subset(head)
        protected = poison.apply(train)
        out = robustness(model, protected, ctx, radius)
        # and at one radius for every variant, so that methods and sweeps of rho_a compare on one scale
        fixed = out if radius == FIXED_RADIUS else robustness(model, protected, ctx, FIXED_RADIUS)
        out |= {f: fixed[k] for k, f in zip(ROBUSTNESS, ROBUSTNESS_FIXED, strict=True)}
        return {**out, "robustness_s": time.perf_counter() - start}
