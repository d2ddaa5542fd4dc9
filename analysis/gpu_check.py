"""The measurements of the GPU check besides the speed suite; ``scripts/gpu_check.sh`` runs them in order.

    python -m analysis.gpu_check env --out DIR [--dry]
    python -m analysis.gpu_check tests --out DIR --scratch DIR [--dry] -- PYTEST_ARGUMENTS...
    python -m analysis.gpu_check e2e --out DIR --scratch DIR [--data-root DIR] [--compiled] [--dry]
    python -m analysis.gpu_check paper-short --out DIR --scratch DIR [--data-root DIR] [--dry]

Each command writes one JSON file into ``--out`` (see :data:`FILES`), the measurement ones after every
phase, so a step stopped by its time limit leaves what it had measured. ``--scratch`` holds what must
not come back from the machine (results cells, noise caches, the junit report). ``--dry`` runs the same
code on the CPU at tiny sizes (:data:`DRY`): the rehearsal that keeps a typo from costing GPU time.
``python -m analysis.gpu_summary`` renders the files as ``SUMMARY.md``.

Exit code: 0 when the step measured everything and every cell and test it ran passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from analysis.gpu_summary import FILES
from benchmarks import run as runner
from benchmarks.campaign import Campaign
from benchmarks.env import CODE_DIRS, REPO, device_name, environment, peak_tflops
from benchmarks.executors import LocalExecutor
from benchmarks.expected import EXPECTED_DIR, check
from benchmarks.io import atomic_write_text
from benchmarks.matrix import load_records
from benchmarks.plan import load_data, make_plan
from benchmarks.registry import METHODS
from benchmarks.spec import DEFAULT_PRESET
from benchmarks.train import evaluate
from benchmarks.types import Context
from methods._minmin import build_surrogate, final_pass

PACKAGES = (
    "torch",
    "torchvision",
    "timm",
    "kornia",
    "kornia_rs",
    "numpy",
    "pandas",
    "pytest",
    "pytest-benchmark",
    "pytest-timeout",
)
E2E_METHODS = ("em", "sem")
E2E_DEFENSES = ("none", "at4")
NVIDIA_SMI_FIELDS = ("name", "driver_version", "memory.total", "power.limit", "clocks.max.sm", "pstate")


@dataclass(frozen=True)
class Sizes:
    """How much each measurement runs: on the GPU, or in the dry run on the CPU."""

    device: str
    e2e_preset: str  # the end-to-end run's preset
    e2e_compile: str  # its --compile mode under --compiled (the dry run's CPU has no CUDA graphs)
    paper_generation_steps: int  # SEM generation steps of the shortened paper protocol
    paper_victim_steps: int  # victim SGD steps of each of its cells
    paper_eval_every: int
    paper_final_batches: int  # final-pass batches timed (after one warm-up batch)
    paper_train_size: int | None = None  # None: the whole training set
    paper_test_size: int | None = None
    paper_batch: int | None = None  # None: the protocol's (128)
    paper_options: tuple[str, ...] = ()  # further runner arguments


GPU = Sizes(
    "cuda",
    DEFAULT_PRESET,
    "graphs",
    paper_generation_steps=100,
    paper_victim_steps=400,
    paper_eval_every=200,
    paper_final_batches=20,
)
DRY = Sizes(
    "cpu",
    "tiny",
    "compile",
    paper_generation_steps=2,
    paper_victim_steps=4,
    paper_eval_every=2,
    paper_final_batches=2,
    paper_train_size=256,
    paper_test_size=128,
    paper_batch=8,
    paper_options=("--victims", "tiny_cnn", "--set", "sem.surrogate=tiny_cnn", "--set", "sem.batch_size=8"),
)


def write_json(path: Path, doc: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def memory(device: torch.device) -> dict[str, int | None]:
    """Peak GPU memory since the last reset (None on the CPU) and this process's peak resident set."""
    cuda = device.type == "cuda"
    return {
        "peak_memory_allocated_bytes": torch.cuda.max_memory_allocated(device) if cuda else None,
        "peak_memory_reserved_bytes": torch.cuda.max_memory_reserved(device) if cuda else None,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux: KiB
    }


