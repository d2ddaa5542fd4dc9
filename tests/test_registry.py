"""Tests for benchmarks.registry: registration, families, wildcards, resolve, and the real registries."""

from __future__ import annotations

import pytest

from benchmarks.plugins import load_plugins
from benchmarks.registry import DATASETS, DEFENSES, METHODS, PRESETS, VICTIMS, Registry, UnknownNameError


@pytest.fixture
def reg() -> Registry:
    r: Registry = Registry("thing")
    r.register("alpha")(lambda: "a")
    r.register("beta")(lambda: "b")
    r.register("gamma")(lambda: "g")
    r.register("at<k>", examples=("at1", "at4", "at8"))(lambda k, scale=1: k * scale)
    return r


def test_register_returns_object_and_get_finds_it() -> None:
    r: Registry = Registry("thing")

    def make() -> int:
        return 1

    assert r.register("a")(make) is make
    assert r.get("a") is make
    assert r.get("a")() == 1
    assert "a" in r
    assert "b" not in r
    assert 3 not in r


def test_register_as_decorator() -> None:
    r: Registry = Registry("thing")

    @r.register("cls")
    class Thing:
        pass

    assert r.get("cls") is Thing


def test_duplicate_exact_name_refused() -> None:
    r: Registry = Registry("thing")
    r.register("a")(object)
    with pytest.raises(KeyError, match="registered twice"):
        r.register("a")(object)
    assert r.get("a") is object


def test_duplicate_family_refused() -> None:
    r: Registry = Registry("thing")
    r.register("at<k>")(lambda k: k)
    with pytest.raises(KeyError, match="registered twice"):
        r.register("at<k>")(lambda k: -k)
    assert r.get("at3")() == 3


def test_family_with_two_params_refused() -> None:
    r: Registry = Registry("thing")
    with pytest.raises(ValueError, match="exactly one"):
        r.register("x<a>y<b>")(lambda a, b: 0)


def test_unknown_name_error_lists_accepted_names(reg: Registry) -> None:
    with pytest.raises(UnknownNameError) as info:
        reg.get("delta")
    err = info.value
    assert isinstance(err, KeyError)
    message = str(err)
    assert "'delta'" in message and "thing" in message
    for accepted in ("alpha", "beta", "gamma", "at<k>"):
        assert accepted in message
    # str() is not KeyError's quoted repr of the message
    assert not message.startswith('"') and not message.startswith("'unknown")


def test_accepted_lists_exact_names_then_templates(reg: Registry) -> None:
    assert reg.accepted() == ["alpha", "beta", "gamma", "at<k>"]


@pytest.mark.parametrize(("name", "value"), [("at1", 1), ("at4", 4), ("at12", 12), ("at255", 255), ("at04", 4)])
def test_family_parses_the_integer(reg: Registry, name: str, value: int) -> None:
    factory = reg.get(name)
    assert factory() == value
    assert factory(scale=2) == 2 * value
    assert name in reg


@pytest.mark.parametrize("name", ["at", "atx", "at-1", "at1.5", "xat4", "at4x", "AT4", "at 4"])
def test_family_rejects_non_matching_names(reg: Registry, name: str) -> None:
    with pytest.raises(UnknownNameError):
        reg.get(name)
    assert name not in reg


def test_family_with_suffix() -> None:
    r: Registry = Registry("thing")
    r.register("res<n>net")(lambda n: n)
    assert r.get("res18net")() == 18
    with pytest.raises(UnknownNameError):
        r.get("res18")


def test_list_includes_family_examples_and_filters_wildcards(reg: Registry) -> None:
    assert reg.list() == ["alpha", "at1", "at4", "at8", "beta", "gamma"]
    assert reg.list("at*") == ["at1", "at4", "at8"]
    assert reg.list("?eta") == ["beta"]
    assert reg.list("[ab]*") == ["alpha", "at1", "at4", "at8", "beta"]
    assert reg.list("nothing*") == []
    assert reg.list("alpha") == ["alpha"]


def test_resolve_keeps_order_and_dedups(reg: Registry) -> None:
    assert reg.resolve(["gamma", "alpha", "gamma"]) == ["gamma", "alpha"]
    assert reg.resolve(["beta", "at*", "at4", "at16"]) == ["beta", "at1", "at4", "at8", "at16"]
    assert reg.resolve(["*"]) == reg.list()
    assert reg.resolve([]) == []


def test_resolve_accepts_family_members_that_are_not_examples(reg: Registry) -> None:
    assert reg.resolve(["at99"]) == ["at99"]


def test_resolve_raises_for_unknown_name(reg: Registry) -> None:
    with pytest.raises(UnknownNameError, match="accepted: alpha"):
        reg.resolve(["alpha", "delta"])


def test_resolve_raises_for_pattern_matching_nothing(reg: Registry) -> None:
    with pytest.raises(UnknownNameError, match="matches nothing") as info:
        reg.resolve(["alpha", "z*"])
    assert "'z*'" in str(info.value)
    assert "alpha" in str(info.value)


def test_load_plugins_is_idempotent() -> None:
    load_plugins()
    before = {r.kind: r.accepted() for r in (METHODS, VICTIMS, DEFENSES, DATASETS, PRESETS)}
    load_plugins()
    after = {r.kind: r.accepted() for r in (METHODS, VICTIMS, DEFENSES, DATASETS, PRESETS)}
    assert before == after


def test_real_methods_registered() -> None:
    load_plugins()
    assert {"em", "em-cw", "sc", "random", "clean"} <= set(METHODS.list())


def test_real_defenses_registered() -> None:
    load_plugins()
    for name in ("none", "at4", "jpeg10", "cutout", "mixup", "cutmix", "grayscale", "bdr", "bdr3"):
        assert name in DEFENSES, name
    assert {"none", "at4", "jpeg10", "cutout", "mixup", "cutmix", "grayscale", "bdr", "bdr3"} <= set(DEFENSES.list())
    assert "at<k>" in DEFENSES.accepted() and "jpeg<q>" in DEFENSES.accepted()


def test_real_presets_registered() -> None:
    load_plugins()
    assert {"smoke", "paper"} <= set(PRESETS.list())


def test_real_datasets_registered() -> None:
    load_plugins()
    assert {"fashion-mnist", "cifar10", "cifar100", "imagenet-subset", "synthetic"} <= set(DATASETS.list())


def test_real_victims_include_tiny_cnn() -> None:
    load_plugins()
    assert "tiny_cnn" in VICTIMS
