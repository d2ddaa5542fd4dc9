"""The one L-inf PGD of the suite: sign-gradient ascent or descent with projection.

Everything that optimises a bounded perturbation goes through :func:`pgd_optimize`: adversarial
training's inner maximisation, the error-minimising noise of EM/REM/SEM, TAP's targeted noise and
REM's inner adversary. :func:`pgd` is the usual attack on a model built on it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode (BN statistics frozen) and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Turn off ``requires_grad`` of the parameters while only input gradients are needed (an attack, a noise
    update): autograd then neither computes nor saves anything for parameter gradients. Restored afterwards;
    the input gradients are unchanged."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p in params:
            p.requires_grad_(True)


def uniform_like(x: Tensor, radius: float, generator: torch.Generator | None) -> Tensor:
    """i.i.d. uniform noise in ``[-radius, radius]`` with the shape, dtype and device of ``x``."""
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    return u.mul_(2).sub_(1).mul_(radius).to(x.dtype)


def pgd_optimize(
    objective: Callable[[Tensor], Tensor] | None,
    init: Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    ascent: bool,
    project: Callable[[Tensor], Tensor] | None = None,
    project_last: bool = True,
    gradient: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Sign-gradient PGD on a perturbation inside the L-inf ball of radius ``eps``.

    Args:
        objective: maps the perturbation to a scalar loss (differentiable in it); None when ``gradient``
            is given.
        gradient: maps the perturbation (requiring grad) to the objective's gradient, for a caller that
            computes it in pieces (e.g. one forward/backward per chunk of a large batch).
        init: starting perturbation; not modified.
        eps: L-inf radius; alpha: step size; steps: number of sign steps.
        ascent: maximise the objective (attack) if true, else minimise it (error-minimising noise).
        project: extra projection after each step, e.g. onto the valid pixel box.
        project_last: also apply ``project`` after the last step. False returns the last step's
            perturbation before that projection (clipped to the ball only), as the official class-wise
            EM code does before it averages the per-sample results.

    Returns:
        The detached perturbation after ``steps`` steps.

    Shape:
        ``init`` and the result have the same shape; float, in the units of ``eps``.
    """
    if (objective is None) == (gradient is None):
        raise TypeError("pgd_optimize takes exactly one of objective and gradient")
    delta = init.detach().clone()
    for step in range(steps):
        delta.requires_grad_(True)
        if gradient is not None:
            grad = gradient(delta)
        else:
            (grad,) = torch.autograd.grad(objective(delta), delta)  # type: ignore[misc]
        with torch.no_grad():
            delta = delta + alpha * grad.sign() if ascent else delta - alpha * grad.sign()
            delta = delta.clamp_(-eps, eps)
            if project is not None and (project_last or step + 1 < steps):
                delta = project(delta)
    return delta.detach()


def box_projection(x: Tensor, lo: float = 0.0, hi: float = 1.0) -> Callable[[Tensor], Tensor]:
    """The projection that keeps ``x + delta`` inside ``[lo, hi]``."""
    return lambda delta: (x + delta).clamp_(lo, hi).sub_(x)


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    ascent: bool = True,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    box: tuple[float, float] = (0.0, 1.0),
    start: Tensor | None = None,
) -> Tensor:
    """L-inf PGD on the input of ``model`` (BN in eval mode during the attack, mode restored).

    Args:
        model: takes ``x + delta``; x: inputs; y: labels (or targets for a targeted descent).
        eps, alpha, steps: radius, step size and number of steps, in the units of ``x``.
        ascent: raise the loss (untargeted attack) or lower it (targeted / error-minimising).
        random_start: start uniformly inside the ball (else at zero).
        generator: the RNG of the random start.
        box: the valid range of ``x + delta``.
        start: a given starting perturbation (projected onto the box) instead of a drawn or zero one.

    Returns:
        The perturbation ``delta`` (detached), with ``|delta| <= eps`` and ``x + delta`` inside ``box``.

    Shape:
        x: float ``(N, C, H, W)``; y: int64 ``(N,)``; result like ``x``.
    """
    x = x.detach()
    if steps <= 0 or eps <= 0:
        return torch.zeros_like(x)
    project = box_projection(x, *box)
    if start is not None:
        init = project(start.detach())
    else:
        init = project(uniform_like(x, eps, generator)) if random_start else torch.zeros_like(x)
    with eval_mode(model), frozen(model):
        return pgd_optimize(
            lambda d: loss_fn(model(x + d), y), init, eps=eps, alpha=alpha, steps=steps, ascent=ascent, project=project
        )
