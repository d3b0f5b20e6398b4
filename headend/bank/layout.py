"""Bank file layouts: a TOML profile per bank describes its files, and one codec reads and writes them.

A file is a header record, detail records and a trailer record, one per line. A profile gives,
for the debit-request file (``request``) and the return file (``return``), the fields of each
record in order. In the fixed-width format each field has a width in *bytes of the file's
encoding* (a GBK name of four characters takes eight), a padding character and an alignment;
in the CSV format fields are separated by the profile's delimiter and widths are only limits.
The first field of every record is its kind, a constant (``value``) that tells the three apart.

Sans-I/O: bytes in, records out (and back); nothing here knows the store.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from headend.flatfile import (FileError, ProfileError, ascii_compatible, csv_rows, decode, profile_doc, split_lines,
                              whole)

__all__ = ["Field", "Profile", "Parsed", "ProfileError", "load_profile", "known_profiles", "write_file",
           "read_file", "PROFILE_DIR", "RESULTS"]

PROFILE_DIR = Path(__file__).with_name("profiles")
# What a return row can say happened; a profile maps the bank's own codes onto these.
RESULTS = ("debited", "partial", "insufficient", "closed")
_TYPES = ("text", "int", "fen", "date")
_PARTS = ("request", "return")
_RECORDS = ("header", "detail", "trailer")
_DIGITS = re.compile(r"^[0-9]+$")
_DATE = re.compile(r"^[0-9]{8}$")

@dataclass(frozen=True)
class Field:
    """One field of a record: its name, width (bytes), type, padding and alignment, and a constant value."""

    name: str
    width: int
    type: str = "text"
    pad: str = " "
    align: str = "left"
    value: str | None = None


@dataclass(frozen=True)
class Profile:
    """How one bank's files look (see the module docstring)."""

    bank: str
    name: str
    format: str
    encoding: str
    delimiter: str
    newline: bytes
    records: Mapping[str, Mapping[str, tuple[Field, ...]]]
    results: Mapping[str, str] = field(default_factory=dict)
    source: str = ""

    def code_of(self, result: str) -> str:
        """The bank's code for one of RESULTS (the first listed)."""
        for code, res in self.results.items():
            if res == result:
                return code
        raise ProfileError(f"profile {self.source}: no result code for {result!r}")


def _field(spec: Any, where: str) -> Field:
    if not isinstance(spec, dict) or "name" not in spec or "width" not in spec:
        raise ProfileError(f"{where}: each field is a table with at least name and width, got {spec!r}")
    unknown = set(spec) - {"name", "width", "type", "pad", "align", "value"}
    if unknown:
        raise ProfileError(f"{where}: unknown field setting(s) {', '.join(sorted(unknown))}")
    f = Field(**spec)
    if not isinstance(f.width, int) or f.width <= 0:
        raise ProfileError(f"{where}: field {f.name} width must be a whole number of bytes > 0")
    if f.type not in _TYPES:
        raise ProfileError(f"{where}: field {f.name} type {f.type!r} is not one of {', '.join(_TYPES)}")
    if f.align not in ("left", "right") or len(f.pad) != 1:
        raise ProfileError(f"{where}: field {f.name}: align is left or right, pad one character")
    return f


def parse_profile(text: str, source: str = "<profile>") -> Profile:
    """A profile from TOML text; ProfileError names what is missing or wrong."""
    doc = profile_doc(text, source, need=("bank", "format", "encoding"))
    records: dict[str, dict[str, tuple[Field, ...]]] = {}
    for part in _PARTS:
        records[part] = {}
        for rec in _RECORDS:
            specs = doc.get(part, {}).get(rec)
            if not specs:
                raise ProfileError(f"{source}: missing [{part}] {rec} fields")
            fields = tuple(_field(s, f"{source} [{part}] {rec}") for s in specs)
            if fields[0].value is None:
                raise ProfileError(f"{source}: [{part}] {rec}: the first field is the record kind and needs a value")
            records[part][rec] = fields
        kinds = {records[part][r][0].value for r in _RECORDS}
        if len(kinds) != 3:
            raise ProfileError(f"{source}: [{part}] header, detail and trailer need three different kinds")
    results = {str(k): v for k, v in doc.get("results", {}).items()}
    bad = sorted(set(results.values()) - set(RESULTS))
    if bad or set(results.values()) != set(RESULTS):
        raise ProfileError(f"{source}: [results] maps the bank's codes onto each of {', '.join(RESULTS)}"
                           f"{'; unknown ' + ', '.join(bad) if bad else ''}")
    newline = doc.get("newline", "\r\n")
    return Profile(bank=str(doc["bank"]).upper(), name=str(doc.get("name", doc["bank"])), format=doc["format"],
                   encoding=doc["encoding"], delimiter=str(doc.get("delimiter", ",")),
                   newline=newline.encode("ascii"), records=records, results=results, source=source)


def known_profiles(extra_dirs: Iterable[Path] = ()) -> dict[str, Profile]:
    """Every profile shipped (headend/bank/profiles) and in ``extra_dirs``, by bank code (later wins)."""
    out = {}
    for d in (PROFILE_DIR, *extra_dirs):
        for path in sorted(Path(d).glob("*.toml")):
            p = parse_profile(path.read_text("utf-8"), str(path))
            out[p.bank] = p
    return out


def load_profile(bank: str, extra_dirs: Iterable[Path] = ()) -> Profile:
    """The profile of one bank; ProfileError lists the known ones if there is none."""
    profiles = known_profiles(extra_dirs)
    try:
        return profiles[bank.upper()]
    except KeyError:
        raise ProfileError(f"no profile for bank {bank!r}; known: {', '.join(sorted(profiles)) or 'none'}"
                           f" (add a TOML profile, see {PROFILE_DIR})") from None


