"""Channel statements (对账单): a per-channel profile says how the file is laid out; parsing
checks every line and names the file's line number for anything wrong (the reading rules bank
files share are in headend/flatfile.py: encoding, lines, CSV, whole fen, the trailer's totals).

A profile is TOML (``profiles/*.toml`` ship as examples; ``--profile FILE`` takes any):

    format = "csv"               # or "fixed"
    encoding = "utf-8"           # any Python codec: "gbk" for most Chinese banks
    header_lines = 1             # lines before the first detail line
    delimiter = ","              # csv only
    trailer = "TOTAL"            # a last line starting with this carries count and gross (optional)
    [columns]                    # csv: 0-based column index; fixed: [start, width] (0-based, in characters)
    txn_id = 0
    amount = 1                   # gross, integer fen
    fee = 2                      # optional
    net = 3                      # optional: must equal amount - fee when both are there
    state = 4                    # optional: "paid"/"reversed" (or the profile's [states] map)
    [trailer_columns]            # like [columns], on the trailer line: count and amount
    [states]                     # the channel's words for paid and reversed
    S = "paid"
    R = "reversed"
"""

from __future__ import annotations

import csv
import io
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

from headend.flatfile import FileError, check_trailer, csv_rows, decode, profile_doc, split_lines, whole

PROFILES = Path(__file__).with_name("profiles")
STATES = ("paid", "reversed")
# a statement or profile that cannot be read as it is (names the file line where there is one)
StatementError = FileError


class Line(NamedTuple):   # a tuple: a million are made per statement
    line_no: int
    txn_id: str
    amount_fen: int
    fee_fen: int
    net_fen: int
    state: str          # paid | reversed


@dataclass(frozen=True)
class Profile:
    name: str
    format: str
    encoding: str
    header_lines: int
    delimiter: str
    trailer: str | None
    columns: dict[str, Any]
    trailer_columns: dict[str, Any]
    states: dict[str, str]


