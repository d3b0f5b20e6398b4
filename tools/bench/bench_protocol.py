"""Frame codec speed: parse and build of a read-energy reply, frames/s on one core.

Compared, in the same run, against a hand-written struct codec (the baseline) that performs
the same checks: start bytes, L, checksum, terminator, BCD address, -33H.  Figures:

* construct schema, plain (``FrameSchema.parse/build``);
* construct schema, compiled (``FrameSchema.compile()``), only if a probe shows the compiled
  parser still rejects every fault (checksum, terminator, start, length, address);
* the fast path the head-end uses (``parse_frame``/``build_frame``);
* the fast path plus payload split and value decode to Decimal (what a reading costs).
"""

from __future__ import annotations

import struct
import time
from typing import Callable

from construct import Bytes, Const, ConstructError, Int8ul, Struct, Terminated, this

from protocol import ProtocolError, build_frame, di, parse_frame, payloads
from protocol.frame import FrameSchema, address_from_wire

ADDRESS = "123456789012"
DATA = bytes.fromhex("00000100") + bytes.fromhex("56341200")  # 00010000 forward active total = 1234.56 kWh
REPLY = build_frame(ADDRESS, 0x91, DATA, 0)

_PLUS = bytes((b + 0x33) & 0xFF for b in range(256))
_MINUS = bytes((b - 0x33) & 0xFF for b in range(256))
_HEADER = struct.Struct("<B6sBBB")


def baseline_parse(raw: bytes) -> tuple[str, int, bytes]:
    """Hand-written struct codec, all checks kept (portable style, no caches)."""
    i = 0
    while i < len(raw) and raw[i] == 0xFE:
        i += 1
    if len(raw) - i < 12:
        raise ValueError("truncated")
    start, addr, start2, control, length = _HEADER.unpack_from(raw, i)
    if start != 0x68 or start2 != 0x68:
        raise ValueError("start")
    end = i + 12 + length
    if len(raw) != end:
        raise ValueError("length")
    if raw[end - 1] != 0x16:
        raise ValueError("terminator")
    if sum(raw[i : end - 2]) & 0xFF != raw[end - 2]:
        raise ValueError("checksum")
    text = addr[::-1].hex()
    if not text.isdigit():
        raise ValueError("address")
    return text, control, raw[i + 10 : end - 2].translate(_MINUS)


def baseline_build(address: str, control: int, data: bytes, preamble: int = 0) -> bytes:
    if len(address) != 12 or not address.isdigit():
        raise ValueError("address")
    body = _HEADER.pack(0x68, bytes.fromhex(address)[::-1], 0x68, control, len(data)) + data.translate(_PLUS)
    return b"\xfe" * preamble + body + bytes((sum(body) & 0xFF, 0x16))


# A flat schema construct can compile fully (no adapters, RawCopy or Checksum), plus glue that
# performs the checks the flat schema cannot express: FE skipping, checksum, BCD address, -33H.
FlatFrame = Struct(
    "start" / Const(b"\x68"),
    "address" / Bytes(6),
    "start2" / Const(b"\x68"),
    "control" / Int8ul,
    "length" / Int8ul,
    "data" / Bytes(this.length),
    "checksum" / Int8ul,
    "end" / Const(b"\x16"),
    Terminated,
)
FLAT_COMPILED = FlatFrame.compile()


def flat_compiled_parse(raw: bytes) -> tuple[str, int, bytes]:
    """Compiled flat construct schema plus glue checks."""
    body = raw.lstrip(b"\xfe")
    try:
        c = FLAT_COMPILED.parse(body)
    except (ConstructError, struct.error) as exc:  # compiled code leaks struct.error on short input
        raise ProtocolError("value", f"malformed frame: {exc}") from None
    if sum(body[:-2]) & 0xFF != c.checksum:
        raise ProtocolError("checksum", "checksum mismatch")
    return address_from_wire(c.address), c.control, c.data.translate(_MINUS)


def flat_compiled_build(address: str, control: int, data: bytes) -> bytes:
    wire = bytes.fromhex(address)[::-1]
    address_from_wire(wire)
    body = b"\x68" + wire + bytes((0x68, control, len(data))) + data.translate(_PLUS)
    return FLAT_COMPILED.build(
        {"address": wire, "control": control, "length": len(data), "data": data.translate(_PLUS), "checksum": sum(body) & 0xFF}
    )


