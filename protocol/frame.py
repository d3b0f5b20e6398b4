"""The DL/T 645-2007 frame: canonical construct schema and the head-end's fast codec.

Theory of operation
-------------------
``FrameSchema`` below is the readable, canonical definition of a frame::

    [FE ...] 68 A0..A5 68 C L DATA(L bytes, each +33H) CS 16

The head-end parses and builds tens of thousands of frames a second, which construct's
interpreter cannot do, so ``parse_frame``/``build_frame`` are a hand-checked codec that
performs exactly the same checks in exactly the same order (tests/protocol prove the two
agree on every golden vector and on random input, down to the error reason).  The fast path
first tries the common case (a sound frame) with a handful of comparisons; anything that
fails falls through to ``_diagnose``, which walks the frame in schema order and names the
first fault.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from construct import (
    Adapter,
    Bytes,
    Checksum,
    ChecksumError,
    Const,
    ConstError,
    ConstructError,
    GreedyBytes,
    GreedyRange,
    Int8ul,
    Prefixed,
    RawCopy,
    StreamError,
    Struct,
    Terminated,
    TerminatedError,
    this,
)

from protocol.cache import remember
from protocol.errors import ProtocolError

__all__ = [
    "Frame",
    "FrameSchema",
    "FrameBody",
    "build_frame",
    "parse_frame",
    "schema_parse",
    "schema_build",
    "address_to_wire",
    "address_from_wire",
    "BROADCAST",
    "WILDCARD",
]

START = 0x68
END = 0x16
WAKE = 0xFE
OFFSET = 0x33
MAX_PREAMBLE = 4  # DL/T 645: the master sends 0..4 FE; receivers skip any number
BROADCAST = "999999999999"
WILDCARD = "AAAAAAAAAAAA"

_PLUS33 = bytes((b + OFFSET) & 0xFF for b in range(256))
_MINUS33 = bytes((b - OFFSET) & 0xFF for b in range(256))


# --------------------------------------------------------------------------------------
# Address: 6 BCD bytes low byte first on the wire; shown high digit first, AA = wildcard


def _check_address_text(text: str) -> None:
    """Raise unless ``text`` is 12 BCD digits, with optional AA wildcard bytes at the high end."""
    if len(text) != 12:
        raise ProtocolError(
            "address", f"address {text!r} must be 12 characters (6 bytes, high digit first), e.g. '123456789012'"
        )
    seen_digits = False
    for k in range(0, 12, 2):
        pair = text[k : k + 2]
        if pair == "AA":
            if seen_digits:
                raise ProtocolError(
                    "address",
                    f"address {text!r}: wildcard AA bytes may only fill the high bytes (e.g. 'AAAAAAAA9012')",
                )
        elif pair.isdigit() and pair.isascii():
            seen_digits = True
        else:
            raise ProtocolError(
                "address", f"address {text!r}: byte {pair!r} is neither two BCD digits nor the AA wildcard"
            )


_TO_WIRE: OrderedDict[str, bytes] = OrderedDict()
_FROM_WIRE: OrderedDict[bytes, str] = OrderedDict()
# The caches only spare re-validating an address.  Sized for a large fleet (a few MB when full);
# past that the oldest entry makes room (protocol.cache): clearing the whole cache would make every
# meter of a fleet just over the size pay the check again on every frame.
_CACHE_MAX = 1 << 17


def address_to_wire(address: str) -> bytes:
    """'123456789012' -> b'\\x12\\x90\\x78\\x56\\x34\\x12' (wire order, low byte first)."""
    wire = _TO_WIRE.get(address)
    if wire is not None:
        return wire
    if not isinstance(address, str):
        raise ProtocolError("address", f"address must be a str of 12 characters, not {type(address).__name__}")
    text = address.upper()
    _check_address_text(text)
    wire = bytes.fromhex(text)[::-1]
    remember(_TO_WIRE, address, wire, _CACHE_MAX)
    return wire


def address_from_wire(wire: bytes) -> str:
    """6 wire bytes (low byte first) -> '123456789012'; raises ProtocolError('address') if not BCD/AA."""
    text = _FROM_WIRE.get(wire)
    if text is not None:
        return text
    text = bytes(wire)[::-1].hex().upper()
    if len(text) != 12:
        raise ProtocolError("address", f"address field must be 6 bytes, got {len(wire)}")
    _check_address_text(text)
    remember(_FROM_WIRE, bytes(wire), text, _CACHE_MAX)
    return text


# --------------------------------------------------------------------------------------
# The frame value


@dataclass(frozen=True, slots=True)
class Frame:
    """One DL/T 645 frame. ``data`` is PLAIN (the +33H already removed)."""

    address: str
    control: int
    data: bytes = b""
    preamble: int = 0

    @property
    def function(self) -> int:
        """Function code, D4..D0 of the control byte (0x11 = read ...)."""
        return self.control & 0x1F

    @property
    def is_reply(self) -> bool:
        """D7: set on frames sent by the meter."""
        return bool(self.control & 0x80)

    @property
    def is_abnormal(self) -> bool:
        """D6: set on error replies (data is ERR, or SERR for 03H)."""
        return bool(self.control & 0x40)

    @property
    def has_more(self) -> bool:
        """D5: follow-up frames exist (or, on 2013 meters, events are pending)."""
        return bool(self.control & 0x20)

    def to_bytes(self, preamble: int | None = None) -> bytes:
        """The frame on the wire (with ``preamble`` FE, default: as parsed)."""
        return build_frame(self.address, self.control, self.data, self.preamble if preamble is None else preamble)


# --------------------------------------------------------------------------------------
# Canonical construct schema


class Offset33(Adapter):
    """Data bytes travel with 0x33 added to each byte (mod 256)."""

    def _decode(self, obj, context, path):
        return bytes(obj).translate(_MINUS33)

    def _encode(self, obj, context, path):
        return bytes(obj).translate(_PLUS33)


class Address(Adapter):
    """Six BCD bytes sent low byte first, shown high digit first; AA bytes are wildcards."""

    def _decode(self, obj, context, path):
        return address_from_wire(obj)

    def _encode(self, obj, context, path):
        return address_to_wire(obj)


class Preamble(Adapter):
    """Wake-up FE bytes: any number accepted, 0..4 sent; the value is their count."""

    def _decode(self, obj, context, path):
        return len(obj)

    def _encode(self, obj, context, path):
        if not isinstance(obj, int) or isinstance(obj, bool) or not 0 <= obj <= MAX_PREAMBLE:
            raise ProtocolError("preamble", f"preamble must be 0..{MAX_PREAMBLE} FE bytes, got {obj!r}")
        return [b"\xfe"] * obj


FrameBody = Struct(
    "start" / Const(b"\x68"),
    "address" / Address(Bytes(6)),
    "start2" / Const(b"\x68"),
    "control" / Int8ul,
    "data" / Prefixed(Int8ul, Offset33(GreedyBytes)),  # L counts the data bytes
)

FrameSchema = Struct(
    "preamble" / Preamble(GreedyRange(Const(b"\xfe"))),
    "body" / RawCopy(FrameBody),
    # CS: sum mod 256 of every byte from the first 68 through the last (+33H) data byte; FE excluded
    "checksum" / Checksum(Int8ul, lambda raw: sum(raw) & 0xFF, this.body.data),
    "end" / Const(b"\x16"),
    Terminated,
)


def _schema_error(exc: ConstructError, raw: bytes) -> ProtocolError:
    """Translate a construct error into the package's error, naming the field."""
    path = getattr(exc, "path", "") or ""
    if isinstance(exc, ChecksumError):
        return _err_checksum(raw)
    if isinstance(exc, TerminatedError):
        return ProtocolError("length", "bytes follow the 16H terminator; pass exactly one frame (L sets its end)")
    if isinstance(exc, StreamError):
        return ProtocolError("truncated", f"frame ends early (at {path or 'the header'}); wait for the rest or check L")
    if isinstance(exc, ConstError):
        if "end" in path:
            return ProtocolError("terminator", "frame must end with 16H at the position L gives; check L and the tail")
        return ProtocolError("start", "frame must start with 68H (after any FE), and repeat 68H after the address")
    return ProtocolError("value", f"malformed frame at {path}: {exc}")


