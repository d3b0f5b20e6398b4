"""What every payload family shares: function codes, ERR/SERR flags, field types, and the
one place construct's errors become ProtocolError."""

from __future__ import annotations

from typing import Any

from construct import (
    Bytes,
    Construct,
    ConstructError,
    Int8ul,
    Int16ul,
    Int32ul,
    SizeofError,
    StreamError,
    Struct,
    Subconstruct,
    Terminated,
    TerminatedError,
)
from construct.core import stream_read_entire, stream_seek

from protocol.errors import ProtocolError
from protocol.formats import Clock, Format

__all__ = [
    "SECURITY",
    "BROADCAST_TIME",
    "READ",
    "READ_FOLLOWUP",
    "READ_ADDRESS",
    "WRITE",
    "WRITE_ADDRESS",
    "FREEZE",
    "CHANGE_BAUD",
    "CHANGE_PASSWORD",
    "DEMAND_CLEAR",
    "METER_CLEAR",
    "EVENT_CLEAR",
    "CONTROL",
    "OUTPUT",
    "FUNCTION_NAMES",
    "ERR_FLAGS",
    "SERR_FLAGS",
    "LEVEL_MAC",
    "LEVEL_CIPHER",
    "decode_err",
    "decode_serr",
    "AllBut",
    "IfMore",
    "DI",
    "Password",
    "Operator",
    "Deadline",
    "Empty",
    "ErrReply",
    "Mac",
    "SerrReply",
    "build_with",
    "parse_with",
]

# Function codes (D4..D0 of the control byte)
SECURITY, BROADCAST_TIME, READ, READ_FOLLOWUP, READ_ADDRESS, WRITE = 0x03, 0x08, 0x11, 0x12, 0x13, 0x14
WRITE_ADDRESS, FREEZE, CHANGE_BAUD, CHANGE_PASSWORD = 0x15, 0x16, 0x17, 0x18
DEMAND_CLEAR, METER_CLEAR, EVENT_CLEAR, CONTROL, OUTPUT = 0x19, 0x1A, 0x1B, 0x1C, 0x1D

FUNCTION_NAMES = {
    SECURITY: "security authentication",
    BROADCAST_TIME: "broadcast time",
    READ: "read data",
    READ_FOLLOWUP: "read follow-up data",
    READ_ADDRESS: "read address",
    WRITE: "write data",
    WRITE_ADDRESS: "write address",
    FREEZE: "freeze",
    CHANGE_BAUD: "change baud rate",
    CHANGE_PASSWORD: "change password",
    DEMAND_CLEAR: "maximum-demand clear",
    METER_CLEAR: "meter clear",
    EVENT_CLEAR: "event clear",
    CONTROL: "relay / alarm / power-hold control",
    OUTPUT: "multi-function output",
}

ERR_FLAGS = (
    "other",
    "no_data",
    "unauthorised",
    "baud_unchangeable",
    "year_zones_exceeded",
    "day_slots_exceeded",
    "tariffs_exceeded",
    "reserved_bit7",
)
SERR_FLAGS = (
    "other",
    "repeat_recharge",
    "mac_failed",
    "auth_failed",
    "customer_mismatch",
    "count_error",
    "hoarding_exceeded",
    "address_error",
    "suspended",
)

LEVEL_MAC = 0x99  # plaintext + MAC (SECURITY.md)
LEVEL_CIPHER = 0x98  # ciphertext + MAC


def decode_err(byte: int) -> list[str]:
    """ERR byte of an abnormal reply -> flag names, e.g. 0x02 -> ['no_data']."""
    if not 0 <= byte <= 0xFF:
        raise ProtocolError("value", f"ERR is one byte, got {byte!r}")
    return [name for bit, name in enumerate(ERR_FLAGS) if byte >> bit & 1]


