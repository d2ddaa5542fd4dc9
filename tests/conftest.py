"""Shared fixtures and options: ``--runslow`` for slow tests; ``gpu`` tests skip without CUDA."""

from __future__ import annotations

import pytest
import torch

from benchmarks.plugins import load_plugins

load_plugins()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow")
    skip_gpu = pytest.mark.skip(reason="gpu: CUDA is not available")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's noise cache."""
    monkeypatch.setenv("UEB_CACHE", str(tmp_path_factory.mktemp("noise-cache")))
