"""The sans-I/O bus session: matching, deadlines, retries with back-off, strays, noise."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headend.link.session import Failure, LinkSession, LocalUsageError, Reply, Request, address_matches
from protocol import build_frame, parse_frame

ADDR = "123456789012"
OTHER = "000000000007"
READ_DI = (0x00010000).to_bytes(4, "little")


def reply_to_read(address: str = ADDR, di: bytes = READ_DI, value: bytes = b"\x00\x12\x34\x00", control: int = 0x91) -> bytes:
    return build_frame(address, control, di + value, preamble=0)


def test_begin_sends_preamble_and_frame():
    s = LinkSession(preamble=4)
    wire = s.begin(Request(ADDR, 0x11, READ_DI), now=0.0)
    assert wire.startswith(b"\xfe" * 4)
    f = parse_frame(wire)
    assert (f.address, f.control, f.data, f.preamble) == (ADDR, 0x11, READ_DI, 4)
    assert s.busy and s.deadline == pytest.approx(2.0)


def test_reply_completes_request_in_any_split():
    raw = reply_to_read()
    for cut in range(1, len(raw)):
        s = LinkSession()
        s.begin(Request(ADDR, 0x11, READ_DI), 0.0)
        assert s.feed(raw[:cut], 0.1) is None
        r = s.feed(raw[cut:], 0.2)
        assert isinstance(r, Reply) and r.frame.data[4:] == b"\x00\x12\x34\x00"
        assert r.attempts == 1 and r.elapsed == pytest.approx(0.2)
        assert not s.busy and s.deadline is None


def test_reply_from_other_meter_or_other_di_is_stray():
    s = LinkSession()
    s.begin(Request(ADDR, 0x11, READ_DI), 0.0)
    assert s.feed(reply_to_read(address=OTHER), 0.1) is None
    assert s.feed(reply_to_read(di=(0x00020000).to_bytes(4, "little")), 0.1) is None
    assert s.feed(build_frame(ADDR, 0x11, READ_DI, preamble=0), 0.1) is None  # an echo of our request
    assert s.feed(build_frame(ADDR, 0x94, b"", preamble=0), 0.1) is None  # wrong function
    assert s.stats.stray == 4 and s.busy
    assert isinstance(s.feed(reply_to_read(), 0.2), Reply)


def test_error_reply_matches_without_di():
    s = LinkSession()
    s.begin(Request(ADDR, 0x11, READ_DI), 0.0)
    r = s.feed(build_frame(ADDR, 0xD1, b"\x02", preamble=0), 0.1)
    assert isinstance(r, Reply) and r.frame.is_abnormal and r.frame.data == b"\x02"


def test_noise_and_corrupt_frame_before_reply():
    s = LinkSession()
    s.begin(Request(ADDR, 0x11, READ_DI), 0.0)
    bad = bytearray(reply_to_read())
    bad[-2] ^= 0xFF  # checksum
    r = s.feed(b"\x00\x55\x68\x01" + bytes(bad) + b"\xfe\xfe" + reply_to_read(), 0.1)
    assert isinstance(r, Reply)
    assert s.discarded > 0


def test_timeout_backoff_retry_is_byte_identical_then_failure():
    s = LinkSession(timeout=1.0, retries=2, backoff=0.5, backoff_factor=2.0)
    first = s.begin(Request(ADDR, 0x14, b"\x01\x02\x03\x04"), 0.0)
    assert s.on_deadline(0.5) is None  # not yet
    assert s.on_deadline(1.0) is None  # now backing off 0.5 s
    assert s.deadline == pytest.approx(1.5)
    assert s.on_deadline(1.5) == first  # retry 1, identical bytes
    assert s.deadline == pytest.approx(2.5)
    assert s.on_deadline(2.5) is None  # back-off doubled: 1.0 s
    assert s.deadline == pytest.approx(3.5)
    assert s.on_deadline(3.5) == first  # retry 2
    out = s.on_deadline(4.5)
    assert isinstance(out, Failure) and out.attempts == 3 and ADDR in out.reason
    assert not s.busy and s.stats.retries == 2 and s.stats.failures == 1


def test_late_reply_during_backoff_completes_request():
    s = LinkSession(timeout=1.0, retries=1, backoff=0.5)
    s.begin(Request(ADDR, 0x11, READ_DI), 0.0)
    s.on_deadline(1.0)
    r = s.feed(reply_to_read(), 1.2)
    assert isinstance(r, Reply) and r.attempts == 1


def test_late_reply_after_failure_is_discarded_and_next_request_unaffected():
    s = LinkSession(timeout=1.0, retries=0)
    s.begin(Request(ADDR, 0x11, READ_DI), 0.0)
    assert isinstance(s.on_deadline(1.0), Failure)
    assert s.feed(reply_to_read(value=b"\x99\x99\x99\x99"), 1.5) is None  # late: nobody asked
    assert s.stats.stray == 1
    # bytes of a late reply still in the buffer when the next request starts are thrown away
    s.feed(reply_to_read(value=b"\x11\x11\x11\x11")[:5], 1.6)
    s.begin(Request(ADDR, 0x11, READ_DI), 2.0)
    r = s.feed(reply_to_read(value=b"\x01\x00\x00\x00"), 2.1)
    assert r is not None and r.frame.data[4:] == b"\x01\x00\x00\x00"


def test_zero_backoff_resends_at_once():
    s = LinkSession(timeout=1.0, retries=1, backoff=0.0)
    first = s.begin(Request(ADDR, 0x11, READ_DI), 0.0)
    assert s.on_deadline(1.0) == first


def test_one_request_at_a_time():
    s = LinkSession()
    s.begin(Request(ADDR, 0x11, READ_DI), 0.0)
    with pytest.raises(LocalUsageError, match="already outstanding"):
        s.begin(Request(OTHER, 0x11, READ_DI), 0.0)


def test_broadcast_expects_no_reply():
    s = LinkSession()
    wire = s.begin(Request("999999999999", 0x08, bytes(6), reply=False), 0.0)
    assert parse_frame(wire).address == "999999999999"
    assert not s.busy


def test_cancel_turns_reply_into_stray():
    s = LinkSession()
    s.begin(Request(ADDR, 0x11, READ_DI), 0.0)
    s.cancel()
    assert s.feed(reply_to_read(), 0.1) is None and s.stats.stray == 1


def test_wildcard_address_and_read_address():
    assert address_matches("AAAAAAAA9012", ADDR)
    assert not address_matches("AAAAAAAA9013", ADDR)
    s = LinkSession()
    s.begin(Request("AAAAAAAAAAAA", 0x13), 0.0)
    r = s.feed(build_frame(ADDR, 0x93, bytes.fromhex(ADDR)[::-1], preamble=0), 0.1)
    assert r is not None and r.frame.address == ADDR


@settings(max_examples=60, deadline=None)
@given(noise=st.binary(max_size=40), splits=st.lists(st.integers(1, 8), min_size=1, max_size=30))
def test_reply_found_behind_any_noise_and_any_split(noise, splits):
    s = LinkSession()
    s.begin(Request(ADDR, 0x11, READ_DI), 0.0)
    # noise can never be a whole valid reply of this meter for this DI, so the answer is the real one
    stream = noise + b"\xfe" + reply_to_read()
    got = None
    i = 0
    for n in splits * 20:
        if i >= len(stream):
            break
        got = got or s.feed(stream[i : i + n], 0.1)
        i += n
    got = got or s.feed(stream[i:], 0.1)
    assert got is not None and got.frame.data == READ_DI + b"\x00\x12\x34\x00"


def test_a_doubled_reply_is_never_taken_as_the_answer_to_the_next_request():
    """The meter answered a request twice (a retry, a line that repeats frames) and both
    answers came in one read: the second is a stray, not the answer to the next question with
    the same DI (a stale security challenge would spoil the proof made over it)."""
    s = LinkSession()
    req = Request(ADDR, 0x11, READ_DI)
    s.begin(req, 0.0)
    old = reply_to_read(value=b"\x11\x11\x11\x11")
    assert s.feed(old + old, 0.1).frame.data[4:] == b"\x11\x11\x11\x11"
    s.begin(req, 0.2)
    fresh = reply_to_read(value=b"\x22\x22\x22\x22")
    assert s.feed(fresh[:5], 0.3) is None  # the answer comes in two reads
    r = s.feed(fresh[5:], 0.3)
    assert r is not None and r.frame.data[4:] == b"\x22\x22\x22\x22"
    assert s.stats.stray == 1


def test_a_bus_with_thousands_of_reads_builds_each_frame_once(monkeypatch):
    """Read requests are the same objects every cycle (headend.commands.meter_client.read_request):
    a wide bus (here 5,000 of them, e.g. 625 meters x 8 items) must not rebuild its frames each cycle."""
    import headend.link.session as session_mod

    built = []
    real = session_mod.build_frame
    monkeypatch.setattr(session_mod, "build_frame", lambda *a, **k: built.append(a[0]) or real(*a, **k))
    s = LinkSession()
    reads = [Request(f"{i:012d}", 0x11, bytes.fromhex("00000100")) for i in range(1, 5001)]

    def cycle(now: float) -> list[bytes]:
        sent = []
        for r in reads:
            sent.append(s.begin(r, now))
            s.cancel()  # as if answered: the bus is free for the next
        return sent

    first = cycle(0.0)
    assert len(built) == 5000
    again = cycle(1.0)
    assert len(built) == 5000 and again == first   # the second cycle built nothing, sent the same bytes


def test_one_off_commands_are_not_kept():
    """Commands are new Request objects each time: keeping their frames would only grow memory."""
    s = LinkSession()
    for n in range(1, 101):
        s.begin(Request("000000000001", 0x1C, bytes([n]) * 8), 0.0)
        s.cancel()
    assert not s._wire_cache
