"""The one user-error type of every command, its argument parser, and the checks options share.

Bad input anywhere (a CLI flag, a campaign spec built in Python, a file) raises :class:`UsageError` with a
message that names what is wrong and what is accepted; a command reports it as one line on stderr and
exits with code 2 (:func:`fail`), before any work starts.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import NoReturn

import torch


class UsageError(ValueError):
    """Bad input: reported on one line, exit code 2, nothing written."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` keeps the description's line breaks and lists every option's default (a default that says
    nothing, None, False or empty, is left to the option's own help text)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "(default" in text or default in (None, False, [], (), argparse.SUPPRESS) or not action.option_strings:
            return text
        shown = " ".join(map(str, default)) if isinstance(default, list | tuple) else "%(default)s"
        return f"{text} (default: {shown})"


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors raise :class:`UsageError` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see --help)")


def fail(prog: str, err: BaseException | str) -> int:
    """Report ``err`` as one line of printable text on stderr, ``<name>: error: ...`` (the last dotted part of
    ``prog``: ``python -m analysis.speed`` -> ``speed``); return 2, the exit code of bad input."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in " ".join(str(err).split()))
    print(f"{prog.rsplit('.', 1)[-1]}: error: {text}", file=sys.stderr)
    return 2


def parse_device(text: str, flag: str = "--device", here: bool = True) -> torch.device:
    """The device ``text`` names (``auto``, ``cpu``, ``cuda``, ``cuda:N``); ``here`` checks this machine has it.

    ``auto`` is CUDA when this machine has it (``here``), else the CPU.
    """
    if text == "auto":
        return torch.device("cuda" if here and torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError):
        raise UsageError(f"{flag} must be auto, cpu, cuda or cuda:N, got {text!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"{flag} must be auto, cpu, cuda or cuda:N, got {text!r}")
    if here and device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{flag} {text}: CUDA is not available here; use --device cpu")
    return device


def parse_radius(value: str | float | None, default: float, flag: str = "--radius") -> float:
    """An L-inf noise radius in 1/255 units, in (0, 127] (the int8 noise range); ``default`` when None."""
    if value is None:
        return default
    try:
        radius = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{flag} must be a number of 1/255 units, e.g. 8; got {value!r}") from None
    if not (math.isfinite(radius) and 0 < radius <= 127):
        raise UsageError(f"{flag} must be in (0, 127] (1/255 units), got {value}")
    return radius


def check_resource(flag: str, value: float | None) -> None:
    """Raise :class:`UsageError` unless ``value`` is None or a finite positive number (Ray CPUs/GPUs per task)."""
    if value is None:
        return
    if not (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        shown = f"{value:g}" if isinstance(value, int | float) else repr(value)
        raise UsageError(f"{flag} must be a positive number, got {shown}")
