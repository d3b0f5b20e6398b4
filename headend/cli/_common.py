"""What every `headend` command module shares: options, opening the store, choosing meters, output.

A command module uses it like this:

    from headend.cli import _common as c
    from headend.cli.operators import acting_operator

    def register(sub):
        p = sub.add_parser("trip", help="cut supply")
        c.add_store_args(p)                  # --db, --config, --actor
        c.add_selection_args(p)              # METER | --all | --where FIELD=VALUE (repeatable)
        c.add_json_arg(p)                    # --json
        p.set_defaults(func=run_trip)

    @c.cli_command                           # store/key/config errors -> message + exit code
    def run_trip(args):
        store = c.open_store_from_args(args)
        meters = c.select_meters(store, args)             # [] never: no match -> exit 4
        actor = acting_operator(store, args, "meters")    # the operator's login, before any change
        for m in c.progress(meters, "trip", enabled=not args.json and len(meters) > 1):
            store.enqueue(m.address, "trip", {}, actor=actor)
        return c.EXIT_OK

A command that changes anything records ``acting_operator`` (headend/cli/operators.py) as its
actor; ``actor_of`` (--actor / $USER, unchecked) is what that falls back to before any operator
exists, and what serve records for its own start and stop.

Exit codes (headend/cli/main.py): 0 done, 1 refused/failed/rejected/cancelled, 2 bad usage or
input, 3 timed out with the command still queued, 4 not found, 5 a recharge unresolved.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import os
import re
import sys
import unicodedata
from pathlib import Path
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence, TypeVar

from headend.cli.main import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_QUEUED, EXIT_UNRESOLVED, EXIT_USAGE
from headend.config import ConfigError, HeadendConfig, load_config
from headend.keys import KeyStore, KeyStoreError
from headend.payments.errors import PaymentError
from headend.store import (
    METER_FILTER_FIELDS,
    Conflict,
    InvalidInput,
    Meter,
    NotFound,
    Store,
    StoreError,
    check_address,
    open_store,
    yuan,
)

if TYPE_CHECKING:
    from headend.costctl.decide import Rules

__all__ = [
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "EXIT_QUEUED",
    "EXIT_UNRESOLVED",
    "EXIT_NOT_FOUND",
    "CliError",
    "cli_command",
    "trip_rules_from_args",
    "add_store_args",
    "add_json_arg",
    "add_selection_args",
    "config_from_args",
    "open_store_from_args",
    "unlock_keys_from_args",
    "actor_of",
    "parse_where",
    "select_meters",
    "parse_yuan",
    "number",
    "fmt_fen",
    "fmt_time",
    "print_json",
    "print_table",
    "print_list",
    "progress",
    "ProgressBar",
    "err",
]

T = TypeVar("T")


class CliError(Exception):
    """Stop the command with this message (on stderr) and exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def err(message: str) -> None:
    """Print a message for the operator on stderr."""
    print(f"headend: {message}", file=sys.stderr)


