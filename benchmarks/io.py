"""Atomic file writes: a reader never sees a half-written result or cache file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through ``write(fileobj)`` into a temp file beside ``path``, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def check_writable(directory: Path) -> None:
    """Raise ``PermissionError`` unless files can be created in ``directory``; creates nothing.

    A directory that does not exist yet is checked through its nearest existing ancestor.
    """
    probe_dir = Path(directory).absolute()
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise PermissionError(f"cannot write to {directory}: {probe_dir} is not a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".probe.", dir=probe_dir)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise PermissionError(f"cannot write to {directory}: {err.strerror or err}") from None