def decode_serr(word: int) -> list[str]:
    """SERR word of a C3H reply -> flag names, e.g. 0x0002 -> ['repeat_recharge']."""
    if not 0 <= word <= 0xFFFF:
        raise ProtocolError("value", f"SERR is two bytes, got {word!r}")
    return [
        SERR_FLAGS[bit] if bit < len(SERR_FLAGS) else f"reserved_bit{bit}" for bit in range(16) if word >> bit & 1
    ]


# --------------------------------------------------------------------------------------
# Building blocks


class AllBut(Construct):
    """Every remaining byte except the last ``n`` (which the fields after it take)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def _parse(self, stream, context, path):
        rest = stream_read_entire(stream, path)
        if len(rest) < self.n:
            raise StreamError(f"needs at least {self.n} more byte(s)", path=path)
        stream_seek(stream, -self.n, 1, path)
        return rest[: len(rest) - self.n]

    def _build(self, obj, stream, context, path):
        stream.write(bytes(obj))
        return obj


def _Fmt(fmt: Format) -> Construct:
    """A protocol.formats Format embedded as a construct field."""
    return fmt.construct()


class IfMore(Subconstruct):
    """An optional trailing field: parsed when bytes remain, built unless the value is None.

    (construct's Optional would also swallow a real fault inside the field, such as a bad BCD
    digit, and report a misleading one.)"""

    def __init__(self, subcon: Construct) -> None:
        super().__init__(subcon)
        self.flagbuildnone = True  # a field left out of the build dict is built as absent

    def _parse(self, stream, context, path):
        pos = stream.tell()
        if not stream.read(1):
            return None
        stream.seek(pos)
        return self.subcon._parsereport(stream, context, path)

    def _build(self, obj, stream, context, path):
        if obj is None:
            return None
        return self.subcon._build(obj, stream, context, path)

    def _sizeof(self, context, path):
        raise SizeofError(path=path)


DI = Int32ul  # DI3..DI0 as an int; DI0 travels first
Password = Bytes(4)  # PA P0 P1 P2; PA is the level (00..09, 98, 99)
Operator = Int32ul  # C0..C3, C0 first
Deadline = _Fmt(Clock("YYMMDDhhmmss", zero_is_unset=False))  # ss mm hh DD MM YY on the wire
Empty = Struct(Terminated)
ErrReply = Struct("err" / Int8ul, Terminated)
Mac = Bytes(4)
SerrReply = Struct("serr" / Int16ul, Terminated)
def _is_level(level: int):
    return lambda ctx: ctx.password[0] == level




def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def _wrap(exc: ConstructError, what: str, data: bytes) -> ProtocolError:
    if isinstance(exc, TerminatedError):
        return ProtocolError("length", f"{what}: {len(data)} data bytes is too many for this payload; check L")
    if isinstance(exc, StreamError):
        return ProtocolError("truncated", f"{what}: {len(data)} data bytes is too few for this payload ({exc.path})")
    return ProtocolError("payload", f"{what}: malformed payload at {getattr(exc, 'path', '')}: {exc}")


def build_with(control: int, schema: Construct, fields: dict[str, Any] | None) -> bytes:
    """``schema`` (the one for ``control``) built from ``fields``; construct's faults as ProtocolError."""
    try:
        return schema.build(fields or {})
    except ProtocolError:
        raise
    except (ConstructError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise ProtocolError("value", f"{control:02X}H: cannot build payload from {fields!r}: {exc}") from None


def parse_with(control: int, schema: Construct, data: bytes) -> dict[str, Any]:
    """``data`` parsed with ``schema`` (the one for ``control``) into a dict; faults as ProtocolError."""
    try:
        return _clean(schema.parse(bytes(data)))
    except ProtocolError:
        raise
    except ConstructError as exc:
        raise _wrap(exc, f"{control:02X}H {FUNCTION_NAMES[control & 0x1F]}", bytes(data)) from None
    except IndexError:  # level byte missing: password shorter than 1 byte
        raise ProtocolError("truncated", f"{control:02X}H: payload too short to hold a password") from None