def cli_command(func: Callable[[argparse.Namespace], int | None]) -> Callable[[argparse.Namespace], int]:
    """Decorate a command's func(args): expected errors become a clear message and an exit code."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return int(func(args) or 0)
        except CliError as exc:
            err(str(exc))
            return exc.code
        except PaymentError as exc:
            err(f"{exc} ({exc.code})")
            return EXIT_NOT_FOUND if exc.http_status == 404 else EXIT_USAGE
        except NotFound as exc:
            err(str(exc))
            return EXIT_NOT_FOUND
        except (InvalidInput, ConfigError) as exc:
            err(str(exc))
            return EXIT_USAGE
        except Conflict as exc:
            err(str(exc))
            return EXIT_USAGE
        except KeyStoreError as exc:
            err(str(exc))
            return EXIT_USAGE
        except StoreError as exc:
            err(str(exc))
            return EXIT_FAILED

    return wrapper


# ----------------------------------------------------------------------------- options
def add_store_args(parser: argparse.ArgumentParser) -> None:
    """Add --db, --config and --actor (who is doing this, for the audit log)."""
    g = parser.add_argument_group("store")
    g.add_argument("--db", metavar="PATH", help="database file or postgresql://USER@HOST/DBNAME (default: $PREPAID645_DB, "
                   "config, ./prepaid645.db)")
    g.add_argument("--config", metavar="TOML", help="config file (default: $PREPAID645_CONFIG or ./prepaid645.toml)")
    g.add_argument("--actor", metavar="NAME",
                   help="who is acting: once operators exist, the operator logging in (password from "
                        "$PREPAID645_OPERATOR_PASSWORD or a prompt) for any command that changes something; "
                        "before that, a name for the audit log (default: $USER)")


def add_json_arg(parser: argparse.ArgumentParser, *, csv: bool = False) -> None:
    """Add --json (and, for lists, --csv): machine-readable output on stdout instead of tables."""
    if not csv:
        parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
        return
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    g.add_argument("--csv", action="store_true", help="print the table's rows as CSV (a header line first), e.g. "
                                                      "for a spreadsheet")


def print_list(args: argparse.Namespace, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
               records: Sequence[Any], *, squeeze: str | None = None) -> None:
    """A list command's answer: JSON of ``records`` with --json, CSV of the rows with --csv,
    else the table."""
    if getattr(args, "json", False):
        print_json([r.to_dict() if hasattr(r, "to_dict") else r for r in records])
    elif getattr(args, "csv", False):
        import csv as _csv

        out = _csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(columns)
        out.writerows(["" if v is None else v for v in row] for row in rows)
    else:
        print_table(title, columns, rows, squeeze=squeeze)


def add_selection_args(parser: argparse.ArgumentParser, *, bulk: bool = True) -> None:
    """Add the meter selection: a METER address, or (bulk) --all / --where FIELD=VALUE (repeatable, ANDed)."""
    parser.add_argument("meter", nargs=None if not bulk else "?", metavar="METER", help="12-digit meter address")
    if bulk:
        parser.add_argument("--all", action="store_true", help="every registered meter")
        parser.add_argument(
            "--where",
            action="append",
            default=[],
            metavar="FIELD=VALUE",
            help=f"meters whose FIELD matches (=, != ; * is a wildcard); fields: {', '.join(METER_FILTER_FIELDS)}",
        )


def config_from_args(args: argparse.Namespace) -> HeadendConfig:
    """The configuration, with --db / --config / --key-file from args applied."""
    return load_config(
        getattr(args, "config", None), db=getattr(args, "db", None), key_file=getattr(args, "key_file", None)
    )


def trip_rules_from_args(args: argparse.Namespace) -> Rules:
    """The cycle's trip rules from the config's [costctl] section, for the one-account decisions
    taken outside the cycle (a reversal that undoes a restore); CliError names a bad setting."""
    from headend.costctl.config import costctl_config   # loads numpy: only for the commands that decide

    cfg = config_from_args(args)
    try:
        return costctl_config(cfg.section("costctl"), cfg.source.parent if cfg.source else None).rules
    except ValueError as exc:
        raise CliError(str(exc)) from None


def open_store_from_args(args: argparse.Namespace, *, must_exist: bool = False) -> Store:
    """Open (and migrate) the store named by --db / $PREPAID645_DB / config.

    With must_exist, a missing database file is an error instead of a new empty database,
    which is what read-only commands want (a typo in --db should not create a file).
    """
    cfg = config_from_args(args)
    db = cfg.store.db
    if must_exist and isinstance(db, Path) and str(db) != ":memory:" and not db.exists():
        raise CliError(f"no database at {db}: give --db PATH or set PREPAID645_DB")
    return open_store(db, check=True)  # a damaged file is refused before anything is written


def unlock_keys_from_args(args: argparse.Namespace) -> KeyStore:
    """Unlock the key file from config with $PREPAID645_KEY_PASSPHRASE or a prompt."""
    return KeyStore.unlock(config_from_args(args).keys.file)


def actor_of(args: argparse.Namespace) -> str:
    """Who is acting: --actor, else $USER / $LOGNAME, else the login name."""
    actor = getattr(args, "actor", None) or os.environ.get("USER") or os.environ.get("LOGNAME")
    if not actor:
        try:
            actor = getpass.getuser()
        except Exception:  # no passwd entry (containers): still record something true
            actor = f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return actor


def number(kind: type[int] | type[float], lo: float | None = None, hi: float | None = None) -> Callable[[str], Any]:
    """An argparse ``type``: a whole number (int) or a number (float) within lo..hi; a value
    outside is refused at entry (exit 2) naming the option and the range."""
    what = "a whole number" if kind is int else "a number"
    span = f"{'' if lo is None else f'{lo:g}'}..{'' if hi is None else f'{hi:g}'}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} ({span})") from None
        if value != value or (lo is not None and value < lo) or (hi is not None and value > hi):  # NaN too
            raise argparse.ArgumentTypeError(f"{text} is outside {span}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


# ----------------------------------------------------------------------------- meter selection
_TRUE = {"1", "yes", "true", "on", "y"}
_FALSE = {"0", "no", "false", "off", "n"}


def parse_where(exprs: Sequence[str]) -> list[tuple[str, str, Any]]:
    """Parse --where FIELD=VALUE / FIELD!=VALUE expressions into store filters (* becomes a wildcard)."""
    out: list[tuple[str, str, Any]] = []
    for expr in exprs:
        if "!=" in expr:
            field, value = expr.split("!=", 1)
            op = "!="
        elif "=" in expr:
            field, value = expr.split("=", 1)
            op = "="
        else:
            raise CliError(f"bad --where {expr!r}: write FIELD=VALUE or FIELD!=VALUE, e.g. --where mode=remote")
        field = field.strip()
        value = value.strip()
        kind = METER_FILTER_FIELDS.get(field)
        if kind is None:
            raise CliError(f"bad --where {expr!r}: unknown field {field!r}; use one of {', '.join(METER_FILTER_FIELDS)}")
        typed: Any
        if kind is bool:
            if value.lower() not in _TRUE | _FALSE:
                raise CliError(f"bad --where {expr!r}: {field} is yes or no")
            typed = value.lower() in _TRUE
        elif kind is int:
            try:
                typed = int(value)
            except ValueError:
                raise CliError(f"bad --where {expr!r}: {field} is a whole number") from None
        else:
            typed = value
            if "*" in value:
                if op == "!=":
                    raise CliError(f"bad --where {expr!r}: wildcards work with = only")
                if "%" in value or "_" in value:
                    # SQL LIKE would read them as wildcards too; refusing is clearer than escaping
                    raise CliError(f"bad --where {expr!r}: with * the value cannot also contain % or _")
                op = "like"
                typed = value.replace("*", "%")
        out.append((field, op, typed))
    return out


def select_meters(store: Store, args: argparse.Namespace) -> list[Meter]:
    """The meters a command acts on: METER, --all, or --where filters; never empty (exit 4 instead)."""
    meter = getattr(args, "meter", None)
    every = getattr(args, "all", False)
    where = getattr(args, "where", []) or []
    chosen = sum(bool(x) for x in (meter, every, where))
    if chosen == 0:
        raise CliError("say which meters: a METER address, --all, or --where FIELD=VALUE")
    if meter and (every or where):
        raise CliError("give either one METER or --all/--where, not both")
    if meter:
        try:
            address = check_address(meter)
        except InvalidInput as exc:
            raise CliError(str(exc)) from None
        return [store.get_meter(address)]
    if every and where:
        raise CliError("--all and --where contradict each other: drop --all to select with --where")
    meters = store.find_meters(parse_where(where))
    if not meters:
        raise CliError(
            "no registered meter" + (f" matches {' and '.join(where)}" if where else "") + " (see `headend meter list`)",
            EXIT_NOT_FOUND,
        )
    return meters


# ----------------------------------------------------------------------------- money and time
# plain decimal yuan in ASCII digits: Decimal alone would also take "1e3", "1_000" and the digits
# of any script, each of which turns a slip of the keyboard into an amount nobody meant
_YUAN_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
# far above any one payment or correction, far below what a 64-bit fen column holds
MAX_AMOUNT_FEN = 10**12


def parse_yuan(text: str, *, allow_negative: bool = False) -> int:
    """An amount written in yuan ("20", "20.5", "20.50") as whole fen, exactly (no float).

    Full-width digits and point (what a Chinese input method types, "２０．５") read as the same
    yuan; an exponent, digit separators, other scripts' digits or more than MAX_AMOUNT_FEN are refused.
    """
    plain = unicodedata.normalize("NFKC", str(text)).strip()
    if not _YUAN_TEXT.fullmatch(plain):
        raise CliError(f"bad amount {text!r}: write yuan in digits 0-9, like 20 or 20.50"
                       " (no exponent, separators or spaces)")
    fen = Decimal(plain) * 100
    if fen != fen.to_integral_value():
        raise CliError(f"bad amount {text!r}: yuan have at most 2 decimals (fen)")
    if fen < 0 and not allow_negative:
        raise CliError(f"bad amount {text!r}: must not be negative")
    if abs(fen) > MAX_AMOUNT_FEN:
        raise CliError(f"bad amount {text!r}: more than {yuan(MAX_AMOUNT_FEN, grouped=True)} yuan;"
                       " check the digits")
    return int(fen)


def fmt_fen(fen: int | None) -> str:
    """Fen as yuan with 2 decimals ("-1.05"); "" for None."""
    return "" if fen is None else yuan(fen)


def fmt_time(ts: int | None) -> str:
    """Unix seconds as local 'YYYY-MM-DD HH:MM:SS'; "" for None/0."""
    if not ts:
        return ""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


# ----------------------------------------------------------------------------- output
def print_json(obj: Any) -> None:
    """Write obj as JSON on stdout (one document)."""
    json.dump(obj, sys.stdout, indent=1, sort_keys=True, default=str)
    sys.stdout.write("\n")


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
                squeeze: str | None = None) -> None:
    """Write a table for people on stdout.

    On a terminal it fits the terminal's width; piped into a file it keeps whole lines
    up to 240 characters.  ``squeeze`` names the one column that is cut short (…) to keep each
    row on one line; without it, long cells wrap.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    cells = [["" if v is None else str(v) for v in row] for row in rows]
    # cells are data, some of it a caller's (an API refusal's key id, a name): never markup or
    # emoji codes, which "[/x]" would stop the command with and "[red]" hide the rest of a cell by
    console = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 240, markup=False, emoji=False)
    # no box lines when squeezing: every column is its text and one space either side
    table = Table(title=title, show_lines=False, header_style="bold", box=None if squeeze else box.HEAVY_HEAD)
    widths = [max([len(col)] + [len(r[k]) for r in cells]) for k, col in enumerate(columns)]
    for k, col in enumerate(columns):
        if squeeze is None:
            table.add_column(col, overflow="fold")
        elif col == squeeze:
            # whatever the other columns leave (each has a space either side), at least 8
            left = console.width - sum(w + 2 for j, w in enumerate(widths) if j != k) - 2
            table.add_column(col, overflow="ellipsis", no_wrap=True, width=max(8, min(widths[k], left)))
        else:  # kept whole: only the squeezed column gives way
            table.add_column(col, no_wrap=True, width=widths[k])
    for row in cells:
        table.add_row(*row)
    console.print(table)


class ProgressBar:
    """The one progress bar of the CLI: on stderr, only when it is a terminal and there are many
    items; ``advance(n)`` as items finish, ``close()`` at the end (or use it as a context manager)."""

    def __init__(self, label: str, total: int, *, enabled: bool = True) -> None:
        self._bar: Any = None
        if enabled and total > 1 and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=Console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(label, total=total)

    def advance(self, n: int = 1) -> None:
        """Count n more items as done."""
        if self._bar is not None and n:
            self._bar.advance(self._task, n)

    def close(self) -> None:
        """Take the bar off the terminal."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(items: Sequence[T], label: str, *, enabled: bool = True) -> Iterator[T]:
    """Yield items, showing a ProgressBar on stderr when it is a terminal and enabled."""
    with ProgressBar(label, len(items), enabled=enabled) as bar:
        for item in items:
            yield item
            bar.advance()
