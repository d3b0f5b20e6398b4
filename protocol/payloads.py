"""Payloads (the PLAIN data field) of every function code: construct schemas and builders.

``SCHEMAS`` maps each control byte (request, normal reply, follow-up reply, abnormal reply) to
the construct ``Struct`` that defines its data field; ``parse_payload(control, data)`` and
``build_payload(control, fields)`` use them.  The 03H security family and the level-99
forms of 14H and 1CH follow ``protocol/SECURITY.md``.  Choices the public sources leave open
are listed in ``protocol/README.md``.

The few payloads on the head-end's hot path (read request and read reply) also have hand
builders/parsers here, tested byte-identical to the schemas.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from construct import (
    Bytes,
    Computed,
    Const,
    Construct,
    ConstructError,
    GreedyBytes,
    If,
    IfThenElse,
    Int8ul,
    Int16ul,
    Int32sl,
    Int32ul,
    SizeofError,
    Select,
    StreamError,
    Struct,
    Subconstruct,
    Switch,
    Terminated,
    TerminatedError,
    this,
)
from construct.core import stream_read_entire, stream_seek

from protocol.di import di_text
from protocol.errors import ProtocolError
from protocol.formats import Bcd, Clock, Digits, Format
from protocol.frame import Address

__all__ = [
    "SCHEMAS",
    "FUNCTION_NAMES",
    "N1_NAMES",
    "ERR_FLAGS",
    "SERR_FLAGS",
    "parse_payload",
    "build_payload",
    "decode_err",
    "decode_serr",
    "read_request",
    "parse_read_request",
    "parse_read_reply",
    "read_reply",
    "read_followup_request",
    "write_request",
    "relay_request",
    "broadcast_time_request",
    "freeze_request",
    "baud_request",
    "BAUD_RATES",
    "challenge_request",
    "identity_auth_request",
    "write_address_request",
    "set_validity_request",
    "end_session_request",
    "recharge_request",
    "status_query_request",
    "key_update_request",
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

# 1CH N1 commands
TRIP, CLOSE_PERMITTED, CLOSE_DIRECT, TRIP_AUTO_RESTORE, TRIP_AUTO_RESTORE_2 = 0x1A, 0x1B, 0x1C, 0x1D, 0x1E
ALARM, ALARM_RELEASE, POWER_HOLD, POWER_HOLD_RELEASE = 0x2A, 0x2B, 0x3A, 0x3B
N1_NAMES = {
    TRIP: "trip",
    CLOSE_PERMITTED: "close permitted",
    CLOSE_DIRECT: "direct close",
    TRIP_AUTO_RESTORE: "trip with automatic restoration (1D)",
    TRIP_AUTO_RESTORE_2: "trip with automatic restoration (1E)",
    ALARM: "alarm",
    ALARM_RELEASE: "alarm release",
    POWER_HOLD: "power hold",
    POWER_HOLD_RELEASE: "power hold release",
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

BAUD_RATES = {0x02: 600, 0x04: 1200, 0x08: 2400, 0x10: 4800, 0x20: 9600, 0x40: 19200}

# Security DIs (03H sub-commands)
IDENTITY_AUTH, SET_VALIDITY, END_SESSION, CHALLENGE = 0x070000FF, 0x070001FF, 0x070002FF, 0x070003FF
OPEN_ACCOUNT, RECHARGE, KEY_UPDATE, STATUS_QUERY = 0x070101FF, 0x070102FF, 0x070301FF, 0x078102FF

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


class _N1(Construct):
    """1CH command byte N1, one of N1_NAMES."""

    def _parse(self, stream, context, path):
        n1 = Int8ul._parsereport(stream, context, path)
        if n1 not in N1_NAMES:
            raise ProtocolError("value", f"1CH N1={n1:02X}H is not a known command ({', '.join(f'{k:02X}' for k in N1_NAMES)})")
        return n1

    def _build(self, obj, stream, context, path):
        if obj not in N1_NAMES:
            raise ProtocolError("value", f"1CH N1={obj!r} is not a known command")
        return Int8ul._build(obj, stream, context, path)


class _Baud(Construct):
    """17H characteristic word Z: exactly one bit of 1..6 set; the value is the rate in bps."""

    def _parse(self, stream, context, path):
        z = Int8ul._parsereport(stream, context, path)
        if z not in BAUD_RATES:
            raise ProtocolError("value", f"baud word Z={z:02X}H must have exactly one of bits 1..6 set (08H = 2400 bps)")
        return BAUD_RATES[z]

    def _build(self, obj, stream, context, path):
        for z, bps in BAUD_RATES.items():
            if bps == obj:
                return Int8ul._build(z, stream, context, path)
        raise ProtocolError("value", f"baud rate {obj!r} is not one of {sorted(BAUD_RATES.values())}")


class _FreezeTime(Construct):
    """16H mm hh DD MM (BCD); 99 wildcards from the top: 99DDhhmm monthly, 9999hhmm daily,
    999999mm hourly, 99999999 instant.  The value is a dict month/day/hour/minute (None = 99)."""

    _FIELDS = (("minute", 59, 0), ("hour", 23, 0), ("day", 31, 1), ("month", 12, 1))

    def _parse(self, stream, context, path):
        raw = stream.read(4)
        if len(raw) != 4:
            raise StreamError("freeze time needs 4 bytes", path=path)
        out: dict[str, Any] = {}
        wild = True
        for (name, hi, lo), b in zip(reversed(self._FIELDS), reversed(raw)):
            if b == 0x99 and wild:
                out[name] = None
                continue
            wild = False
            v = Bcd("NN").decode(bytes((b,)))
            if not lo <= v <= hi:
                raise ProtocolError("value", f"freeze {name} {v} is out of range {lo}..{hi} (99 = wildcard, from the top)")
            out[name] = v
        return {k: out[k] for k in ("month", "day", "hour", "minute")}

    def _build(self, obj, stream, context, path):
        raw = bytearray()
        for name, hi, lo in self._FIELDS:
            v = obj.get(name)
            raw.append(0x99 if v is None else int(f"{v:02d}", 16))
        probe = bytes(raw)
        import io

        self._parse(io.BytesIO(probe), context, path)  # same checks both ways
        stream.write(probe)
        return obj


DI = Int32ul  # DI3..DI0 as an int; DI0 travels first
Password = Bytes(4)  # PA P0 P1 P2; PA is the level (00..09, 98, 99)
Operator = Int32ul  # C0..C3, C0 first
Deadline = _Fmt(Clock("YYMMDDhhmmss", zero_is_unset=False))  # ss mm hh DD MM YY on the wire
Empty = Struct(Terminated)
ErrReply = Struct("err" / Int8ul, Terminated)
Mac = Bytes(4)
SerrReply = Struct("serr" / Int16ul, Terminated)
# 03H refusals of a command whose MAC held carry the meter's MAC over SERR and the seq
SecuritySerrReply = Struct("serr" / Int16ul, "mac" / IfMore(Mac), Terminated)


def _is_level(level: int):
    return lambda ctx: ctx.password[0] == level


# --- requests ------------------------------------------------------------------------

BroadcastTimeRequest = Struct("time" / Deadline, Terminated)

ReadRequest = Struct(
    "di" / DI,
    "n" / IfMore(_Fmt(Bcd("NN"))),  # block / record count
    "start" / IfMore(_Fmt(Clock("YYMMDDhhmm", zero_is_unset=False))),  # load-record start time, mm hh DD MM YY
    Terminated,
)

ReadFollowupRequest = Struct("di" / DI, "seq" / Int8ul, Terminated)

WriteRequest = Struct(
    "di" / DI,
    "password" / Password,
    "operator" / Operator,
    "value" / IfThenElse(_is_level(LEVEL_MAC), AllBut(8), GreedyBytes),
    "seq" / If(_is_level(LEVEL_MAC), Int32ul),  # session sequence (SECURITY.md)
    "mac" / If(_is_level(LEVEL_MAC), Mac),
    Terminated,
)

WriteAddressRequest = Struct(
    "address" / Address(Bytes(6)),
    "seq" / IfMore(Int32ul),  # addressed to the meter: session seq + MAC (SECURITY.md); all-AA: bench only
    "mac" / IfMore(Mac),
    Terminated,
)
FreezeRequest = Struct("time" / _FreezeTime(), Terminated)
ChangeBaudRequest = Struct("baud" / _Baud(), Terminated)
ChangePasswordRequest = Struct("di" / DI, "old" / Password, "new" / Password, Terminated)
ClearRequest = Struct("password" / Password, "operator" / Operator, Terminated)  # 19H, 1AH
EventClearRequest = Struct("password" / Password, "operator" / Operator, "di" / DI, Terminated)

ControlRequest = Struct(
    "password" / Password,
    "operator" / Operator,
    # level 98: N1..N8 travel encrypted (16 bytes) with a MAC (4); otherwise in plain
    "cipher" / If(_is_level(LEVEL_CIPHER), Bytes(20)),
    "n1" / If(lambda ctx: ctx.password[0] != LEVEL_CIPHER, _N1()),
    "n2" / If(lambda ctx: ctx.password[0] != LEVEL_CIPHER, Int8ul),  # reserved, 00
    "deadline" / If(lambda ctx: ctx.password[0] != LEVEL_CIPHER, Deadline),
    "seq" / If(_is_level(LEVEL_MAC), Int32ul),
    "mac" / If(_is_level(LEVEL_MAC), Mac),
    Terminated,
)

OutputRequest = Struct("mode" / Int8ul, Terminated)  # 1DH: 00 second pulse, 01 demand, 02 slot switch

# 03H family: DI + operator + per-DI body (SECURITY.md)
Customer = _Fmt(Digits(6))
_SECURITY_REQUEST_BODIES = {
    CHALLENGE: Struct(),
    IDENTITY_AUTH: Struct("c1" / Bytes(8), "r1" / Bytes(8), "dispersion" / Bytes(8)),
    SET_VALIDITY: Struct("minutes" / _Fmt(Bcd("NNNN")), "mac" / Mac),
    END_SESSION: Struct("mac" / Mac),
    OPEN_ACCOUNT: Struct(
        "amount" / Int32ul, "count" / Int32ul, "mac1" / Mac, "customer" / Customer, "mac2" / Mac
    ),  # amount in fen, binary
    RECHARGE: Struct("amount" / Int32ul, "count" / Int32ul, "mac1" / Mac, "customer" / Customer, "mac2" / Mac),
    KEY_UPDATE: Struct("krn" / Int8ul, Const(b"\x00\x00\x00"), "wrapped" / Bytes(16), "mac" / Mac),
    STATUS_QUERY: Struct("mac" / Mac),
}
SecurityRequest = Struct(
    "di" / DI,
    "operator" / Operator,
    "body" / Switch(this.di, _SECURITY_REQUEST_BODIES, default=Struct("raw" / GreedyBytes, "unknown" / Computed(True))),
    Terminated,
)

# --- normal replies --------------------------------------------------------------------

ReadReply = Struct("di" / DI, "value" / GreedyBytes)  # 91H / B1H; L sets the value length
ReadFollowupReply = Struct("di" / DI, "value" / AllBut(1), "seq" / Int8ul)  # 92H / B2H, SEQ echoed last
ReadAddressReply = Struct("address" / Address(Bytes(6)), Terminated)  # 93H
ChangeBaudReply = ChangeBaudRequest  # 97H echoes Z
ChangePasswordReply = Struct("new" / Password, Terminated)  # 98H
OutputReply = OutputRequest  # 9DH echoes the mode

# the wallet as the status query and the end of a session report it, under the meter's MAC
_WALLET = Struct(
    "balance" / Int32sl,  # fen, signed (overdraft is negative)
    "count" / Int32ul,
    "customer" / Customer,
    "krn" / Int8ul,
    Const(b"\x00\x00\x00"),
    "mac" / Mac,
)
_SECURITY_REPLY_BODIES = {
    CHALLENGE: Struct("challenge" / Bytes(8)),
    # this project's meters prove themselves (C2); the standard's ESAM reply (R2(4) + serial)
    # still parses, so a log from another meter reads
    IDENTITY_AUTH: Select(
        Struct("c2" / Bytes(8), "serial" / Bytes(8), Terminated),
        Struct("r2" / Bytes(4), "serial" / Bytes(8), Terminated),
    ),
    SET_VALIDITY: Struct("mac" / Mac),
    END_SESSION: _WALLET,
    OPEN_ACCOUNT: Struct("mac" / Mac),
    RECHARGE: Struct("mac" / Mac),
    KEY_UPDATE: Struct("mac" / Mac),
    STATUS_QUERY: _WALLET,
}
SecurityReply = Struct(
    "di" / DI,
    "body" / Switch(this.di, _SECURITY_REPLY_BODIES, default=Struct("raw" / GreedyBytes, "unknown" / Computed(True))),
    Terminated,
)

# 1CH abnormal reply: ERR(1) normally, SERR(2) from some ESAM meters
ControlErrorReply = Select(ErrReply, SerrReply)


def _abnormal(fn: int) -> Construct:
    if fn == SECURITY:
        return SecuritySerrReply
    if fn == CONTROL:
        return ControlErrorReply
    return ErrReply


_REQUESTS: dict[int, Construct] = {
    SECURITY: SecurityRequest,
    BROADCAST_TIME: BroadcastTimeRequest,
    READ: ReadRequest,
    READ_FOLLOWUP: ReadFollowupRequest,
    READ_ADDRESS: Empty,
    WRITE: WriteRequest,
    WRITE_ADDRESS: WriteAddressRequest,
    FREEZE: FreezeRequest,
    CHANGE_BAUD: ChangeBaudRequest,
    CHANGE_PASSWORD: ChangePasswordRequest,
    DEMAND_CLEAR: ClearRequest,
    METER_CLEAR: ClearRequest,
    EVENT_CLEAR: EventClearRequest,
    CONTROL: ControlRequest,
    OUTPUT: OutputRequest,
}
_REPLIES: dict[int, Construct] = {
    SECURITY: SecurityReply,
    READ: ReadReply,
    READ_FOLLOWUP: ReadFollowupReply,
    READ_ADDRESS: ReadAddressReply,
    WRITE: Empty,
    WRITE_ADDRESS: Empty,
    FREEZE: Empty,
    CHANGE_BAUD: ChangeBaudReply,
    CHANGE_PASSWORD: ChangePasswordReply,
    DEMAND_CLEAR: Empty,
    METER_CLEAR: Empty,
    EVENT_CLEAR: Empty,
    CONTROL: Empty,
    OUTPUT: OutputReply,
}

#: control byte -> schema of its data field
SCHEMAS: dict[int, Construct] = {}
SCHEMAS.update(_REQUESTS)
SCHEMAS.update({0x80 | fn: schema for fn, schema in _REPLIES.items()})
SCHEMAS.update({0xC0 | fn: _abnormal(fn) for fn in _REPLIES})
# B1/B2: more follows (or, on 2013 meters, events pending)
SCHEMAS.update({0xA0 | fn: _REPLIES[fn] for fn in (READ, READ_FOLLOWUP)})


def _schema_for(control: int) -> Construct:
    schema = SCHEMAS.get(control)
    if schema is None:
        fn = control & 0x1F
        if fn not in FUNCTION_NAMES:
            raise ProtocolError("control", f"function code {fn:02X}H is not a DL/T 645-2007 function this project uses")
        if fn == BROADCAST_TIME and control & 0x80:
            raise ProtocolError("control", "08H broadcast time never gets a reply; the control byte is wrong")
        raise ProtocolError("control", f"control byte {control:02X}H is not a valid combination of direction/flags for {fn:02X}H")
    return schema


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


def parse_payload(control: int, data: bytes) -> dict[str, Any]:
    """The data field (PLAIN) of a frame with this control byte -> dict of its fields."""
    schema = _schema_for(control)
    try:
        return _clean(schema.parse(bytes(data)))
    except ProtocolError:
        raise
    except ConstructError as exc:
        raise _wrap(exc, f"{control:02X}H {FUNCTION_NAMES[control & 0x1F]}", bytes(data)) from None
    except IndexError:  # level byte missing: password shorter than 1 byte
        raise ProtocolError("truncated", f"{control:02X}H: payload too short to hold a password") from None


def build_payload(control: int, fields: dict[str, Any] | None = None) -> bytes:
    """Fields -> the PLAIN data field for this control byte (inverse of parse_payload)."""
    schema = _schema_for(control)
    try:
        return schema.build(fields or {})
    except ProtocolError:
        raise
    except (ConstructError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise ProtocolError("value", f"{control:02X}H: cannot build payload from {fields!r}: {exc}") from None


# --------------------------------------------------------------------------------------
# Builders and parsers the head-end uses (hand-written where they sit on the hot path)


def read_request(di: int, n: int | None = None, start: datetime | None = None) -> bytes:
    """11H data: DI, optionally a block/record count N and a load-record start time."""
    if n is None and start is None:
        if di.__class__ is int and 0 <= di <= 0xFFFFFFFF:
            return di.to_bytes(4, "little")
    return build_payload(READ, {"di": di, "n": n, "start": start})


def parse_read_request(data: bytes) -> dict[str, Any]:
    """11H data -> {'di', 'n', 'start'}."""
    return parse_payload(READ, data)


def parse_read_reply(data: bytes) -> tuple[int, bytes]:
    """91H/B1H data -> (di, value bytes); decode the value with di.decode_value."""
    if len(data) < 4:
        raise ProtocolError("truncated", f"a read reply starts with a 4-byte DI, got {len(data)} byte(s)")
    return int.from_bytes(data[:4], "little"), bytes(data[4:])


def read_reply(di: int, value: bytes) -> bytes:
    """91H data: DI + value bytes."""
    if di.__class__ is not int or not 0 <= di <= 0xFFFFFFFF:
        raise ProtocolError("value", f"DI must be an int 0..FFFFFFFF, got {di!r}")
    return di.to_bytes(4, "little") + bytes(value)


def read_followup_request(di: int, seq: int) -> bytes:
    """12H data: DI + SEQ."""
    return build_payload(READ_FOLLOWUP, {"di": di, "seq": seq})


def _check_password_level(password: bytes, seq: int | None, mac: bytes | None, needs: str) -> None:
    """A 14H or 1CH password is 4 bytes, and seq + MAC travel exactly when its level is 99."""
    if len(password) != 4:
        raise ProtocolError("value", f"password is 4 bytes PA P0 P1 P2, got {password!r}")
    if (password[0] == LEVEL_MAC) != (seq is not None and mac is not None):
        raise ProtocolError("value", f"{needs} seq and mac; other levels must not carry them")


def write_request(
    di: int,
    value: bytes,
    password: bytes = b"\x04\x00\x00\x00",
    operator: int = 0,
    seq: int | None = None,
    mac: bytes | None = None,
) -> bytes:
    """14H data: DI + password + operator + value [+ seq + MAC when the password level is 99]."""
    _check_password_level(password, seq, mac, "level-99 writes need")
    return build_payload(
        WRITE, {"di": di, "password": password, "operator": operator, "value": value, "seq": seq, "mac": mac}
    )


def relay_request(
    n1: int,
    deadline: datetime,
    password: bytes = b"\x02\x00\x00\x00",
    operator: int = 0,
    seq: int | None = None,
    mac: bytes | None = None,
) -> bytes:
    """1CH data: password + operator + N1 + N2(00) + deadline (ss mm hh DD MM YY) [+ seq + MAC at level 99]."""
    _check_password_level(password, seq, mac, "level-99 control needs")
    return build_payload(
        CONTROL,
        {
            "password": password,
            "operator": operator,
            "cipher": None,
            "n1": n1,
            "n2": 0,
            "deadline": deadline,
            "seq": seq,
            "mac": mac,
        },
    )


def write_address_request(address: str, seq: int | None = None, mac: bytes | None = None) -> bytes:
    """15H data: the new address [+ session seq + MAC, addressed to the meter; plain all-AA: bench only]."""
    if (seq is None) != (mac is None):
        raise ProtocolError("value", "a MAC'd address write carries both seq and mac")
    return build_payload(WRITE_ADDRESS, {"address": address, "seq": seq, "mac": mac})


def broadcast_time_request(when: datetime) -> bytes:
    """08H data: ss mm hh DD MM YY."""
    return build_payload(BROADCAST_TIME, {"time": when})


def freeze_request(month: int | None = None, day: int | None = None, hour: int | None = None, minute: int | None = None) -> bytes:
    """16H data; None fields are the 99 wildcard (all None = instant freeze)."""
    return build_payload(FREEZE, {"time": {"month": month, "day": day, "hour": hour, "minute": minute}})


def baud_request(bps: int) -> bytes:
    """17H data: the characteristic word Z for ``bps``."""
    return build_payload(CHANGE_BAUD, {"baud": bps})


def _security(di: int, operator: int, body: dict[str, Any]) -> bytes:
    return build_payload(SECURITY, {"di": di, "operator": operator, "body": body})


def challenge_request(operator: int) -> bytes:
    """03H 070003FF: operator only, L = 8; the meter answers a fresh 8-byte challenge."""
    return _security(CHALLENGE, operator, {})


def identity_auth_request(operator: int, c1: bytes, r1: bytes, dispersion: bytes) -> bytes:
    """03H 070000FF: operator + C1(8) + R1(8) + dispersion(8), L = 32."""
    return _security(IDENTITY_AUTH, operator, {"c1": c1, "r1": r1, "dispersion": dispersion})


def set_validity_request(operator: int, minutes: int, mac: bytes) -> bytes:
    """03H 070001FF: operator + minutes (BCD) + MAC, L = 14."""
    return _security(SET_VALIDITY, operator, {"minutes": minutes, "mac": mac})


def end_session_request(operator: int, mac: bytes) -> bytes:
    """03H 070002FF: operator + MAC, L = 12."""
    return _security(END_SESSION, operator, {"mac": mac})


def recharge_request(
    operator: int, amount: int, count: int, mac1: bytes, customer: str, mac2: bytes, open_account: bool = False
) -> bytes:
    """03H 070102FF (or 070101FF to open the account): amount in fen and count binary, L = 30."""
    return _security(
        OPEN_ACCOUNT if open_account else RECHARGE,
        operator,
        {"amount": amount, "count": count, "mac1": mac1, "customer": customer, "mac2": mac2},
    )


def status_query_request(operator: int, mac: bytes) -> bytes:
    """03H 078102FF: operator + MAC, L = 12."""
    return _security(STATUS_QUERY, operator, {"mac": mac})


def key_update_request(operator: int, krn: int, wrapped: bytes, mac: bytes) -> bytes:
    """03H 070301FF: operator + new KRN + 000000 + wrapped key(16) + MAC, L = 32."""
    return _security(KEY_UPDATE, operator, {"krn": krn, "wrapped": wrapped, "mac": mac})


def describe_di(di: int) -> str:
    """'00 01 00 00' style text of a DI (for messages)."""
    return di_text(di)
