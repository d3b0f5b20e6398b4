"""The meter's codec against the head-end's protocol package: golden vectors, generated
frames, stream cutting, and the same checks run inside the real micropython binary."""

import json
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

import protocol
from meter import codec, desktop
from tests.mpy import run_micropython

ROOT = Path(__file__).resolve().parents[2]
# the project's vectors hold every shared golden frame (tests/protocol/test_vectors.py checks it)
VECTOR_FILES = [ROOT / "protocol/vectors/dlt645.json"]


def _vectors():
    out = {}
    for p in VECTOR_FILES:
        for v in json.loads(p.read_text()):
            if "hex" in v:
                out[v["name"]] = bytes.fromhex(v["hex"].replace(" ", ""))
    return sorted(out.items())


VECTORS = _vectors()

digit_byte = st.integers(0, 99).map(lambda v: f"{v:02d}")


@st.composite
def addresses(draw):
    pairs = draw(st.lists(digit_byte, min_size=6, max_size=6))
    wild = draw(st.integers(0, 6))  # protocol allows AA wildcards at the high end
    return "AA" * wild + "".join(pairs[wild:])


frames = st.tuples(addresses(), st.integers(0, 255), st.binary(max_size=200), st.integers(0, 4))


def test_vectors_exist():
    assert len(VECTORS) >= 50


@pytest.mark.parametrize("name,raw", VECTORS, ids=[n for n, _ in VECTORS])
def test_golden_vector_round_trip(name, raw):
    fr = codec.Frame()
    assert codec.decode(raw, fr) == codec.OK, name
    ref = protocol.parse_frame(raw)
    assert codec.addr_str(fr.addr) == ref.address
    assert fr.ctrl == ref.control
    assert bytes(fr.data[:fr.n]) == ref.data
    assert fr.preamble == ref.preamble
    assert desktop.build(bytes(fr.addr), fr.ctrl, bytes(fr.data[:fr.n]), fr.preamble) == raw


@settings(max_examples=300, deadline=None)
@given(frames)
def test_build_matches_protocol(f):
    addr, ctrl, data, pre = f
    raw = protocol.build_frame(addr, ctrl, data, pre)
    assert desktop.build(addr, ctrl, data, pre) == raw
    fr = codec.Frame()
    assert codec.decode(raw, fr) == codec.OK
    assert (codec.addr_str(fr.addr), fr.ctrl, bytes(fr.data[:fr.n])) == (addr, ctrl, data)


@settings(max_examples=300, deadline=None)
@given(frames, st.integers(0, 300), st.integers(0, 255))
def test_corrupt_frames_are_refused_like_protocol(f, pos, val):
    raw = bytearray(protocol.build_frame(*f))
    pos %= len(raw)
    raw[pos] = val
    raw = bytes(raw)
    fr = codec.Frame()
    mine = codec.decode(raw, fr)
    try:
        protocol.parse_frame(raw)
        theirs = None
    except protocol.ProtocolError as exc:
        theirs = exc.reason
    if theirs is None:
        assert mine == codec.OK
    elif theirs not in ("address", "bcd"):  # the meter leaves address digits to address matching
        assert mine != codec.OK
    if mine == codec.OK:
        assert desktop.build(bytes(fr.addr), fr.ctrl, bytes(fr.data[:fr.n]), fr.preamble) == raw


def test_decode_errors_name_the_fault():
    good = desktop.build("123456789012", 0x11, b"\x00\x00\x01\x00")
    fr = codec.Frame()
    assert codec.decode(good[:-1], fr) == codec._E_SHORT
    assert codec.decode(good[:-2] + bytes([good[-2] ^ 1, 0x16]), fr) == codec._E_CHECKSUM
    assert codec.decode(good[:-1] + b"\x17", fr) == codec._E_END
    assert codec.decode(b"\x69" + good[1:], fr) == codec._E_START
    assert codec.decode(good + b"\x00", fr) == codec._E_LENGTH


def test_bcd_helpers():
    b = bytearray(4)
    codec.put_bcd(b, 0, 12345678, 4)
    assert bytes(b) == bytes.fromhex("78563412")
    assert codec.get_bcd(b, 0, 4) == 12345678
    codec.put_sbcd(b, 0, -5123, 3)
    assert bytes(b[:3]) == bytes.fromhex("235180")
    assert codec.get_bcd(bytes.fromhex("1A"), 0, 1) == -1
    codec.put_le(b, 0, -2 & 0xFFFFFFFF, 4)
    assert codec.get_sle(b, 0, 4) == -2


