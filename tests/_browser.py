"""Headless Chromium driven over the DevTools protocol on a pipe, for tests of generated web pages.

No driver and no browser download: Debian's ``chromium`` package (or ``$UEB_CHROMIUM``) and the standard
library. ``--remote-debugging-pipe`` makes Chromium read protocol commands from fd 3 and write replies and
events to fd 4, each a JSON message ended by a NUL byte. Every wait has a deadline, so a hung browser fails
the test instead of hanging it.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class BrowserError(RuntimeError):
    """The browser failed, closed its pipe, answered with an error or did not answer in time."""


def find_chromium() -> str | None:
    """``$UEB_CHROMIUM``, else the first of :data:`NAMES` on the PATH; None when there is none."""
    named = os.environ.get("UEB_CHROMIUM")
    if named:
        return shutil.which(named)
    return next((path for path in map(shutil.which, NAMES) if path), None)


def _high(fd: int) -> int:
    """``fd`` moved to a number above 9, clear of the 3 and 4 that the child's redirections assign."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Chromium:
    """One headless browser process; :meth:`open` loads a page in a new tab.

    Protocol events are kept per tab (``sessionId``) until the tab reads them.
    """

    def __init__(self, binary: str, profile: Path, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._log = profile / "chromium.log"
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        commands_read, replies_write = _high(commands_read), _high(replies_write)
        args = [
            "--headless=new",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "--no-sandbox",  # a throwaway browser for local files; the sandbox needs privileges CI runners lack
            "--disable-gpu",
            "--hide-scrollbars",
            "--force-color-profile=srgb",  # screenshot pixels are the CSS colours
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--mute-audio",
            "about:blank",
        ]
        # bash (dash takes no fd above 9) puts the pipe ends on the fds 3 and 4 that Chromium expects, closes
        # the originals and becomes Chromium.
        redirect = f'exec "$@" 3<&{commands_read} 4>&{replies_write} {commands_read}<&- {replies_write}>&-'
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                ["bash", "-c", redirect, "bash", binary, *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(commands_read, replies_write),
            )
        os.close(commands_read)
        os.close(replies_write)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    # -------------------------------------------------------------------------------------------- protocol
    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._receive(deadline, method)
            if reply.get("id") != self._next_id:
                self._events.append(reply)
                continue
            if "error" in reply:
                raise BrowserError(f"{method}: {reply['error']}")
            return reply.get("result", {})

    def wait_event(self, method: str, session: str) -> dict[str, Any]:
        """The first kept or incoming event ``method`` of ``session`` (removed from the kept events)."""
        deadline = time.monotonic() + self.timeout
        while True:
            for event in self._events:
                if event.get("method") == method and event.get("sessionId") == session:
                    self._events.remove(event)
                    return event.get("params", {})
            self._events.append(self._receive(deadline, method))

    def take_events(self, session: str) -> list[dict[str, Any]]:
        """The kept events of ``session``, in arrival order; they are no longer kept."""
        mine = [e for e in self._events if e.get("sessionId") == session]
        self._events = [e for e in self._events if e.get("sessionId") != session]
        return mine

    def _receive(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                raise BrowserError(f"no answer to {waiting_for} within {self.timeout:g} s{self._log_tail()}")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise BrowserError(f"chromium closed the pipe while waiting for {waiting_for}{self._log_tail()}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def _log_tail(self) -> str:
        lines = self._log.read_text(errors="replace").splitlines() if self._log.exists() else []
        return "; chromium's last log lines:\n" + "\n".join(lines[-15:]) if lines else ""

    # -------------------------------------------------------------------------------------------- pages
    def open(self, url: str, width: int = 1280, height: int = 900) -> Tab:
        """A new tab of ``width`` x ``height`` CSS pixels that has loaded ``url`` (its load event fired)."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.send("Emulation.setDeviceMetricsOverride", metrics, session)
        self.take_events(session)  # the blank page's
        navigation = self.send("Page.navigate", {"url": url}, session)
        if navigation.get("errorText"):
            raise BrowserError(f"cannot load {url}: {navigation['errorText']}")
        self.wait_event("Page.loadEventFired", session)
        return Tab(self, session)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (BrowserError, OSError):
            pass
        try:
            self._proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._commands)
        os.close(self._replies)


class Tab:
    """A loaded page: its console errors, JavaScript values of its DOM and screenshots."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser, self.session = browser, session
        self._errors: list[str] = []

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page; raises when it throws."""
        params = {"expression": expression, "returnByValue": True}
        reply = self.browser.send("Runtime.evaluate", params, self.session)
        if "exceptionDetails" in reply:
            raise BrowserError(f"{expression!r} threw: {reply['exceptionDetails'].get('exception', reply)}")
        return reply["result"].get("value")

    def console_errors(self) -> list[str]:
        """Every error the page's console has shown so far: ``console.error`` and failed ``console.assert``
        calls, uncaught exceptions, and the browser's own error entries (a resource that failed to load, a
        blocked request, ...)."""
        self.evaluate("0")  # a round trip: events the page caused before it are now kept
        for event in self.browser.take_events(self.session):
            self._errors += _error_text(event.get("method", ""), event.get("params", {}))
        return list(self._errors)

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (not only the viewport) at ``path``."""
        size = self.browser.send("Page.getLayoutMetrics", session=self.session)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        params = {"format": "png", "captureBeyondViewport": True, "clip": clip}
        data = self.browser.send("Page.captureScreenshot", params, self.session)["data"]
        path.write_bytes(base64.b64decode(data))
        return path


def _error_text(method: str, params: dict[str, Any]) -> list[str]:
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        return [" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))]
    if method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        return [str(details.get("exception", {}).get("description") or details.get("text", ""))]
    if method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        entry = params["entry"]
        return [f"{entry.get('text', '')} {entry.get('url', '')}".strip()]
    return []


@contextmanager
def chromium(binary: str, profile: Path, timeout: float = 30.0) -> Iterator[Chromium]:
    """A :class:`Chromium` that is closed (or killed) on exit."""
    browser = Chromium(binary, profile, timeout)
    try:
        yield browser
    finally:
        browser.close()
