"""Speed suite (pytest-benchmark): ``tox -e bench`` or ``pytest tests/perf --benchmark-enable``.

Skipped in the ordinary test run (benchmarks disabled). Sizes come from the environment so one file
serves the CPU and a GPU: ``UEB_BENCH_ARCH`` (default tiny_cnn; resnet18 for the CIFAR-10 figure),
``UEB_BENCH_DEVICE`` (auto), ``UEB_BENCH_BATCH`` (128), ``UEB_BENCH_ROUNDS``, ``UEB_BENCH_WARMUP`` (1),
``UEB_BENCH_PRECISION`` (``fp32``, ``tf32``, ``bf16``, comma-separated; default bf16 on a GPU, fp32 on the
CPU) and ``UEB_BENCH_COMPILE`` (``eager``, ``compile``, ``graphs``: CUDA graphs through inductor's
``reduce-overhead`` mode; ``UEB_BENCH_COMPILE_BACKEND``, default inductor). The terminal summary prints each
row's seconds per step and the ratio to SEM of the same precision and mode; ``UEB_BENCH_JSON`` names a JSON
file the rows are merged into after every test (a row of the same name is replaced), so that several runs
fill one file and a run stopped half-way keeps its finished rows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.io import atomic_write_text

RESULTS = pytest.StashKey[dict[str, dict[str, Any]]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[RESULTS] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("benchmark_disable") and not config.getoption("benchmark_enable"):
        skip = pytest.mark.skip(reason="speed suite: pass --benchmark-enable (tox -e bench)")
        for item in items:
            if "perf" in item.path.parts:
                item.add_marker(skip)


def merge_json(path: Path, rows: dict[str, dict[str, Any]]) -> None:
    """Write ``rows`` into the JSON object in ``path`` (created if missing), replacing rows of the same name."""
    try:
        old = json.loads(path.read_text())
    except FileNotFoundError:
        old = {}
    if not isinstance(old, dict):
        raise ValueError(f"{path}: expected a JSON object of speed rows, got {type(old).__name__}")
    atomic_write_text(path, json.dumps({**old, **rows}, indent=2, sort_keys=True) + "\n")


@pytest.fixture
def speed_results(request: pytest.FixtureRequest) -> Iterator[dict[str, dict[str, Any]]]:
    results = request.config.stash[RESULTS]
    yield results
    out = os.environ.get("UEB_BENCH_JSON")
    if out and results:
        merge_json(Path(out), results)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    results = config.stash.get(RESULTS, {})
    if not results:
        return
    terminalreporter.section("uebench: seconds per generation step (same batch, model and device)")
    for name, row in sorted(results.items()):
        method, _, variant = name.partition("/")
        sem = results.get(f"sem/{variant}", {}).get("mean_s") if variant else None
        ratio = f"  {row['mean_s'] / sem:6.2f}x SEM" if sem else ""
        if "speedup_vs_reference_style" in row:
            ratio = f"  {row['speedup_vs_reference_style']:5.2f}x faster than the reference-style step"
        rate = f", {row['images_per_s']:.0f} images/s" if row["images_per_s"] else ""
        per_image = row["forward_images_per_image"]
        passes = f", {per_image:.0f} forward passes/image" if per_image else ""
        flops = f", {row['achieved_tflops']:.2f} TFLOP/s" if "achieved_tflops" in row else ""
        terminalreporter.write_line(
            f"{name:<28} {row['mean_s'] * 1e3:10.2f} ms  (min {row['min_s'] * 1e3:.2f}, {row['rounds']} rounds"
            f"{passes}{rate}{flops}){ratio}  "
            f"[{row['device']}, {row['arch']}, batch {row['batch']}]"
        )
