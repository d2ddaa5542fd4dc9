"""``none``: the recipe's standard augmentation (crop + flip in ``paper``, none in ``smoke``) and cross-entropy."""

from __future__ import annotations

from benchmarks.registry import DEFENSES
from benchmarks.train import Defense


@DEFENSES.register("none")
def none() -> Defense:
    """The baseline every other defense is compared with (augmentation is itself a defense)."""
    return Defense()
