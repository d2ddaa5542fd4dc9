"""Shared fixtures and options: ``--runslow`` for slow tests; ``gpu`` tests skip without CUDA.

``UEB_GPU_TEST_DEVICE=cpu`` runs the ``gpu`` tests on the CPU instead (the rehearsal of
``scripts/gpu_check.sh --dry``); they take their device from the ``gpu_device`` fixture.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from benchmarks.plugins import load_plugins

load_plugins()

GPU_TEST_DEVICE = torch.device(os.environ.get("UEB_GPU_TEST_DEVICE", "cuda"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow")
    skip_gpu = pytest.mark.skip(reason="gpu: CUDA is not available")
    no_gpu = GPU_TEST_DEVICE.type == "cuda" and not torch.cuda.is_available()
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and no_gpu:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def gpu_device() -> torch.device:
    """The device of the ``gpu`` tests: CUDA, or what ``UEB_GPU_TEST_DEVICE`` names."""
    return GPU_TEST_DEVICE


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's noise cache."""
    monkeypatch.setenv("UEB_CACHE", str(tmp_path_factory.mktemp("noise-cache")))


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch intra-op thread for a module (use with ``pytestmark = pytest.mark.usefixtures(...)``).

    Tiny tensors gain nothing from two threads and lose a lot when the two cores are busy; it also gives the
    same float arithmetic as CLI subprocesses started with ``OMP_NUM_THREADS=1``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One results and noise-cache directory for every runner call of the session on real data.

    The regression rerun and the end-to-end protection checks ask for some of the same cells; the
    runner resumes, so each poison is generated and each victim trained once per session.
    """
    return tmp_path_factory.mktemp("smoke-runs")
