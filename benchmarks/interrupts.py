"""Stop requests: SIGINT and SIGTERM become ``KeyboardInterrupt``, held back while a file is being written.

A signal handler that raises can fire between any two bytecodes, including inside a library's clean-up
code. In the middle of ``np.savez_compressed`` the ``KeyboardInterrupt`` surfaces in zipfile's
``close()`` as an unrelated ``ValueError`` and leaves a half-closed ``ZipFile`` for the garbage collector
to complain about. So a stop that arrives inside :func:`deferred` (every atomic write) is only recorded;
the ``KeyboardInterrupt`` is raised when the write has finished and its file is in place.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_depth = 0  # nesting of deferred() blocks in the main thread (handlers run in the main thread only)
_pending = False  # a stop arrived inside a deferred() block


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def deferred() -> Iterator[None]:
    """Hold back the ``KeyboardInterrupt`` of a stop that arrives inside this block until its end.

    Outside the main thread (no signal handler runs there) it does nothing.
    """
    global _depth, _pending
    if not _main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending:
            _pending = False
            raise KeyboardInterrupt  # a stop wins over an error of the block itself (kept as __context__)


class Interrupts:
    """While active, SIGINT and SIGTERM raise ``KeyboardInterrupt`` (outside :func:`deferred`) and are remembered."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: list[int] = []
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        global _pending
        self.received.append(signum)
        if _depth:
            _pending = True
            return
        raise KeyboardInterrupt

    def arm(self) -> None:
        """(Re)install the handlers, e.g. after ``ray.init`` replaced the one of SIGTERM."""
        if _main_thread():
            for sig in self.SIGNALS:
                old = signal.signal(sig, self._handler)
                self._previous.setdefault(sig, old)

    def __enter__(self) -> Interrupts:
        self.arm()
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)

    @property
    def exit_code(self) -> int:
        """``128 + signal``, as a shell reports a process ended by it (130 for SIGINT)."""
        return 128 + (self.received[-1] if self.received else signal.SIGINT)

    @property
    def name(self) -> str:
        return signal.Signals(self.received[-1]).name if self.received else "SIGINT"