def _data_args(data_root: Path | None) -> list[str]:
    return ["--data-root", str(data_root)] if data_root is not None else []


# ------------------------------------------------------------------------------------------------ env


def code_digest(root: Path = REPO) -> dict[str, Any]:
    """sha256 (16 hex digits) over the path and bytes of every ``.py``/``.sh`` file of the code directories.

    Identifies the code on a machine without ``.git``; the same call on a checkout gives the same digest.
    """
    files = sorted(
        p
        for d in CODE_DIRS
        for p in (root / d).rglob("*")
        if p.suffix in (".py", ".sh") and "__pycache__" not in p.parts
    )
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return {"sha256": digest.hexdigest()[:16], "files": len(files)}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def nvidia_smi() -> dict[str, str] | None:
    """The first GPU's driver-side facts from ``nvidia-smi`` (None without it)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    query = [exe, f"--query-gpu={','.join(NVIDIA_SMI_FIELDS)}", "--format=csv,noheader"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as err:
        return {"error": f"{type(err).__name__}: {err}"}
    values = [v.strip() for v in out.splitlines()[0].split(",")] if out.strip() else []
    return dict(zip(NVIDIA_SMI_FIELDS, values, strict=False))


def env_report(device: torch.device) -> dict[str, Any]:
    """Everything about the machine a number of this check depends on (``benchmarks.env.environment`` and more)."""
    ctx = Context(device)  # the default precision, with the TF32 switches it sets
    ctx.set_numerics()
    doc = environment(device, ctx.arithmetic, ctx.channels_last, ctx.compile_mode)
    doc.update(
        python_executable=sys.executable,
        packages={name: _version(name) for name in PACKAGES},
        code=code_digest(),
        nvidia_smi=nvidia_smi(),
        cuda_available=torch.cuda.is_available(),
    )
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        doc["gpu"] = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "total_memory_bytes": props.total_memory,
            "multiprocessors": props.multi_processor_count,
            "bf16_supported": torch.cuda.is_bf16_supported(),
            "device_count": torch.cuda.device_count(),
            "peak_tflops": peak_tflops(props.name),
        }
    return doc


# ------------------------------------------------------------------------------------------------ tests


def parse_junit(path: Path) -> dict[str, Any]:
    """Counts and per-test outcomes (with ``record_property`` values) of a pytest junit XML report."""
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            child = case.find(tag)
            if child is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = " ".join((child.get("message") or child.text or "").split())[:500]
                break
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        tests.append(
            {
                "test": f"{case.get('classname')}::{case.get('name')}",
                "outcome": outcome,
                "seconds": float(case.get("time") or 0.0),
                "message": message,
                "properties": properties,
            }
        )
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    return {"counts": counts, "tests": tests}


def step_deadline(margin: float = 15.0) -> float | None:
    """Seconds a step may run before the script's ``timeout`` stops it (``UEB_GPU_STEP_LIMIT``), less ``margin``
    for writing what it measured; None outside the script."""
    limit = os.environ.get("UEB_GPU_STEP_LIMIT")
    return max(float(limit) - margin, 1.0) if limit else None


def run_tests(out: Path, scratch: Path, pytest_args: Sequence[str], dry: bool, deadline: float | None = None) -> int:
    """Run pytest (the ``gpu`` tier) in a subprocess and write its outcomes; returns pytest's exit code.

    pytest writes its junit report at the end of the session: a run still going at ``deadline`` seconds is
    stopped so that the file says so (the per-test outcomes are then in the log, pytest runs verbosely).
    """
    junit = scratch / "gpu-tests.xml"
    junit.unlink(missing_ok=True)
    env = dict(os.environ)
    if dry:
        env["UEB_GPU_TEST_DEVICE"] = "cpu"  # the gpu tests run on the CPU (tests/conftest.py)
    argv = [sys.executable, "-m", "pytest", *pytest_args, f"--junitxml={junit}"]
    start = time.perf_counter()
    try:
        code: int | None = subprocess.run(argv, env=env, check=False, timeout=deadline).returncode
    except subprocess.TimeoutExpired:
        code = None
    doc: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "pytest", *pytest_args]),
        "exit_code": code,
        "wall_s": time.perf_counter() - start,
        "device": env.get("UEB_GPU_TEST_DEVICE", "cuda"),
    }
    if junit.is_file():
        doc.update(parse_junit(junit))
    else:
        doc["error"] = "pytest wrote no junit report" + (f" (stopped after {deadline:.0f} s)" if code is None else "")
    write_json(out / FILES["gpu_tests"], doc)
    return code if code not in (None, 5) else 1  # 5: no test was collected


# ------------------------------------------------------------------------------------------------ e2e


def cell_summary(record: dict[str, Any]) -> dict[str, Any]:
    """The essential numbers of one results cell."""
    metrics, generation = record.get("metrics", {}), record.get("generation", {})
    return {
        "cell": f"{record['method']}/{record['defense']}",
        "seed": record["seed"],
        "victim": record["victim"],
        "status": record["status"],
        "error": record.get("error"),
        "final_acc": metrics.get("final_acc"),
        "peak_acc": metrics.get("peak_acc"),
        "train_acc": metrics.get("train_acc"),
        "train_s": record.get("wall_s", {}).get("train"),
        "generate_s": generation.get("wall_s"),
        "generation_steps": generation.get("steps"),
        "device": record["env"].get("device"),
        "precision": record["env"].get("numerics", {}).get("precision"),
        "compile": record["env"].get("numerics", {}).get("compile"),
    }


def compare_expected(records: Sequence[dict[str, Any]], directory: Path = REPO / EXPECTED_DIR) -> list[dict[str, Any]]:
    """Each ok cell that ``results/expected`` has a reference number for, with that number and whether the
    regression test's tolerance (:func:`benchmarks.expected.check`) would accept it.

    Information, not a test: the reference was measured on another device (its ``expected_device``).
    """
    docs = [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]
    ok = [r for r in records if r.get("status") == "ok"]
    out = []
    for doc in docs:
        mine = [
            r for r in ok if (r["dataset"], r["preset"], r["victim"]) == (doc["dataset"], doc["preset"], doc["victim"])
        ]
        for seed in sorted({r["seed"] for r in mine}):
            runs = {
                f"{r['method']}/{r['defense']}": float(r["metrics"]["final_acc"])
                for r in mine
                if r["seed"] == seed
                and r["method_hash"] == doc["cells"].get(f"{r['method']}/{r['defense']}", {}).get("method_hash")
            }
            for name in sorted(set(runs) & set(doc["cells"])):
                entry = doc["cells"][name]
                try:
                    within = check(doc, name, runs, seed) is None if doc.get("schema") == 2 else None
                except KeyError:  # a seed the file has no tolerance for, or a gap without its clean cell
                    within = None
                out.append(
                    {
                        "cell": name,
                        "seed": seed,
                        "measured": runs[name],
                        "expected_mean": entry["mean"],
                        "tolerance": entry.get("tolerance"),
                        "within": within,
                        "expected_device": doc["device"],
                    }
                )
    return out


def e2e(out: Path, scratch: Path, data_root: Path | None, sizes: Sizes, compiled: bool = False) -> int:
    """The runner's main job on the device, in this process: ``--methods em sem --defense none at4``.

    ``compiled``: the same job with ``--compile`` (:attr:`Sizes.e2e_compile`: CUDA graphs on the GPU) and its own
    noise cache, so the surrogates are trained and the noise generated compiled; written to ``e2e_compiled.json``
    with each cell's accuracy next to the eager run's where ``e2e.json`` holds it (the same seed: the two differ
    by the compiled kernels' rounding only)."""
    mode = sizes.e2e_compile if compiled else "eager"
    tag = "e2e-compiled" if compiled else "e2e"
    cells_dir = scratch / f"{tag}-cells"
    argv = [
        "--methods", *E2E_METHODS, "--defense", *E2E_DEFENSES, "--seeds", "0", "--preset", sizes.e2e_preset,
        "--device", sizes.device, "--no-progress", "--results-dir", str(cells_dir),
        "--cache-dir", str(scratch / f"{tag}-cache"), *_data_args(data_root),
        *(["--compile", mode] if compiled else []),
    ]  # fmt: skip
    device = torch.device(sizes.device)
    _reset_peak(device)
    start = time.perf_counter()
    code = runner.main(argv)
    _sync(device)
    wall = time.perf_counter() - start
    records = load_records(cells_dir) if cells_dir.is_dir() else []
    doc: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "benchmarks.run", *argv]),
        "exit_code": code,
        "wall_s": wall,
        "device": device_name(device),
        "compile": mode,
        **memory(device),
        "cells": [cell_summary(r) for r in records],
        "expected": compare_expected(records),
    }
    if compiled:
        doc["against_eager"] = against_eager(doc["cells"], out / FILES["e2e"])
    write_json(out / FILES["e2e_compiled" if compiled else "e2e"], doc)
    cells = (len(E2E_METHODS) + 1) * len(E2E_DEFENSES)  # with the clean baseline
    return 0 if code == 0 and len(records) == cells else 1


