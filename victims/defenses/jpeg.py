"""``jpeg<q>``: JPEG-compress the training set once at quality q (ISS, Liu et al. 2023: q = 10)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.io import decode_jpeg, encode_jpeg

from benchmarks.registry import DEFENSES
from benchmarks.train import Defense


class Jpeg(Defense):
    """Real JPEG round trip (libjpeg through torchvision), batched over the whole set."""

    def __init__(self, quality: int) -> None:
        if not 1 <= quality <= 100:
            raise ValueError(f"jpeg<q>: quality must be in 1..100, got {quality}")
        self.name, self.quality = f"jpeg{quality}", quality

    def preprocess(self, x: Tensor) -> Tensor:
        encoded = encode_jpeg(list(x.cpu()), quality=self.quality)
        decoded = decode_jpeg(encoded)
        return torch.stack(decoded).to(x.device)


@DEFENSES.register("jpeg<q>", examples=("jpeg10", "jpeg50"))
def jpeg(q: int) -> Defense:
    return Jpeg(q)
