"""analysis.speed, analysis.correlation and analysis.gallery on fixed synthetic cells and tensors."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _cells import write_cell
from scipy import stats

from analysis import correlation, gallery, speed
from benchmarks.plan import load_data, make_plan
from benchmarks.poisons import get_poison
from benchmarks.spec import CampaignSpec

PNG = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 1024, f"{path} is not a non-trivial PNG"


def _gen(wall: float, images: int, device: str = "cpu (2 threads)", **extra: float) -> dict:
    return {"wall_s": wall, "steps": 10, "forward_calls": 5, "images_forwarded": images, "device": device, **extra}


# ----------------------------------------------------------------------------------------------- speed


@pytest.fixture
def speed_cells(tmp_path: Path) -> Path:
    root = tmp_path / "cells"
    for seed, (sem_s, rem_s) in enumerate(((10.0, 40.0), (12.0, 44.0))):
        for victim in ("tiny_cnn", "resnet18"):
            for defense in ("none", "at4"):  # 4 cells per poison: cost counted once
                kw = {"seed": seed, "victim": victim, "defense": defense}
                write_cell(root, "sem", "5e000000", generation=_gen(sem_s, 20_000), **kw)
                write_cell(root, "rem", "4e000000", generation=_gen(rem_s, 80_000), **kw)
                write_cell(root, "clean", "cccc0000", generation=_gen(0.0, 0), **kw)
    write_cell(root, "em", "ee000000", generation=_gen(5.0, 30_000, device="NVIDIA H100"))
    return root


def test_speed_table_counts_each_poison_once(tmp_path, speed_cells, capsys) -> None:
    out = tmp_path / "fig"
    assert speed.main(["--results-dir", str(speed_cells), "--out-dir", str(out)]) == 0
    table = pd.read_csv(out / "speed.csv").set_index("method")
    assert "clean" not in table.index
    assert table.loc["sem", "n_poisons"] == 2 and table.loc["rem", "n_poisons"] == 2
    assert table.loc["sem", "wall_s_mean"] == pytest.approx(11.0)
    assert table.loc["sem", "wall_s_std"] == pytest.approx(np.std([10.0, 12.0], ddof=1))
    assert table.loc["rem", "wall_s_mean"] == pytest.approx(42.0)
    assert table.loc["rem", "passes_mean"] == pytest.approx(80.0)  # 80000 images / 1000 training images
    assert table.loc["rem", "wall_vs_sem"] == pytest.approx(42.0 / 11.0)
    assert table.loc["rem", "passes_vs_sem"] == pytest.approx(4.0)
    assert math.isnan(table.loc["em", "wall_vs_sem"]), "no wall ratio across devices"
    assert table.loc["em", "passes_vs_sem"] == pytest.approx(1.5)
    assert table.loc["em", "device"] == "NVIDIA H100"
    printed = capsys.readouterr().out
    assert "| rem | 2 | 42.00 |" in printed and "fashion-mnist (1000 training images), preset smoke" in printed
    assert_png(out / "speed.png")


def test_speed_ratios_are_to_the_sem_variant_with_most_poisons(tmp_path, speed_cells) -> None:
    cfg = {"sample_radius": 0.0}  # a one-seed sweep variant whose label sorts first
    write_cell(speed_cells, "sem", "5e000001", generation=_gen(1.0, 20_000), method_cfg=cfg)
    assert speed.main(["--results-dir", str(speed_cells), "--out-dir", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "speed.csv")
    rem = table[table["method"] == "rem"].iloc[0]
    assert rem["wall_vs_sem"] == pytest.approx(42.0 / 11.0)  # to the 2-poison SEM, not the 1-second variant


def test_speed_needs_generation_cost(tmp_path, capsys) -> None:
    root = tmp_path / "cells"
    write_cell(root, "clean", "cccc0000")
    assert speed.main(["--results-dir", str(root), "--out-dir", str(tmp_path / "fig")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("speed: error:") and "no generation cost" in err and "\n" not in err
    assert not (tmp_path / "fig").exists()


# ----------------------------------------------------------------------------------------------- correlation

ROBUST = {  # method -> (surrogate_robust_acc, noise_robustness, victim acc under at4)
    "em": (0.10, -2.0, 0.80),
    "rem": (0.60, -0.5, 0.45),
    "sem": (0.70, -0.2, 0.35),
    "tap": (0.30, -1.5, 0.70),
}


@pytest.fixture
def robust_cells(tmp_path: Path) -> Path:
    root = tmp_path / "cells"
    for i, (method, (sra, nr, acc)) in enumerate(ROBUST.items()):
        for seed, d in ((0, -0.01), (1, 0.01)):
            gen = _gen(1.0, 100, surrogate_robust_acc=sra + d, noise_robustness=nr)
            write_cell(root, method, f"0000000{i}", defense="at4", seed=seed, final_acc=acc + d, generation=gen)
            write_cell(root, method, f"0000000{i}", defense="none", seed=seed, final_acc=0.1, generation=gen)
    write_cell(root, "clean", "cccc0000", defense="at4", final_acc=0.9)  # no robustness: skipped
    # partial protection (40 % of the set protected): not a poison variant, left out of the correlation
    gen = _gen(1.0, 100, surrogate_robust_acc=0.1, noise_robustness=-2.0)
    write_cell(root, "em", "00000000", defense="at4", final_acc=0.84, generation=gen, part="p40")
    write_cell(
        root, "sc", "5c000000", defense="at4", final_acc=0.5, generation={"wall_s": 0.1, "noise_robustness": None}
    )
    return root


def test_pearson_matches_scipy() -> None:
    x, y = [0.1, 0.6, 0.7, 0.3, 0.5], [0.8, 0.45, 0.35, 0.7, 0.2]
    ref = stats.pearsonr(x, y)
    ci = ref.confidence_interval(confidence_level=0.95)
    assert correlation.pearson(x, y) == pytest.approx((ref.statistic, ref.pvalue, ci.low, ci.high))
    # Fisher's z by hand: atanh(r) +- 1.96 / sqrt(n - 3)
    z, half = math.atanh(ref.statistic), stats.norm.ppf(0.975) / math.sqrt(len(x) - 3)
    assert correlation.pearson(x, y)[2:] == pytest.approx((math.tanh(z - half), math.tanh(z + half)))
    assert correlation.pearson(x[:3], y[:3])[2:] == (-1.0, 1.0)  # 3 points: no spread estimate, the whole range
    assert all(math.isnan(v) for v in correlation.pearson([1, 1, 1], [1, 2, 3]))
    assert all(math.isnan(v) for v in correlation.pearson([1, 2], [1, 2]))


def test_correlation_csv_and_plot(tmp_path, robust_cells, capsys) -> None:
    out = tmp_path / "fig"
    args = ["--results-dir", str(robust_cells), "--defense", "at4", "--out-dir", str(out)]
    assert correlation.main(args) == 0
    points = pd.read_csv(out / "correlation_at4.csv").set_index("method")
    assert sorted(points.index) == sorted(ROBUST)
    for method, (sra, nr, acc) in ROBUST.items():
        assert points.loc[method, "surrogate_robust_acc"] == pytest.approx(sra)  # mean over the two seeds
        assert points.loc[method, "noise_robustness"] == pytest.approx(nr)
        assert points.loc[method, "final_acc_mean"] == pytest.approx(acc)
        assert points.loc[method, "n_poisons"] == 2
    found = pd.read_csv(out / "correlation_at4_stats.csv").set_index("robustness")
    for k, metric in enumerate(("surrogate_robust_acc", "noise_robustness")):
        ref = stats.pearsonr([v[k] for v in ROBUST.values()], [v[2] for v in ROBUST.values()])
        assert found.loc[metric, "r"] == pytest.approx(ref.statistic)
        assert found.loc[metric, "p"] == pytest.approx(ref.pvalue)
        assert found.loc[metric, "n"] == 4
        ci = ref.confidence_interval(confidence_level=0.95)
        assert (found.loc[metric, "r_low"], found.loc[metric, "r_high"]) == pytest.approx((ci.low, ci.high))
    printed = capsys.readouterr().out
    assert "skipped" in printed and "fashion-mnist/smoke/clean" in printed and "fashion-mnist/smoke/sc" in printed
    assert_png(out / "correlation_at4.png")


def test_correlation_at_each_methods_own_radius_and_at_4(tmp_path) -> None:
    root = tmp_path / "cells"
    # method -> (own rho_a, surrogate robust acc there, at 4/255 as recorded, victim acc): at an own radius of 4/255
    # the own numbers are the fixed ones (noise generated before both were recorded); at 8/255 without a recorded
    # 4/255 number the variant has none
    variants = {
        "em": (4.0, 0.1, None, 0.8),
        "tap": (4.0, 0.3, None, 0.7),
        "rem": (8.0, 0.2, 0.6, 0.45),
        "sem": (8.0, 0.3, 0.7, 0.35),
        "asr": (8.0, 0.5, None, 0.5),
    }
    for i, (method, (radius, own, fixed, acc)) in enumerate(variants.items()):
        gen = _gen(1.0, 100, surrogate_robust_acc=own, noise_robustness=-own, robustness_radius=radius)
        if fixed is not None:
            gen |= {"surrogate_robust_acc_fixed": fixed, "noise_robustness_fixed": -fixed}
        write_cell(root, method, f"0000000{i}", defense="at4", final_acc=acc, generation=gen)
    out = tmp_path / "fig"
    assert correlation.main(["--results-dir", str(root), "--defense", "at4", "--out-dir", str(out)]) == 0
    points = pd.read_csv(out / "correlation_at4.csv").set_index("method")
    assert (
        points.loc["em", "surrogate_robust_acc_fixed"] == 0.1 and points.loc["rem", "surrogate_robust_acc_fixed"] == 0.6
    )
    assert (
        math.isnan(points.loc["asr", "surrogate_robust_acc_fixed"]) and points.loc["asr", "surrogate_robust_acc"] == 0.5
    )
    found = pd.read_csv(out / "correlation_at4_stats.csv").set_index("robustness")
    assert found.loc["surrogate_robust_acc", "n"] == 5 and found.loc["surrogate_robust_acc_fixed", "n"] == 4
    ref = stats.pearsonr([0.1, 0.3, 0.6, 0.7], [0.8, 0.7, 0.45, 0.35])
    assert found.loc["surrogate_robust_acc_fixed", "r"] == pytest.approx(ref.statistic)
    assert_png(out / "correlation_at4.png")


def test_correlation_needs_three_points(tmp_path, capsys) -> None:
    root = tmp_path / "cells"
    for i, method in enumerate(("em", "sem")):
        write_cell(root, method, f"0000000{i}", defense="at4", generation=_gen(1.0, 1, surrogate_robust_acc=0.1 * i))
    out = tmp_path / "fig"
    assert correlation.main(["--results-dir", str(root), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("correlation: error: need at least 3 poison variants") and "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--defense", "at9"], "no finished cells under defense 'at9'; defenses present: at4, none"),
        (["--results-dir", "MISSING"], "does not exist"),
        (["--nope"], "unrecognized arguments"),
    ],
)
def test_correlation_bad_input(tmp_path, robust_cells, capsys, args, expect) -> None:
    args = [a.replace("MISSING", str(tmp_path / "missing")) for a in args]
    out = tmp_path / "fig"
    assert correlation.main(["--results-dir", str(robust_cells), "--out-dir", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("correlation: error:") and expect in err and "\n" not in err
    assert not out.exists()


def test_speed_missing_results_dir(tmp_path, capsys) -> None:
    assert speed.main(["--results-dir", str(tmp_path / "nope"), "--out-dir", str(tmp_path / "fig")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "fig").exists()


# ----------------------------------------------------------------------------------------------- gallery


def test_gallery_core_on_synthetic_tensors(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 16, 16), generator=g, dtype=torch.uint8)
    noise = torch.randint(-8, 9, (3, 3, 16, 16), generator=g).to(torch.int8)
    out = gallery.gallery(images, {"random": noise, "zero": torch.zeros_like(noise)}, tmp_path / "g.png")
    assert_png(out)
    gray = gallery.gallery(images[:, :1].numpy(), {"m": noise[:, :1].numpy()}, tmp_path / "gray.png")
    assert_png(gray)
    with pytest.raises(ValueError, match="must be int8"):
        gallery.gallery(images, {"bad": noise.float()}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="must be int8"):
        gallery.gallery(images, {"bad": noise[:2]}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_visible_noise_scaling() -> None:
    d = np.array([[[-8, 0], [4, 8]]], dtype=np.int8)
    assert gallery.visible_noise(d) == pytest.approx(np.array([[[0.0, 0.5], [0.75, 1.0]]]))
    assert (gallery.visible_noise(np.zeros_like(d)) == 0.5).all()


def test_pick_cycles_through_classes() -> None:
    y = torch.tensor([2, 0, 0, 1, 2, 1])
    assert gallery.pick(y, 5).tolist() == [1, 3, 0, 2, 5]


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    return path


def test_gallery_cli_reads_the_runners_cache_and_noise_files(tmp_path, capsys) -> None:
    cache, out = tmp_path / "cache", tmp_path / "fig" / "gallery.png"
    spec = CampaignSpec(dataset="synthetic", preset="tiny", methods=("random",), clean=False, cache_dir=cache)
    plan = make_plan(spec)
    train, _ = load_data(plan)
    method = plan.variants["random"]
    budget = method.budget(train.shape, plan.radius)
    get_poison(method, train, budget, plan.protocol.dataset, plan.cache, plan.ctx, 0)  # fills the cache
    (cached,) = (cache / "synthetic").iterdir()
    stamp = cached.stat().st_mtime_ns
    patch = np.zeros((train.num_classes, *train.shape), dtype=np.int8)  # class-wise noise from a file
    patch[:, :, :4, :4] = 8
    args = ["--dataset", "synthetic", "--preset", "tiny", "--cache-dir", str(cache), "--out", str(out), "--n", "3"]
    noise_file = _npz(tmp_path / "patch.npz", delta=patch)
    assert gallery.main([*args, "--methods", "random", "--noise-file", str(noise_file)]) == 0
    assert_png(out)
    assert list((cache / "synthetic").iterdir()) == [cached] and cached.stat().st_mtime_ns == stamp, "cache hit"
    assert "-> " in capsys.readouterr().out


def test_gallery_generates_and_caches_on_a_miss(tmp_path) -> None:
    cache = tmp_path / "cache"
    args = ["--dataset", "synthetic", "--preset", "tiny", "--cache-dir", str(cache), "--n", "2"]
    assert gallery.main([*args, "--methods", "random", "--out", str(tmp_path / "a.png")]) == 0
    (path,) = (cache / "synthetic").iterdir()
    assert path.name.startswith("random-") and path.name.endswith("-s0.npz")
    with np.load(path) as npz:
        assert json.loads(str(npz["meta"]))["classwise"] is False
    stamp = path.stat().st_mtime_ns
    assert gallery.main([*args, "--methods", "random", "--out", str(tmp_path / "b.png")]) == 0
    assert path.stat().st_mtime_ns == stamp, "the second run reads the cache"
    assert_png(tmp_path / "b.png")


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        ([], "give --methods and/or --noise-file"),
        (["--methods", "nope"], "unknown method 'nope'"),
        (["--methods", "random", "--n", "0"], "--n must be in 1..32"),
        (["--methods", "random", "--radius", "300"], "--radius must be in (0, 127]"),
        (["--methods", "random", "--dataset", "nope"], "unknown dataset 'nope'"),
        (["--methods", "random", "--preset", "nope"], "unknown preset 'nope'"),
        (["--noise-file", "MISSING.npz"], "no such file"),
        (["--noise-file", "BAD.npz"], "'delta' has shape (5, 3, 8, 8)"),
        (["--noise-file", "BIG.npz"], "exceeds the budget"),
    ],
)
def test_gallery_bad_input(tmp_path, capsys, args, expect) -> None:
    _npz(tmp_path / "BAD.npz", delta=np.zeros((5, 3, 8, 8), dtype=np.int8))
    _npz(tmp_path / "BIG.npz", delta=np.full((4, 3, 32, 32), 20, dtype=np.int8))  # class-wise, over 8/255
    args = [a if a[0] == "-" or not a.endswith(".npz") else str(tmp_path / a) for a in args]
    out = tmp_path / "fig" / "g.png"
    base = ["--dataset", "synthetic", "--preset", "tiny", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    assert gallery.main([*base, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gallery: error:") and expect in err and "\n" not in err
    assert not (tmp_path / "fig").exists() and not (tmp_path / "cache").exists()
