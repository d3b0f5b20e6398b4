"""Frame codec speed: parse and build of a read-energy reply, frames/s on one core.

Compared, in the same run, against a hand-written struct codec (the baseline) that performs
the same checks: start bytes, L, checksum, terminator, BCD address, -33H.  Figures:

* construct schema, plain (``FrameSchema.parse/build``);
* construct schema, compiled (``FrameSchema.compile()``), only if a probe shows the compiled
  parser still rejects every fault (checksum, terminator, start, length, address);
* the fast path the head-end uses (``parse_frame``/``build_frame``);
* the fast path plus payload split and value decode to Decimal (what a reading costs);
* the deframer cutting replies (with FE preamble) out of a stream fed in 64-byte chunks.
"""

from __future__ import annotations

import struct
import time
from typing import Callable

from construct import Bytes, Const, ConstructError, Int8ul, Struct, Terminated, this

from protocol import Deframer, ProtocolError, build_frame, di, parse_frame, payloads
from protocol.frame import FrameSchema, address_from_wire
from tools.bench.interleave import Interleaved, interleaved

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


def _loops(fn: Callable[[], object], seconds: float) -> int:
    """How many calls of fn take about ``seconds``."""
    n = 200
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt > 0.02:
            return max(1, int(n * seconds / dt))
        n *= 4


def _pairs(fn: Callable[[], object], base: Callable[[], object], seconds: float = 0.08, rounds: int = 7,
           per_call: int = 1) -> Interleaved:
    """Calls/s of ``fn`` (x ``per_call`` frames) against ``base``, interleaved (A, B, A, B ...),
    each side a short window."""
    n_a, n_b = _loops(fn, seconds), _loops(base, seconds)

    def many(f: Callable[[], object], n: int) -> Callable[[], None]:
        def go() -> None:
            for _ in range(n):
                f()
        return go

    return interleaved(many(fn, n_a), many(base, n_b), rounds=rounds, work_a=n_a * per_call, work_b=n_b)


def _replies(count: int) -> list[bytes]:
    """Read-energy replies from ``count`` distinct meter addresses."""
    return [build_frame(f"{i:012d}", 0x91, DATA, 0) for i in range(1, count + 1)]


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

    args = _schema_build_args()
    compiled = FrameSchema.compile()
    safe = compiled_is_safe(compiled)
    for raw in _faulty_frames():
        try:
            flat_compiled_parse(raw)
        except ProtocolError:
            continue
        raise AssertionError("flat compiled schema + glue accepted a faulty frame")
    assert flat_compiled_parse(REPLY) == (ADDRESS, 0x91, DATA) and flat_compiled_build(ADDRESS, 0x91, DATA) == REPLY

    def reading() -> object:
        frame = parse_frame(REPLY)
        code, value = payloads.parse_read_reply(frame.data)
        return di.decode_value(code, value)

    assert str(reading()) == "1234.56"

    stream = b"".join(build_frame(ADDRESS, 0x91, DATA, 4) for _ in range(100))
    chunks = [stream[k : k + 64] for k in range(0, len(stream), 64)]

    def deframe() -> int:
        d = Deframer()
        got = 0
        for chunk in chunks:
            d.feed(chunk)
            for _ in d.frames():
                got += 1
        return got

    assert deframe() == 100

    parse = {
        "hand-written struct baseline": lambda: baseline_parse(REPLY),
        "construct schema (plain)": lambda: FrameSchema.parse(REPLY),
        "construct flat schema compiled + glue": lambda: flat_compiled_parse(REPLY),
        "fast path parse_frame": lambda: parse_frame(REPLY),
        "fast path parse_frame + DI value to Decimal": reading,
    }
    build = {
        "hand-written struct baseline": lambda: baseline_build(ADDRESS, 0x91, DATA),
        "construct schema (plain)": lambda: FrameSchema.build(args),
        "construct flat schema compiled + glue": lambda: flat_compiled_build(ADDRESS, 0x91, DATA),
        "fast path build_frame": lambda: build_frame(ADDRESS, 0x91, DATA, 0),
        "fast path read_request + build_frame": lambda: build_frame(ADDRESS, 0x11, payloads.read_request(0x00010000)),
    }
    if safe:
        parse["construct schema (compiled)"] = lambda: compiled.parse(REPLY)
        build["construct schema (compiled)"] = lambda: compiled.build(args)
    else:
        print("  (compiled construct schema skips checks: not measured)")

    for kind, fns in (("parse", parse), ("build", build)):
        base = fns.pop("hand-written struct baseline")
        for name, fn in fns.items():
            r = _pairs(fn, base)
            report(f"protocol {kind}: {name} vs hand-written struct codec (same frame, one core)", r.a, "frames/s",
                   r.b, pairs=r)
    r = _pairs(deframe, lambda: baseline_parse(REPLY), per_call=100)
    report("protocol deframer: replies cut from 64-byte chunks vs hand-written parse of whole frames",
           r.a, "frames/s", r.b, pairs=r)

    # The address caches at fleet scale: parse_frame over every meter of a 20,000-meter fleet in
    # turn against the same over 1,000 meters.  Flat time per frame means the ratio stays near 1.
    small, large = _replies(1_000), _replies(20_000)

    def parse_all(frames: list[bytes]) -> Callable[[], None]:
        def go() -> None:
            for raw in frames:
                parse_frame(raw)
        return go

    for frames in (small, large):
        parse_all(frames)()
    r = interleaved(parse_all(large), parse_all(small), rounds=7, work_a=len(large), work_b=len(small))
    report("protocol parse: parse_frame over 20,000 distinct meters vs over 1,000 (wall time per frame, one thread,"
           " flat = 1)", r.a, "frames/s", r.b, pairs=r)
    # Past the caches' size (131,072 addresses) the oldest entry makes room for each new one: the
    # same over 300,000 meters, over twice the cache, so every frame's address is a miss and an eviction
    del large
    huge = _replies(300_000)
    for _ in range(2):    # the caches full and turning over before the clock starts
        parse_all(huge)()
    r = interleaved(parse_all(huge), parse_all(small), rounds=5, work_a=len(huge), work_b=len(small))
    report("protocol parse: parse_frame over 300,000 distinct meters (past the address caches) vs over 1,000"
           " (wall time per frame, one thread, flat = 1)", r.a, "frames/s", r.b, pairs=r)
