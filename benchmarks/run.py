"""Runner CLI: generate noise per (data set, method, seed), train victims per cell, print the matrix.

    python -m benchmarks.run --methods em sc random --defense none at4
    python -m benchmarks.run --dataset cifar10 --preset paper --methods em rem sem \\
        --victims resnet18 vgg16_bn --defense none at1 at2 at3 at4 --seeds 0 1 2
    python -m benchmarks.run --noise-file my-poison.npz --defense none at4      # a poison made elsewhere
    python -m benchmarks.run --executor ray --ray-address auto --methods em sem  # on a Ray cluster

Everything is validated before anything is written: a bad name, radius, option, path, noise file or
device is one line on stderr and exit code 2. Results and noise are written atomically and finished
cells are skipped, so a run killed at any moment (SIGINT, SIGTERM, SIGKILL) resumes when the same
command runs again.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch

from benchmarks.cache import NoiseCache
from benchmarks.data import DatasetMissingError, load_dataset, stratified_head
from benchmarks.env import device_name, environment
from benchmarks.executors import Executor, ExecutorError, LocalExecutor, check_resource, make_executor
from benchmarks.interrupts import Interrupts
from benchmarks.io import remove_stale_temps
from benchmarks.matrix import matrix, method_labels, to_frame
from benchmarks.noise import NoiseMethod, config_hash
from benchmarks.noisefile import FileNoise, NoiseFileError, add_noise_file_option
from benchmarks.plugins import load_plugins
from benchmarks.presets import Protocol
from benchmarks.registry import DATASETS, DEFENSES, METHODS, PRESETS, VICTIMS, UnknownNameError
from benchmarks.store import CellKey, ResultStore
from benchmarks.train import Defense, NonFiniteLossError, fit
from benchmarks.types import Budget, Context, ImageSet, Poison, derive_seed

log = logging.getLogger("uebench")
DEFAULT_CACHE = Path(os.environ.get("UEB_CACHE", Path.home() / ".cache" / "uebench" / "noise"))
DEFAULT_METHODS = ("em", "sc", "random")
MAX_SEED = 2**63 - 1


class UsageError(Exception):
    """Bad command-line input: reported on one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m benchmarks.run", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help=f"method names or wildcards (default: {' '.join(DEFAULT_METHODS)}; none with --noise-file)",
    )
    add_noise_file_option(
        p,
        "evaluate a poison made elsewhere (repeatable): .npz with int8 'delta' (N|K,C,H,W) or uint8\n"
        "protected images 'x' (N,C,H,W), optional labels 'y'; or a folder of PNGs in data-set order",
    )
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
    p.add_argument(
        "--sweep",
        dest="sweeps",
        action="append",
        default=[],
        metavar="METHOD.KEY=V1,V2,...",
        help="one poison variant per value, e.g. --sweep sem.sample_radius=0,2,4,6 (repeatable; several keys of\n"
        "one method give every combination)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--results-dir", type=Path, default=Path("results/cells"))
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="noise cache (default $UEB_CACHE)")
    p.add_argument("--no-clean", action="store_true", help="skip the clean baseline row")
    p.add_argument("--retry-errors", action="store_true", help="rerun cells whose last attempt failed")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--executor", choices=("local", "ray"), default="local", help="run here (default) or as Ray tasks")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or a local one)")
    p.add_argument("--ray-cpus", type=float, default=None, help="CPUs per Ray task (default 1)")
    p.add_argument("--ray-gpus", type=float, default=None, help="GPUs per Ray task on CUDA (default 1)")
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
    #: (method name, method hash) -> key in ``methods``, for sweeps where one method has several variants
    labels: dict[tuple[str, str], str] = field(default_factory=dict)


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
        if not _finite(value):
            raise UsageError(f"--set {item!r}: the value must be finite (no NaN or infinity)")
        out.setdefault(method, {})[key] = value
    return out


