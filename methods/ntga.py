"""``ntga``: neural tangent generalization attack (Yuan & Wu, ICML 2021).

NTGA poisons a training set so that a model trained on it generalises badly. Its surrogate is the
infinite-width network of the neural tangent kernel (NTK): trained by gradient descent on the MSE for a
time ``t`` from a zero output, that network predicts on any input ``x``

    f_t(x) = K(x, X) K(X, X)^-1 (I - exp(-K(X, X) t / (n k))) Y,

a closed form of the training data ``(X, Y)`` (``n`` images, ``k`` classes; ``t = None`` is the limit
``t -> inf``, kernel ridge-less regression ``K(x, X) K(X, X)^-1 Y``). NTGA maximises the loss of
``f_t`` on clean held-out validation data over the L-inf ball of each training image's noise, by
projected sign-gradient *ascent* through the closed form. Since ``K(X, X)`` is ``n x n``, the set is cut
into blocks (B-NTGA: block size 512) that are attacked one after another, each with its own regression.

Kernel: the *closed-form* infinite-width NTK (not an empirical NTK of a finite network: no sampling
noise, no parameters, and a few elementwise maps of the Gram matrix per layer), in the NTK
parameterisation of neural-tangents' ``stax``, for the two surrogates of the official code:

- ``fnn`` (its default): ``depth`` x [Dense, Erf] on the flattened image (official: 5 layers,
  ``W_std^2 = 1.76``, ``b_std^2 = 0.18``); the Erf arcsine kernel keeps every square root >= 1, so the
  gradient is finite everywhere;
- ``cnn``: ``depth`` x [Conv 5x5 stride 2 SAME, ReLU], Flatten, 3 x Dense (official for MNIST and
  CIFAR-10). With a Flatten readout only the same-position pixel covariances are needed, so the kernel
  is an ``(n, m, H, W)`` map per layer, each conv a zero-padded average pool.

The validation images are a seeded random subset of the *clean* training set itself (the official code
holds out 10 000 of CIFAR-10's 50 000 training images and poisons the other 40 000; here every image is
protected), and a block's objective leaves out the validation images inside that block.

Deviations from the official ``generate_attack.py``, each stated where it matters: the blocks split the
whole set into near-equal parts (the official loop drops the remainder); the official PGD loop evaluates
its gradient at the *clean* block in every iteration and steps by ``eps``, so its output is one FGSM
step of size ``eps`` (``steps=1, step_size=radius`` computes exactly that); here every step takes the
gradient at the current poisoned block, as the paper's algorithm does. The regression is solved with a
Cholesky factor and ``matrix_exp`` instead of an eigendecomposition (same function; stable gradients
where eigenvalues are close).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from benchmarks.noise import EXECUTION_ONLY, Meter, NoiseMethod, quantize
from benchmarks.pgd import box_projection, pgd_optimize, uniform_like
from benchmarks.registry import METHODS
from benchmarks.types import Budget, Context, ImageSet

#: one kernel map of a chunk (rows x columns x spatial positions) holds at most this many entries when
#: ``val_batch`` is None (2**25 float64 entries = 256 MiB)
CHUNK_ENTRIES = 1 << 25


@dataclass(frozen=True)
class NTGAConfig:
    """NTGA's options; defaults are the official code's CIFAR-10 run (``generate_attack.py``)."""

    # --- surrogate kernel
    kernel: Literal["fnn", "cnn"] = "fnn"  # official --model_type default fnn (confirmed); cnn also official
    # None = the official activation of the kernel: fnn Erf, cnn ReLU (models/dnn_infinite.py, cnn_infinite.py;
    # confirmed); erf/relu override it
    activation: Literal["erf", "relu"] | None = None
    depth: int | None = None  # None = official: fnn DenseGroup(5, ...), cnn ConvGroup(2, ...) (confirmed)
    weight_var: float = 1.76  # W_std^2 (official b_std, W_std = sqrt(0.18), sqrt(1.76); confirmed)
    bias_var: float = 0.18  # b_std^2 (same line; confirmed)
    filter_size: int = 5  # cnn conv filter side (ConvBlock filter_shape=(5, 5); confirmed)
    stride: int = 2  # cnn conv stride (MNIST/CIFAR (2, 2), ImageNet (3, 3); confirmed)
    # --- kernel regression (nt.predict.gradient_descent_mse with learning_rate 1, fx_0 = 0)
    # training time of the surrogate, in nt's units (official --t default 64; confirmed in the code, the paper's
    # per-data-set choice not checked); None = t -> inf
    t: float | None = 64.0
    diag_reg: float = 1e-4  # ridge, relative to the mean of diag K (official model_fn/adv_loss diag_reg; confirmed)
    loss: Literal["ce", "mse"] = "ce"  # validation loss (official loss='cross-entropy' in main(); confirmed)
    float64: bool = True  # kernel and regression in float64 (official jax_enable_x64; confirmed)
    # --- attack
    block_size: int = 512  # B-NTGA block size (official --block_size 512 and README; confirmed)
    val_size: int = 10_000  # clean validation images (official --val_size 10000; confirmed); capped at N
    steps: int = 10  # attack iterations (official --nb_iter 10; confirmed)
    # 1/255 units; None = 1.1 * radius / steps (official eps_iter = eps / nb_iter * 1.1; confirmed; the
    # official loop effectively ignores it, see the module docstring)
    step_size: float | None = None
    random_start: bool = False  # official rand_init=None: start at zero (confirmed)
    # validation (and block) rows per kernel chunk; None = as many as keep one kernel map under CHUNK_ENTRIES
    # (official --batch_size 30 batches the validation set the same way, to bound memory)
    val_batch: int | None = field(default=None, metadata=EXECUTION_ONLY)

    def __post_init__(self) -> None:
        for name in ("block_size", "val_size", "steps", "filter_size", "stride"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ntga.{name} must be positive, got {getattr(self, name)}")
        for name in ("depth", "val_batch", "step_size", "t"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"ntga.{name} must be positive or None, got {value}")
        if self.weight_var <= 0 or self.bias_var < 0 or self.diag_reg < 0:
            raise ValueError("ntga: weight_var must be positive, bias_var and diag_reg non-negative")

    @property
    def act(self) -> str:
        """The activation in use: ``activation``, or the official one of ``kernel``."""
        return self.activation or ("erf" if self.kernel == "fnn" else "relu")

    @property
    def layers(self) -> int:
        """The number of hidden layers in use: ``depth``, or the official one of ``kernel``."""
        return self.depth or (5 if self.kernel == "fnn" else 2)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float64 if self.float64 else torch.float32


# ----------------------------------------------------------------------------------------------- NTK


class _Kernel(NamedTuple):
    """Second moments of a layer's pre- or post-activations between two sets of inputs.

    Shape:
        q1: ``(n, 1, *S)`` and q2: ``(1, m, *S)`` the variances of each input; nngp and ntk: ``(n, m, *S)``,
        where ``S`` is ``(H, W)`` in the conv layers (same-position covariances) and empty after them.
    """

    q1: Tensor
    q2: Tensor
    nngp: Tensor
    ntk: Tensor | None  # None before the first layer (zero)


def _affine(k: _Kernel, weight_var: float, bias_var: float) -> _Kernel:
    """A Dense layer (or a conv after its pooling) in the NTK parameterisation."""
    nngp = weight_var * k.nngp + bias_var
    ntk = nngp if k.ntk is None else nngp + weight_var * k.ntk
    return _Kernel(weight_var * k.q1 + bias_var, weight_var * k.q2 + bias_var, nngp, ntk)


def _nonlinearity(k: _Kernel, activation: str) -> _Kernel:
    """Erf (arcsine kernel) or ReLU (arc-cosine kernel) applied to Gaussian pre-activations."""
    assert k.ntk is not None
    if activation == "erf":
        d1, d2 = 1 + 2 * k.q1, 1 + 2 * k.q2
        root = torch.sqrt(d1 * d2 - 4 * k.nngp.square())  # >= 1 by Cauchy-Schwarz
        nngp = (2 / math.pi) * torch.atan2(2 * k.nngp, root)
        ntk = k.ntk * ((4 / math.pi) / root)

        def var(q: Tensor) -> Tensor:
            return (2 / math.pi) * torch.atan2(2 * q, torch.sqrt(1 + 4 * q))

        return _Kernel(var(k.q1), var(k.q2), nngp, ntk)
    prod = k.q1 * k.q2
    # sqrt(q1 q2 - c^2) >= 0, held off 0 (equal inputs) so that its gradient stays finite
    root = torch.sqrt(torch.maximum(prod - k.nngp.square(), prod * torch.finfo(prod.dtype).eps))
    angle = torch.atan2(root, k.nngp)
    nngp = (root + (math.pi - angle) * k.nngp) / (2 * math.pi)
    ntk = k.ntk * ((math.pi - angle) / (2 * math.pi))
    return _Kernel(k.q1 / 2, k.q2 / 2, nngp, ntk)


def _same_pool(x: Tensor, size: int, stride: int) -> Tensor:
    """Mean over each conv window with TF 'SAME' zero padding (neural-tangents' diagonal-spatial conv).

    Shape:
        x: ``(a, b, H, W)``; result: ``(a, b, ceil(H / stride), ceil(W / stride))``.
    """
    a, b, h, w = x.shape
    pads = []
    for side in (w, h):  # F.pad takes the last dimension first
        total = max((math.ceil(side / stride) - 1) * stride + size - side, 0)
        pads += [total // 2, total - total // 2]
    out = F.avg_pool2d(F.pad(x.reshape(a * b, 1, h, w), pads), size, stride)
    return out.reshape(a, b, *out.shape[-2:])


def _conv(k: _Kernel, config: NTGAConfig) -> _Kernel:
    """Average-pool every map over the conv window; the affine part follows in :func:`_affine`."""

    def pool(x: Tensor) -> Tensor:
        return _same_pool(x, config.filter_size, config.stride)

    return _Kernel(pool(k.q1), pool(k.q2), pool(k.nngp), None if k.ntk is None else pool(k.ntk))


def ntk(x1: Tensor, x2: Tensor, config: NTGAConfig) -> Tensor:
    """The closed-form infinite-width NTK of the ``config.kernel`` surrogate between two image sets.

    Computed in the dtype of ``x1`` (see :attr:`NTGAConfig.dtype`); differentiable in both inputs.

    Shape:
        x1: float ``(n, C, H, W)``, x2: float ``(m, C, H, W)``, pixels in [0, 1]; result ``(n, m)``.
    """
    act, w, b = config.act, config.weight_var, config.bias_var
    if config.kernel == "fnn":
        a, c = x1.flatten(1), x2.flatten(1)
        d = a.shape[1]
        k = _Kernel(a.square().mean(1)[:, None], c.square().mean(1)[None, :], a @ c.T / d, None)
        for _ in range(config.layers):
            k = _nonlinearity(_affine(k, w, b), act)
        assert k.ntk is not None
        return k.ntk
    channels = x1.shape[1]
    q1 = x1.square().mean(1)[:, None]  # (n, 1, H, W)
    q2 = x2.square().mean(1)[None, :]  # (1, m, H, W)
    k = _Kernel(q1, q2, torch.einsum("achw,bchw->abhw", x1, x2) / channels, None)
    for _ in range(config.layers):
        k = _nonlinearity(_affine(_conv(k, config), w, b), act)
    # Flatten: the mean over positions; then Dense(384), Dense(192), Dense(classes) without activations
    k = _Kernel(*(None if v is None else v.mean((-2, -1)) for v in k))  # type: ignore[arg-type]
    for _ in range(3):
        k = _affine(k, w, b)
    assert k.ntk is not None
    return k.ntk


# ----------------------------------------------------------------------------------------------- regression


def _flow(u: Tensor) -> Tensor:
    """``h(u) = (1 - exp(-u)) / u`` (1 at 0), the gradient flow's filter of an eigenvalue at time ``u = s lambda``."""
    small = u.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(u), u)
    return torch.where(small, 1 - u / 2 + u.square() / 6, -torch.expm1(-safe) / safe)


