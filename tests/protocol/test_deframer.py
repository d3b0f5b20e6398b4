"""Deframer: whole, byte at a time, noise first, bad frame then good, two per read, babbling line."""

from __future__ import annotations

import pytest

from protocol import Deframer, build_frame, parse_frame

A = build_frame("123456789012", 0x91, bytes.fromhex("0000000056341200"), 0)  # 1234.56 kWh reply
B = build_frame("123456789012", 0xD1, b"\x02", 0)  # D1 02
FREEZE = build_frame("161616161616", 0x16, bytes.fromhex("E3351668"), 0)  # 16H and 68H everywhere


def drain(d: Deframer) -> list[bytes]:
    return list(d.frames())


def test_whole_frame_with_preamble():
    d = Deframer()
    d.feed(b"\xfe\xfe\xfe\xfe" + A)
    assert drain(d) == [A]
    assert d.discarded == 0 and d.buffered == 0
    assert d.next_frame() is None


def test_byte_at_a_time():
    d = Deframer()
    got = []
    for b in b"\xfe\xfe" + A + b"\xfe" + B:
        d.feed(bytes((b,)))
        frame = d.next_frame()
        if frame is not None:
            got.append(frame)
    assert got == [A, B]
    assert d.discarded == 0


def test_two_frames_in_one_read_and_frames_iterator():
    d = Deframer()
    d.feed(A + B + A)
    assert drain(d) == [A, B, A]


def test_noise_before_between_and_after():
    d = Deframer()
    noise = b"\x00\x16\x68\x99\x68\x01"
    d.feed(noise + A + noise + B + b"\x16\x16")
    assert drain(d) == [A, B]
    # every byte that was not in a frame is counted (the trailing 68 01 .. may still be a start)
    assert d.discarded + d.buffered == 2 * len(noise) + 2


def test_end_is_found_by_length_not_by_first_16():
    d = Deframer()
    d.feed(FREEZE[:11])  # header and L only: the early 16H bytes must not end it
    assert d.next_frame() is None
    d.feed(FREEZE[11:])
    assert drain(d) == [FREEZE]
    assert parse_frame(FREEZE).data == bytes.fromhex("E3351668")


def test_corrupt_frame_then_good_one():
    bad = bytearray(A)
    bad[-2] ^= 0xFF  # checksum
    d = Deframer()
    d.feed(bytes(bad) + B)
    assert drain(d) == [B]
    assert d.discarded == len(A)


def test_corrupt_length_does_not_hide_the_frame_behind():
    # noise turned the first frame's L into 0xC8: it claims 200 data bytes that never come;
    # the valid frame right behind it must come out without waiting for more traffic
    bad = bytearray(A)
    bad[9] = 0xC8
    d = Deframer()
    d.feed(bytes(bad) + B)
    assert drain(d) == [B]
    assert d.discarded == len(A)


def test_truncated_frame_then_good_one():
    d = Deframer()
    d.feed(A[:14] + A)
    assert drain(d) == [A]
    assert d.discarded == 14


def test_frame_inside_a_bigger_frame_header_is_found():
    # a 68 that is not a start byte (an address digit pair 68) must not make us skip the real start
    c = build_frame("686868686868", 0x91, b"\x68\x68\x68\x68", 0)
    d = Deframer()
    d.feed(b"\x68" + c)
    assert drain(d) == [c]
    assert d.discarded == 1


def test_babbling_line_stays_bounded_and_recovers():
    d = Deframer(max_buffer=300)
    junk = bytes((i * 7 + 1) % 256 for i in range(10_000)).replace(b"\x68", b"\x00")
    for k in range(0, len(junk), 333):
        d.feed(junk[k : k + 333])
        assert d.buffered <= 300
    d.feed(A)
    assert drain(d) == [A]
    assert d.discarded == len(junk) - junk.count(b"\xfe")


def test_babbling_plausible_headers_stay_bounded():
    # 68 xx xx xx xx xx xx 68 C FF over and over: every one looks like the start of a long frame
    header = b"\x68\x11\x11\x11\x11\x11\x11\x68\x91\xff"
    d = Deframer(max_buffer=300)
    for _ in range(500):
        d.feed(header)
        assert d.buffered <= 300
    d.feed(b"\x00" * 300 + A)
    assert drain(d) == [A]


def test_large_chunk_keeps_every_frame():
    frames = [build_frame("123456789012", 0x91, bytes([k]) * 40, k % 5) for k in range(60)]
    stream = b"".join(frames)
    assert len(stream) > 1024
    d = Deframer()
    d.feed(stream)
    assert drain(d) == [f.lstrip(b"\xfe") for f in frames]


def test_max_buffer_must_hold_a_frame():
    with pytest.raises(ValueError):
        Deframer(max_buffer=100)