def against_eager(cells: Sequence[dict[str, Any]], eager_file: Path) -> list[dict[str, Any]]:
    """Each compiled cell's final accuracy beside the eager run's of the same cell and seed (``eager_file``, the
    e2e step's file; empty where it is missing or unreadable)."""
    try:
        eager = {(c["cell"], c["seed"]): c for c in json.loads(eager_file.read_text())["cells"]}
    except (OSError, ValueError, KeyError, TypeError):
        return []
    out = []
    for c in cells:
        e = eager.get((c["cell"], c["seed"]))
        if e is not None and c["final_acc"] is not None and e["final_acc"] is not None:
            out.append(
                {
                    "cell": c["cell"],
                    "seed": c["seed"],
                    "compiled": c["final_acc"],
                    "eager": e["final_acc"],
                    "difference": c["final_acc"] - e["final_acc"],
                    "generate_s": c["generate_s"],
                    "eager_generate_s": e["generate_s"],
                }
            )
    return out


# ------------------------------------------------------------------------------------------------ paper-short


def _timed(device: torch.device, fn: Callable[..., object], *args: Any) -> float:
    """Wall seconds of ``fn(*args)``, the device synchronised before and after."""
    _sync(device)
    start = time.perf_counter()
    fn(*args)
    _sync(device)
    return time.perf_counter() - start


