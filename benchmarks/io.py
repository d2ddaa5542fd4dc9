"""Atomic file writes: a reader never sees a half-written result or cache file.

A temp file's name says which process writes it (``.<name>.~<host>~<pid>~<random>.tmp``), so that a
later run can remove the leftovers of a killed writer (:func:`remove_stale_temps`) without touching
the files of a writer that is still running.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from benchmarks.interrupts import deferred

log = logging.getLogger(__name__)
_OWNER = re.compile(r"~(?P<host>[^~/]*)~(?P<pid>[0-9]+)~[^~/]*\.tmp$")
#: temp files of another host, or of an older version (no owner in the name), older than this are stale
STALE_AFTER_S = 24 * 3600


def _host() -> str:
    return socket.gethostname().replace("~", "-")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give: mkstemp's files are 0600


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through ``write(fileobj)`` into a temp file beside ``path``, fsync, then rename over it.

    The file gets the mode a plain ``open()`` would give it (``0666 & ~umask``), not mkstemp's 0600. A stop
    (SIGINT/SIGTERM under :class:`~benchmarks.interrupts.Interrupts`) that arrives during the write takes
    effect once the file is in place.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with deferred():
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.~{_host()}~{os.getpid()}~", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, _MODE)
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: the process exists but belongs to someone else
        return True
    return True


def remove_stale_temps(root: Path) -> int:
    """Delete the temp files that killed writers left under ``root``; return how many.

    A temp file written on this host is stale when its writer's pid is gone; one from another host
    (a shared file system) or without an owner in its name when it is older than :data:`STALE_AFTER_S`.
    """
    root = Path(root)
    if not root.is_dir():
        return 0
    removed = 0
    now = time.time()
    for path in root.rglob(".*.tmp"):
        match = _OWNER.search(path.name)
        try:
            if match and match["host"] == _host():
                stale = not _alive(int(match["pid"]))
            else:
                stale = now - path.stat().st_mtime > STALE_AFTER_S
            if stale and path.is_file():
                path.unlink()
                removed += 1
        except OSError as err:  # vanished meanwhile, or not ours to delete
            log.debug("cannot remove temp file %s: %s", path, err)
    if removed:
        log.info("removed %d temp file(s) of interrupted writes under %s", removed, root)
    return removed
