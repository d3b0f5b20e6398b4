"""Value formats of data identifiers: BCD pictures, date pictures, bit words, tables, records.

Every format decodes wire bytes (PLAIN, low byte first) to an exact Python value and encodes it
back byte-identically:

* ``Bcd("XXXXXX.XX")`` -> ``Decimal`` (``int`` when the picture has no decimals); ``signed``
  pictures carry the sign in bit 7 of the most significant (last sent) byte;
* ``Digits(6)`` -> ``str`` of 12 decimal digits, high digit first (addresses, customer numbers);
* ``Word(2)`` -> ``int`` (binary, low byte first: status words, operator codes);
* ``Binary(4)`` -> ``bytes`` (passwords, opaque fields);
* ``Clock("YYMMDDhhmm")`` -> ``datetime`` / ``date`` / ``time``; pictures with a weekday
  ``WW`` decode to ``DateWeek`` / ``DateTimeWeek`` so a weekday that disagrees with the date
  still round-trips; an all-zero date picture is ``None`` ("not set");
* ``Table("hhmmNN")`` -> list of ``SlotEntry`` / ``ZoneEntry``;
* ``Block(fmt)`` -> list of values; ``Record(...)`` -> dict of named values.

Each format is also a construct ``Adapter`` (``fmt.construct()``), so payload schemas can embed
it; the direct ``decode``/``encode`` methods are what the fast paths call.
"""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, NamedTuple

from construct import Adapter, Bytes, GreedyBytes

from protocol.errors import ProtocolError

__all__ = [
    "Format",
    "Bcd",
    "Digits",
    "Word",
    "Binary",
    "Clock",
    "Table",
    "Block",
    "Record",
    "DateWeek",
    "DateTimeWeek",
    "SlotEntry",
    "ZoneEntry",
    "bcd_to_int",
    "int_to_bcd",
]


class DateWeek(NamedTuple):
    """A YYMMDDWW value: the date and the weekday the meter keeps (0 = Sunday)."""

    date: date
    weekday: int


class DateTimeWeek(NamedTuple):
    """A YYMMDDWWhhmmss value: the date-time and the weekday the meter keeps (0 = Sunday)."""

    datetime: datetime
    weekday: int


class SlotEntry(NamedTuple):
    """One day-table slot (hhmmNN): from hour:minute on, tariff number ``tariff``."""

    hour: int
    minute: int
    tariff: int


class ZoneEntry(NamedTuple):
    """One year-zone entry (MMDDNN): from month/day on, day table number ``table``."""

    month: int
    day: int
    table: int


def weekday_of(d: date) -> int:
    """DL/T 645 weekday: 0 = Sunday .. 6 = Saturday."""
    return d.isoweekday() % 7


def _hexdump(raw: bytes) -> str:
    return raw.hex(" ").upper() or "(empty)"


def bcd_to_int(raw: bytes, what: str = "value") -> int:
    """Little-endian BCD bytes -> int; raises ProtocolError('bcd') naming the bad byte."""
    text = raw[::-1].hex()
    if not text.isdigit():
        for k, b in enumerate(raw):
            if b >> 4 > 9 or b & 0xF > 9:
                raise ProtocolError(
                    "bcd", f"{what}: byte {k} ({b:02X}H) of {_hexdump(raw)} is not two BCD digits 0-9"
                )
    return int(text) if text else 0


def int_to_bcd(n: int, length: int, what: str = "value") -> bytes:
    """int -> ``length`` little-endian BCD bytes; raises ProtocolError('value') if it does not fit."""
    if n < 0 or n >= 10 ** (2 * length):
        raise ProtocolError("value", f"{what}: {n} does not fit in {length} BCD byte(s) (0..{10 ** (2 * length) - 1})")
    return bytes.fromhex(f"{n:0{2 * length}d}")[::-1]


class Format:
    """Base: a value format. ``length`` is the nominal byte count (None: variable)."""

    length: int | None = None
    picture: str = ""

    def decode(self, raw: bytes) -> Any:
        raise NotImplementedError

    def encode(self, value: Any, length: int | None = None) -> bytes:
        raise NotImplementedError

    def construct(self) -> Adapter:
        """This format as a construct Adapter (fixed-size when the format is)."""
        return _FormatAdapter(Bytes(self.length) if self.length else GreedyBytes, self)

    def _check_length(self, raw: bytes, what: str) -> None:
        if self.length is not None and len(raw) != self.length:
            raise ProtocolError(
                "length", f"{what}: {self.picture or 'value'} takes {self.length} byte(s), got {len(raw)} ({_hexdump(raw)})"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.picture!r})"