def _flow_slope(u: Tensor) -> Tensor:
    """``h'(u) = ((1 + u) exp(-u) - 1) / u^2``, by its Taylor series near 0 where the formula cancels."""
    small = u.abs() < 1e-2
    safe = torch.where(small, torch.ones_like(u), u)
    series = -1 / 2 + u * (1 / 3 + u * (-1 / 8 + u * (1 / 30 - u / 144)))
    return torch.where(small, series, ((1 + safe) * torch.exp(-safe) - 1) / safe.square())


class _GradientFlow(torch.autograd.Function):
    """``A = K^-1 (I - exp(-s K)) Y`` of a symmetric ``K`` by its eigendecomposition, with the Daleckii-Krein
    backward ``dK = V (Phi o (V^T G V)) V^T``, ``Phi`` the divided differences of the eigenvalue filter. The
    generic ``eigh`` backward divides by eigenvalue gaps instead, and explodes where eigenvalues nearly coincide.
    """

    @staticmethod
    def forward(k: Tensor, y: Tensor, s: float) -> Tensor:  # type: ignore[override]
        lam, vec = torch.linalg.eigh(k)
        u = lam.clamp_min(0) * s  # neural-tangents clamps negative (round-off) eigenvalues to 0
        return vec @ ((s * _flow(u))[:, None] * (vec.T @ y))

    @staticmethod
    def setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: Tensor) -> None:
        k, y, s = inputs
        lam, vec = torch.linalg.eigh(k.detach())
        ctx.save_for_backward(lam, vec, y)
        ctx.s = s

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, Tensor, None]:  # type: ignore[override]
        lam, vec, y = ctx.saved_tensors
        s = ctx.s
        u = lam.clamp_min(0) * s
        h = _flow(u)
        du = u[:, None] - u[None, :]
        close = du.abs() <= 1e-5 * u.abs().clamp_min(1)[:, None]
        slope = _flow_slope((u[:, None] + u[None, :]) / 2)
        diff = (h[:, None] - h[None, :]) / torch.where(close, torch.ones_like(du), du)
        phi = s * s * torch.where(close, slope, diff)  # divided differences of lambda -> s h(s lambda)
        p, q = vec.T @ grad, vec.T @ y
        m = p @ q.T
        grad_k = vec @ (phi * (m + m.T) / 2) @ vec.T
        grad_y = vec @ ((s * h)[:, None] * p)
        return grad_k, grad_y, None


