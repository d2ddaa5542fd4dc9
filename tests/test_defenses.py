"""Tests for the training-time defenses (victims/defenses) and their use by benchmarks.train.fit."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.data import make_synthetic
from benchmarks.plugins import load_plugins
from benchmarks.registry import DEFENSES, VICTIMS
from benchmarks.train import Defense, TrainRecipe, fit
from benchmarks.types import Context, ImageSet
from victims.defenses.crop_flip import CropFlip
from victims.defenses.cutout import Cutout

load_plugins()

NAMES = DEFENSES.list()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def data() -> tuple[ImageSet, ImageSet]:
    return make_synthetic(n_train=16, n_test=8, num_classes=4, shape=(3, 16, 16))


@pytest.fixture
def smooth() -> torch.Tensor:
    """Smooth uint8 images (JPEG at high quality should keep them almost intact)."""
    low = torch.rand((8, 3, 4, 4), generator=_gen(0))
    return (F.interpolate(low, size=(32, 32), mode="bilinear", align_corners=True) * 200 + 20).round().to(torch.uint8)


def _labels(defense: Defense, y: torch.Tensor, k: int) -> torch.Tensor:
    return F.one_hot(y, k).float() if defense.soft_labels else y


def test_expected_defenses_listed() -> None:
    assert {"none", "at4", "jpeg10", "cutout", "mixup", "cutmix", "grayscale", "bdr", "bdr3"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_factory_builds_defense(name: str) -> None:
    defense = DEFENSES.get(name)()
    assert isinstance(defense, Defense)
    assert isinstance(defense.config(), dict)
    assert isinstance(defense.extra_data, str)
    if name != "bdr":
        assert defense.name == name
    else:
        assert defense.name == "bdr2"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("chans", [1, 3])
def test_preprocess_keeps_uint8_and_shape(name: str, chans: int) -> None:
    x = torch.randint(0, 256, (6, chans, 16, 16), generator=_gen(chans), dtype=torch.uint8)
    before = x.clone()
    out = DEFENSES.get(name)().preprocess(x)
    assert out.dtype == torch.uint8
    assert out.shape == x.shape
    assert torch.equal(x, before)  # input not modified in place


@pytest.mark.parametrize("name", NAMES)
def test_augment_shapes_and_label_kinds(name: str) -> None:
    defense = DEFENSES.get(name)()
    x = torch.rand((8, 3, 16, 16), generator=_gen(1))
    y = torch.arange(8) % 4
    out_x, out_y = defense.augment(x, _labels(defense, y, 4), _gen(2))
    assert out_x.shape == x.shape and out_x.dtype == x.dtype
    assert torch.isfinite(out_x).all()
    if defense.soft_labels:
        assert out_y.shape == (8, 4) and out_y.dtype.is_floating_point
        assert torch.allclose(out_y.sum(1), torch.ones(8))
        assert float(out_y.min()) >= 0
    else:
        assert out_y.dtype == torch.int64 and out_y.shape == (8,)
        assert torch.equal(out_y, y)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", NAMES)
def test_fit_runs_with_every_defense(name: str, data: tuple[ImageSet, ImageSet]) -> None:
    train, test = data
    recipe = TrainRecipe("t", steps=3, batch_size=8, eval_every=3)
    ctx = Context(progress=False)
    ctx.manual_seed("victim")
    model = VICTIMS.get("tiny_cnn")(train.num_classes, train.shape[0])
    result = fit(model, train, test, DEFENSES.get(name)(), recipe, ctx)
    for acc in (result.final_acc, result.peak_acc, result.train_acc):
        assert 0.0 <= acc <= 1.0
    assert result.steps == 3 and result.curve and result.curve[-1] == (3, result.final_acc)


def test_grayscale_says_it_is_the_identity_on_one_channel_data(caplog: pytest.LogCaptureFixture) -> None:
    from victims.defenses.grayscale import warn_identity

    gray = DEFENSES.get("grayscale")()
    one, _ = make_synthetic(n_train=4, n_test=2, num_classes=2, shape=(1, 8, 8))
    three, _ = make_synthetic(n_train=4, n_test=2, num_classes=2, shape=(3, 8, 8))
    assert torch.equal(gray.preprocess_set(one.x, torch.device("cpu")), one.x)
    assert not torch.equal(gray.preprocess_set(three.x, torch.device("cpu")), three.x)
    warn_identity.cache_clear()
    with caplog.at_level(logging.WARNING):
        gray.setup(three, Context(progress=False))
        assert not caplog.records
        gray.setup(one, Context(progress=False))
        gray.setup(one, Context(progress=False))  # once per data set and process
    assert len(caplog.records) == 1 and "one channel" in caplog.records[0].getMessage()


def test_fit_on_one_channel_data_with_preprocessing_defenses() -> None:
    train, test = make_synthetic(n_train=8, n_test=4, num_classes=2, shape=(1, 16, 16))
    recipe = TrainRecipe("t", steps=2, batch_size=8, eval_every=2)
    for name in ("jpeg10", "grayscale", "bdr"):
        model = VICTIMS.get("tiny_cnn")(2, 1)
        result = fit(model, train, test, DEFENSES.get(name)(), recipe, Context(progress=False))
        assert 0.0 <= result.final_acc <= 1.0


# --------------------------------------------------------------------------------------------- specific defenses


def test_at4_parameters() -> None:
    d = DEFENSES.get("at4")()
    assert (d.radius, d.steps, d.step_size) == (4, 10, 0.8)
    assert DEFENSES.get("at8")().step_size == pytest.approx(1.6)
    assert DEFENSES.get("at4")(steps=7, step_div=4.0).step_size == pytest.approx(1.0)


def test_at4_loss_exceeds_clean_loss() -> None:
    torch.manual_seed(0)
    model = VICTIMS.get("tiny_cnn")(4, 3).eval()
    x = torch.rand((16, 3, 16, 16), generator=_gen(3))
    y = torch.randint(0, 4, (16,), generator=_gen(4))
    with torch.no_grad():
        clean = float(F.cross_entropy(model(x), y))
    adv, adv_logits = DEFENSES.get("at4")().loss(model, x, y, _gen(5))
    assert adv.requires_grad  # a training loss
    assert float(adv.detach()) > clean
    assert float(adv.detach()) == pytest.approx(float(F.cross_entropy(adv_logits.detach(), y)), rel=1e-6)
    assert not model.training  # mode preserved
    plain, plain_logits = DEFENSES.get("none")().loss(model, x, y, _gen(5))
    assert float(plain.detach()) == pytest.approx(clean, rel=1e-5)
    assert plain_logits.shape == (16, 4)


def _bn_updates(model: nn.Module) -> set[int]:
    return {int(m.num_batches_tracked) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}


@pytest.mark.parametrize("name", ["none", "at4", "mixup"])
def test_fit_updates_batchnorm_once_per_step(name: str, data: tuple[ImageSet, ImageSet]) -> None:
    """Only the training forward of each step touches BN statistics (an extra train-mode forward to
    measure training accuracy used to add 2 updates in 20 steps)."""
    train, test = data
    recipe = TrainRecipe("t", steps=20, batch_size=8, eval_every=20)
    ctx = Context(progress=False)
    ctx.manual_seed("victim")
    model = VICTIMS.get("tiny_cnn")(train.num_classes, train.shape[0])
    fit(model, train, test, DEFENSES.get(name)(), recipe, ctx)
    assert _bn_updates(model) == {20}


class _Spy(Defense):
    """``none`` whose loss records the logits it returns (the forward the update is computed from)."""

    def __init__(self, inner: Defense) -> None:
        self.inner, self.logits, self.labels = inner, [], []

    def loss(self, model, x, y, generator):  # type: ignore[no-untyped-def]
        loss, logits = self.inner.loss(model, x, y, generator)
        self.logits.append(logits.detach().clone())
        self.labels.append(y.clone())
        return loss, logits


@pytest.mark.parametrize("name", ["none", "at4"])
def test_train_accuracy_is_read_from_the_training_forward(name: str, data: tuple[ImageSet, ImageSet]) -> None:
    """Under at<k> the training forward sees adversarial examples: train_acc is their accuracy."""
    train, test = data
    recipe = TrainRecipe("t", steps=6, batch_size=8, eval_every=3)
    ctx = Context(progress=False)
    ctx.manual_seed("victim")
    spy = _Spy(DEFENSES.get(name)())
    result = fit(VICTIMS.get("tiny_cnn")(train.num_classes, train.shape[0]), train, test, spy, recipe, ctx)
    hits = [float((lg.argmax(1) == y).float().sum()) for lg, y in zip(spy.logits[3:], spy.labels[3:], strict=True)]
    assert result.train_acc == pytest.approx(sum(hits) / (3 * 8))


def test_jpeg_low_quality_changes_pixels_high_quality_barely(smooth: torch.Tensor) -> None:
    def diff(name: str, x: torch.Tensor) -> float:
        return float((DEFENSES.get(name)().preprocess(x).float() - x.float()).abs().mean())

    assert diff("jpeg10", smooth) > 3.0
    assert diff("jpeg100", smooth) < 2.0
    gray = smooth[:, :1].contiguous()
    assert diff("jpeg10", gray) > 2.0
    assert diff("jpeg100", gray) < 0.5
    assert diff("jpeg10", smooth) > diff("jpeg50", smooth) > diff("jpeg100", smooth)


def test_jpeg_is_deterministic(smooth: torch.Tensor) -> None:
    d = DEFENSES.get("jpeg10")()
    assert torch.equal(d.preprocess(smooth), d.preprocess(smooth))


def test_grayscale_channels_equal() -> None:
    x = torch.randint(0, 256, (4, 3, 8, 8), generator=_gen(6), dtype=torch.uint8)
    out = DEFENSES.get("grayscale")().preprocess(x)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    luma = (0.299 * x[:, 0].float() + 0.587 * x[:, 1].float() + 0.114 * x[:, 2].float()).round()
    assert float((out[:, 0].float() - luma).abs().max()) <= 1.0
    gray_in = x[:, :1].contiguous()
    assert torch.equal(DEFENSES.get("grayscale")().preprocess(gray_in), gray_in)


@pytest.mark.parametrize(("name", "levels"), [("bdr", 4), ("bdr1", 2), ("bdr3", 8)])
def test_bdr_levels(name: str, levels: int) -> None:
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).repeat(2, 3, 1, 1)
    out = DEFENSES.get(name)().preprocess(x)
    values = out.unique()
    assert len(values) == levels
    assert int(values.min()) == 0 and int(values.max()) == 255
    # every pixel moves to its nearest level
    assert float((out.float() - x.float()).abs().max()) <= 255 / (levels - 1) / 2 + 1


def test_cutout_zeroes_a_square() -> None:
    x = torch.ones((32, 3, 16, 16))
    out, y = DEFENSES.get("cutout")().augment(x, torch.zeros(32, dtype=torch.int64), _gen(7))
    assert torch.equal(y, torch.zeros(32, dtype=torch.int64))
    for i in range(32):
        zero = out[i] == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[1], zero[2])  # same region on every channel
        rows = zero[0].any(1).nonzero().flatten()
        cols = zero[0].any(0).nonzero().flatten()
        assert len(rows) > 0
        # the zeroed region is exactly the rectangle its rows and columns span
        box = torch.zeros(16, 16, dtype=torch.bool)
        box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
        assert torch.equal(zero[0], box)
        assert len(rows) <= 8 and len(cols) <= 8
        inner_rows = 0 < rows.min() and rows.max() < 15
        inner_cols = 0 < cols.min() and cols.max() < 15
        if inner_rows and inner_cols:  # not clipped at the border: a square
            assert len(rows) == len(cols)
    assert float(out.sum()) > 0


def test_cutout_square_has_length_side() -> None:
    x = torch.ones((64, 1, 32, 32))
    out, _ = Cutout(length=8).augment(x, torch.zeros(64, dtype=torch.int64), _gen(8))
    zero = out[:, 0] == 0
    rows, cols = zero.any(2), zero.any(1)
    first_r, last_r = rows.float().argmax(1), 31 - rows.flip(1).float().argmax(1)
    first_c, last_c = cols.float().argmax(1), 31 - cols.flip(1).float().argmax(1)
    inner = (first_r > 0) & (last_r < 31) & (first_c > 0) & (last_c < 31)
    assert int(inner.sum()) > 10
    assert bool((zero[inner].flatten(1).sum(1) == 64).all())


def test_mixup_mixes_labels_and_images() -> None:
    defense = DEFENSES.get("mixup")()
    assert defense.soft_labels
    n = 8
    x = torch.rand((n, 3, 8, 8), generator=_gen(9))
    y = F.one_hot(torch.arange(n), n).float()  # one class per image: the labels reveal the partner
    out_x, out_y = defense.augment(x, y, _gen(10))
    assert torch.allclose(out_y.sum(1), torch.ones(n))
    assert bool(((out_y > 0) & (out_y < 1)).any())  # some labels are mixtures
    assert not torch.equal(out_x, x)
    lams = set()
    for i in range(n):
        partner = [j for j in range(n) if j != i and float(out_y[i, j]) > 0]
        if not partner:  # paired with itself
            assert torch.allclose(out_x[i], x[i], atol=1e-6)
            continue
        (j,) = partner
        lam = float(out_y[i, i])
        lams.add(round(lam, 6))
        # images are mixed with the same weight as their labels
        assert torch.allclose(out_x[i], lam * x[i] + (1 - lam) * x[j], atol=1e-6)
    assert len(lams) == 1  # one Beta draw per batch
    again_x, again_y = defense.augment(x, y, _gen(10))
    assert torch.equal(again_x, out_x) and torch.equal(again_y, out_y)


def test_cutmix_labels_follow_pasted_area() -> None:
    defense = DEFENSES.get("cutmix")()
    assert defense.soft_labels
    n = 8
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 16, 16).contiguous()
    y = F.one_hot(torch.arange(n), n).float()
    for seed in range(5):
        out_x, out_y = defense.augment(x, y, _gen(seed))
        assert torch.allclose(out_y.sum(1), torch.ones(n))
        for i in range(n):
            own = float((out_x[i, 0] == i).float().mean())
            assert out_y[i, i] == pytest.approx(own) or (own == 1.0 and out_y[i].max() == 1.0)


@pytest.mark.parametrize("name", ["jpeg0", "jpeg101", "bdr9", "bdr0", "bdr8", "at0", "at65"])
def test_bad_parameters_raise(name: str) -> None:
    factory = DEFENSES.get(name)
    with pytest.raises(ValueError):
        factory()


def test_bad_at_options_raise() -> None:
    with pytest.raises(ValueError):
        DEFENSES.get("at4")(steps=0)
    with pytest.raises(ValueError):
        DEFENSES.get("at4")(step_div=0)


def test_preprocess_output_feeds_fit_validation() -> None:
    """fit refuses a defense whose preprocess changes dtype or shape."""

    class Broken(Defense):
        name = "broken"

        def preprocess(self, x: torch.Tensor) -> torch.Tensor:
            return x.float()

    train, test = make_synthetic(n_train=8, n_test=4, num_classes=2, shape=(3, 8, 8))
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    with pytest.raises(ValueError, match="preprocess"):
        fit(model, train, test, Broken(), TrainRecipe("t", steps=1, batch_size=4), Context(progress=False))


def test_crop_flip_shifts_and_mirrors_each_image() -> None:
    pad, n = 2, 64
    x = torch.rand((n, 1, 8, 8), generator=_gen(11))
    y = torch.arange(n) % 10
    out, out_y = CropFlip(pad).augment(x, y, _gen(12))
    assert out.shape == x.shape and torch.equal(out_y, y)
    padded = F.pad(x, (pad,) * 4)
    seen = set()
    for i in range(n):  # every output is one of the (2 pad + 1)^2 x 2 shifted, maybe mirrored, views
        shifts = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
        crops = {(dy, dx): padded[i, :, dy : dy + 8, dx : dx + 8] for dy, dx in shifts}
        views = {(*k, flip): v.flip(-1) if flip else v for k, v in crops.items() for flip in (False, True)}
        match = [k for k, v in views.items() if torch.equal(v, out[i])]
        assert match, f"image {i} is not a padded crop (+flip) of its input"
        seen.add(match[0])
    assert len(seen) > 10  # random per image, not one shift for the batch


def test_crop_flip_is_registered_and_rejects_negative_pad() -> None:
    assert DEFENSES.get("crop-flip")().name == "crop-flip"
    with pytest.raises(ValueError, match="pad"):
        CropFlip(-1)
