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


class _Version(argparse._VersionAction):  # a version action to argparse and shtab
    """--version: the installed version, looked up only when asked (importlib.metadata is slow)."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        print(f"{parser.prog} {version()}")
        parser.exit()


class _Completion(argparse.Action):
    """--print-completion SHELL: shtab's script for the whole parser (shtab imported only then)."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        import shtab

        print(shtab.complete(parser, shell=str(values)))
        parser.exit()


# shtab.SUPPORTED_SHELLS, written out so that parsing imports no shtab (a test holds them equal)
COMPLETION_SHELLS = ("bash", "zsh", "tcsh", "fish", "powershell")


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """--version and --print-completion SHELL, shared by the `headend` and `meter` commands."""
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    parser.add_argument("--print-completion", action=_Completion, choices=COMPLETION_SHELLS, help="print a shell completion script (bash, zsh or tcsh) and exit, e.g. "
                             f"`{parser.prog} --print-completion bash > /etc/bash_completion.d/{parser.prog}`")


def command_modules() -> list[str]:
    """The modules of this package that may add commands (found without importing them)."""
    # a directory listing, not pkgutil: pkgutil's own imports cost a third of --help's time
    names = (n[:-3] for n in os.listdir(cli_pkg.__path__[0]) if n.endswith(".py"))
    return sorted(n for n in names if n != "main" and not n.startswith("_"))


def _register(sub: argparse._SubParsersAction, mod: str) -> None:
    module = importlib.import_module(f"headend.cli.{mod}")
    if hasattr(module, "register"):
        module.register(sub)


def _wanted(argv: list[str]) -> str | None:
    """The command named in argv (its first word that is not an option), or None."""
    it = iter(argv)
    for word in it:
        if word == "--print-completion":
            next(it, None)
        elif not word.startswith("-"):
            return word
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The `headend` argument parser, gathered from every command module.

    With argv, only the module of the command argv names is imported; the other commands are
    listed from headend/cli/_index.py with their one-line help. The modules pull in numba, the
    store and the link (seconds), which `headend --help` or `headend meter list` do not need.
    Without argv (or for --print-completion) every module is imported: the full parser.
    """
    from headend.cli._index import COMMANDS

    parser = argparse.ArgumentParser(prog="headend", description="prepaid645 head-end")
    add_common_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    full = argv is None or "--print-completion" in argv
    named = None if full else _wanted(argv or [])
    wanted = COMMANDS[named][0] if named in COMMANDS else None
    listed = {mod for mod, _ in COMMANDS.values()}
    for mod in command_modules():
        if full or mod == wanted or mod not in listed:  # a module the index does not know yet: imported
            _register(sub, mod)
            continue
        for name, (owner, text) in COMMANDS.items():
            if owner == mod:
                if text is None:
                    sub.add_parser(name)
                else:
                    sub.add_parser(name, help=text)
    return parser


def scan_commands() -> dict[str, tuple[str, str | None]]:
    """Every command with its module and one-line help, by importing every command module."""
    found: dict[str, tuple[str, str | None]] = {}
    for mod in command_modules():
        sub = argparse.ArgumentParser().add_subparsers()
        _register(sub, mod)
        helps = {a.dest: a.help for a in sub._choices_actions}
        for name in sub.choices:
            found[name] = (mod, helps.get(name))
    return found


def write_index() -> None:
    """Rewrite headend/cli/_index.py from the command modules (after adding or renaming a command)."""
    lines = "".join(f"    {name!r}: {entry!r},\n" for name, entry in scan_commands().items())
    path = os.path.join(os.path.dirname(__file__), "_index.py")
    with open(path, "w") as f:
        f.write('"""Every `headend` command: its module and one-line help, so that `headend --help` lists them\n'
                "without importing them. Written by `python -m headend.cli._index`; a test checks it is current.\n"
                '"""\n\n'
                f"COMMANDS: dict[str, tuple[str, str | None]] = {{\n{lines}}}\n\n"
                'if __name__ == "__main__":\n    from headend.cli.main import write_index\n\n    write_index()\n')


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `headend` console script."""
    try:
        argv = sys.argv[1:] if argv is None else argv
        parser = build_parser(argv)
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