def regression_weights(k_bb: Tensor, y_b: Tensor, t: float | None, diag_reg: float) -> Tensor:
    """``A`` with ``f_t(x) = K(x, X) A``: ``K_reg^-1 (I - exp(-K_reg t / (n k))) Y`` or ``K_reg^-1 Y`` (t None).

    The mean prediction of neural-tangents' ``gradient_descent_mse`` (learning rate 1, zero initial output,
    time normalised by ``Y.numel() = n k``), with ``K_reg = K + diag_reg * mean(diag K) * I``; differentiable in
    ``k_bb`` (and ``y_b``).

    Shape:
        k_bb: ``(n, n)`` symmetric; y_b: float one-hot ``(n, k)``; result ``(n, k)``.
    """
    n = k_bb.shape[0]
    k_sym = (k_bb + k_bb.T) / 2
    eye = torch.eye(n, dtype=k_bb.dtype, device=k_bb.device)
    k_reg = k_sym + (diag_reg * k_sym.diagonal().mean()) * eye
    if t is not None:
        return _GradientFlow.apply(k_reg, y_b, t / y_b.numel())
    chol, info = torch.linalg.cholesky_ex(k_reg)
    if int(info):
        raise ValueError("ntga: the block's kernel matrix is not positive definite; raise diag_reg or use float64")
    return torch.cholesky_solve(y_b, chol)


