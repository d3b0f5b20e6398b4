"""`headend`: the operator's command line.

Each module in this package that defines ``register(subparsers)`` adds its own sub-commands;
``register`` sets ``func`` on its parsers, and ``func(args)`` returns the exit code.
Exit codes: 0 done, 1 the meter or link refused or failed (or the command was rejected or
cancelled), 2 bad usage or input, 3 timed out with the command still safely queued, 4 not
found, 5 a recharge is unresolved (it may have reached the meter; `headend serve` settles it
from the meter's purchase count, never crediting twice).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

import headend.cli as cli_pkg

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_QUEUED, EXIT_NOT_FOUND, EXIT_UNRESOLVED = 0, 1, 2, 3, 4, 5
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a program ended by SIGPIPE


def version() -> str:
    """The installed prepaid645 version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("prepaid645")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """--version and --print-completion SHELL, shared by the `headend` and `meter` commands."""
    import shtab

    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}",
                        help="print the version and exit")
    shtab.add_argument_to(parser, ["--print-completion"],
                          help="print a shell completion script (bash, zsh or tcsh) and exit, e.g. "
                               f"`{parser.prog} --print-completion bash > /etc/bash_completion.d/{parser.prog}`")


def build_parser() -> argparse.ArgumentParser:
    """The full `headend` argument parser, gathered from every command module."""
    parser = argparse.ArgumentParser(prog="headend", description="prepaid645 head-end")
    add_common_options(parser)
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
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_USAGE
        code = int(args.func(args) or 0)
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return broken_pipe()


def broken_pipe() -> int:
    """The reader of our output went away (`headend ... --json | head`): stop quietly, as `cat` does."""
    # whatever is still buffered must not be written (and fail again) when Python exits
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
