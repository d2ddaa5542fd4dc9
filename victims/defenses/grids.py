"""Named grids of defenses, given as ``--defense @name``: the settings the defense papers vary, in one word.

- ``@iss``: Image Shortcut Squeezing (Liu et al., ICML 2023). Grayscale against low-frequency and colour
  shortcuts, JPEG at the qualities the paper sweeps (10 to 90) against L-inf noise, bit-depth reduction at 2 to
  4 bits, and the paper's combination for composite poisons, grayscale then JPEG at 10.
- ``@lowpass``: the Gaussian, median and mean filters at 3 x 3 and 5 x 5 (ISS's low-pass baselines, APBench).
- ``@ueraser``: UEraser's Lite and Max variants (Qin et al., 2023).
- ``@at``: adversarial training at the L-inf radii of the mission's question, 1 to 8 of 255.

A grid is only a list: each member is an ordinary defense (or composition) with its own cells.
"""

from __future__ import annotations

from benchmarks.registry import DEFENSES

DEFENSES.group(
    "iss",
    ("grayscale", "jpeg10", "jpeg30", "jpeg50", "jpeg70", "jpeg90", "bdr2", "bdr3", "bdr4", "grayscale+jpeg10"),
    "Image Shortcut Squeezing (Liu et al., ICML 2023): grayscale, JPEG qualities, bit depths, grayscale then JPEG",
)
DEFENSES.group(
    "lowpass",
    ("gaussian3", "gaussian5", "median3", "median5", "mean3", "mean5"),
    "low-pass filters at 3 x 3 and 5 x 5 (ISS's and APBench's baselines)",
)
DEFENSES.group("ueraser", ("ueraser-lite", "ueraser-max"), "UEraser (Qin et al., 2023), Lite and Max")
DEFENSES.group("at", ("at1", "at2", "at4", "at8"), "L-inf adversarial training at 1, 2, 4 and 8 of 255")
