"""One registry type for methods, victims, defenses, data sets and presets.

Names are exact (``em``) or families with one integer parameter (``at<k>``, ``jpeg<q>``): a family
entry is a factory called with the parsed integer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from fnmatch import fnmatch
from functools import partial
from typing import Generic, TypeVar

T = TypeVar("T")
_PARAM = re.compile(r"<([a-z]+)>")


class UnknownNameError(KeyError):
    """A name that no plugin registered; the message lists what is accepted."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Name -> object map that refuses duplicates and explains unknown names.

    Example:
        >>> R = Registry("thing")
        >>> @R.register("a")
        ... def make_a(): return 1
        >>> R.get("a")()
        1
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._families: dict[str, tuple[re.Pattern[str], str, T, tuple[str, ...]]] = {}
        self._groups: dict[str, tuple[tuple[str, ...], str]] = {}

    def register(self, name: str, *, examples: Iterable[str] = ()) -> Callable[[T], T]:
        """Register ``obj`` under ``name``; ``name`` may hold one ``<param>`` (an integer)."""

        def deco(obj: T) -> T:
            if name in self._items or name in self._families:
                raise KeyError(f"{self.kind} {name!r} registered twice")
            params = _PARAM.findall(name)
            if not params:
                self._items[name] = obj
                return obj
            if len(params) != 1:
                raise ValueError(f"{self.kind} family {name!r}: exactly one <param> is supported")
            head, tail = name.split(f"<{params[0]}>")
            pattern = re.compile(f"^{re.escape(head)}(?P<{params[0]}>[0-9]+){re.escape(tail)}$")
            self._families[name] = (pattern, params[0], obj, tuple(examples))
            return obj

        return deco

    def group(self, name: str, members: Iterable[str], about: str) -> None:
        """Register a named grid of names, given as ``@name`` (``--defense @iss``); ``about`` says where it comes
        from. Members are checked when the grid is used (the plugins that register them may load later)."""
        members = tuple(members)
        if not re.fullmatch(r"[a-z][a-z0-9-]*", name) or name in self._groups:
            raise KeyError(f"{self.kind} grid {name!r}: a new lower-case name is required")
        if not members or len(set(members)) != len(members):
            raise ValueError(f"{self.kind} grid {name!r}: give its members once each")
        self._groups[name] = (members, about)

    def groups(self) -> dict[str, tuple[tuple[str, ...], str]]:
        """Grid name -> (members, about)."""
        return dict(self._groups)

    def members(self, name: str) -> tuple[str, ...]:
        """The members of the grid ``@name`` (``name`` with or without the ``@``)."""
        key = name.removeprefix("@")
        if key not in self._groups:
            grids = ", ".join(f"@{g}" for g in sorted(self._groups)) or "none"
            raise UnknownNameError(f"unknown {self.kind} grid {name!r}; grids: {grids}")
        return self._groups[key][0]

    def get(self, name: str) -> T:
        """The object for ``name``; for a family, the factory with its parameter bound."""
        if name in self._items:
            return self._items[name]
        for pattern, param, obj, _ in self._families.values():
            match = pattern.match(name)
            if match:
                return partial(obj, **{param: int(match.group(param))})  # type: ignore[return-value]
        raise UnknownNameError(f"unknown {self.kind} {name!r}; accepted: {', '.join(self.accepted())}")

    def template(self, name: str) -> str:
        """The registered key behind ``name``: itself, or its family template (``at4`` -> ``at<k>``)."""
        if name in self._items:
            return name
        for template, (pattern, *_) in self._families.items():
            if pattern.match(name):
                return template
        raise UnknownNameError(f"unknown {self.kind} {name!r}; accepted: {', '.join(self.accepted())}")

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.get(name)
        except UnknownNameError:
            return False
        return True

    def accepted(self) -> list[str]:
        """Exact names and family templates, for error messages and ``--help``."""
        return sorted(self._items) + sorted(self._families)

    def list(self, pattern: str = "*") -> list[str]:
        """Exact names plus the examples of each family that match a shell-style ``pattern``."""
        names = set(self._items)
        for *_, examples in self._families.values():
            names.update(examples)
        return sorted(n for n in names if fnmatch(n, pattern))

    def resolve(self, patterns: Iterable[str]) -> list[str]:
        """Expand names and wildcards in order, without duplicates; unknown names raise."""
        out: list[str] = []
        for pattern in patterns:
            if any(ch in pattern for ch in "*?["):
                found = self.list(pattern)
                if not found:
                    raise UnknownNameError(
                        f"{self.kind} pattern {pattern!r} matches nothing; accepted: {', '.join(self.accepted())}"
                    )
            else:
                self.get(pattern)
                found = [pattern]
            out.extend(n for n in found if n not in out)
        return out


# The registries. Plugins register themselves on import (see benchmarks.plugins.load_plugins).
METHODS: Registry = Registry("method")  # name -> NoiseMethod subclass
VICTIMS: Registry = Registry("victim")  # name -> factory(num_classes, in_chans) -> nn.Module taking [0,1] input
DEFENSES: Registry = Registry("defense")  # name -> factory(**params) -> Defense
DATASETS: Registry = Registry("dataset")  # name -> loader(root, download) -> (train, test) ImageSets
PRESETS: Registry = Registry("preset")  # name -> function(dataset) -> Protocol
