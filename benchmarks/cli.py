"""The ``uebench`` command: one entry point, a subcommand per job.

    uebench run --methods sem rem --defense none at4      # = python -m benchmarks.run
    uebench leaderboard                                    # = python -m benchmarks.leaderboard
    uebench correlation --defense at4                      # = python -m analysis.correlation
    uebench speed | uebench gallery --methods em sem       # = python -m analysis.speed | analysis.gallery
    uebench validate [--results-dir DIR] [--preset smoke]  # check results cells, expected files, a protocol
    uebench study --presets smoke [...]                    # the protocol study's table of candidates
    uebench migrate DIR                                    # rewrite cells of an earlier schema

``uebench <command> --help`` lists each command's options with their defaults. Every command is a module's
``main(argv)``; this dispatcher imports the module only when its command runs (the analysis layer sits
above the harness, so the harness names it here and never imports it otherwise).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

#: command -> (module whose ``main(argv)`` runs it, one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("benchmarks.run", "generate noise and train victims: fill a campaign's results cells"),
    "leaderboard": ("benchmarks.leaderboard", "results cells -> results/LEADERBOARD.md and leaderboard.html"),
    "correlation": ("analysis.correlation", "victim accuracy against surrogate and noise robustness"),
    "speed": ("analysis.speed", "generation cost per method and its ratio to SEM"),
    "gallery": ("analysis.gallery", "clean, noise and protected images per method"),
    "validate": ("benchmarks.validate", "check results cells and expected numbers; --preset: a protocol's validity"),
    "migrate": ("benchmarks.validate", "rewrite results cells of an earlier schema in place"),
    "study": ("benchmarks.study", "candidate protocols and their validity criteria -> results/protocol-study.md"),
    "claims": ("analysis.claims", "the papers' claims (EM/TAP lose protection under AT, ...), each a paired test"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "usage: uebench <command> [options]   (uebench <command> --help)\n\ncommands:\n" + "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"uebench: error: unknown command {command!r}; accepted: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    if command == "migrate":
        return module.migrate_main(rest)
    return module.main(rest, prog=f"uebench {command}")


if __name__ == "__main__":
    sys.exit(main())