class _FormatAdapter(Adapter):
    def __init__(self, subcon, fmt: Format) -> None:
        super().__init__(subcon)
        self.fmt = fmt

    def _decode(self, obj, context, path):
        return self.fmt.decode(bytes(obj))

    def _encode(self, obj, context, path):
        return self.fmt.encode(obj)


class Bcd(Format):
    """A BCD number picture such as ``XXXXXX.XX``; signed pictures use bit 7 of the top byte.

    Decoding trusts the byte count it is given (one real meter answers XX.XXXX power in 4
    bytes), keeping the picture's decimals; encoding uses the picture's length unless told.
    """

    def __init__(self, picture: str, signed: bool = False) -> None:
        digits = picture.replace(".", "")
        if len(digits) % 2 or set(digits) - {"X", "N"}:
            raise ValueError(f"bad BCD picture {picture!r}")
        self.picture = picture
        self.signed = signed
        self.length = self.size = len(digits) // 2
        self.decimals = len(picture) - picture.index(".") - 1 if "." in picture else 0

    def decode(self, raw: bytes) -> int | Decimal:
        if not raw:
            raise ProtocolError("length", f"{self.picture}: no bytes to decode")
        negative = False
        if self.signed and raw[-1] & 0x80:
            negative = True
            raw = raw[:-1] + bytes((raw[-1] & 0x7F,))
        text = raw[::-1].hex()
        if not text.isdigit():
            bcd_to_int(raw, self.picture)  # raises, naming the bad byte
        if not self.decimals:
            return -int(text) if negative else int(text)
        d = self.decimals
        text = text.zfill(d + 1)
        # via text keeps the picture's decimals (Decimal('12.50'), not 12.5) and the sign of -0
        return Decimal(f"{'-' if negative else ''}{text[:-d]}.{text[-d:]}")

    def encode(self, value: Any, length: int | None = None) -> bytes:
        length = length or self.size
        if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
            raise ProtocolError(
                "value", f"{self.picture} needs an int or Decimal (never float for money or energy), got {value!r}"
            )
        d = Decimal(value)
        if not d.is_finite():
            raise ProtocolError("value", f"{self.picture}: {value!r} is not a finite number")
        scaled = d.scaleb(self.decimals)
        if scaled != scaled.to_integral_value():
            raise ProtocolError("value", f"{self.picture}: {value} has more than {self.decimals} decimal place(s)")
        negative = d.is_signed()
        if negative and not self.signed:
            raise ProtocolError("value", f"{self.picture} is unsigned; {value} is negative")
        n = abs(int(scaled))
        limit = 8 * 10 ** (2 * length - 1) if self.signed else 10 ** (2 * length)
        if n >= limit:
            raise ProtocolError("value", f"{self.picture}: {value} is out of range for {length} byte(s)")
        raw = bytearray(int_to_bcd(n, length, self.picture))
        if negative:
            raw[-1] |= 0x80
        return bytes(raw)


class Digits(Format):
    """A BCD digit string (addresses, meter and customer numbers): str, high digit first."""

    def __init__(self, length: int) -> None:
        self.length = self.size = length
        self.picture = "N" * (2 * length)

    def decode(self, raw: bytes) -> str:
        self._check_length(raw, "digit string")
        bcd_to_int(raw, "digit string")
        return raw[::-1].hex()

    def encode(self, value: Any, length: int | None = None) -> bytes:
        if not isinstance(value, str) or len(value) != 2 * self.size or not (value.isdigit() and value.isascii()):
            raise ProtocolError("value", f"need {2 * self.size} decimal digits as a str, got {value!r}")
        return bytes.fromhex(value)[::-1]


class Word(Format):
    """An unsigned binary integer, low byte first (status words, operator codes, amounts)."""

    def __init__(self, length: int) -> None:
        self.length = self.size = length
        self.picture = f"{8 * length}-bit word"

    def decode(self, raw: bytes) -> int:
        self._check_length(raw, "word")
        return int.from_bytes(raw, "little")

    def encode(self, value: Any, length: int | None = None) -> bytes:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << (8 * self.size):
            raise ProtocolError("value", f"{self.picture} needs an int 0..{(1 << (8 * self.size)) - 1}, got {value!r}")
        return value.to_bytes(self.size, "little")


