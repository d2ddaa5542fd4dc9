"""Import the plugin packages so that they register themselves."""

from __future__ import annotations

import importlib

PLUGIN_PACKAGES = ("benchmarks.data", "benchmarks.presets", "victims", "methods")


def load_plugins() -> None:
    """Import every plugin package once (idempotent)."""
    for name in PLUGIN_PACKAGES:
        importlib.import_module(name)
