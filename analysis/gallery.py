"""Gallery of protected images, as in the SEM paper's Figure 4: clean, noise and protected, per method.

    python -m analysis.gallery --methods em sem [--dataset fashion-mnist] [--preset smoke-600] [--seed 0] \\
        [--cache-dir DIR] [--noise-file FILE.npz ...] [--out results/figures/gallery.png] [--n 6]

Rows are methods; for each of ``--n`` training images (one per class in turn) the columns show the clean
image, the noise scaled for visibility (``delta / (2 max|delta|) + 0.5`` per image, so zero is mid grey)
and the protected image ``clip(x + delta, 0, 255)``. A method's noise is the runner's: it is read from
the noise cache under the same key that ``python -m benchmarks.run`` uses (data set slice, method config,
budget, seed), and generated and cached there on a miss, with the preset's method options.
``--noise-file`` adds a row from a poison file, read and checked exactly as ``benchmarks.run --noise-file``
reads it (:mod:`benchmarks.noisefile`: an ``.npz`` with int8 ``delta`` ``(N|K, C, H, W)`` or protected
images ``x``, or a folder of PNGs, for the preset's training slice, within its L-inf budget).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from analysis._cli import check_out_dir, save_png, subplots
from benchmarks.data import DatasetMissingError
from benchmarks.errors import HelpFormatter, Parser, UsageError, fail
from benchmarks.noisefile import NoiseFileError, add_noise_file_option
from benchmarks.plan import load_data, load_noise_files, make_plan
from benchmarks.plugins import load_plugins
from benchmarks.poisons import GenerationFailure, get_poison
from benchmarks.spec import DEFAULT_CACHE, DEFAULT_PRESET, CampaignSpec
from benchmarks.types import Poison

PROG = "python -m analysis.gallery"


def _numpy(array: torch.Tensor | np.ndarray) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def _show(ax: object, image: np.ndarray) -> None:
    """Draw a ``(C, H, W)`` float image in [0, 1] (grey for one channel) without ticks."""
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(np.clip(image.transpose(1, 2, 0), 0.0, 1.0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def visible_noise(delta: np.ndarray) -> np.ndarray:
    """Noise of one image ``(C, H, W)`` scaled into [0, 1] for display: ``delta / (2 max|delta|) + 0.5``."""
    delta = delta.astype(np.float32)
    peak = float(np.abs(delta).max())
    return delta / (2 * peak) + 0.5 if peak > 0 else np.full_like(delta, 0.5)


def gallery(
    images: torch.Tensor | np.ndarray,
    poisons: Mapping[str, torch.Tensor | np.ndarray],
    out_path: Path,
) -> Path:
    """Write the grid of ``images`` under each noise in ``poisons`` as a PNG at ``out_path``.

    Args:
        images: uint8 ``(N, C, H, W)``, the clean images to show (all of them).
        poisons: row label -> the change of exactly these images in 1/255 units, ``(N, C, H, W)``: int8 noise, or
            int16 ``protected - clean`` (:meth:`Poison.difference`, for methods that keep protected images).
        out_path: the PNG to write (atomically).

    Raises:
        ValueError: wrong dtypes or shapes, or no poisons.
    """
    x = _numpy(images)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"images must be uint8 (N, C, H, W) with N >= 1, got {x.dtype} {x.shape}")
    if not poisons:
        raise ValueError("gallery needs at least one poison")
    deltas = {label: _numpy(d) for label, d in poisons.items()}
    for label, d in deltas.items():
        if d.dtype not in (np.int8, np.int16) or d.shape != x.shape:
            raise ValueError(f"noise {label!r} must be int8 or int16 {x.shape}, got {d.dtype} {d.shape}")
    n = x.shape[0]
    fig, axes = subplots(len(deltas), 3 * n, figsize=(3 * n * 1.0, len(deltas) * 1.05 + 0.3), squeeze=False)
    for r, (label, d) in enumerate(deltas.items()):
        row = axes[r]
        protected = np.clip(x.astype(np.int16) + d.astype(np.int16), 0, 255).astype(np.uint8)
        for i in range(n):
            panels = (x[i] / 255.0, visible_noise(d[i]), protected[i] / 255.0)
            for j, (image, title) in enumerate(zip(panels, ("clean", "noise", "protected"), strict=True)):
                ax = row[3 * i + j]
                _show(ax, image)
                if r == 0:
                    ax.set_title(title, fontsize=8)
        row[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.1)
    return save_png(fig, out_path)


def pick(y: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of ``n`` images: the first image of each class in turn, then the second of each, ..."""
    y = y.cpu()
    by_class = [torch.nonzero(y == k).flatten() for k in torch.unique(y).tolist()]
    order = [int(ix[r]) for r in range(max(len(ix) for ix in by_class)) for ix in by_class if r < len(ix)]
    return torch.tensor(order[:n], dtype=torch.long)