def _val_loss(logits: Tensor, y_val: Tensor, loss: str) -> Tensor:
    """Per-image loss of the regression's predictions. Shape: logits ``(m, k)``, y_val ``(m,)``; result ``(m,)``."""
    if loss == "ce":
        return F.cross_entropy(logits, y_val, reduction="none")
    return 0.5 * (logits - F.one_hot(y_val, logits.shape[1]).to(logits.dtype)).square().mean(1)


def generalization_loss(
    x_block: Tensor,
    y_block: Tensor,
    x_val: Tensor,
    y_val: Tensor,
    num_classes: int,
    config: NTGAConfig,
    weight: Tensor | None = None,
) -> Tensor:
    """NTGA's objective: the validation loss of the NTK regression at time ``t`` trained on one block.

    The weighted mean (``weight`` None: the plain mean) over the validation images of the loss of
    ``f_t(x_val) = K(x_val, X) A(X, Y)`` with ``(X, Y)`` the block; computed in ``config.dtype`` in one piece
    and differentiable in ``x_block`` (the attack computes the same gradient a chunk at a time).

    Shape:
        x_block: float ``(n, C, H, W)`` in [0, 1]; y_block: int64 ``(n,)``; x_val: float ``(m, C, H, W)``;
        y_val: int64 ``(m,)``; weight: ``(m,)``; result: a scalar.
    """
    dtype = config.dtype
    xb, xv = x_block.to(dtype), x_val.to(dtype)
    y_b = F.one_hot(y_block, num_classes).to(dtype)
    a = regression_weights(ntk(xb, xb, config), y_b, config.t, config.diag_reg)
    per_image = _val_loss(ntk(xv, xb, config) @ a, y_val, config.loss)
    w = torch.ones_like(per_image) if weight is None else weight.to(per_image)
    return (per_image * w).sum() / w.sum()


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _count(meter: Meter, k: Tensor) -> Tensor:
    """Record one evaluation of the infinite-width surrogate: a kernel block, whose rows and columns are the
    images it takes in (the cost counterpart of a forward call of a finite surrogate); returns ``k``."""
    meter.forward_calls += 1
    meter.images_forwarded += sum(k.shape[:2])
    return k


