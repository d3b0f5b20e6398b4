"""`headend`: the operator's command line.

Each module in this package that defines ``register(subparsers)`` adds its own sub-commands;
``register`` sets ``func`` on its parsers, and ``func(args)`` returns the exit code.
Exit codes: 0 done, 1 the meter or link refused or failed, 2 bad usage or input,
3 timed out with the command still safely queued, 4 not found.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import headend.cli as cli_pkg

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_QUEUED, EXIT_NOT_FOUND = 0, 1, 2, 3, 4


def build_parser() -> argparse.ArgumentParser:
    """The full `headend` argument parser, gathered from every command module."""
    parser = argparse.ArgumentParser(prog="headend", description="prepaid645 head-end")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(m.name for m in pkgutil.iter_modules(cli_pkg.__path__)):
        if mod == "main" or mod.startswith("_"):
            continue
        module = importlib.import_module(f"headend.cli.{mod}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `headend` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
