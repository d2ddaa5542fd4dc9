"""Composed defenses ``a+b``: one name and hash, a defined order, refused when the parts conflict."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from benchmarks.campaign import run_campaign
from benchmarks.data import make_synthetic
from benchmarks.errors import UsageError
from benchmarks.plan import build_defense, make_plan, resolve_defenses
from benchmarks.plugins import load_plugins
from benchmarks.presets import Protocol
from benchmarks.registry import DEFENSES, PRESETS, VICTIMS, UnknownNameError
from benchmarks.spec import CampaignSpec
from benchmarks.train import Composed, Defense, TrainRecipe, extra_data_of, fit
from benchmarks.types import Context

load_plugins()

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def protocol() -> Protocol:
    return PRESETS.get("smoke")("fashion-mnist")


def _images() -> torch.Tensor:
    return torch.randint(0, 256, (6, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_parts_in_the_order_written(protocol: Protocol) -> None:
    x = _images()
    a = build_defense("bdr1+grayscale", protocol)
    b = build_defense("grayscale+bdr1", protocol)
    assert isinstance(a, Composed) and [p.name for p in a.parts] == ["bdr1", "grayscale"]
    bdr, gray = DEFENSES.get("bdr1")(), DEFENSES.get("grayscale")()
    assert torch.equal(a.preprocess_set(x, torch.device("cpu")), gray.preprocess(bdr.preprocess(x)))
    assert torch.equal(b.preprocess_set(x, torch.device("cpu")), bdr.preprocess(gray.preprocess(x)))
    assert not torch.equal(a.preprocess_set(x, torch.device("cpu")), b.preprocess_set(x, torch.device("cpu")))


def test_one_name_and_every_parts_parameters_in_the_config(protocol: Protocol) -> None:
    d = build_defense("jpeg10+at4", protocol)
    assert d.name == "jpeg10+at4"
    assert d.config() == {"name": "jpeg10+at4", "parts": [DEFENSES.get("jpeg10")().config(), d.parts[1].config()]}
    assert d.parts[1].config() == build_defense("at4", protocol).config(), "the preset's at<k> options apply"


def test_the_loss_is_the_adversarial_parts_and_augmentation_chains(protocol: Protocol) -> None:
    d = build_defense("cutout+at2", protocol)
    model = VICTIMS.get("tiny_cnn")(4, 3)
    x, y = torch.rand(8, 3, 16, 16), torch.arange(8) % 4
    at2 = build_defense("at2", protocol)
    twin = copy.deepcopy(model)  # the loss runs train-mode forwards: BatchNorm statistics move
    ours = d.loss(model, x, y, torch.Generator().manual_seed(1))[0]
    theirs = at2.loss(twin, x, y, torch.Generator().manual_seed(1))[0]
    assert torch.equal(ours, theirs)
    cut = DEFENSES.get("cutout")()
    assert torch.equal(
        d.augment(x, y, torch.Generator().manual_seed(2))[0], cut.augment(x, y, torch.Generator().manual_seed(2))[0]
    )
    mixed = build_defense("mixup+at2", protocol)
    assert mixed.soft_labels, "soft labels when a part mixes them"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("at2+at4", "both define the training loss"),
        ("mixup+cutmix", "both mix labels"),
        ("cutout+cutout", "repeated"),
    ],
)
def test_conflicting_parts_are_refused(protocol: Protocol, name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_defense(name, protocol)


@pytest.mark.parametrize("name", ["jpeg10+at*", "jpeg10+", "+at4", "jpeg10+nothing"])
def test_bad_composition_names(name: str) -> None:
    with pytest.raises(UnknownNameError):
        resolve_defenses([name])


def test_resolve_keeps_compositions_and_expands_the_rest() -> None:
    assert resolve_defenses(["none", "jpeg10+at4", "at*", "jpeg10+at4"])[:2] == ["none", "jpeg10+at4"]


def test_make_plan_refuses_a_conflict_before_any_work(tmp_path: Path) -> None:
    spec = CampaignSpec(dataset="synthetic", preset="tiny", methods=("random",), defenses=("at2+at4",))
    with pytest.raises(UsageError, match="both define the training loss"):
        make_plan(spec)


def test_fit_with_a_composition() -> None:
    train, test = make_synthetic(n_train=16, n_test=8, num_classes=4, shape=(3, 16, 16))
    ctx = Context(progress=False)
    ctx.manual_seed("victim")
    model = VICTIMS.get("tiny_cnn")(4, 3)
    protocol = PRESETS.get("tiny")("synthetic")
    result = fit(
        model,
        train,
        test,
        build_defense("grayscale+cutout", protocol),
        TrainRecipe("t", steps=2, batch_size=8, eval_every=2),
        ctx,
    )
    assert result.steps == 2


@pytest.mark.timeout(300)
def test_a_campaign_cell_of_a_composition(tmp_path: Path) -> None:
    spec = CampaignSpec(
        dataset="synthetic", preset="tiny", methods=("random",), defenses=("jpeg10+at1",), progress=False,
        results_dir=tmp_path / "cells", cache_dir=tmp_path / "cache",
    )  # fmt: skip
    frame = run_campaign(spec)
    assert set(frame["defense"]) == {"jpeg10+at1"} and (frame["status"] == "ok").all()
    assert set(frame["robust_radius"]) == {1.0}  # the victim's robust accuracy at the radius of its AT part


class _Extra(Defense):
    def __init__(self, name: str, extra_data: str) -> None:
        self.name, self.extra_data = name, extra_data


def test_the_threat_model_of_a_composition_is_what_its_parts_use() -> None:
    none, clean, pretrained = _Extra("a", "none"), _Extra("b", "clean-data"), _Extra("c", "pretrained")
    assert extra_data_of(Composed("a+b", [none, clean])) == "clean-data"
    assert extra_data_of(Composed("c+a+b", [pretrained, none, clean])) == "clean-data+pretrained"
    assert extra_data_of(Composed("a+d", [none, Defense()])) == "none"
    with pytest.raises(ValueError, match="not one of none, clean-data, pretrained"):
        extra_data_of(_Extra("x", "the internet"))


@pytest.mark.timeout(300)
def test_the_threat_model_is_in_every_cell_and_checked_before_any_work(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(DEFENSES._items, "test-clean-data", lambda: _Extra("test-clean-data", "clean-data"))
    monkeypatch.setitem(DEFENSES._items, "test-bad", lambda: _Extra("test-bad", "web"))
    spec = CampaignSpec(
        dataset="synthetic", preset="tiny", methods=("random",), defenses=("none", "test-clean-data"),
        progress=False, results_dir=tmp_path / "cells", cache_dir=tmp_path / "cache",
    )  # fmt: skip
    frame = run_campaign(spec)
    assert dict(zip(frame["defense"], frame["extra_data"], strict=False)) == {
        "none": "none",
        "test-clean-data": "clean-data",
    }
    records = [json.loads(p.read_text()) for p in (tmp_path / "cells").rglob("*.json")]
    assert sorted(r["threat_model"]["extra_data"] for r in records) == ["clean-data"] * 2 + ["none"] * 2
    for r in records:  # no adversarial training: the victim's robust accuracy at 4/255
        assert (
            r["victim_robustness"]["radius"] == 4.0
            and r["metrics"]["robust_acc"] == r["victim_robustness"]["robust_acc"]
        )
        assert len(r["victim_robustness"]["per_class_acc"]) == 4 and r["wall_s"]["robust_eval"] > 0
    bad = dataclasses.replace(spec, defenses=("test-bad",), results_dir=tmp_path / "bad")
    with pytest.raises(UsageError, match="extra_data 'web' is not one of"):
        make_plan(bad)
