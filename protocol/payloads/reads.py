"""Reads: 11H read data, 12H follow-up, 13H read address, and their replies.

The two payloads on the head-end's hot path (read request and read reply) also have hand
builders/parsers here, tested byte-identical to the schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from construct import Bytes, GreedyBytes, Int8ul, Struct, Terminated

from protocol.errors import ProtocolError
from protocol.formats import Bcd, Clock
from protocol.frame import Address
from protocol.payloads._blocks import DI, READ, AllBut, IfMore, _Fmt, build_with, parse_with

__all__ = [
    "ReadRequest",
    "ReadFollowupRequest",
    "ReadReply",
    "ReadFollowupReply",
    "ReadAddressReply",
    "read_request",
    "parse_read_request",
    "parse_read_reply",
    "read_reply",
]

ReadRequest = Struct(
    "di" / DI,
    "n" / IfMore(_Fmt(Bcd("NN"))),  # block / record count
    "start" / IfMore(_Fmt(Clock("YYMMDDhhmm", zero_is_unset=False))),  # load-record start time, mm hh DD MM YY
    Terminated,
)

ReadFollowupRequest = Struct("di" / DI, "seq" / Int8ul, Terminated)


ReadReply = Struct("di" / DI, "value" / GreedyBytes)  # 91H / B1H; L sets the value length
ReadFollowupReply = Struct("di" / DI, "value" / AllBut(1), "seq" / Int8ul)  # 92H / B2H, SEQ echoed last
ReadAddressReply = Struct("address" / Address(Bytes(6)), Terminated)  # 93H


def read_request(di: int, n: int | None = None, start: datetime | None = None) -> bytes:
    """11H data: DI, optionally a block/record count N and a load-record start time."""
    if n is None and start is None:
        if di.__class__ is int and 0 <= di <= 0xFFFFFFFF:
            return di.to_bytes(4, "little")
    return build_with(READ, ReadRequest, {"di": di, "n": n, "start": start})


def parse_read_request(data: bytes) -> dict[str, Any]:
    """11H data -> {'di', 'n', 'start'}."""
    return parse_with(READ, ReadRequest, data)


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