class Binary(Format):
    """Opaque bytes (passwords, MACs); ``length`` None means any length."""

    def __init__(self, length: int | None = None) -> None:
        self.length = length
        self.picture = f"{length} bytes" if length else "bytes"

    def decode(self, raw: bytes) -> bytes:
        self._check_length(raw, "binary field")
        return bytes(raw)

    def encode(self, value: Any, length: int | None = None) -> bytes:
        if not isinstance(value, (bytes, bytearray)):
            raise ProtocolError("value", f"{self.picture} needs bytes, got {value!r}")
        self._check_length(bytes(value), "binary field")
        return bytes(value)


_CLOCK_FIELDS = {"YY", "MM", "DD", "WW", "hh", "mm", "ss"}


class Clock(Format):
    """A date/time picture (``YYMMDDhhmmss``, ``hhmmss``, ``YYMMDDWW`` ...), sent low field first."""

    def __init__(self, picture: str, zero_is_unset: bool = True) -> None:
        fields = [picture[k : k + 2] for k in range(0, len(picture), 2)]
        self.zero_is_unset = zero_is_unset
        if set(fields) - _CLOCK_FIELDS:
            raise ValueError(f"bad clock picture {picture!r}")
        self.picture = picture
        self.fields = fields
        self.length = len(fields)
        self.has_date = "YY" in fields
        self.has_time = "hh" in fields
        self.has_week = "WW" in fields

    def decode(self, raw: bytes) -> date | datetime | time | DateWeek | DateTimeWeek | None:
        self._check_length(raw, self.picture)
        if self.zero_is_unset and self.has_date and not any(raw):
            return None  # all zero: "not set" (no switch-over time, no n-th last event yet)
        values = {}
        for name, b in zip(self.fields, raw[::-1]):
            values[name] = bcd_to_int(bytes((b,)), f"{self.picture} field {name}")
        try:
            if self.has_date and self.has_time:
                v: Any = datetime(
                    2000 + values["YY"], values["MM"], values["DD"], values["hh"], values["mm"], values.get("ss", 0)
                )
            elif self.has_date:
                v = date(2000 + values["YY"], values["MM"], values["DD"])
            else:
                v = time(values["hh"], values["mm"], values.get("ss", 0))
        except ValueError as exc:
            raise ProtocolError("value", f"{self.picture} {_hexdump(raw)} is not a real date/time: {exc}") from None
        if self.has_week:
            if values["WW"] > 6:
                raise ProtocolError("value", f"{self.picture}: weekday {values['WW']} is not 0 (Sunday)..6")
            return DateTimeWeek(v, values["WW"]) if self.has_time else DateWeek(v, values["WW"])
        return v

    def encode(self, value: Any, length: int | None = None) -> bytes:
        if value is None and self.zero_is_unset and self.has_date:
            return bytes(len(self.fields))
        week = None
        if isinstance(value, (DateWeek, DateTimeWeek)):
            value, week = value
        if self.has_date and self.has_time:
            ok = isinstance(value, datetime)
        elif self.has_date:
            ok = isinstance(value, date) and not isinstance(value, datetime)
        else:
            ok = isinstance(value, time)
        if not ok:
            raise ProtocolError("value", f"{self.picture} needs a {self._kind()}, got {value!r}")
        if self.has_date and isinstance(value, date) and not 2000 <= value.year <= 2099:
            raise ProtocolError("value", f"{self.picture}: year {value.year} is outside 2000..2099")
        if week is None and self.has_week:
            week = weekday_of(value if not isinstance(value, datetime) else value.date())
        if self.has_week and not (isinstance(week, int) and 0 <= week <= 6):
            raise ProtocolError("value", f"{self.picture}: weekday {week!r} is not 0 (Sunday)..6")
        parts = {
            "YY": getattr(value, "year", 2000) - 2000,
            "MM": getattr(value, "month", 0),
            "DD": getattr(value, "day", 0),
            "WW": week,
            "hh": getattr(value, "hour", 0),
            "mm": getattr(value, "minute", 0),
            "ss": getattr(value, "second", 0),
        }
        if self.has_time and "ss" not in self.fields and parts["ss"]:
            raise ProtocolError("value", f"{self.picture} has no seconds; {value} would lose {parts['ss']} s")
        if self.has_time and getattr(value, "microsecond", 0):
            raise ProtocolError("value", f"{self.picture} has whole seconds only; {value} has microseconds")
        return bytes(int(f"{parts[name]:02d}", 16) for name in reversed(self.fields))

    def _kind(self) -> str:
        if self.has_date and self.has_time:
            return "datetime"
        return "date" if self.has_date else "time"