def build_parser(prog: str = PROG) -> Parser:
    p = Parser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--methods", nargs="+", default=[], help="method names (noise from the cache, else generated)")
    add_noise_file_option(p, "a row from a poison file, as benchmarks.run --noise-file reads it (repeatable)")
    p.add_argument("--dataset", default="fashion-mnist", help="the data set")
    p.add_argument("--preset", default=DEFAULT_PRESET, help="the preset (its training slice and method options)")
    p.add_argument("--seed", type=int, default=0, help="the noise seed, as in benchmarks.run --seeds")
    p.add_argument("--radius", default=None, help="rho_u in 1/255 units (None: the preset's)")
    p.add_argument("--data-root", type=Path, default=None, help="data directory (torchvision layout)")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="noise cache ($UEB_CACHE)")
    p.add_argument("--device", default="auto", help="where to generate noise on a cache miss: auto, cpu, cuda")
    p.add_argument("--out", type=Path, default=Path("results/figures/gallery.png"), help="the PNG to write")
    p.add_argument("--n", type=int, default=6, help="number of images")
    return p


def spec_of(args: argparse.Namespace) -> CampaignSpec:
    """The gallery's campaign: its methods (with the preset's options), noise files, seed and budget."""
    return CampaignSpec(
        dataset=args.dataset,
        preset=args.preset,
        methods=tuple(dict.fromkeys(args.methods)),
        noise_files=tuple(args.noise_files),
        seeds=(args.seed,),
        radius=args.radius,
        clean=False,
        device=args.device,
        data_root=args.data_root,
        cache_dir=args.cache_dir,
        progress=False,
    )


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    load_plugins()
    try:
        args = build_parser(prog).parse_args(argv)
        if not args.methods and not args.noise_files:
            raise UsageError("give --methods and/or --noise-file PATH")
        if not 1 <= args.n <= 32:
            raise UsageError(f"--n must be in 1..32, got {args.n}")
        plan = make_plan(spec_of(args))
        check_out_dir(args.out.parent)
        train, _ = load_data(plan)
        load_noise_files(plan, train)
    except (UsageError, DatasetMissingError, NoiseFileError) as err:
        return fail(prog, err)
    train = train.to(plan.ctx.device)
    plan.ctx.set_numerics()
    rows: dict[str, Poison] = {}
    for label, method in plan.variants.items():
        budget = method.budget(train.shape, plan.radius)
        poison = get_poison(method, train, budget, plan.protocol.dataset, plan.cache, plan.ctx, args.seed)
        if isinstance(poison, GenerationFailure):
            return fail(prog, f"{label}: {poison.error}")
        rows[label] = poison
    index = pick(train.y, args.n)
    shown = train.subset(index)
    changes = {label: poison.subset(index).difference(shown).cpu() for label, poison in rows.items()}
    out = gallery(shown.x.cpu(), changes, args.out)
    print(f"gallery: {args.dataset}, preset {args.preset}, seed {args.seed}, images {index.tolist()} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
