"""Speed suite (pytest-benchmark): ``tox -e bench`` or ``pytest tests/perf --benchmark-enable``.

Skipped in the ordinary test run (benchmarks disabled). Sizes come from the environment so one file
serves the CPU and a GPU: ``UEB_BENCH_ARCH`` (default tiny_cnn; resnet18 for the CIFAR-10 figure),
``UEB_BENCH_DEVICE`` (auto), ``UEB_BENCH_BATCH`` (128), ``UEB_BENCH_ROUNDS``. The terminal summary
prints each method's seconds per step and the ratios to SEM measured in this run;
``UEB_BENCH_JSON`` names a file to write them to.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

RESULTS = pytest.StashKey[dict[str, dict[str, Any]]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[RESULTS] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("benchmark_disable") and not config.getoption("benchmark_enable"):
        skip = pytest.mark.skip(reason="speed suite: pass --benchmark-enable (tox -e bench)")
        for item in items:
            if "perf" in item.path.parts:
                item.add_marker(skip)


@pytest.fixture
def speed_results(request: pytest.FixtureRequest) -> dict[str, dict[str, Any]]:
    return request.config.stash[RESULTS]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    results = config.stash.get(RESULTS, {})
    if not results:
        return
    sem = results.get("sem", {}).get("mean_s")
    terminalreporter.section("uebench: seconds per generation step (same batch, model and device)")
    for name, row in sorted(results.items()):
        ratio = f"  {row['mean_s'] / sem:6.2f}x SEM" if sem else ""
        terminalreporter.write_line(
            f"{name:<26} {row['mean_s'] * 1e3:10.2f} ms  (min {row['min_s'] * 1e3:.2f}, {row['rounds']} rounds, "
            f"{row['forward_images_per_image']:.0f} forward passes/image){ratio}  "
            f"[{row['device']}, {row['arch']}, batch {row['batch']}]"
        )
    out = os.environ.get("UEB_BENCH_JSON")
    if out:
        Path(out).write_text(json.dumps(results, indent=2, sort_keys=True))
