"""Runner CLI: generate noise per (data set, method, seed), train victims per cell, print the matrix.

    python -m benchmarks.run --methods em sc random --defense none at4
    python -m benchmarks.run --dataset cifar10 --preset paper --methods em rem sem \\
        --victims resnet18 vgg16_bn --defense none at1 at2 at3 at4 --seeds 0 1 2

Everything is validated before anything is written: a bad name, radius, option, path or device is
one line on stderr and exit code 2. Finished cells are skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch

from benchmarks.cache import NoiseCache
from benchmarks.data import DatasetMissingError, load_dataset, stratified_head
from benchmarks.env import environment
from benchmarks.matrix import matrix, to_frame
from benchmarks.noise import NoiseMethod, config_hash
from benchmarks.plugins import load_plugins
from benchmarks.presets import Protocol
from benchmarks.registry import DATASETS, DEFENSES, METHODS, PRESETS, UnknownNameError
from benchmarks.store import CellKey, ResultStore
from benchmarks.train import Defense, NonFiniteLossError, fit
from benchmarks.types import Budget, Context, ImageSet, Poison, derive_seed

log = logging.getLogger("uebench")
DEFAULT_CACHE = Path(os.environ.get("UEB_CACHE", Path.home() / ".cache" / "uebench" / "noise"))


class UsageError(Exception):
    """Bad command-line input: reported on one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m benchmarks.run", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["em", "sc", "random"], help="method names or wildcards")
    p.add_argument("--victims", nargs="+", default=None, help="victim names (default: the preset's)")
    p.add_argument(
        "--defense",
        "--defenses",
        dest="defenses",
        nargs="+",
        default=["none"],
        help="none at<k> cutout mixup cutmix jpeg<q> grayscale bdr bdr<k>",
    )
    p.add_argument(
        "--dataset", default="fashion-mnist", help="fashion-mnist cifar10 cifar100 imagenet-subset synthetic"
    )
    p.add_argument("--data-root", type=Path, default=None, help="data directory (torchvision layout)")
    p.add_argument("--download", action="store_true", help="download a missing data set (needs internet)")
    p.add_argument("--preset", default="smoke", help="smoke (CPU minutes) or paper (the reference protocol)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--radius", default=None, help="noise budget rho_u in 1/255 units (default: the preset's, 8)")
    p.add_argument(
        "--set",
        dest="options",
        action="append",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help="override a method option, e.g. --set sem.samples=3 (repeatable)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--results-dir", type=Path, default=Path("results/cells"))
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="noise cache (default $UEB_CACHE)")
    p.add_argument("--no-clean", action="store_true", help="skip the clean baseline row")
    p.add_argument("--retry-errors", action="store_true", help="rerun cells whose last attempt failed")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


@dataclass
class Plan:
    """A validated campaign: nothing in it can fail for a reason the user could have fixed."""

    protocol: Protocol
    methods: dict[str, NoiseMethod]
    victims: list[str]
    defenses: dict[str, Defense]
    seeds: list[int]
    radius: float
    ctx: Context
    store: ResultStore
    cache: NoiseCache
    retry_errors: bool


def _parse_radius(text: str | None, default: float) -> float:
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--radius must be a number of 1/255 units, e.g. 8; got {text!r}") from None
    if not (0 < value <= 127):
        raise UsageError(f"--radius must be in (0, 127] (1/255 units), got {text}")
    return value