# ----------------------------------------------------------------------------- writing
def _cell(f: Field, value: Any, enc: str, fixed: bool) -> bytes:
    text = f.value if f.value is not None else ("" if value is None else str(value))
    if f.type in ("int", "fen") and not _DIGITS.match(text):
        raise ValueError(f"field {f.name}: {text!r} is not a whole number")
    raw = text.encode(enc)
    if len(raw) > f.width:
        raise ValueError(f"field {f.name}: {text!r} takes {len(raw)} bytes in {enc}, more than its {f.width}")
    if not fixed:
        return raw
    padding = f.pad.encode(enc) * (f.width - len(raw))
    return padding + raw if f.align == "right" else raw + padding


def _record(p: Profile, fields: Sequence[Field], values: Mapping[str, Any]) -> bytes:
    cells = [_cell(f, values.get(f.name), p.encoding, p.format == "fixed") for f in fields]
    if p.format == "fixed":
        return b"".join(cells)
    buf = io.StringIO()
    csv.writer(buf, delimiter=p.delimiter, lineterminator="").writerow([c.decode(p.encoding) for c in cells])
    return buf.getvalue().encode(p.encoding)


def write_file(p: Profile, part: str, header: Mapping[str, Any], details: Iterable[Mapping[str, Any]],
               trailer: Mapping[str, Any]) -> bytes:
    """A whole file (``part`` is request or return); ValueError names a value that does not fit."""
    recs = p.records[part]
    lines = [_record(p, recs["header"], header)]
    lines.extend(_record(p, recs["detail"], d) for d in details)
    lines.append(_record(p, recs["trailer"], trailer))
    return p.newline.join(lines) + p.newline


# ----------------------------------------------------------------------------- reading
@dataclass
class Parsed:
    """A file as read: its header, (line number, detail) pairs and trailer, and every problem found
    (each message starts with its line number). Values are typed: int for int/fen, str otherwise."""

    header: dict[str, Any] | None = None
    details: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    trailer: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)


def _value(f: Field, text: str, lineno: int, errors: list[str]) -> Any:
    if f.value is not None:
        return text
    if f.type in ("int", "fen"):
        try:
            return whole(text, f.name, lineno, fen=f.type == "fen")
        except FileError as exc:
            errors.append(str(exc))
            return None
    if f.type == "date" and not _DATE.match(text):
        errors.append(f"line {lineno}: {f.name} {text!r} is not a date YYYYMMDD")
        return None
    return text


def _cells(p: Profile, fields: Sequence[Field], line: bytes, lineno: int, errors: list[str]) -> list[str] | None:
    if p.format == "fixed":
        width = sum(f.width for f in fields)
        if len(line) != width:
            errors.append(f"line {lineno}: record is {len(line)} bytes, its layout ({fields[0].value}) is {width}")
            return None
        out, at = [], 0
        # widths are bytes of the file's encoding: an ASCII line is decoded once and cut as text
        whole_line = line.decode("ascii") if line.isascii() and ascii_compatible(p.encoding) else None
        try:
            for f in fields:
                text = whole_line[at:at + f.width] if whole_line is not None else \
                    decode(line[at:at + f.width], p.encoding, lineno, f.name)
                at += f.width
                text = text.lstrip(f.pad) if f.align == "right" else text.rstrip(f.pad)
                out.append(text or ("0" if f.pad == "0" else ""))
        except FileError as exc:
            errors.append(str(exc))
            return None
        return out
    try:
        text = decode(line, p.encoding, lineno)
    except FileError as exc:
        errors.append(str(exc))
        return None
    row = next(csv_rows([text], p.delimiter), [])
    if len(row) != len(fields):
        errors.append(f"line {lineno}: {len(row)} fields, its layout ({fields[0].value}) has {len(fields)}")
        return None
    return [c.strip() for c in row]


def _kind_of(p: Profile, line: bytes) -> bytes:
    if p.format == "fixed":
        return line[:1]
    return line.split(p.delimiter.encode(p.encoding), 1)[0].strip()


def read_file(p: Profile, part: str, data: bytes) -> Parsed:
    """Read a whole file; every structural and field problem is in ``Parsed.errors`` with its line."""
    recs = p.records[part]
    by_kind = {str(recs[r][0].value).encode(p.encoding): r for r in _RECORDS}  # parse_profile made each kind a value
    out = Parsed()
    saw_trailer = False
    lines, ended = split_lines(data)
    if not ended:
        out.errors.append(f"line {len(lines)}: the last line has no line end (file truncated?)")
    for i, line in enumerate(lines, 1):
        rec = by_kind.get(_kind_of(p, line))
        if rec is None:
            out.errors.append(f"line {i}: unknown record kind {line[:8]!r}")
            continue
        if rec == "header" and i != 1:
            out.errors.append(f"line {i}: a second header")
            continue
        if i == 1 and rec != "header":
            out.errors.append("line 1: the file does not start with its header")
        if saw_trailer:
            out.errors.append(f"line {i}: record after the trailer")
            continue
        saw_trailer = rec == "trailer"
        cells = _cells(p, recs[rec], line, i, out.errors)
        if cells is None:
            continue
        values = {f.name: _value(f, c, i, out.errors) for f, c in zip(recs[rec], cells)}
        if rec == "header":
            out.header = values
        elif rec == "detail":
            out.details.append((i, values))
        else:
            out.trailer = values
    if not saw_trailer:
        out.errors.append(f"line {len(lines) + 1}: the file ends without its trailer (truncated?)")
    return out