def _parse_sweeps(items: Sequence[str], methods: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """``METHOD.KEY=V1,V2,...`` -> per method, the list of option combinations (the cartesian product)."""
    axes: dict[str, dict[str, list[Any]]] = {}
    for item in items:
        head, eq, raw = item.partition("=")
        method, dot, key = head.partition(".")
        if not (eq and dot and key and raw):
            raise UsageError(f"--sweep expects METHOD.KEY=V1,V2,..., got {item!r}")
        if method not in methods:
            raise UsageError(f"--sweep {item!r}: method {method!r} is not in --methods ({' '.join(methods)})")
        values = []
        for text in raw.split(","):
            try:
                value = json.loads(text)
            except ValueError:
                value = text
            if text == "" or not _finite(value):
                raise UsageError(f"--sweep {item!r}: values must be non-empty and finite")
            values.append(value)
        if len(set(map(str, values))) != len(values):
            raise UsageError(f"--sweep {item!r}: repeated value")
        if key in axes.get(method, {}):
            raise UsageError(f"--sweep {method}.{key} is given twice")
        axes.setdefault(method, {})[key] = values
    return {
        method: [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(axes[method][k] for k in keys))]
        for method, keys in ((m, list(a)) for m, a in axes.items())
    }


def _variant_label(name: str, combo: dict[str, Any]) -> str:
    return f"{name}[{','.join(f'{k}={v}' for k, v in combo.items())}]" if combo else name


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | dict):
        return all(_finite(v) for v in (value.values() if isinstance(value, dict) else value))
    return True


