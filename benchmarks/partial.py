"""Partial protection: only a fraction of the training set is protected, and the control that trains on the
clean rest alone.

A data owner may protect only some of the images a model is trained on. A cell then has a *part*
(:attr:`benchmarks.store.CellKey.part`):

- ``p40``: the noise is applied to 40 % of the training images, the other 60 % stay clean, and the victim
  trains on all of them;
- ``rest40``: the control, the clean baseline trained on those clean 60 % only. When ``p40`` scores no lower
  than ``rest40``, the protected 40 % add nothing to what the clean rest teaches.

Which images are protected is a fixed, published list, the same for every method, seed and defense (as the SEM
code ships fixed index files for CIFAR): the first ``round(f * N)`` entries of one permutation of ``range(N)``
drawn from a seed that depends on ``N`` only, so the lists of the fractions are nested (the 20 % are inside the
40 %) and can be published without the data. The indices count images of the training set as the protocol
slices it (its class-balanced head: 3000 images in ``smoke``; CIFAR-10/100's 50000 in ``paper``). ``python -m
benchmarks.partial --size N --fraction F`` prints a list, ``results/partial/size-N/pF.json`` are the published
ones for 3000 and 50000 images, and every partial cell records the sha256 of its list.

    python -m benchmarks.partial --size 3000 --fraction 0.4 [--out FILE.json]
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks.errors import HelpFormatter, Parser, UsageError, fail
from benchmarks.io import atomic_write_text
from benchmarks.types import ImageSet, Poison, derive_seed

PROG = "python -m benchmarks.partial"
#: the fractions the papers vary (SEM and REM: 20 to 80 % of CIFAR-10 protected)
PAPER_FRACTIONS = (0.2, 0.4, 0.6, 0.8)
_PART = re.compile(r"^(p|rest)([0-9]{1,2})$")


def check_fraction(value: float) -> float:
    """A protected fraction in whole percent, 1 to 100 (1.0: the whole set, the default).

    Raises:
        ValueError: outside (0, 1] or not a whole percentage.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"a protected fraction must be a number in (0, 1], got {value!r}")
    percent = round(value * 100)
    if not 0 < value <= 1 or abs(value * 100 - percent) > 1e-9:
        raise ValueError(f"a protected fraction must be a whole percentage in (0, 1] (0.2, 0.4, ...), got {value!r}")
    return percent / 100


def parts_of(fraction: float) -> tuple[str, str]:
    """The parts of a fraction below 1: ``("p40", "rest40")`` for 0.4."""
    percent = round(check_fraction(fraction) * 100)
    if percent == 100:
        raise ValueError("the whole set has no parts")
    return f"p{percent}", f"rest{percent}"


def parse_part(part: str) -> tuple[str, float]:
    """``"p40"`` -> ``("p", 0.4)``; ``"rest40"`` -> ``("rest", 0.4)``.

    Raises:
        ValueError: not a part name.
    """
    match = _PART.match(part)
    if not match or match.group(2) == "0":
        raise ValueError(f"part {part!r}: expected p<percent> or rest<percent>, percent in 1..99")
    return match.group(1), int(match.group(2)) / 100


def protected_index(size: int, fraction: float) -> torch.Tensor:
    """The published list: the images protected when ``fraction`` of a set of ``size`` is, sorted.

    Shape:
        result: int64 ``(round(fraction * size),)``, ascending, on the CPU.
    """
    fraction = check_fraction(fraction)
    g = torch.Generator().manual_seed(derive_seed("partial-protection", size))
    order = torch.randperm(size, generator=g)
    return order[: round(fraction * size)].sort().values


def index_digest(index: torch.Tensor) -> str:
    """sha256 of a list as its JSON text (what ``python -m benchmarks.partial`` prints): 16 hex digits."""
    return hashlib.sha256(json.dumps(index.tolist()).encode()).hexdigest()[:16]


def training_part(poison: Poison, train: ImageSet, part: str) -> ImageSet:
    """The training set of a cell of ``part`` ("" the whole set): the protected set, the partly protected set,
    or the clean rest alone."""
    if not part:
        return poison.apply(train)
    kind, fraction = parse_part(part)
    index = protected_index(len(train), fraction).to(train.x.device)
    if kind == "rest":
        keep = torch.ones(len(train), dtype=torch.bool, device=train.x.device)
        keep[index] = False
        return train.subset(keep.nonzero().squeeze(1))
    x = train.x.clone()
    x[index] = poison.subset(index).apply(train.subset(index)).x
    return train.with_images(x)


def build_parser(prog: str = PROG) -> Parser:
    p = Parser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--size", type=int, required=True, help="the training set's size N")
    p.add_argument("--fraction", type=float, required=True, help="the protected fraction, e.g. 0.4")
    p.add_argument("--out", type=Path, default=None, help="write the list as JSON here (default: stdout)")
    return p


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    try:
        args = build_parser(prog).parse_args(argv)
        if args.size < 1:
            raise UsageError(f"--size must be positive, got {args.size}")
        try:
            index = protected_index(args.size, args.fraction)
        except ValueError as err:
            raise UsageError(f"--fraction: {err}") from None
    except UsageError as err:
        return fail(prog, err)
    text = json.dumps(index.tolist()) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(args.out, text)
        print(f"partial: {len(index)} of {args.size} images, sha256 {index_digest(index)} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