# ----------------------------------------------------------------------------------------------- method


@METHODS.register("ntga")
class NeuralTangentGeneralizationAttack(NoiseMethod):
    """B-NTGA: per block, sign-gradient ascent of the NTK regression's clean-validation loss.

    Example:
        >>> c = NeuralTangentGeneralizationAttack().config
        >>> (c.kernel, c.act, c.layers, c.block_size, c.steps, c.t)
        ('fnn', 'erf', 5, 512, 10, 64.0)
    """

    name = "ntga"
    citation = "Yuan et al., Neural Tangent Generalization Attacks, ICML 2021"
    url = "https://proceedings.mlr.press/v139/yuan21b.html"
    Config = NTGAConfig

    def plan(self, n: int, ctx: Context) -> tuple[list[Tensor], Tensor]:
        """The blocks (a seeded permutation of ``range(n)`` cut into ``ceil(n / block_size)`` near-equal
        parts) and the seeded validation indices (``min(val_size, n)`` images).

        Shape:
            each block: int64 ``(b,)``; validation: int64 ``(v,)``; on ``ctx.device``.
        """
        cfg = self.config
        order = torch.randperm(n, generator=ctx.generator(self.name, "blocks"), device=ctx.device)
        blocks = list(torch.tensor_split(order, math.ceil(n / cfg.block_size)))
        val = torch.randperm(n, generator=ctx.generator(self.name, "validation"), device=ctx.device)
        return blocks, val[: min(cfg.val_size, n)].sort().values

    def _rows(self, cols: int, spatial: int) -> int:
        """Rows of a kernel chunk against ``cols`` columns."""
        if self.config.val_batch is not None:
            return self.config.val_batch
        return max(1, CHUNK_ENTRIES // max(cols * spatial, 1))

    def _spatial(self, shape: tuple[int, ...]) -> int:
        """Entries per image pair of the largest kernel map (1 for fnn, the input's H * W for cnn)."""
        return 1 if self.config.kernel == "fnn" else shape[-2] * shape[-1]

    def objective_and_gradient(
        self, x_b: Tensor, y_b: Tensor, x_val: Tensor, y_val: Tensor, weight: Tensor, meter: Meter
    ) -> tuple[float, Tensor]:
        """:func:`generalization_loss` at ``x_b`` and its gradient in ``x_b``, a chunk of kernel rows at a time.

        The block kernel is computed without a graph, the regression weights ``A`` are differentiated once, and
        each chunk of validation (then block) rows is recomputed with a graph and back-propagated at once, so
        memory holds one chunk's kernel maps, whatever the validation size.

        Shape:
            x_b: ``(n, C, H, W)`` and x_val: ``(m, C, H, W)`` in ``config.dtype``; y_b: float one-hot ``(n, k)``;
            y_val: int64 ``(m,)``; weight: ``(m,)``; gradient like ``x_b``.
        """
        cfg = self.config
        x = x_b.detach().requires_grad_(True)
        n, spatial = len(x), self._spatial(tuple(x.shape))
        rows = self._rows(n, spatial)
        with torch.no_grad():
            k_bb = torch.cat([_count(meter, ntk(x[r], x, cfg)) for r in _chunks(n, rows)])
        k_leaf = k_bb.requires_grad_(True)
        with torch.enable_grad():
            a = regression_weights(k_leaf, y_b, cfg.t, cfg.diag_reg)
        a_leaf = a.detach().requires_grad_(True)
        grad_x, grad_a = torch.zeros_like(x), torch.zeros_like(a)
        total, value = weight.sum(), 0.0
        for r in _chunks(len(x_val), rows):
            if not bool(weight[r].any()):
                continue
            with torch.enable_grad():
                k_vb = _count(meter, ntk(x_val[r], x, cfg))
                part = (_val_loss(k_vb @ a_leaf, y_val[r], cfg.loss) * weight[r]).sum() / total
                gx, ga = torch.autograd.grad(part, [x, a_leaf])
            grad_x += gx
            grad_a += ga
            value += float(part.detach())
        (grad_k,) = torch.autograd.grad(a, k_leaf, grad_a)
        for r in _chunks(n, rows):
            with torch.enable_grad():
                (gx,) = torch.autograd.grad(_count(meter, ntk(x[r], x, cfg)), x, grad_k[r])
            grad_x += gx
        return value, grad_x

    def objective(self, x_b: Tensor, y_b: Tensor, x_val: Tensor, y_val: Tensor, weight: Tensor, meter: Meter) -> float:
        """:func:`generalization_loss` at ``x_b`` without a graph, a chunk of validation rows at a time."""
        cfg = self.config
        n = len(x_b)
        rows = self._rows(n, self._spatial(tuple(x_b.shape)))
        with torch.no_grad():
            k_bb = torch.cat([_count(meter, ntk(x_b[r], x_b, cfg)) for r in _chunks(n, rows)])
            a = regression_weights(k_bb, y_b, cfg.t, cfg.diag_reg)
            parts = [
                (_val_loss(_count(meter, ntk(x_val[r], x_b, cfg)) @ a, y_val[r], cfg.loss) * weight[r]).sum()
                for r in _chunks(len(x_val), rows)
            ]
        return float(torch.stack(parts).sum() / weight.sum())

    def perturb(self, train: ImageSet, budget: Budget, ctx: Context, meter: Meter) -> Tensor:
        """Attack each block in turn with :func:`benchmarks.pgd.pgd_optimize` (ascent, box ``[0, 1]``).

        Records the mean over blocks of the objective before and after the attack (float noise, before
        quantisation) in ``val_loss_clean`` and ``val_loss_protected``.

        Shape:
            result: int8 ``(N, C, H, W)`` in 1/255 units, where ``train.x`` lives.
        """
        cfg = self.config
        dtype, k = cfg.dtype, train.num_classes
        blocks, val = self.plan(len(train), ctx)
        xv_u8, y_val = train.take(val, ctx.device)
        x_val = xv_u8.to(dtype) / 255
        alpha = (cfg.step_size if cfg.step_size is not None else 1.1 * budget.radius / cfg.steps) / 255
        start_gen = ctx.generator(self.name, "start")
        bank = torch.zeros(train.x.shape, dtype=torch.int8, device=train.x.device)
        clean, protected = [], []
        for block in tqdm(blocks, desc="ntga blocks", disable=not ctx.progress, leave=False):
            xb_u8, yb = train.take(block, ctx.device)
            x_b = xb_u8.to(dtype) / 255
            y_b = F.one_hot(yb, k).to(dtype)
            weight = (~torch.isin(val, block)).to(dtype)
            if not bool(weight.any()):  # every validation image is in this block: validate on all of them
                weight = torch.ones_like(weight)
            project = box_projection(x_b)
            init = project(uniform_like(x_b, budget.eps, start_gen)) if cfg.random_start else torch.zeros_like(x_b)

            def grad(delta: Tensor, x_b: Tensor = x_b, y_b: Tensor = y_b, weight: Tensor = weight) -> Tensor:
                return self.objective_and_gradient(x_b + delta.detach(), y_b, x_val, y_val, weight, meter)[1]

            delta = pgd_optimize(
                None, init, eps=budget.eps, alpha=alpha, steps=cfg.steps, ascent=True, project=project, gradient=grad
            )
            meter.steps += cfg.steps
            clean.append(self.objective(x_b, y_b, x_val, y_val, weight, meter))
            protected.append(self.objective(x_b + delta, y_b, x_val, y_val, weight, meter))
            bank[block.to(bank.device)] = quantize(delta, budget, xb_u8).to(bank.device)
        sizes = torch.tensor([float(len(b)) for b in blocks])
        meter.extra.update(
            kernel=f"closed-form infinite-width NTK, {cfg.kernel} {cfg.layers} x {cfg.act}",
            blocks=len(blocks),
            validation_images=len(val),
            val_loss_clean=float((torch.tensor(clean) * sizes).sum() / sizes.sum()),
            val_loss_protected=float((torch.tensor(protected) * sizes).sum() / sizes.sum()),
        )
        return bank