def _stream_pieces(rng, n):
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.6:
            a = "".join(f"{rng.randrange(100):02d}" for _ in range(6))
            out.append(protocol.build_frame(a, rng.randrange(256), rng.randbytes(rng.randrange(60)),
                                            rng.randrange(5)))
        elif kind < 0.8:
            out.append(rng.randbytes(rng.randrange(30)))
        else:  # a frame with one byte hit by noise, or cut short
            a = "".join(f"{rng.randrange(100):02d}" for _ in range(6))
            f = bytearray(protocol.build_frame(a, 0x11, rng.randbytes(rng.randrange(20)), 0))
            if rng.random() < 0.5:
                f[rng.randrange(len(f))] = rng.randrange(256)
            else:
                f = f[:rng.randrange(len(f))]
            out.append(bytes(f))
    return b"".join(out)


def _cut(stream, rng):
    i = 0
    while i < len(stream):
        k = rng.randrange(1, 64)
        yield stream[i:i + k]
        i += k


@pytest.mark.parametrize("seed", range(40))
def test_deframer_matches_protocol(seed):
    rng = random.Random(seed)
    stream = _stream_pieces(rng, 40)
    mine, theirs = codec.Deframer(), protocol.Deframer()
    got, want = [], []
    for chunk in _cut(stream, rng):
        mine.feed(chunk)
        while (f := mine.next_frame()) is not None:
            got.append(bytes(f))
        theirs.feed(chunk)
        want.extend(theirs.frames())
    assert got == want
    assert mine.discarded == theirs.discarded


def test_deframer_bounded_on_babble():
    d = codec.Deframer(512)
    d.feed(b"\x68" + b"\x11" * 6 + b"\x68\x11\xff" + b"\x00" * 2000)
    assert d.next_frame() is None
    good = desktop.build("123456789012", 0x11, b"\x00\x00\x01\x00")
    d.feed(good)
    assert bytes(d.next_frame()) == good


# --- the same codec inside the real micropython binary, many frames per process ---------

_MPY_BATCH = r"""
from meter import codec
import sys
fr = codec.Frame()
out = bytearray(400)
for line in open(%r):
    a, c, d, p = line.split()
    data = bytes(int(d[i:i + 2], 16) for i in range(0, len(d), 2)) if d != "-" else b""
    n = codec.encode_into(out, codec.addr_bytes(a), int(c), data, len(data), int(p))
    raw = bytes(out[:n])
    r = codec.decode(raw, fr)
    back = bytes(fr.data[:fr.n])
    print("".join("%%02x" %% x for x in raw), r, codec.addr_str(fr.addr), fr.ctrl, back == data)
"""


@settings(max_examples=3, deadline=None)
@given(st.lists(frames, min_size=150, max_size=300))
def test_micropython_codec_batch(cases):
    # hypothesis draws the batch; one micropython process encodes and decodes all of it
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "frames.txt"
        src.write_text("".join(f"{a} {c} {d.hex() or '-'} {p}\n" for a, c, d, p in cases))
        res = run_micropython(_MPY_BATCH % str(src))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.split("\n")[:-1]
    assert len(lines) == len(cases)
    for (a, c, d, p), line in zip(cases, lines):
        raw, r, addr, ctrl, same = line.split()
        assert bytes.fromhex(raw) == protocol.build_frame(a, c, d, p)
        assert (r, addr, int(ctrl), same) == ("0", a, c, "True")


_MPY_DEFRAME = r"""
from meter import codec
d = codec.Deframer()
for line in open(%r):
    h = line.strip()
    chunk = bytes(int(h[i:i + 2], 16) for i in range(0, len(h), 2))
    d.feed(chunk)
    while True:
        f = d.next_frame()
        if f is None:
            break
        print("".join("%%02x" %% x for x in f))
print("discarded", d.discarded)
"""


def test_micropython_deframer_batch(tmp_path):
    rng = random.Random(17)
    stream = _stream_pieces(rng, 150)
    chunks = [c for c in _cut(stream, rng) if c]
    src = tmp_path / "chunks.txt"
    src.write_text("".join(c.hex() + "\n" for c in chunks))
    theirs = protocol.Deframer()
    want = []
    for c in chunks:
        theirs.feed(c)
        want.extend(f.hex() for f in theirs.frames())
    res = run_micropython(_MPY_DEFRAME % str(src))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.split()
    assert lines[:-2] == want
    assert int(lines[-1]) == theirs.discarded