def _err_checksum(raw: bytes) -> ProtocolError:
    return ProtocolError("checksum", "checksum mismatch (sum of 68..data mod 256, FE excluded); the frame is corrupt, ask again")


def schema_parse(raw: bytes) -> Frame:
    """Parse with the canonical construct schema (slow; the reference for ``parse_frame``)."""
    raw = bytes(raw)
    try:
        c: Any = FrameSchema.parse(raw)  # a construct Container (construct's types say Optional)
    except ProtocolError:
        raise
    except ConstructError as exc:
        raise _schema_error(exc, raw) from None
    body = c.body.value
    return Frame(body.address, body.control, body.data, c.preamble)


def schema_build(address: str, control: int, data: bytes = b"", preamble: int = 4) -> bytes:
    """Build with the canonical construct schema (slow; the reference for ``build_frame``)."""
    _check_build_args(control, data)
    try:
        return FrameSchema.build(
            {"preamble": preamble, "body": {"value": {"address": address, "control": control, "data": bytes(data)}}}
        )
    except ProtocolError:
        raise
    except ConstructError as exc:
        raise ProtocolError("value", f"cannot build frame: {exc}") from None


# --------------------------------------------------------------------------------------
# Fast path (same checks, same order, as FrameSchema)


def _check_build_args(control: int, data) -> None:
    if not isinstance(control, int) or isinstance(control, bool) or not 0 <= control <= 0xFF:
        raise ProtocolError("control", f"control byte must be an int 0..255, got {control!r}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError("value", f"data must be bytes (plain, before +33H), not {type(data).__name__}")
    if len(data) > 255:
        raise ProtocolError("length", f"data is {len(data)} bytes; L is one byte, so at most 255 (meters take <= 200)")


def _diagnose(raw: bytes, i: int) -> ProtocolError:
    """Name the first fault of a frame whose body starts at ``raw[i]``, in schema order."""
    n = len(raw)
    if i >= n:
        return ProtocolError("truncated", f"no 68H start byte (got {i} FE and nothing else); wait for the frame")
    if raw[i] != START:
        return ProtocolError("start", f"frame must start with 68H after the FE preamble, got {raw[i]:02X}H at byte {i}")
    if n < i + 7:
        return ProtocolError("truncated", f"frame ends inside the address ({n - i} bytes after FE); wait for the rest")
    try:
        address_from_wire(raw[i + 1 : i + 7])
    except ProtocolError as exc:
        return exc
    if n < i + 8:
        return ProtocolError("truncated", "frame ends before the second 68H; wait for the rest")
    if raw[i + 7] != START:
        return ProtocolError("start", f"second 68H missing after the address (got {raw[i + 7]:02X}H at byte {i + 7})")
    if n < i + 10:
        return ProtocolError("truncated", "frame ends before the control and length bytes; wait for the rest")
    length = raw[i + 9]
    end = i + 12 + length
    if n < end - 2:
        return ProtocolError(
            "truncated", f"L={length} but only {n - i - 10} data bytes arrived; wait for the rest or check L"
        )
    if n < end - 1:
        return ProtocolError("truncated", "frame ends before the checksum byte; wait for the rest")
    if sum(raw[i : end - 2]) & 0xFF != raw[end - 2]:
        return _err_checksum(raw)
    if n < end:
        return ProtocolError("truncated", "frame ends before the 16H terminator; wait for the rest")
    if raw[end - 1] != END:
        return ProtocolError(
            "terminator", f"expected 16H at byte {end - 1} (where L={length} puts the end), got {raw[end - 1]:02X}H"
        )
    return ProtocolError(
        "length", f"{n - end} byte(s) follow the 16H terminator; pass exactly one frame (L={length} sets its end)"
    )


# A frozen dataclass's __init__ sets each field through object.__setattr__, which is a third of
# the cost of parsing a frame; the hot path fills the slots directly instead (same object).
_new_frame = object.__new__
_set_address = Frame.address.__set__  # type: ignore[attr-defined]
_set_control = Frame.control.__set__  # type: ignore[attr-defined]
_set_data = Frame.data.__set__  # type: ignore[attr-defined]
_set_preamble = Frame.preamble.__set__  # type: ignore[attr-defined]


def parse_frame(raw: bytes | bytearray | memoryview) -> Frame:
    """Parse one whole frame: FE*, 68, address, 68, C, L, data, CS, 16. Raises ProtocolError."""
    if not isinstance(raw, bytes):
        if not isinstance(raw, (bytearray, memoryview)):
            raise ProtocolError("value", f"parse_frame needs bytes, not {type(raw).__name__}")
        raw = bytes(raw)
    i = 0
    if raw[:1] == b"\xfe":
        i = len(raw) - len(raw.lstrip(b"\xfe"))
    n = len(raw)
    if n >= i + 12 and raw[i] == START and raw[i + 7] == START:
        end = i + 12 + raw[i + 9]
        if n == end and raw[end - 1] == END and sum(raw[i : end - 2]) & 0xFF == raw[end - 2]:
            wire = raw[i + 1 : i + 7]
            address = _FROM_WIRE.get(wire)
            if address is None:
                address = address_from_wire(wire)
            frame = _new_frame(Frame)
            _set_address(frame, address)
            _set_control(frame, raw[i + 8])
            _set_data(frame, raw[i + 10 : end - 2].translate(_MINUS33))
            _set_preamble(frame, i)
            return frame
    raise _diagnose(raw, i)


def build_frame(address: str, control: int, data: bytes | bytearray | memoryview = b"", preamble: int = 4) -> bytes:
    """Build one frame; ``data`` is PLAIN (the +33H is added here)."""
    wire = _TO_WIRE.get(address)
    if wire is None:
        wire = address_to_wire(address)
    if control.__class__ is not int or not 0 <= control <= 0xFF or len(data) > 255:
        _check_build_args(control, data)
    if preamble.__class__ is not int or not 0 <= preamble <= MAX_PREAMBLE:
        raise ProtocolError("preamble", f"preamble must be 0..{MAX_PREAMBLE} FE bytes, got {preamble!r}")
    if not isinstance(data, bytes):
        _check_build_args(control, data)
        data = bytes(data)
    body = b"\x68" + wire + bytes((0x68, control, len(data))) + data.translate(_PLUS33)
    return b"\xfe" * preamble + body + bytes((sum(body) & 0xFF, END))