def _rate(fn: Callable[[], object], seconds: float = 0.4) -> float:
    """Best of three timed runs, in calls per second."""
    n = 1000
    while True:  # size the loop so one run lasts about `seconds`
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt > 0.05:
            break
        n *= 4
    n = max(1, int(n * seconds / dt))
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = max(best, n / (time.perf_counter() - t0))
    return best


def _faulty_frames() -> list[bytes]:
    bad_cs = bytearray(REPLY)
    bad_cs[-2] ^= 1
    bad_end = REPLY[:-1] + b"\x17"
    bad_start = b"\x69" + REPLY[1:]
    bad_addr = bytearray(REPLY)
    bad_addr[2] = 0x9A
    bad_addr[-2] = sum(bad_addr[:-2]) & 0xFF
    return [bytes(bad_cs), bad_end, bad_start, bytes(bad_addr), REPLY + b"\x00", REPLY[:-3]]


def compiled_is_safe(compiled) -> bool:
    """True if the compiled schema parses the good frame alike and rejects every fault."""
    if compiled.parse(REPLY).body.value.data != DATA:
        return False
    for raw in _faulty_frames():
        try:
            compiled.parse(raw)
        except (ConstructError, ProtocolError):
            continue
        return False
    return True


def _schema_build_args() -> dict:
    return {"preamble": 0, "body": {"value": {"address": ADDRESS, "control": 0x91, "data": DATA}}}


def run(report: Callable[..., None]) -> None:
    for raw in _faulty_frames():  # the baseline must really check what the others check
        try:
            baseline_parse(raw)
        except ValueError:
            continue
        raise AssertionError("baseline accepted a faulty frame")
    assert baseline_parse(REPLY) == (ADDRESS, 0x91, DATA) and baseline_build(ADDRESS, 0x91, DATA) == REPLY
    assert parse_frame(REPLY).data == DATA and build_frame(ADDRESS, 0x91, DATA, 0) == REPLY
    assert FrameSchema.build(_schema_build_args()) == REPLY

    base_parse = _rate(lambda: baseline_parse(REPLY))
    base_build = _rate(lambda: baseline_build(ADDRESS, 0x91, DATA))
    report("protocol parse: hand-written struct baseline", base_parse, "frames/s", base_parse)
    report("protocol build: hand-written struct baseline", base_build, "frames/s", base_build)

    args = _schema_build_args()
    report("protocol parse: construct schema (plain)", _rate(lambda: FrameSchema.parse(REPLY), 0.3), "frames/s", base_parse)
    report("protocol build: construct schema (plain)", _rate(lambda: FrameSchema.build(args), 0.3), "frames/s", base_build)

    compiled = FrameSchema.compile()
    if compiled_is_safe(compiled):
        report("protocol parse: construct schema (compiled)", _rate(lambda: compiled.parse(REPLY), 0.3), "frames/s", base_parse)
        report("protocol build: construct schema (compiled)", _rate(lambda: compiled.build(args), 0.3), "frames/s", base_build)
    else:
        print("  (compiled construct schema skips checks: not measured)")

    for raw in _faulty_frames():
        try:
            flat_compiled_parse(raw)
        except ProtocolError:
            continue
        raise AssertionError("flat compiled schema + glue accepted a faulty frame")
    assert flat_compiled_parse(REPLY) == (ADDRESS, 0x91, DATA) and flat_compiled_build(ADDRESS, 0x91, DATA) == REPLY
    report("protocol parse: construct flat schema compiled + glue", _rate(lambda: flat_compiled_parse(REPLY)), "frames/s", base_parse)
    report(
        "protocol build: construct flat schema compiled + glue",
        _rate(lambda: flat_compiled_build(ADDRESS, 0x91, DATA)),
        "frames/s",
        base_build,
    )

    report("protocol parse: fast path parse_frame", _rate(lambda: parse_frame(REPLY)), "frames/s", base_parse)
    report("protocol build: fast path build_frame", _rate(lambda: build_frame(ADDRESS, 0x91, DATA, 0)), "frames/s", base_build)

    def reading() -> object:
        frame = parse_frame(REPLY)
        code, value = payloads.parse_read_reply(frame.data)
        return di.decode_value(code, value)

    assert str(reading()) == "1234.56"
    report("protocol parse+decode reading: fast path to Decimal", _rate(reading), "frames/s", base_parse)
    report(
        "protocol build read request: read_request + build_frame",
        _rate(lambda: build_frame(ADDRESS, 0x11, payloads.read_request(0x00010000))),
        "frames/s",
        base_build,
    )