def _parse_options(items: Sequence[str], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        head, eq, raw = item.partition("=")
        method, dot, key = head.partition(".")
        if not (eq and dot and key):
            raise UsageError(f"--set expects METHOD.KEY=VALUE, got {item!r}")
        if method not in methods:
            raise UsageError(f"--set {item!r}: method {method!r} is not in --methods ({' '.join(methods)})")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out.setdefault(method, {})[key] = value
    return out


def _device(text: str) -> torch.device:
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {text!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {text}: CUDA is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {text!r}")
    return device


def make_plan(args: argparse.Namespace) -> Plan:
    """Resolve and check every input; raises UsageError, writes nothing."""
    from victims.archs import victim_exists

    if args.dataset not in DATASETS:
        raise UsageError(f"unknown dataset {args.dataset!r}; accepted: {', '.join(DATASETS.accepted())}")
    try:
        protocol: Protocol = PRESETS.get(args.preset)(args.dataset)
        method_names = METHODS.resolve(args.methods)
        defense_names = DEFENSES.resolve(args.defenses)
    except UnknownNameError as err:
        raise UsageError(str(err)) from None
    if not args.no_clean and "clean" not in method_names:
        method_names.insert(0, "clean")
    victims = args.victims or [protocol.victim]
    for name in victims:
        if not victim_exists(name):
            raise UsageError(
                f"unknown victim {name!r}; accepted: resnet18 resnet50 vgg16_bn wrn34_10 densenet121 "
                "tiny_cnn, or timm/<any timm model name>"
            )
    if not args.seeds or any(s < 0 for s in args.seeds):
        raise UsageError(f"--seeds must be non-negative integers, got {args.seeds}")
    options = _parse_options(args.options, method_names)
    methods: dict[str, NoiseMethod] = {}
    defenses: dict[str, Defense] = {}
    try:
        for name in method_names:
            methods[name] = METHODS.get(name)(**{**protocol.method_options(name), **options.get(name, {})})
        for name in defense_names:
            defenses[name] = DEFENSES.get(name)(**protocol.defense_options(DEFENSES.template(name)))
    except (ValueError, TypeError) as err:
        raise UsageError(str(err)) from None
    radius = _parse_radius(args.radius, protocol.radius)
    ctx = Context(_device(args.device), progress=not args.no_progress)
    store, cache = ResultStore(args.results_dir), NoiseCache(args.cache_dir)
    for what, directory in (("--results-dir", args.results_dir), ("--cache-dir", args.cache_dir)):
        try:
            ResultStore(directory).check_writable()
        except PermissionError as err:
            raise UsageError(f"{what}: {err}") from None
    return Plan(
        protocol, methods, victims, defenses, sorted(set(args.seeds)), radius, ctx, store, cache, args.retry_errors
    )


def load_data(protocol: Protocol, root: Path | None, download: bool) -> tuple[ImageSet, ImageSet]:
    """The protocol's class-balanced slices of the data set."""
    train, test = load_dataset(protocol.dataset, root, download)
    return stratified_head(train, protocol.train_size), stratified_head(test, protocol.test_size)


def method_key(method: NoiseMethod, budget: Budget) -> str:
    """Hash of everything that determines the noise besides data and seed."""
    return config_hash({"method": method.name, "config": asdict(method.config), "budget": asdict(budget)})


def get_poison(plan: Plan, method: NoiseMethod, train: ImageSet, seed: int) -> Poison:
    """The cached poison for (data, method config, budget, seed), generated on a miss."""
    budget = method.budget(train.shape, plan.radius)
    key = f"{method.name}-{method_key(method, budget)}-{train.fingerprint()}-s{seed}"
    path = plan.cache.path(plan.protocol.dataset, key)
    poison = plan.cache.load(path, train, budget)
    if poison is None:
        poison = method.generate(train, budget, plan.ctx.with_seed(derive_seed(seed, "generate")))
        plan.cache.save(path, poison)
        log.info("generated %s noise in %.1f s -> %s", method.name, poison.stats["wall_s"], path)
    return poison


def train_cell(
    plan: Plan, key: CellKey, protected: ImageSet, test: ImageSet, defense: Defense, poison: Poison
) -> dict[str, Any]:
    """Train one victim and return its results record (status ``ok`` or ``error``)."""
    from victims.archs import build_victim

    # Victim init, data order and augmentation depend on (seed, victim, defense) only, not on the
    # method: every method is compared on the same random numbers (common random numbers).
    ctx = plan.ctx.with_seed(derive_seed(key.seed, "victim", key.victim, key.defense))
    ctx.manual_seed()
    model = build_victim(key.victim, protected.num_classes, protected.shape[0])
    record: dict[str, Any] = {
        **{k: getattr(key, k) for k in ("dataset", "preset", "method", "method_hash", "victim", "defense", "seed")},
        "method_cfg": asdict(plan.methods[key.method].config),
        "budget": poison.stats.get("budget"),
        "defense_cfg": defense.config(),
        "recipe": asdict(plan.protocol.recipe),
        "train_size": len(protected),
        "test_size": len(test),
        "generation": {k: v for k, v in poison.stats.items() if k != "budget"},
        "env": environment(plan.ctx.device),
    }
    try:
        result = fit(model, protected, test, defense, plan.protocol.recipe, ctx, desc=key.cell_id)
    except (NonFiniteLossError, torch.cuda.OutOfMemoryError) as err:
        return {**record, "status": "error", "error": f"{type(err).__name__}: {err}", "metrics": {}}
    metrics = {k: float(v) for k, v in result.as_dict().items() if k in ("final_acc", "peak_acc", "train_acc")}
    return {
        **record,
        "status": "ok",
        "metrics": {**metrics, "peak_step": result.peak_step},
        "curve": result.curve,
        "wall_s": {"train": result.wall_s, "generate": poison.stats.get("wall_s")},
    }


def run(plan: Plan, train: ImageSet, test: ImageSet) -> list[dict[str, Any]]:
    """Fill every cell of the plan; return this campaign's records."""
    records = []
    for seed in plan.seeds:
        for name, method in plan.methods.items():
            budget = method.budget(train.shape, plan.radius)
            keys = [
                CellKey(plan.protocol.dataset, plan.protocol.preset, name, method_key(method, budget), v, d, seed)
                for v in plan.victims
                for d in plan.defenses
            ]
            todo = [k for k in keys if not _finished(plan, k)]
            if todo:
                poison = get_poison(plan, method, train, seed)
                poison.stats["budget"] = asdict(budget)
                protected = poison.apply(train)
                for key in todo:
                    record = train_cell(plan, key, protected, test, plan.defenses[key.defense], poison)
                    _report(key, record, plan.store.write(key, record))
            records.extend(r for k in keys if (r := plan.store.load(k)) is not None)
    return records


def _finished(plan: Plan, key: CellKey) -> bool:
    record = plan.store.load(key)
    return record is not None and (record["status"] == "ok" or not plan.retry_errors)


def _report(key: CellKey, record: dict[str, Any], path: Path) -> None:
    if record["status"] != "ok":
        print(f"{key.cell_id}: ERROR {record['error']} -> {path}", flush=True)
        return
    m = record["metrics"]
    print(
        f"{key.cell_id}: test acc final {m['final_acc']:.2%} peak {m['peak_acc']:.2%} "
        f"(train {record['wall_s']['train']:.1f} s)",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    load_plugins()
    try:
        args = build_parser().parse_args(argv)
        plan = make_plan(args)
        train, test = load_data(plan.protocol, args.data_root, args.download)
    except (UsageError, DatasetMissingError) as err:
        print(f"uebench: error: {err}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    records = run(plan, train.to(plan.ctx.device), test.to(plan.ctx.device))
    frame = to_frame(records)
    print(
        f"\nclean test accuracy (%), final: dataset {plan.protocol.dataset}, preset {plan.protocol.preset}, "
        f"seeds {plan.seeds}, device {environment(plan.ctx.device)['device']}"
    )
    for victim, part in frame.groupby("victim", sort=False):
        print(f"victim {victim}\n{matrix(part).to_string()}\n")
    print(f"results: {plan.store.root}  noise cache: {plan.cache.root}  wall {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
