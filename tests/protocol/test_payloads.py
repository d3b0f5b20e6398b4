"""Payload schemas and builders: layouts of protocol/SECURITY.md, ERR/SERR flags, bad payloads named."""

from __future__ import annotations

from datetime import datetime

import pytest

from protocol import ProtocolError, build_frame, parse_frame, payloads
from protocol.payloads import SCHEMAS, build_payload, parse_payload

DEADLINE = datetime(2025, 6, 5, 23, 59, 59)


def test_every_function_code_has_request_reply_and_error_schemas():
    for fn in (0x03, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1C):
        assert fn in SCHEMAS and 0x80 | fn in SCHEMAS and 0xC0 | fn in SCHEMAS
    assert 0x08 in SCHEMAS and 0x88 not in SCHEMAS  # broadcast time has no reply
    assert 0xB1 in SCHEMAS and 0xB2 in SCHEMAS


def test_unknown_control_is_named():
    with pytest.raises(ProtocolError) as exc:
        parse_payload(0x05, b"")
    assert exc.value.reason == "control" and "05H" in str(exc.value)
    with pytest.raises(ProtocolError, match="never gets a reply"):
        parse_payload(0x88, b"")
    with pytest.raises(ProtocolError) as exc:
        parse_payload(0xB4, b"")  # follow-up flag on a write reply
    assert exc.value.reason == "control"


def test_read_request_fast_path_matches_schema():
    for code in (0, 0x00010000, 0x0001FF00, 0xFFFFFFFF):
        assert payloads.read_request(code) == build_payload(0x11, {"di": code, "n": None, "start": None})
    data = payloads.read_request(0x06000001, n=3, start=datetime(2025, 6, 5, 14, 30))
    assert data == bytes.fromhex("01000006 03 3014050625")
    assert payloads.parse_read_request(data) == {"di": 0x06000001, "n": 3, "start": datetime(2025, 6, 5, 14, 30)}


def test_read_reply_fast_path_matches_schema():
    data = payloads.read_reply(0x00900200, bytes.fromhex("45230100"))
    assert data == build_payload(0x91, {"di": 0x00900200, "value": bytes.fromhex("45230100")})
    assert payloads.parse_read_reply(data) == (0x00900200, bytes.fromhex("45230100"))
    fields = parse_payload(0x91, data)
    assert (fields["di"], fields["value"]) == payloads.parse_read_reply(data)
    with pytest.raises(ProtocolError) as exc:
        payloads.parse_read_reply(b"\x00\x00")
    assert exc.value.reason == "truncated"


@pytest.mark.parametrize(
    "control, data, reason",
    [
        (0x11, "000001", "truncated"),  # DI cut short
        (0x11, "00000100 03 30140506", "truncated"),  # start time cut short
        (0x11, "00000100 3A", "bcd"),  # N is BCD
        (0x12, "00000100", "truncated"),  # no SEQ
        (0x13, "00", "length"),
        (0x08, "512210050625 00", "length"),
        (0x08, "516110050625", "value"),  # minute 61
        (0x17, "03", "value"),  # two baud bits
        (0x16, "00 99 05 99", "value"),  # wildcard under a real field
        (0x16, "60 00 99 99", "value"),  # minute 60
        (0x1C, "02000000 00000000 55 00 595923050625", "value"),  # N1 55 unknown
        (0x1C, "02000000 00000000 1A 00 5959230506", "truncated"),
        (0x1C, "99000000 00000000 1A 00 595923050625 01000000", "truncated"),  # level 99 without MAC
        (0x14, "01100004 99000000 00000000 0102", "truncated"),  # level 99 without seq/MAC
        (0x03, "FF020107 00000000 10270000", "truncated"),  # recharge cut short
        (0x03, "FF010307 00000000 01 000001" + "00" * 20, "payload"),  # key update filler not 000000
        (0x83, "FF020107 00", "truncated"),  # recharge reply carries its MAC after the DI
    (0x83, "FF020107 0000000000", "length"),  # ... and nothing more
        (0xD1, "", "truncated"),
        (0xD1, "0200", "length"),
        (0xC3, "02", "truncated"),
        (0x93, "1290785634AB", "address"),
        (0x92, "00FF0100", "truncated"),  # no SEQ at the end
    ],
)
def test_bad_payloads_are_named(control, data, reason):
    with pytest.raises(ProtocolError) as exc:
        parse_payload(control, bytes.fromhex(data.replace(" ", "")))
    assert exc.value.reason == reason, str(exc.value)


def test_err_flags():
    assert payloads.decode_err(0x02) == ["no_data"]
    assert payloads.decode_err(0x04) == ["unauthorised"]
    assert payloads.decode_err(0x09) == ["other", "baud_unchangeable"]
    assert payloads.decode_err(0x80) == ["reserved_bit7"]
    assert payloads.decode_err(0) == []
    with pytest.raises(ProtocolError):
        payloads.decode_err(256)


def test_serr_flags():
    assert payloads.decode_serr(0x0002) == ["repeat_recharge"]
    assert payloads.decode_serr(0x0040) == ["hoarding_exceeded"]
    assert payloads.decode_serr(0x0028) == ["auth_failed", "count_error"]
    assert payloads.decode_serr(0x0180) == ["address_error", "suspended"]
    assert payloads.decode_serr(0x8000) == ["reserved_bit15"]
    with pytest.raises(ProtocolError):
        payloads.decode_serr(0x10000)


