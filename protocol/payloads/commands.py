"""Commands and their replies: 08H broadcast time, 14H write, 15H write address, 16H freeze,
17H baud, 18H password, 19H/1AH/1BH clears, 1CH control, 1DH output. The level-99 forms of
14H, 15H and 1CH carry the session seq and MAC of protocol/SECURITY.md."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

from construct import Bytes, Construct, GreedyBytes, If, IfThenElse, Int8ul, Int32ul, Select, StreamError, Struct, Terminated

from protocol.errors import ProtocolError
from protocol.formats import Bcd
from protocol.frame import Address
from protocol.payloads._blocks import (
    BROADCAST_TIME,
    CHANGE_BAUD,
    CONTROL,
    DI,
    FREEZE,
    LEVEL_CIPHER,
    LEVEL_MAC,
    WRITE,
    WRITE_ADDRESS,
    AllBut,
    Deadline,
    ErrReply,
    IfMore,
    Mac,
    Operator,
    Password,
    SerrReply,
    _is_level,
    build_with,
)

__all__ = [
    "TRIP",
    "CLOSE_PERMITTED",
    "CLOSE_DIRECT",
    "TRIP_AUTO_RESTORE",
    "TRIP_AUTO_RESTORE_2",
    "ALARM",
    "ALARM_RELEASE",
    "POWER_HOLD",
    "POWER_HOLD_RELEASE",
    "N1_NAMES",
    "BAUD_RATES",
    "BroadcastTimeRequest",
    "WriteRequest",
    "WriteAddressRequest",
    "FreezeRequest",
    "ChangeBaudRequest",
    "ChangePasswordRequest",
    "ClearRequest",
    "EventClearRequest",
    "ControlRequest",
    "OutputRequest",
    "ChangeBaudReply",
    "ChangePasswordReply",
    "OutputReply",
    "ControlErrorReply",
    "write_request",
    "relay_request",
    "write_address_request",
    "broadcast_time_request",
    "freeze_request",
    "baud_request",
]

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

BAUD_RATES = {0x02: 600, 0x04: 1200, 0x08: 2400, 0x10: 4800, 0x20: 9600, 0x40: 19200}

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
        for name, _hi, _lo in self._FIELDS:
            v = obj.get(name)
            raw.append(0x99 if v is None else int(f"{v:02d}", 16))
        probe = bytes(raw)
        self._parse(io.BytesIO(probe), context, path)  # same checks both ways
        stream.write(probe)
        return obj


BroadcastTimeRequest = Struct("time" / Deadline, Terminated)

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

ChangeBaudReply = ChangeBaudRequest  # 97H echoes Z
ChangePasswordReply = Struct("new" / Password, Terminated)  # 98H
OutputReply = OutputRequest  # 9DH echoes the mode

# 1CH abnormal reply: ERR(1) normally, SERR(2) from some ESAM meters
ControlErrorReply = Select(ErrReply, SerrReply)


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
    return build_with(
        WRITE,
        WriteRequest, {"di": di, "password": password, "operator": operator, "value": value, "seq": seq, "mac": mac}
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
    return build_with(
        CONTROL,
        ControlRequest,
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
    return build_with(WRITE_ADDRESS, WriteAddressRequest, {"address": address, "seq": seq, "mac": mac})


def broadcast_time_request(when: datetime) -> bytes:
    """08H data: ss mm hh DD MM YY."""
    return build_with(BROADCAST_TIME, BroadcastTimeRequest, {"time": when})


def freeze_request(month: int | None = None, day: int | None = None, hour: int | None = None, minute: int | None = None) -> bytes:
    """16H data; None fields are the 99 wildcard (all None = instant freeze)."""
    return build_with(FREEZE, FreezeRequest, {"time": {"month": month, "day": day, "hour": hour, "minute": minute}})


def baud_request(bps: int) -> bytes:
    """17H data: the characteristic word Z for ``bps``."""
    return build_with(CHANGE_BAUD, ChangeBaudRequest, {"baud": bps})