def evaluations(steps: int, eval_every: int) -> int:
    """How many test evaluations ``fit`` runs: every ``eval_every`` steps and after the last."""
    return steps // eval_every + (1 if steps % eval_every else 0)


def project(doc: dict[str, Any], paper: dict[str, Any]) -> dict[str, Any]:
    """The full paper protocol's wall time from the shortened run's per-step times.

    ``paper`` holds the full protocol's counts: ``generation_steps``, ``final_pass_batches``,
    ``victim_steps`` and ``evaluations``. Generation = steps x seconds per step + final-pass batches x
    seconds per batch + the robustness measurement; a victim cell = steps x seconds per step +
    evaluations x seconds per evaluation.
    """
    gen = doc["generation"]
    generation_s = (
        paper["generation_steps"] * gen["step_s"]
        + paper["final_pass_batches"] * doc["final_pass"]["s_per_batch"]
        + gen["robustness_s"]
    )
    victims = {
        defense: paper["victim_steps"] * cell["step_s"] + paper["evaluations"] * doc["evaluation"]["s"]
        for defense, cell in doc["victims"].items()
        if cell.get("step_s") is not None
    }
    return {
        **paper,
        "generation_s": generation_s,
        "victim_s": victims,
        # the campaign `--methods sem --defense <these>` with its clean baseline, one seed: one generation and
        # two victims per defense
        "campaign_s": generation_s + 2 * sum(victims.values()),
        "campaign": f"sem + clean baseline under {' and '.join(victims)}, one seed",
    }