def test_control_error_reply_err_or_serr():
    assert parse_payload(0xDC, b"\x04") == {"err": 4}
    assert parse_payload(0xDC, b"\x08\x00") == {"serr": 8}
    assert build_payload(0xDC, {"err": 4}) == b"\x04"
    assert build_payload(0xDC, {"serr": 8}) == b"\x08\x00"


def test_relay_request_plain_matches_shared_vector():
    data = payloads.relay_request(payloads.TRIP, DEADLINE)
    # shared vector relay_control_1C_N1_1A
    raw = bytes.fromhex(
        "FE FE FE FE 68 12 90 78 56 34 12 68 1C 10 35 33 33 33 33 33 33 33 4D 33 8C 8C 56 38 39 58 03 16"
    )
    assert build_frame("123456789012", 0x1C, data) == raw


def test_relay_request_level99_layout():
    data = payloads.relay_request(payloads.CLOSE_DIRECT, DEADLINE, b"\x99\x00\x00\x00", 7, seq=3, mac=b"MACM")
    assert len(data) == 24  # SECURITY.md: L = 24
    assert data == bytes.fromhex("99000000 07000000 1C00 595923050625 03000000") + b"MACM"
    with pytest.raises(ProtocolError):
        payloads.relay_request(payloads.TRIP, DEADLINE, b"\x99\x00\x00\x00")  # no seq/mac
    with pytest.raises(ProtocolError):
        payloads.relay_request(payloads.TRIP, DEADLINE, seq=1, mac=b"abcd")  # plain level with a MAC


def test_write_request_layouts():
    plain = payloads.write_request(0x04001001, bytes.fromhex("00100000"))
    assert plain == bytes.fromhex("01100004 04000000 00000000 00100000")
    secured = payloads.write_request(0x04001001, bytes.fromhex("00100000"), b"\x99\x00\x00\x00", 1, seq=9, mac=b"abcd")
    assert len(secured) == 20 + 4  # SECURITY.md: L = 20 + len(value)
    fields = parse_payload(0x14, secured)
    assert (fields["value"], fields["seq"], fields["mac"]) == (bytes.fromhex("00100000"), 9, b"abcd")


def test_security_request_lengths_match_security_md():
    assert len(payloads.identity_auth_request(0, b"c" * 8, b"r" * 8, b"d" * 8)) == 32
    assert len(payloads.set_validity_request(0, 5, b"mmmm")) == 14
    assert len(payloads.challenge_request(0)) == 8
    assert len(payloads.end_session_request(0, b"mmmm")) == 12
    assert len(payloads.recharge_request(0, 10000, 3, b"1111", "000000000001", b"2222")) == 30
    assert len(payloads.status_query_request(0, b"mmmm")) == 12
    assert len(payloads.write_address_request("000000000777")) == 6
    assert len(payloads.write_address_request("000000000777", 3, b"mmmm")) == 14
    assert len(payloads.key_update_request(0, 2, b"w" * 16, b"mmmm")) == 32


def test_recharge_request_matches_shared_vector():
    data = payloads.recharge_request(0, 10000, 3, bytes.fromhex("A1A2A3A4"), "000000000001", bytes.fromhex("B1B2B3B4"))
    frame = parse_frame(
        bytes.fromhex(
            "FE FE FE FE 68 12 90 78 56 34 12 68 03 1E 32 35 34 3A 33 33 33 33 43 5A 33 33 36 33 33 33 "
            "D4 D5 D6 D7 34 33 33 33 33 33 E4 E5 E6 E7 39 16"
        )
    )
    assert data == frame.data
    opened = payloads.recharge_request(0, 10000, 3, b"1111", "000000000001", b"2222", open_account=True)
    assert parse_payload(0x03, opened)["di"] == 0x070101FF


def test_unknown_security_di_is_raw_and_flagged():
    data = bytes.fromhex("FF008007 00000000 0102")
    fields = parse_payload(0x03, data)
    assert fields["body"] == {"raw": b"\x01\x02", "unknown": True}
    assert build_payload(0x03, fields) == data


def test_broadcast_time_is_seconds_first():
    assert payloads.broadcast_time_request(datetime(2025, 6, 5, 10, 22, 51)) == bytes.fromhex("512210050625")


@pytest.mark.parametrize(
    "args, data",
    [
        ({}, "99999999"),
        ({"minute": 15}, "15999999"),
        ({"hour": 0, "minute": 0}, "00009999"),
        ({"day": 1, "hour": 0, "minute": 0}, "00000199"),
    ],
)
def test_freeze_patterns(args, data):
    assert payloads.freeze_request(**args) == bytes.fromhex(data)


def test_freeze_rejects_wildcard_below_a_value():
    with pytest.raises(ProtocolError):
        payloads.freeze_request(month=1, minute=0)


def test_baud_word_is_a_bit_mask():
    assert payloads.baud_request(9600) == b"\x20"
    assert payloads.baud_request(2400) == b"\x08"
    with pytest.raises(ProtocolError):
        payloads.baud_request(9601)


def test_build_payload_reports_missing_fields():
    with pytest.raises(ProtocolError) as exc:
        build_payload(0x19, {"password": b"\x02\x00\x00\x00"})
    assert exc.value.reason == "value"
