"""Keys for simulated meters, fleets and board images: from a file, an environment variable or a
prompt, never from the command line.

Every user of a machine can read any process's arguments (`ps`, /proc/PID/cmdline), so a key
given as an argument is a key given to everyone.  A file (mode 0600) or the environment (readable
only by the same user, /proc/PID/environ is 0400) is not.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any, Mapping

__all__ = ["ENV_MASTER_KEY", "ENV_METER_KEY", "KeyInputError", "refuse_on_argv", "secret_hex"]

ENV_METER_KEY = "PREPAID645_METER_KEY"
ENV_MASTER_KEY = "PREPAID645_MASTER_KEY"


class KeyInputError(ValueError):
    """No usable key, or a key given where it would leak; the message says how to give it."""


def refuse_on_argv(parser: argparse.ArgumentParser, flag: str, instead: str, *aliases: str) -> None:
    """Keep `flag` only to refuse it, saying why and what to use instead (hidden from --help)."""

    class Refused(argparse.Action):
        def __call__(self, p: argparse.ArgumentParser, ns: argparse.Namespace, values: Any,
                     option_string: str | None = None) -> None:
            p.error(f"{option_string} is not accepted: a key on the command line is readable by every user of "
                    f"this machine (`ps`, /proc/PID/cmdline). Give it with {instead}")

    parser.add_argument(flag, *aliases, action=Refused, help=argparse.SUPPRESS, dest=f"_refused_{flag.strip('-')}")


def secret_hex(*, file: str | None, env: str, what: str, environ: Mapping[str, str] | None = None,
               prompt: bool = True) -> str | None:
    """The hex text of a key from `file`, else $`env`, else a terminal prompt; None if none is given.

    The text is returned unchecked (the caller knows the length it needs)."""
    if file:
        p = Path(file)
        try:
            return p.read_text().strip()
        except OSError as e:
            raise KeyInputError(f"{what} file {file}: cannot read it ({e.strerror})") from None
    value = (os.environ if environ is None else environ).get(env)
    if value:
        return value.strip()
    if prompt and sys.stdin.isatty():
        return getpass.getpass(f"{what} (hex digits, not shown): ").strip()
    return None
