"""Reading the flat files banks and payment channels send: one reader's rules for all of them.

Bank return files (headend/bank/layout.py) and channel statements (headend/reconcile/statement.py)
are both CSV or fixed-width records, one per line, in an encoding a TOML profile names (GBK for
most Chinese banks), with a trailer that carries the count and total of the rows. What they have
in common is read here, once: the profile's TOML, its format and encoding; lines (LF or CRLF) with
whether the last one was cut off; text in the file's encoding; CSV cells; whole numbers of fen (a
decimal amount is refused, never rounded); the trailer's count and total against the rows. Every
problem is said as ``line N: ...`` with the file's own line number, so an operator can open the
file at the line. The record layouts stay each with its own file kind: a bank's fixed widths are
bytes of the file's encoding, a statement's columns are characters.

Sans-I/O: bytes in, values or messages out.
"""

from __future__ import annotations

import csv
import functools
import gc
import re
import tomllib
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, overload

__all__ = ["FORMATS", "FileError", "ProfileError", "ascii_compatible", "check_trailer", "csv_rows", "decode", "no_cycle_collection",
           "profile_doc", "split_lines", "whole"]

FORMATS = ("fixed", "csv")
_DECIMAL = re.compile(r"^-?[0-9]*[.,][0-9]+$")


class FileError(ValueError):
    """A file, or the profile that describes it, that cannot be read as it is; names the file line
    (``line N: ...``) or the profile and setting, and what is wrong."""


class ProfileError(FileError):
    """A profile that cannot be used (names the profile file and the setting)."""


def profile_doc(text: str, source: str, need: Iterable[str] = ()) -> dict[str, Any]:
    """A profile's TOML with the settings in ``need`` present, its ``format`` (fixed or csv, default
    csv) and ``encoding`` (any Python codec, default utf-8) checked; ProfileError names ``source``
    and the setting."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{source}: not TOML: {exc}") from None
    for key in need:
        if key not in doc:
            raise ProfileError(f"{source}: missing {key!r}")
    fmt = doc.setdefault("format", "csv")
    if fmt not in FORMATS:
        raise ProfileError(f"{source}: format must be fixed or csv, got {fmt!r}")
    enc = doc.setdefault("encoding", "utf-8")
    try:
        "".encode(enc)
    except (LookupError, TypeError):
        raise ProfileError(f"{source}: unknown encoding {enc!r}") from None
    return doc


@overload
def split_lines(data: str) -> tuple[list[str], bool]: ...


@overload
def split_lines(data: bytes) -> tuple[list[bytes], bool]: ...


def split_lines(data: Any) -> tuple[list[Any], bool]:
    """The lines of a file (bytes or text) without their LF or CRLF ends, and whether the last line
    had its end (a file cut off in the middle of a line has not)."""
    if isinstance(data, str):
        lines: list[Any] = data.replace("\r\n", "\n").split("\n")
    else:
        lines = data.replace(b"\r\n", b"\n").split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
        return lines, True
    return lines, not lines


@functools.lru_cache(maxsize=None)
def ascii_compatible(encoding: str) -> bool:
    """Whether ASCII bytes are the same characters in this encoding (GBK, UTF-8: yes; UTF-16: no)."""
    ascii_bytes = bytes(range(128))
    try:
        return ascii_bytes.decode(encoding) == ascii_bytes.decode("ascii")
    except UnicodeDecodeError:
        return False


def decode(raw: bytes, encoding: str, line_no: int | None = None, what: str = "") -> str:
    """``raw`` as text; FileError names the line (counted from the start of ``raw`` when not given)
    and ``what`` (a field) is not valid text in the encoding."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        if line_no is None:
            line_no = raw.count(b"\n", 0, exc.start) + 1
        raise FileError(f"line {line_no}: {what + ' ' if what else ''}is not valid {encoding} text "
                        "(wrong encoding?)") from None


def csv_rows(lines: Iterable[str], delimiter: str) -> Iterator[list[str]]:
    """The cells of each CSV line (one reader over them all: a reader per line costs more than the parsing)."""
    return csv.reader(lines, delimiter=delimiter)


def whole(text: str, what: str, line_no: int, *, fen: bool = False, signed: bool = False) -> int:
    """A whole number (of fen, with ``fen``) as the file writes it; FileError names the line and the
    field, and says so when it has decimals (amounts are integer fen, never rounded)."""
    if text.isdigit() and text.isascii():  # the common case, already clean
        return int(text)
    t = text.strip()
    body = t[1:] if signed and t[:1] == "-" else t
    if body.isdigit() and body.isascii():
        return int(t)
    if fen and _DECIMAL.match(t):
        raise FileError(f"line {line_no}: {what} {t!r} has decimals; the file must give whole fen")
    raise FileError(f"line {line_no}: {what} {t!r} is not a whole number{' of fen' if fen else ''}")


def check_trailer(line_no: int, *, said_count: int | None, count: int, said_total: int | None, total: int,
                  total_is: str = "") -> list[str]:
    """What a trailer gets wrong: its count of rows and its total in fen (``total_is`` says of what,
    e.g. " debited") against the rows'; None where the layout has no such field."""
    out = []
    if said_count is not None and said_count != count:
        out.append(f"line {line_no}: trailer says {said_count} rows, the file has {count}")
    if said_total is not None and said_total != total:
        out.append(f"line {line_no}: trailer total {said_total} fen{total_is}, the rows add up to {total}")
    return out


@contextmanager
def no_cycle_collection() -> Iterator[None]:
    """While a big file is read and applied: hundreds of thousands of strings, tuples and rows that
    hold no reference cycles are made at once, and the cycle collector would walk them again and
    again as they are made, for nothing (a tenth to a third of the time)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