def paper_short(out: Path, scratch: Path, data_root: Path | None, sizes: Sizes) -> int:
    """The ``paper`` protocol at full data scale with fewer generation and victim steps; per-step times and a
    projection of the full protocol's wall time."""
    from benchmarks.models import create_victim

    path = out / FILES["paper_short"]
    argv = [
        "--preset", "paper", "--methods", "sem", "--no-clean", "--defense", "none", "at4", "--seeds", "0",
        "--device", sizes.device, "--no-progress", "--results-dir", str(scratch / "paper-cells"),
        "--cache-dir", str(scratch / "paper-cache"), "--set", f"sem.steps={sizes.paper_generation_steps}",
        "--set", "sem.final_pass=false", *_data_args(data_root), *sizes.paper_options,
    ]  # fmt: skip
    plan = make_plan(runner.spec_from_args(runner.build_parser().parse_args(argv)))
    full = plan.protocol
    shorter = {"steps": sizes.paper_victim_steps, "eval_every": sizes.paper_eval_every}
    if sizes.paper_batch is not None:
        shorter["batch_size"] = sizes.paper_batch
    recipe = replace(full.recipe, **shorter)
    plan.protocol = replace(full, recipe=recipe, train_size=sizes.paper_train_size, test_size=sizes.paper_test_size)
    train, test = load_data(plan)
    method, ctx = plan.variants["sem"], plan.ctx
    ctx.set_numerics()
    cfg, device = method.config, plan.ctx.device
    paper_cfg = METHODS.get("sem")(**full.method_options("sem")).config
    doc: dict[str, Any] = {
        "runner_argv": argv,
        "shortened": {"victim_recipe": shorter, "generation_steps": cfg.steps, "final_pass": "timed on batches"},
        "device": device_name(device),
        "dataset": full.dataset,
        "train_size": len(train),
        "test_size": len(test),
        "image_shape": list(train.shape),
        "victim": plan.victims[0],
        "surrogate": cfg.surrogate,
        "precision": ctx.arithmetic,
        "batch_size": {"generation": cfg.batch_size, "victim": recipe.batch_size},
    }
    write_json(path, doc)

    # 1. final pass: noise updates of the first training batches with a fresh surrogate (after one warm-up batch)
    budget = method.budget(train.shape, plan.radius)
    on_device = train.to(device)
    n = min(len(train), (sizes.paper_final_batches + 1) * cfg.batch_size)
    warm, timed = (on_device.subset(torch.arange(a, b)) for a, b in ((0, cfg.batch_size), (cfg.batch_size, n)))
    model = build_surrogate(cfg, on_device, ctx, "gpu-check")
    g = ctx.generator("gpu-check", "final-pass")
    final_pass(model, warm, budget, ctx, cfg, method.objective, g)
    batches = math.ceil(len(timed) / cfg.batch_size)
    seconds = _timed(device, final_pass, model, timed, budget, ctx, cfg, method.objective, g)
    doc["final_pass"] = {"batches": batches, "images": len(timed), "s": seconds, "s_per_batch": seconds / batches}
    del model, warm, timed, on_device
    write_json(path, doc)

    # 2. the engine: generation (without its final pass) and one victim per defense, cells in the scratch folder
    _reset_peak(device)
    start = time.perf_counter()
    records = Campaign(plan, train, test, LocalExecutor()).run()
    _sync(device)
    doc["engine_wall_s"] = time.perf_counter() - start
    doc.update(memory(device))
    gen = records[0]["generation"] if records else {}
    doc["generation"] = {
        **{k: gen.get(k) for k in ("wall_s", "steps", "images_forwarded", "robustness_s", "surrogate_robust_acc")},
        "step_s": gen["wall_s"] / gen["steps"] if gen.get("steps") else None,
    }
    doc["victims"] = {
        r["defense"]: {
            "status": r["status"],
            "error": r.get("error"),
            "steps": r["recipe"]["steps"],
            "evaluations": len(r.get("curve", [])),
            "train_s": r.get("wall_s", {}).get("train"),
            "final_acc": r.get("metrics", {}).get("final_acc"),
        }
        for r in records
    }
    write_json(path, doc)

    # 3. one evaluation of the test set (a fresh victim; the cost does not depend on the weights)
    victim = ctx.prepare(create_victim(plan.victims[0], test.num_classes, test.shape[0]))
    test_on_device = test.to(device)
    evaluate(victim, test_on_device, ctx, recipe)
    doc["evaluation"] = {"images": len(test), "s": _timed(device, evaluate, victim, test_on_device, ctx, recipe)}
    for cell in doc["victims"].values():  # a cell's training time less its evaluations, per step
        if cell["status"] == "ok":
            cell["step_s"] = (cell["train_s"] - cell["evaluations"] * doc["evaluation"]["s"]) / cell["steps"]

    # 4. the full protocol: the preset's generation and victim steps, a final pass over the whole training set
    complete = len(records) == 2 and all(r["status"] == "ok" for r in records) and bool(doc["generation"]["step_s"])
    if complete:
        doc["projection"] = project(
            doc,
            {
                "generation_steps": paper_cfg.steps,
                "final_pass_batches": math.ceil(len(train) / cfg.batch_size),
                "victim_steps": full.recipe.steps,
                "evaluations": evaluations(full.recipe.steps, full.recipe.eval_every),
            },
        )
    write_json(path, doc)
    return 0 if complete else 1


