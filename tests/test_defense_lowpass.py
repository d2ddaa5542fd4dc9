"""Low-pass filter defenses: ``gaussian<k>``, ``median<k>``, ``mean<k>`` remove high-frequency noise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmarks.plugins import load_plugins
from benchmarks.registry import DEFENSES

load_plugins()

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (4, 3, 12, 10), generator=g, dtype=torch.uint8)


def _smooth() -> torch.Tensor:
    low = torch.rand((4, 3, 2, 2), generator=torch.Generator().manual_seed(1))
    return (F.interpolate(low, size=(32, 32), mode="bilinear", align_corners=True) * 150 + 50).round().to(torch.uint8)


def _reflect_windows(x: torch.Tensor, k: int) -> torch.Tensor:
    """Every pixel's k x k window over a reflected border. Shape: ``(N, C, H, W, k*k)``."""
    r = k // 2
    padded = F.pad(x.double(), (r, r, r, r), mode="reflect")
    return padded.unfold(2, k, 1).unfold(3, k, 1).flatten(-2)


@pytest.mark.parametrize("k", [3, 5])
def test_median_is_the_window_median_with_reflected_borders(k: int) -> None:
    x = _images()
    out = DEFENSES.get(f"median{k}")().preprocess(x)
    expect = _reflect_windows(x, k).median(-1).values
    assert torch.equal(out, expect.to(torch.uint8))


@pytest.mark.parametrize("k", [3, 5])
def test_mean_is_the_window_mean(k: int) -> None:
    x = _images()
    out = DEFENSES.get(f"mean{k}")().preprocess(x)
    expect = _reflect_windows(x, k).mean(-1).round()
    assert (out.double() - expect).abs().max() <= 1  # float32 box sums vs float64: at most one rounding step


def test_gaussian_weights_and_sigma() -> None:
    defense = DEFENSES.get("gaussian3")()
    assert defense.sigma == pytest.approx(0.8) and DEFENSES.get("gaussian5")().sigma == pytest.approx(1.1)
    x = _images()
    g = torch.exp(-torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64) / (2 * 0.8**2))
    kernel = torch.outer(g, g).flatten() / torch.outer(g, g).sum()
    expect = (_reflect_windows(x, 3) * kernel).sum(-1).round()
    assert (defense.preprocess(x).double() - expect).abs().max() <= 1


@pytest.mark.parametrize("name", ["gaussian3", "median3", "mean3", "gaussian7", "median5", "mean5"])
def test_filters_remove_high_frequency_noise_and_keep_smooth_images(name: str) -> None:
    defense = DEFENSES.get(name)()
    smooth = _smooth()
    noise = torch.randint(-8, 9, smooth.shape, generator=torch.Generator().manual_seed(2))
    noisy = (smooth.to(torch.int16) + noise).clamp(0, 255).to(torch.uint8)
    residual = (defense.preprocess(noisy).float() - smooth.float()).abs().mean()
    assert residual < 0.6 * (noisy.float() - smooth.float()).abs().mean(), "the noise is attenuated"
    assert (defense.preprocess(smooth).float() - smooth.float()).abs().mean() < 2.0, "smooth images survive"


@pytest.mark.parametrize("name", ["gaussian2", "median1", "mean17", "gaussian0"])
def test_bad_kernels_raise(name: str) -> None:
    with pytest.raises(ValueError, match="odd, 3..15"):
        DEFENSES.get(name)()


def test_too_small_images_raise() -> None:
    with pytest.raises(ValueError, match="too small"):
        DEFENSES.get("median15")().preprocess(torch.zeros(1, 1, 5, 5, dtype=torch.uint8))
