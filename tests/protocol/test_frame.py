"""The frame codec: every fault is rejected with its own reason, by the fast path and the schema alike."""

from __future__ import annotations

from collections import OrderedDict

import pytest

from protocol import Frame, ProtocolError, build_frame, parse_frame
from protocol.frame import address_from_wire, address_to_wire, schema_build, schema_parse

# read reply 00000000 = 1234.56 kWh (shared vector read_reply_00000000_1234.56kWh)
GOOD = bytes.fromhex("68 12 90 78 56 34 12 68 91 08 33 33 33 33 89 67 45 33 53 16")


def both_reject(raw: bytes) -> ProtocolError:
    """Parse with the fast path and the canonical schema; both must raise the same reason."""
    with pytest.raises(ProtocolError) as fast:
        parse_frame(raw)
    with pytest.raises(ProtocolError) as slow:
        schema_parse(raw)
    assert fast.value.reason == slow.value.reason, (str(fast.value), str(slow.value))
    return fast.value


def with_checksum(body: bytes) -> bytes:
    return body + bytes((sum(body) & 0xFF, 0x16))


def test_good_frame_fields():
    frame = parse_frame(b"\xfe\xfe" + GOOD)
    assert frame == Frame("123456789012", 0x91, bytes.fromhex("0000000056341200"), 2)
    assert (frame.function, frame.is_reply, frame.is_abnormal, frame.has_more) == (0x11, True, False, False)
    assert frame.to_bytes() == b"\xfe\xfe" + GOOD
    assert frame.to_bytes(preamble=0) == GOOD


def test_control_bits():
    f = Frame("123456789012", 0xF2)
    assert (f.function, f.is_reply, f.is_abnormal, f.has_more) == (0x12, True, True, True)


def test_checksum_fault():
    raw = bytearray(GOOD)
    raw[-2] ^= 0x01
    err = both_reject(bytes(raw))
    assert err.reason == "checksum" and "checksum" in str(err)


def test_data_bit_flip_is_a_checksum_fault():
    raw = bytearray(GOOD)
    raw[12] ^= 0x10
    assert both_reject(bytes(raw)).reason == "checksum"


def test_fe_is_not_counted_in_the_checksum():
    # a codec that summed the FE bytes would get a different CS; ours must accept the standard one
    assert parse_frame(b"\xfe" * 4 + GOOD).preamble == 4
    bad = b"\xfe" * 4 + GOOD[:-2] + bytes(((GOOD[-2] + 4 * 0xFE) & 0xFF, 0x16))
    assert both_reject(bad).reason == "checksum"


def test_terminator_fault():
    err = both_reject(GOOD[:-1] + b"\x17")
    assert err.reason == "terminator" and "16H" in str(err)


def test_length_fault_trailing_bytes():
    err = both_reject(GOOD + b"\x00")
    assert err.reason == "length"


@pytest.mark.parametrize("cut", [0, 1, 5, 8, 9, 10, 15, 18, 19])
def test_truncated(cut):
    err = both_reject(GOOD[:cut])
    assert err.reason == "truncated", str(err)


def test_only_preamble_is_truncated():
    assert both_reject(b"\xfe\xfe\xfe").reason == "truncated"


def test_start_faults():
    assert both_reject(b"\x00" + GOOD).reason == "start"
    raw = bytearray(GOOD)
    raw[7] = 0x69
    assert both_reject(bytes(raw)).reason == "start"


def test_address_faults():
    raw = bytearray(GOOD)
    raw[3] = 0x7A  # 'A' nibble: not BCD, not the AA wildcard
    err = both_reject(with_checksum(bytes(raw[:-2])))
    assert err.reason == "address" and "'7A'" in str(err)
    # wildcard AA only as high bytes: AA below a real digit byte is refused
    low_wild = with_checksum(b"\x68\xaa\x90\x78\x56\x34\x12\x68\x11\x00")
    assert both_reject(low_wild).reason == "address"