# ------------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m analysis.gpu_check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = p.add_subparsers(dest="command", required=True)
    for name in ("env", "tests", "e2e", "paper-short"):
        sub = commands.add_parser(name)
        sub.add_argument("--out", type=Path, required=True, help="output folder")
        sub.add_argument("--dry", action="store_true", help="the CPU rehearsal at tiny sizes")
        if name != "env":
            sub.add_argument("--scratch", type=Path, required=True, help="folder for what does not come back")
        if name in ("e2e", "paper-short"):
            sub.add_argument("--data-root", type=Path, default=None, help="Fashion-MNIST folder (runner --data-root)")
        if name == "e2e":
            sub.add_argument(
                "--compiled", action="store_true", help="with --compile (CUDA graphs; the dry run: torch.compile)"
            )
        if name == "tests":
            sub.add_argument("pytest_args", nargs=argparse.REMAINDER, help="arguments of pytest, after --")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.plugins import load_plugins

    load_plugins()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    sizes = DRY if args.dry else GPU
    args.out.mkdir(parents=True, exist_ok=True)
    if args.command == "env":
        missing = sizes.device == "cuda" and not torch.cuda.is_available()
        doc = env_report(torch.device("cpu" if missing else sizes.device))
        if missing:
            doc["error"] = "CUDA is not available: the report describes the CPU"
        write_json(args.out / FILES["env"], doc)
        return 1 if missing else 0
    args.scratch.mkdir(parents=True, exist_ok=True)
    if args.command == "tests":
        pytest_args = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
        return run_tests(args.out, args.scratch, pytest_args, args.dry, step_deadline())
    if args.command == "e2e":
        return e2e(args.out, args.scratch, args.data_root, sizes, args.compiled)
    return paper_short(args.out, args.scratch, args.data_root, sizes)


if __name__ == "__main__":
    sys.exit(main())