def _device(text: str, here: bool = True) -> torch.device:
    """The device ``text`` names; ``here`` checks that this machine has it (not for Ray workers)."""
    if text == "auto":
        return torch.device("cuda" if here and torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {text!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {text!r}")
    if here and device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {text}: CUDA is not available here; use --device cpu")
    return device


def _noise_files(paths: Sequence[Path]) -> dict[str, FileNoise]:
    files: dict[str, FileNoise] = {}
    for path in paths:
        try:
            method = FileNoise(path)
        except NoiseFileError as err:
            raise UsageError(str(err)) from None
        other = files.get(method.name)
        if other is not None and other.hash != method.hash:
            raise UsageError(
                f"--noise-file {other.path} and {path} have the same name {method.name!r} but different contents; "
                "rename one"
            )
        files.setdefault(method.name, method)
    return files


def _check_executor(args: argparse.Namespace) -> None:
    ray_options = {"--ray-address": args.ray_address, "--ray-cpus": args.ray_cpus, "--ray-gpus": args.ray_gpus}
    for flag, value in ray_options.items():
        if value is not None and args.executor != "ray":
            raise UsageError(f"{flag} needs --executor ray")
    if args.ray_address is not None and not args.ray_address.strip():
        raise UsageError("--ray-address must not be empty")
    try:
        check_resource("--ray-cpus", args.ray_cpus)
        check_resource("--ray-gpus", args.ray_gpus)
    except ValueError as err:
        raise UsageError(str(err)) from None


def make_plan(args: argparse.Namespace) -> Plan:
    """Resolve and check every input; raises UsageError, writes nothing."""
    from victims.archs import victim_exists

    if args.dataset not in DATASETS:
        raise UsageError(f"unknown dataset {args.dataset!r}; accepted: {', '.join(DATASETS.accepted())}")
    requested = args.methods if args.methods is not None else ([] if args.noise_files else list(DEFAULT_METHODS))
    try:
        protocol: Protocol = PRESETS.get(args.preset)(args.dataset)
        method_names = METHODS.resolve(requested)
        defense_names = DEFENSES.resolve(args.defenses)
    except UnknownNameError as err:
        raise UsageError(str(err)) from None
    _check_executor(args)
    files = _noise_files(args.noise_files)
    method_names += list(files)
    if not args.no_clean and "clean" not in method_names:
        method_names.insert(0, "clean")
    victims = args.victims or [protocol.victim]
    for name in victims:
        if not victim_exists(name):
            raise UsageError(
                f"unknown victim {name!r}; accepted: resnet18 resnet50 vgg16_bn wrn34_10 densenet121 "
                "tiny_cnn, or timm/<any timm model name>"
            )
    if not args.seeds or any(not 0 <= s <= MAX_SEED for s in args.seeds):
        raise UsageError(f"--seeds must be non-negative integers below 2^63, got {' '.join(map(str, args.seeds))}")
    options = _parse_options(args.options, method_names)
    sweeps = _parse_sweeps(args.sweeps, method_names)
    methods: dict[str, NoiseMethod] = {}
    defenses: dict[str, Defense] = {}
    try:
        for name in method_names:
            if name in files:
                if options.get(name):
                    raise UsageError(f"--set {name}.*: a noise file has no options")
                methods[name] = files[name]
                continue
            if name in sweeps and name in files:
                raise UsageError(f"--sweep {name}.*: a noise file has no options")
            for combo in sweeps.get(name, [{}]):
                overrides = {**protocol.method_options(name), **options.get(name, {}), **combo}
                methods[_variant_label(name, combo)] = METHODS.get(name)(**overrides)
        for name in defense_names:
            defenses[name] = DEFENSES.get(name)(**protocol.defense_options(DEFENSES.template(name)))
    except (ValueError, TypeError) as err:
        raise UsageError(str(err)) from None
    for label, method in methods.items():
        surrogate = getattr(getattr(method, "config", None), "surrogate", None)
        if surrogate is not None and surrogate not in VICTIMS:
            raise UsageError(f"{label}: unknown surrogate {surrogate!r}; accepted: {', '.join(VICTIMS.accepted())}")
    radius = _parse_radius(args.radius, protocol.radius)
    ctx = Context(_device(args.device, here=args.executor == "local"), progress=not args.no_progress)
    store, cache = ResultStore(args.results_dir), NoiseCache(args.cache_dir)
    for what, directory in (("--results-dir", args.results_dir), ("--cache-dir", args.cache_dir)):
        if "\x00" in str(directory):
            raise UsageError(f"{what}: a path cannot contain a NUL byte: {str(directory)!r}")
        try:
            ResultStore(directory).check_writable()
        except (OSError, ValueError) as err:  # PermissionError, a name too long, a NUL byte
            raise UsageError(f"{what}: {err}") from None
    return Plan(
        protocol, methods, victims, defenses, sorted(set(args.seeds)), radius, ctx, store, cache, args.retry_errors
    )


def load_data(protocol: Protocol, root: Path | None, download: bool) -> tuple[ImageSet, ImageSet]:
    """The protocol's class-balanced slices of the data set."""
    train, test = load_dataset(protocol.dataset, root, download)
    return stratified_head(train, protocol.train_size), stratified_head(test, protocol.test_size)


def load_noise_files(plan: Plan, train: ImageSet) -> None:
    """Read and check every ``--noise-file`` against the training slice; raises :class:`NoiseFileError`."""
    for method in plan.methods.values():
        if isinstance(method, FileNoise):
            method.load(train, method.budget(train.shape, plan.radius))


def method_key(method: NoiseMethod, budget: Budget) -> str:
    """Hash of everything that determines the noise besides data and seed (a noise file: its sha256)."""
    if isinstance(method, FileNoise):
        return method.hash
    return config_hash({"method": method.name, "config": asdict(method.config), "budget": asdict(budget)})


# ----------------------------------------------------------------------------------- the cell logic
# The executors (benchmarks.executors) call these functions, locally or inside Ray tasks: cached_poison and the
# store and cache writes run on the driver only; generate_poison, protect and train_cell run anywhere.


@dataclass(frozen=True)
class Job:
    """One poison of the campaign, ``(method, seed)``, with its cells that are not finished yet."""

    method: str
    seed: int
    budget: Budget
    cache_key: str | None  # the noise cache entry; None for a noise file (never cached)
    cells: tuple[CellKey, ...]


def _cache_key(method: NoiseMethod, mhash: str, fingerprint: str, seed: int) -> str | None:
    return None if isinstance(method, FileNoise) else f"{method.name}-{mhash}-{fingerprint}-s{seed}"


def campaign(plan: Plan, train: ImageSet) -> tuple[list[CellKey], list[Job]]:
    """Every cell of the plan, and the jobs that fill the unfinished ones (seed-major, in method order)."""
    fingerprint = train.fingerprint()
    keys: list[CellKey] = []
    jobs: list[Job] = []
    for seed in plan.seeds:
        for name, method in plan.methods.items():
            budget = method.budget(train.shape, plan.radius)
            mhash = method_key(method, budget)
            plan.labels[(method.name, mhash)] = name
            cells = [
                CellKey(plan.protocol.dataset, plan.protocol.preset, method.name, mhash, v, d, seed)
                for v in plan.victims
                for d in plan.defenses
            ]
            keys.extend(cells)
            todo = tuple(k for k in cells if not _finished(plan, k))
            if todo:
                jobs.append(Job(name, seed, budget, _cache_key(method, mhash, fingerprint, seed), todo))
    return keys, jobs


def cached_poison(plan: Plan, job: Job, train: ImageSet) -> Poison | None:
    """Driver side: the poison of a noise file or a valid cache entry; None when it must be generated."""
    method = plan.methods[job.method]
    if job.cache_key is None:
        poison = method.generate(train, job.budget, plan.ctx)
    else:
        loaded = plan.cache.load(plan.cache.path(plan.protocol.dataset, job.cache_key), train, job.budget)
        if loaded is None:
            return None
        poison = loaded
    poison.stats["budget"] = asdict(job.budget)
    return poison


def _generate(method: NoiseMethod, train: ImageSet, budget: Budget, ctx: Context, seed: int) -> Poison:
    """The one place noise is generated for a run's ``seed`` (its RNG streams derive from the seed alone)."""
    poison = method.generate(train, budget, ctx.with_seed(derive_seed(seed, "generate")))
    poison.stats["budget"] = asdict(budget)
    return poison


@dataclass(frozen=True)
class GenerationFailure:
    """A noise generation that raised: every cell of its job becomes an error row, the campaign goes on."""

    error: str
    budget: dict[str, Any]
    train_size: int

    @property
    def stats(self) -> dict[str, Any]:
        """What a cell reads from a poison's stats: the budget alone."""
        return {"budget": self.budget}


def generate_poison(plan: Plan, job: Job, train: ImageSet) -> Poison | GenerationFailure:
    """Generate the poison of ``job`` with its method (any process; writes nothing).

    Any exception of the method (a bug, NaN, out of memory, a budget violation) is returned as a
    :class:`GenerationFailure` with its traceback logged; a stop (KeyboardInterrupt) is not caught.
    """
    try:
        return _generate(plan.methods[job.method], train, job.budget, plan.ctx, job.seed)
    except Exception as err:
        log.error("generating %s (seed %d) failed", job.method, job.seed, exc_info=True)
        return GenerationFailure(f"generation failed: {type(err).__name__}: {err}", asdict(job.budget), len(train))


def save_poison(plan: Plan, job: Job, poison: Poison) -> None:
    """Driver side: store a generated poison in the noise cache (atomically)."""
    if job.cache_key is None:
        return
    path = plan.cache.path(plan.protocol.dataset, job.cache_key)
    plan.cache.save(path, poison)
    log.info("generated %s noise in %.1f s -> %s", job.method, poison.stats.get("wall_s", 0.0), path)


def get_poison(
    method: NoiseMethod, train: ImageSet, radius: float, dataset: str, cache: NoiseCache, ctx: Context, seed: int
) -> Poison:
    """The runner's poison for (training slice, method config, budget, seed) outside a campaign (the gallery, scripts):
    from the noise cache under the key a run uses, else generated and cached.
    """
    budget = method.budget(train.shape, radius)
    key = _cache_key(method, method_key(method, budget), train.fingerprint(), seed)
    path = None if key is None else cache.path(dataset, key)
    poison = None if path is None else cache.load(path, train, budget)
    if poison is not None:
        poison.stats["budget"] = asdict(budget)
        return poison
    poison = _generate(method, train, budget, ctx, seed)
    if path is not None:
        cache.save(path, poison)
        log.info("generated %s noise in %.1f s -> %s", method.name, poison.stats.get("wall_s", 0.0), path)
    return poison


def protect(poison: Poison | GenerationFailure, train: ImageSet) -> ImageSet | None:
    """The protected training set a data owner would publish (None when the generation failed)."""
    return poison.apply(train) if isinstance(poison, Poison) else None


def train_cell(
    plan: Plan, key: CellKey, protected: ImageSet | None, test: ImageSet, poison: Poison | GenerationFailure
) -> dict[str, Any]:
    """Train one victim and return its results record (status ``ok`` or ``error``); writes nothing.

    A failed generation, and any exception while training (divergence, out of memory, a bug), give a
    record with status ``error`` and the reason; the traceback is logged.
    """
    from victims.archs import build_victim

    defense = plan.defenses[key.defense]
    record: dict[str, Any] = {
        **{k: getattr(key, k) for k in ("dataset", "preset", "method", "method_hash", "victim", "defense", "seed")},
        "method_cfg": asdict(plan.methods[plan.labels.get((key.method, key.method_hash), key.method)].config),
        "budget": poison.stats.get("budget"),
        "defense_cfg": defense.config(),
        "recipe": asdict(plan.protocol.recipe),
        "train_size": len(protected) if protected is not None else getattr(poison, "train_size", None),
        "test_size": len(test),
        "generation": {k: v for k, v in poison.stats.items() if k != "budget"},
        "env": environment(plan.ctx.device, plan.ctx.precision),
    }
    if isinstance(poison, GenerationFailure) or protected is None:
        return {**record, "status": "error", "error": getattr(poison, "error", "no protected set"), "metrics": {}}
    # Victim init, data order and augmentation depend on (seed, victim, defense) only, not on the
    # method: every method is compared on the same random numbers (common random numbers).
    ctx = plan.ctx.with_seed(derive_seed(key.seed, "victim", key.victim, key.defense))
    try:
        ctx.manual_seed()
        model = build_victim(key.victim, protected.num_classes, protected.shape[0])
        result = fit(model, protected, test, defense, plan.protocol.recipe, ctx, desc=key.cell_id)
    except Exception as err:
        if not isinstance(err, NonFiniteLossError | torch.cuda.OutOfMemoryError):
            log.error("cell %s failed", key.cell_id, exc_info=True)
        return {**record, "status": "error", "error": f"{type(err).__name__}: {err}", "metrics": {}}
    metrics = {k: float(v) for k, v in result.as_dict().items() if k in ("final_acc", "peak_acc", "train_acc")}
    return {
        **record,
        "status": "ok",
        "metrics": {**metrics, "peak_step": result.peak_step},
        "curve": result.curve,
        "wall_s": {"train": result.wall_s, "generate": poison.stats.get("wall_s")},
    }


def run(plan: Plan, train: ImageSet, test: ImageSet, executor: Executor | None = None) -> list[dict[str, Any]]:
    """Fill every cell of the plan with ``executor`` (default: local); return this campaign's records."""
    keys, jobs = campaign(plan, train)

    def on_poison(job: Job, poison: Poison) -> None:
        save_poison(plan, job, poison)

    def on_record(key: CellKey, record: dict[str, Any]) -> None:
        _report(key, record, plan.store.write(key, record))

    (executor or LocalExecutor()).run(plan, jobs, train, test, on_poison, on_record)
    return [r for k in keys if (r := plan.store.load(k)) is not None]


def stale_cells(plan: Plan, train: ImageSet, test: ImageSet) -> None:
    """Refuse a results directory whose finished cells of this campaign were measured under another protocol.

    A cell's key names the data set, preset, method config, victim, defense and seed, not the preset's
    training recipe, slice sizes or defense options: a record that disagrees with the current ones
    would otherwise be skipped as finished and reported as if it were measured now.

    Raises:
        UsageError: naming the first such cell and what differs.
    """
    keys, _ = campaign(plan, train)
    recipe = json.loads(json.dumps(asdict(plan.protocol.recipe)))  # as stored: tuples become lists
    defense_cfg = {name: json.loads(json.dumps(d.config())) for name, d in plan.defenses.items()}
    for key in keys:
        record = plan.store.load(key)
        if record is None:
            continue
        now = {
            "recipe": recipe,
            "defense_cfg": defense_cfg[key.defense],
            "train_size": len(train),
            "test_size": len(test),
        }
        diff = [f"{k} {record.get(k)!r} != {v!r}" for k, v in now.items() if record.get(k) != v]
        if diff:
            raise UsageError(
                f"{plan.store.path(key)} was measured under a different protocol ({'; '.join(diff)[:400]}); "
                "pass another --results-dir, or delete the stale cells to remeasure them"
            )


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


def _fail(err: BaseException) -> int:
    """Report ``err`` on one line of printable text; return exit code 2."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in " ".join(str(err).split()))
    print(f"uebench: error: {text}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    load_plugins()
    executor: Executor | None = None
    results = "the results directory"
    with Interrupts() as interrupts:
        try:
            try:
                args = build_parser().parse_args(argv)
                plan = make_plan(args)
                results = str(plan.store.root)
                train, test = load_data(plan.protocol, args.data_root, args.download)
                load_noise_files(plan, train)
                stale_cells(plan, train, test)
                executor = make_executor(args.executor, args.ray_address, args.ray_cpus, args.ray_gpus)
                executor.connect(plan, args.device)
                interrupts.arm()
            except (UsageError, DatasetMissingError, NoiseFileError, ExecutorError) as err:
                return _fail(err)
            for root in (plan.store.root, plan.cache.root):
                remove_stale_temps(root)
            start = time.perf_counter()
            records = run(plan, train, test, executor)
        except BaseException as err:
            # after a stop, whatever it raised on its way out (a library may turn the KeyboardInterrupt into
            # another error in its clean-up) is the stop
            if not (isinstance(err, KeyboardInterrupt) or interrupts.received):
                raise
            log.debug("stopped by %s", interrupts.name, exc_info=True)
            print(
                f"uebench: interrupted by {interrupts.name}: finished cells are kept in {results}; "
                "run the same command again to resume",
                file=sys.stderr,
                flush=True,
            )
            return interrupts.exit_code
        finally:
            if executor is not None:
                executor.close()
    frame = to_frame(records)
    labels = method_labels(records)
    frame["method"] = [
        labels[k] for k in zip(frame["dataset"], frame["preset"], frame["method"], frame["method_hash"], strict=True)
    ]
    devices = ", ".join(sorted(map(str, frame["device"].dropna().unique()))) or device_name(plan.ctx.device)
    print(
        f"\nclean test accuracy (%), final: dataset {plan.protocol.dataset}, preset {plan.protocol.preset}, "
        f"seeds {plan.seeds}, device {devices}, executor {executor.name}"
    )
    for victim, part in frame.groupby("victim", sort=False):
        print(f"victim {victim}\n{matrix(part).to_string()}\n")
    print(f"results: {plan.store.root}  noise cache: {plan.cache.root}  wall {time.perf_counter() - start:.1f} s")
    failed = [r["cell_id"] for r in records if r["status"] != "ok"]
    if failed:
        print(
            f"uebench: {len(failed)} of {len(records)} cells failed (status error, the reason in each cell): "
            f"{', '.join(failed[:5])}{' ...' if len(failed) > 5 else ''}; rerun with --retry-errors",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
