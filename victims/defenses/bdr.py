"""``bdr`` / ``bdr<k>``: bit-depth reduction of the training set to k bits per channel (ISS: 2)."""

from __future__ import annotations

from torch import Tensor

from benchmarks.registry import DEFENSES
from benchmarks.train import Defense


class BitDepthReduction(Defense):
    """Quantise each channel to ``2**bits`` evenly spaced levels in [0, 255]."""

    def __init__(self, bits: int = 2) -> None:
        if not 1 <= bits <= 7:
            raise ValueError(f"bdr<k>: bits must be in 1..7, got {bits}")
        self.name, self.bits = f"bdr{bits}", bits

    def preprocess(self, x: Tensor) -> Tensor:
        levels = 2**self.bits - 1
        return (x.float() * levels / 255).round_().mul_(255 / levels).round_().to(x.dtype)


@DEFENSES.register("bdr")
def bdr() -> Defense:
    return BitDepthReduction(2)


@DEFENSES.register("bdr<k>", examples=("bdr1", "bdr3"))
def bdr_bits(k: int) -> Defense:
    return BitDepthReduction(k)