def load_profile(name_or_path: str) -> Profile:
    """A profile by file path, or by the name of a shipped one (``profiles/NAME.toml``)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILES / f"{name_or_path}.toml"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        shipped = ", ".join(sorted(p.stem for p in PROFILES.glob("*.toml")))
        raise StatementError(f"no statement profile {name_or_path!r}: give a .toml file or one of {shipped}") from None
    raw = profile_doc(text, f"statement profile {path}")
    cols = dict(raw.get("columns", {}))
    for need in ("txn_id", "amount"):
        if need not in cols:
            raise StatementError(f"statement profile {path}: [columns] needs {need}")
    states = {str(k): str(v) for k, v in raw.get("states", {"paid": "paid", "reversed": "reversed"}).items()}
    if any(v not in STATES for v in states.values()):
        raise StatementError(f"statement profile {path}: [states] values must be paid or reversed")
    return Profile(path.stem, raw["format"], raw["encoding"], int(raw.get("header_lines", 0)),
                   raw.get("delimiter", ","), raw.get("trailer"), cols, dict(raw.get("trailer_columns", {})), states)


def _fen(text: str, what: str, line_no: int) -> int:
    return whole(text, what, line_no, fen=True, signed=True)


def _fields(profile: Profile, text: str) -> list[str] | str:
    return next(csv_rows([text], profile.delimiter)) if profile.format == "csv" else text


def _get(profile: Profile, fields: Any, spec: Any, what: str, line_no: int) -> str:
    if profile.format == "csv":
        if spec < len(fields):
            return fields[spec]
        if not isinstance(spec, int) or spec >= len(fields):
            raise StatementError(f"line {line_no}: no column {spec} for {what} (the line has {len(fields)})")
        return fields[spec]
    start, width = spec
    if len(fields.rstrip("\r\n")) < start + width and what in ("txn_id", "amount"):
        raise StatementError(f"line {line_no}: too short for {what} at {start}+{width} (truncated?)")
    return fields[start:start + width]


class Statement(NamedTuple):
    """A statement's detail lines as columns, one list per field (a million lines stay a few
    lists, not a million objects); ``lines()`` gives them as ``Line`` tuples."""

    line_no: list[int]
    txn_id: list[str]
    amount_fen: list[int]
    fee_fen: list[int]
    net_fen: list[int]
    state: list[str]

    def __len__(self) -> int:       # lines, not fields
        return len(self.txn_id)

    def lines(self) -> list[Line]:
        """The detail lines in file order."""
        return list(map(Line, *self))

    @classmethod
    def of(cls, lines: Iterable[Line]) -> "Statement":
        """Columns of the given lines."""
        cols = list(zip(*lines))
        return cls(*map(list, cols)) if cols else cls([], [], [], [], [], [])


def parse(profile: Profile, data: bytes) -> list[Line]:
    """Every detail line of a statement file; StatementError names the first bad line."""
    return parse_statement(profile, data).lines()


def parse_statement(profile: Profile, data: bytes) -> Statement:
    """Every detail line of a statement file, as columns; StatementError names the first bad line.

    A regular file (every line complete, whole fen, known states, no duplicates) is read a
    column at a time; anything else is read line by line, which finds and names what is wrong:
    both give the same lines."""
    text = decode(data, profile.encoding)
    lines, _ = split_lines(text)  # a cut-off file is known by its trailer
    body = lines[profile.header_lines:]
    trailer = None
    if profile.trailer:
        while body and not body[-1].strip():
            body.pop()
        if not body or not body[-1].startswith(profile.trailer):
            raise StatementError(f"line {profile.header_lines + len(body)}: the trailer ({profile.trailer}...) is "
                                 "missing: the file is truncated")
        trailer = body.pop()
    out = _by_columns(profile, body, text) or _by_lines(profile, body)
    if trailer is not None:
        tl = profile.header_lines + len(body) + 1
        tf = _fields(profile, trailer)
        tc = profile.trailer_columns
        said_count = whole(_get(profile, tf, tc["count"], "count", tl), "trailer count", tl) if "count" in tc else None
        said_total = _fen(_get(profile, tf, tc["amount"], "amount", tl), "trailer amount", tl) if "amount" in tc else None
        wrong = check_trailer(tl, said_count=said_count, count=len(out), said_total=said_total,
                              total=sum(out.amount_fen))
        if wrong:
            raise StatementError(wrong[0])
    return out


def _whole_fen(column: Sequence[str]) -> list[int] | None:
    """A column of plain unsigned whole numbers as ints, or None if any entry is anything else."""
    if not all(column):
        return None
    joined = "".join(column)
    if not (joined.isascii() and joined.isdigit()):
        column = list(map(str.strip, column))
        joined = "".join(column)
        if not (all(column) and joined.isascii() and joined.isdigit()):
            return None
    return list(map(int, column))


def _by_columns(profile: Profile, body: list[str], text: str) -> Statement | None:
    """The detail lines read a column at a time, or None when the file is not regular enough for
    that (a blank, short or bad line, a duplicate): then ``_by_lines`` reads it and names the fault."""
    c = profile.columns
    if not body:
        return None
    cols: dict[str, Sequence[str]] = {}
    if profile.format == "csv":
        d = profile.delimiter
        if '"' in text:
            return None     # quoted fields: the csv module's work
        width = body[0].count(d) + 1
        if set(map(operator.methodcaller("count", d), body)) != {width - 1} or \
                any(not isinstance(v, int) or v >= width for v in c.values()):
            return None
        # every line has the same fields and none is quoted: one split of the whole body
        flat = d.join(body).split(d)
        cols = {k: flat[v::width] for k, v in c.items()}
    else:
        if min(map(len, body)) < max(s + n for s, n in c.values()):
            return None
        cols = {k: [x[s:s + n] for x in body] for k, (s, n) in c.items()}
    txns = list(map(str.strip, cols["txn_id"]))
    if not all(txns) or len(set(txns)) != len(txns):
        return None
    amount = _whole_fen(cols["amount"])
    fee = _whole_fen(cols["fee"]) if "fee" in c else [0] * len(body)
    if amount is None or fee is None:
        return None
    if "net" in c:
        net = _whole_fen(cols["net"])
        if net is None or any(map(operator.ne, net, map(operator.sub, amount, fee))):
            return None
    else:
        net = list(map(operator.sub, amount, fee))
    if "state" in c:
        words = list(map(str.strip, cols["state"]))
        if not set(words) <= profile.states.keys():
            return None
        state = list(map(profile.states.__getitem__, words))
    else:
        state = ["paid"] * len(body)
    first = profile.header_lines + 1
    return Statement(list(range(first, first + len(body))), txns, amount, fee, net, state)


def _by_lines(profile: Profile, body: list[str]) -> Statement:
    """The detail lines read one at a time; StatementError names the first bad one."""
    out: list[Line] = []
    seen: dict[str, int] = {}
    c = profile.columns
    if profile.format == "csv":
        records: Any = csv_rows(body, profile.delimiter)
    else:
        records = body
    has_fee, has_net, has_state = "fee" in c, "net" in c, "state" in c
    for k, f in enumerate(records):
        line_no = profile.header_lines + k + 1
        if not f or (profile.format == "fixed" and not f.strip()):
            continue
        txn = _get(profile, f, c["txn_id"], "txn_id", line_no).strip()
        if not txn:
            raise StatementError(f"line {line_no}: empty transaction id")
        if txn in seen:
            raise StatementError(f"line {line_no}: transaction {txn} is also on line {seen[txn]} (duplicate row)")
        seen[txn] = line_no
        amount = _fen(_get(profile, f, c["amount"], "amount", line_no), "amount", line_no)
        fee = _fen(_get(profile, f, c["fee"], "fee", line_no), "fee", line_no) if has_fee else 0
        net = _fen(_get(profile, f, c["net"], "net", line_no), "net", line_no) if has_net else amount - fee
        if net != amount - fee:
            raise StatementError(f"line {line_no}: net {net} is not amount {amount} less fee {fee}")
        state = "paid"
        if has_state:
            word = _get(profile, f, c["state"], "state", line_no).strip()
            if word not in profile.states:
                raise StatementError(f"line {line_no}: unknown state {word!r}; the profile knows "
                                     f"{', '.join(profile.states)}")
            state = profile.states[word]
        out.append(Line(line_no, txn, amount, fee, net, state))
    return Statement.of(out)


def write(profile: Profile, lines: list[Line]) -> bytes:
    """A statement file in the profile's layout (for tests, benches and channels' simulators)."""
    inv = {}
    for word, st in profile.states.items():
        inv.setdefault(st, word)
    c = profile.columns
    if profile.format == "csv":
        width = max(v for v in {**c, **profile.trailer_columns}.values()) + 1
        buf = io.StringIO()
        w = csv.writer(buf, delimiter=profile.delimiter, lineterminator="\n")
        for _ in range(profile.header_lines):
            buf.write("header\n")
        for x in lines:
            row = [""] * width
            vals = {"txn_id": x.txn_id, "amount": x.amount_fen, "fee": x.fee_fen, "net": x.net_fen,
                    "state": inv[x.state]}
            for k, col in c.items():
                row[col] = str(vals[k])
            w.writerow(row)
        if profile.trailer:
            row = [""] * width
            row[0] = profile.trailer
            tv = {"count": len(lines), "amount": sum(x.amount_fen for x in lines)}
            for k, col in profile.trailer_columns.items():
                row[col] = str(tv[k])
            w.writerow(row)
        return buf.getvalue().encode(profile.encoding)
    width = max(s + n for s, n in [*c.values(), *profile.trailer_columns.values()])
    out = ["header".ljust(width) for _ in range(profile.header_lines)]
    for x in lines:
        row = [" "] * width
        vals = {"txn_id": x.txn_id, "amount": str(x.amount_fen), "fee": str(x.fee_fen), "net": str(x.net_fen),
                "state": inv[x.state]}
        for k, (s, n) in c.items():
            v = vals[k]
            v = v.ljust(n) if k in ("txn_id", "state") else v.rjust(n, "0")
            row[s:s + n] = list(v[:n])
        out.append("".join(row))
    if profile.trailer:
        row = [" "] * width
        row[:len(profile.trailer)] = list(profile.trailer)
        tv = {"count": len(lines), "amount": sum(x.amount_fen for x in lines)}
        for k, (s, n) in profile.trailer_columns.items():
            row[s:s + n] = list(str(tv[k]).rjust(n, "0"))
        out.append("".join(row))
    return ("\n".join(out) + "\n").encode(profile.encoding)