def test_wildcard_and_broadcast_addresses():
    short = build_frame("AAAAAAAA9012", 0x11, b"\x00\x00\x01\x00")
    assert short[5:11] == bytes.fromhex("1290AAAAAAAA")
    assert parse_frame(short).address == "AAAAAAAA9012"
    assert parse_frame(build_frame("999999999999", 0x08, bytes(6))).address == "999999999999"
    assert build_frame("aaaaaaaaaaaa", 0x13) == build_frame("AAAAAAAAAAAA", 0x13)


def test_address_wire_order():
    assert address_to_wire("123456789012") == bytes.fromhex("129078563412")
    assert address_from_wire(bytes.fromhex("129078563412")) == "123456789012"


@pytest.mark.parametrize(
    "address",
    ["12345678901", "1234567890123", "12345678901A", "9012AAAAAAAA", "12 456789012", "１２３４５６７８９０１２", 123456789012],
)
def test_build_rejects_bad_addresses(address):
    with pytest.raises(ProtocolError) as exc:
        build_frame(address, 0x11)
    assert exc.value.reason == "address"
    with pytest.raises(ProtocolError):
        schema_build(address, 0x11)


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"control": 256}, "control"),
        ({"control": -1}, "control"),
        ({"control": True}, "control"),
        ({"control": 0x11, "data": bytes(256)}, "length"),
        ({"control": 0x11, "data": "0000"}, "value"),
        ({"control": 0x11, "preamble": 5}, "preamble"),
        ({"control": 0x11, "preamble": -1}, "preamble"),
    ],
)
def test_build_rejects_bad_arguments(kwargs, reason):
    for build in (build_frame, schema_build):
        with pytest.raises(ProtocolError) as exc:
            build("123456789012", **kwargs)
        assert exc.value.reason == reason


def test_build_accepts_bytearray_and_memoryview():
    data = bytes.fromhex("00000100")
    ref = build_frame("123456789012", 0x11, data)
    assert build_frame("123456789012", 0x11, bytearray(data)) == ref
    assert build_frame("123456789012", 0x11, memoryview(data)) == ref
    assert parse_frame(bytearray(ref)) == parse_frame(memoryview(ref)) == parse_frame(ref)


def test_data_may_contain_16_and_68():
    # a freeze request (C = 16H) whose data and checksum also hold 16H/68H must survive
    data = bytes.fromhex("E3 35 16 68")  # wire bytes 16 68 49 9B
    raw = build_frame("161616161616", 0x16, data, 0)
    assert parse_frame(raw) == Frame("161616161616", 0x16, data, 0)


def test_error_message_names_the_fault_and_is_a_value_error():
    try:
        parse_frame(GOOD[:-1] + b"\x00")
    except ValueError as exc:  # ProtocolError is a ValueError
        assert isinstance(exc, ProtocolError) and exc.reason == "terminator"
        assert "16H" in str(exc)
    else:
        pytest.fail("no error")


def test_error_pickles_with_reason():
    import pickle

    err = pickle.loads(pickle.dumps(ProtocolError("checksum", "bad")))
    assert (err.reason, str(err)) == ("checksum", "bad")


def test_parse_rejects_non_bytes():
    with pytest.raises(ProtocolError):
        parse_frame("68 12")  # type: ignore[arg-type]


def test_address_caches_keep_working_when_full(monkeypatch):
    # a fleet larger than the cache must not wipe it: the oldest entry goes, recent ones stay
    import protocol.frame as fr

    monkeypatch.setattr(fr, "_CACHE_MAX", 4)
    monkeypatch.setattr(fr, "_TO_WIRE", OrderedDict())
    monkeypatch.setattr(fr, "_FROM_WIRE", OrderedDict())
    addresses = [f"{i:012d}" for i in range(1, 8)]
    for a in addresses:
        assert address_from_wire(address_to_wire(a)) == a
    assert list(fr._TO_WIRE) == addresses[-4:]
    assert list(fr._FROM_WIRE.values()) == addresses[-4:]
    assert address_to_wire(addresses[-1]) is fr._TO_WIRE[addresses[-1]]   # served from the cache