class Table(Format):
    """A list of 3-byte entries ``hhmmNN`` (day table) or ``MMDDNN`` (year zones), NN sent first."""

    def __init__(self, entry: str, max_entries: int = 14) -> None:
        if entry not in ("hhmmNN", "MMDDNN"):
            raise ValueError(entry)
        self.entry = entry
        self.picture = f"{max_entries} x {entry}"
        self.max_entries = max_entries

    def decode(self, raw: bytes) -> list[SlotEntry] | list[ZoneEntry]:
        if len(raw) % 3 or len(raw) > 3 * self.max_entries:
            raise ProtocolError(
                "length", f"{self.picture}: {len(raw)} bytes is not a whole number of 3-byte entries (max {self.max_entries})"
            )
        out: list = []
        for k in range(0, len(raw), 3):
            nn, b, a = (bcd_to_int(raw[k + j : k + j + 1], self.entry) for j in range(3))
            if self.entry == "hhmmNN":
                if a > 23 or b > 59:
                    raise ProtocolError("value", f"day-table entry {a:02d}:{b:02d} is not a time of day")
                out.append(SlotEntry(a, b, nn))
            else:
                if not 1 <= a <= 12 or not 1 <= b <= 31:
                    raise ProtocolError("value", f"year-zone entry month {a} day {b} is not a date")
                out.append(ZoneEntry(a, b, nn))
        return out

    def encode(self, value: Any, length: int | None = None) -> bytes:
        if not isinstance(value, (list, tuple)) or len(value) > self.max_entries:
            raise ProtocolError("value", f"{self.picture} needs a list of at most {self.max_entries} entries")
        out = bytearray()
        for entry in value:
            try:
                a, b, nn = (int(x) for x in entry)
            except (TypeError, ValueError):
                raise ProtocolError("value", f"{self.entry} entry {entry!r} must be three ints") from None
            probe = bytes(int_to_bcd(x, 1, self.entry)[0] for x in (nn, b, a))
            self.decode(probe)  # same range checks as decoding
            out += probe
        return bytes(out)


class Block(Format):
    """A DI block (DI0 or DI1 = FF): member values concatenated in index order, as many as sent."""

    def __init__(self, member: Format, max_members: int = 64, count: int | None = None) -> None:
        if not member.length:
            raise ValueError("block members need a fixed length")
        self.member = member
        self.max_members = count or max_members
        self.length = member.length * count if count else None  # fixed count: always all members
        self.picture = f"{count} x {member.picture}" if count else f"block of {member.picture}"

    def decode(self, raw: bytes) -> list:
        size = self.member.length
        assert size
        self._check_length(raw, self.picture)
        if not raw or len(raw) % size or len(raw) // size > self.max_members:
            raise ProtocolError(
                "length",
                f"{self.picture}: {len(raw)} bytes is not 1..{self.max_members} whole members of {size} byte(s)",
            )
        return [self.member.decode(raw[k : k + size]) for k in range(0, len(raw), size)]

    def encode(self, value: Any, length: int | None = None) -> bytes:
        low = self.max_members if self.length else 1
        if not isinstance(value, (list, tuple)) or not low <= len(value) <= self.max_members:
            raise ProtocolError("value", f"{self.picture} needs a list of {low}..{self.max_members} values")
        return b"".join(self.member.encode(v) for v in value)


class Record(Format):
    """A fixed record of named fields (e.g. a trip event), sent in field order."""

    def __init__(self, *fields: tuple[str, Format]) -> None:
        self.fields = fields
        self.length = sum(f.length or 0 for _, f in fields)
        self.picture = " + ".join(f"{n}({f.length})" for n, f in fields)

    def decode(self, raw: bytes) -> dict[str, Any]:
        self._check_length(raw, "record")
        out, k = {}, 0
        for name, fmt in self.fields:
            assert fmt.length
            out[name] = fmt.decode(raw[k : k + fmt.length])
            k += fmt.length
        return out

    def encode(self, value: Any, length: int | None = None) -> bytes:
        if not isinstance(value, dict) or set(value) != {n for n, _ in self.fields}:
            raise ProtocolError("value", f"record needs a dict with exactly {[n for n, _ in self.fields]}")
        return b"".join(fmt.encode(value[name]) for name, fmt in self.fields)
