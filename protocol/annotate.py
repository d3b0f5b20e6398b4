"""Frames explained for people: address, direction, function, DI, values with units, flags.

``describe(raw)`` returns a structured account of one frame; ``annotate(raw)`` renders it as
text (``headend decode`` prints it).  A frame whose checksum is wrong is still taken apart
(marked untrusted) so an operator can see what was meant; any other fault is reported with
the reason from ``ProtocolError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from protocol import di as di_mod
from protocol import payloads
from protocol.errors import ProtocolError
from protocol.formats import DateTimeWeek, DateWeek, SlotEntry, ZoneEntry
from protocol.frame import BROADCAST, Frame, parse_frame

__all__ = ["Description", "describe", "annotate", "parse_hex", "format_value"]

_HEX_JUNK = re.compile(r"0x|[\s,:;-]", re.IGNORECASE)


def parse_hex(text: str) -> bytes:
    """'FE FE 68 ...' (spaces, commas, colons, 0x prefixes allowed) -> bytes; ProtocolError if not hex."""
    compact = _HEX_JUNK.sub("", text)
    if not compact:
        raise ProtocolError("value", "no hex digits given; pass a frame like 'FE FE 68 12 90 ... 16'")
    bad = re.search(r"[^0-9a-fA-F]", compact)
    if bad:
        raise ProtocolError("value", f"{bad.group()!r} is not a hex digit; write the frame as hex bytes, e.g. '68 AA ...'")
    if len(compact) % 2:
        raise ProtocolError("value", f"odd number of hex digits ({len(compact)}); every byte needs two digits")
    return bytes.fromhex(compact)


@dataclass
class Description:
    """One frame, taken apart. ``error`` is set when the frame is unsound (``trusted`` False);
    ``rejected`` holds what was wrong inside a sound frame (a payload or value that does not decode)."""

    raw: bytes
    frame: Frame | None = None
    error: ProtocolError | None = None
    checksum: str = ""
    trusted: bool = False
    lines: list[tuple[str, str]] = field(default_factory=list)
    rejected: list[ProtocolError] = field(default_factory=list)

    def add(self, key: str, text: str) -> None:
        self.lines.append((key, text))

    @property
    def sound(self) -> bool:
        """The frame and everything in it decoded."""
        return self.error is None and not self.rejected


def format_value(value: Any, unit: str = "") -> str:
    """A decoded value as text, with its unit."""
    suffix = f" {unit}" if unit else ""
    if isinstance(value, di_mod.UnknownValue):
        return f"{bytes(value).hex(' ').upper() or '(empty)'} (raw bytes: DI not in the registry)"
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex(" ").upper() or "(empty)"
    if isinstance(value, DateTimeWeek):
        return f"{value.datetime.isoformat(' ')} (weekday {value.weekday}, 0 = Sunday)"
    if isinstance(value, DateWeek):
        return f"{value.date.isoformat()} (weekday {value.weekday}, 0 = Sunday)"
    if isinstance(value, SlotEntry):
        return f"{value.hour:02d}:{value.minute:02d} tariff {value.tariff}"
    if isinstance(value, ZoneEntry):
        return f"{value.month:02d}-{value.day:02d} day table {value.table}"
    if isinstance(value, datetime):
        return value.isoformat(" ")
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return f"{value}{suffix}"
    if isinstance(value, list):
        return "; ".join(format_value(v, unit) for v in value) or "(none)"
    if isinstance(value, dict):
        return ", ".join(f"{k}={format_value(v, unit if isinstance(v, Decimal) else '')}" for k, v in value.items())
    if value is None:
        return "-"
    return f"{value}{suffix}"


def _direction(frame: Frame) -> str:
    if not frame.is_reply:
        where = " (broadcast, no reply expected)" if frame.address == BROADCAST else ""
        return f"master -> meter (request){where}"
    kind = "abnormal reply" if frame.is_abnormal else "normal reply"
    more = ", follow-up flag set (more data or pending events)" if frame.has_more else ""
    return f"meter -> master ({kind}{more})"


def _di_line(desc: Description, di: int) -> di_mod.DataItem | None:
    item = di_mod.lookup(di)
    if item is None:
        desc.add("DI", f"{di_mod.di_text(di)}  (unknown DI: not in the registry)")
    else:
        unit = f", {item.unit}" if item.unit else ""
        desc.add("DI", f"{di_mod.di_text(di)}  {item.name} ({item.title}; {item.fmt.picture}{unit}, access {item.access})")
    return item


def _value_lines(desc: Description, di: int, value_bytes: bytes) -> None:
    try:
        reading = di_mod.decode(di, value_bytes)
    except ProtocolError as exc:
        desc.rejected.append(exc)
        desc.add("value", f"{value_bytes.hex(' ').upper()}  NOT DECODED: {exc}")
        return
    unit = reading.item.unit if reading.item else ""
    if reading.item and reading.item.name.startswith("status_word_") and isinstance(reading.value, int):
        desc.add("value", f"{reading.value:04X}H")
        desc.add("flags", ", ".join(di_mod.status_flags(di, reading.value)) or "(none)")
    else:
        desc.add("value", format_value(reading.value, unit))


def _payload_lines(desc: Description, frame: Frame) -> None:
    fn = frame.function
    data = frame.data
    try:
        fields = payloads.parse_payload(frame.control, data)
    except ProtocolError as exc:
        desc.rejected.append(exc)
        desc.add("payload", f"{data.hex(' ').upper() or '(empty)'}  NOT DECODED ({exc.reason}): {exc}")
        return
    if frame.is_abnormal:
        if "serr" in fields:
            flags = payloads.decode_serr(fields["serr"])
            desc.add("error", f"SERR {fields['serr']:04X}H: {', '.join(flags) or '(no bit set)'}")
        else:
            flags = payloads.decode_err(fields["err"])
            desc.add("error", f"ERR {fields['err']:02X}H: {', '.join(flags) or '(no bit set)'}")
        return
    if not fields:
        desc.add("data", "(none)" if not data else data.hex(" ").upper())
        return
    if fn in (payloads.READ, payloads.READ_FOLLOWUP) and frame.is_reply:
        _di_line(desc, fields["di"])
        _value_lines(desc, fields["di"], fields["value"])
        if "seq" in fields:
            desc.add("seq", str(fields["seq"]))
        return
    if fn == payloads.WRITE:
        _di_line(desc, fields["di"])
        desc.add("password", f"{fields['password'].hex(' ').upper()} (level {fields['password'][0]:02X})")
        desc.add("operator", f"{fields['operator']:08X}")
        _value_lines(desc, fields["di"], fields["value"])
        if fields.get("seq") is not None:
            desc.add("seq", str(fields["seq"]))
            desc.add("mac", fields["mac"].hex(" ").upper())
        return
    for key, value in fields.items():
        if key == "di":
            _di_line(desc, value)
        elif key == "n1" and value is not None:
            desc.add("N1", f"{value:02X}H {payloads.N1_NAMES[value]}")
        elif key == "operator":
            desc.add(key, f"{value:08X}")
        elif key == "body" and isinstance(value, dict):
            for k, v in value.items():
                if k == "unknown":
                    desc.add("body", "(03H sub-command not in protocol/SECURITY.md: raw bytes)")
                elif k in ("amount", "balance"):
                    desc.add(k, f"{v} fen ({Decimal(v).scaleb(-2)} yuan)")
                else:
                    desc.add(k, format_value(v))
        elif key == "time" and isinstance(value, dict):
            desc.add("freeze", _freeze_text(value))
        elif value is not None:
            desc.add(key, format_value(value, "bps" if key == "baud" else ""))


def _freeze_text(t: dict) -> str:
    parts = [t["month"], t["day"], t["hour"], t["minute"]]
    kind = {4: "instant", 3: "hourly", 2: "daily", 1: "monthly", 0: "once"}[sum(p is None for p in parts)]
    shown = ["99" if p is None else f"{p:02d}" for p in parts]
    return f"{kind} freeze (MMDDhhmm {''.join(shown)})"


def describe(raw: bytes) -> Description:
    """Take one frame apart; never raises for bad frames (the fault goes in ``error``)."""
    desc = Description(raw=bytes(raw))
    try:
        frame = parse_frame(raw)
        desc.trusted = True
    except ProtocolError as exc:
        desc.error = exc
        if exc.reason != "checksum":
            return desc
        frame = _parse_ignoring_checksum(bytes(raw))
        if frame is None:
            return desc
    desc.frame = frame
    body = bytes(raw).lstrip(b"\xfe")
    end = 12 + body[9]
    said, real = body[end - 2], sum(body[: end - 2]) & 0xFF
    desc.checksum = f"OK ({said:02X}H)" if said == real else f"WRONG: frame says {said:02X}H, the bytes sum to {real:02X}H"
    desc.add("address", _address_text(frame.address))
    desc.add("direction", _direction(frame))
    fn_name = payloads.FUNCTION_NAMES.get(frame.function, "unknown function")
    desc.add("function", f"{frame.function:02X}H {fn_name} (control {frame.control:02X}H, L={len(frame.data)})")
    _payload_lines(desc, frame)
    desc.add("checksum", desc.checksum)
    return desc


def _address_text(address: str) -> str:
    if address == BROADCAST:
        return f"{address} (broadcast)"
    if "AA" in address:
        return f"{address} (wildcard)"
    return address


def _parse_ignoring_checksum(raw: bytes) -> Frame | None:
    i = len(raw) - len(raw.lstrip(b"\xfe"))
    body = bytearray(raw[i:])
    end = 12 + body[9]
    body[end - 2] = sum(body[: end - 2]) & 0xFF
    try:
        return parse_frame(bytes(body))
    except ProtocolError:
        return None


def annotate(raw: bytes) -> str:
    """Human-readable, multi-line account of one frame (see ``describe``)."""
    desc = describe(raw)
    out = [raw.hex(" ").upper()]
    if desc.error is not None and desc.frame is None:
        out.append(f"  INVALID ({desc.error.reason}): {desc.error}")
        return "\n".join(out)
    if not desc.trusted:
        out.append("  UNTRUSTED: checksum wrong; fields below are what the corrupt frame would say")
    width = max(len(k) for k, _ in desc.lines)
    out += [f"  {k:<{width}}  {v}" for k, v in desc.lines]
    return "\n".join(out)
