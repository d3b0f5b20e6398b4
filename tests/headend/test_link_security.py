"""The head-end's security session against the meter's own half (firmware meter.security)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headend.keys import derive_meter_key
from headend.link.security import (
    DI_RECHARGE,
    DI_STATUS_QUERY,
    SecurityError,
    SecuritySession,
    customer_wire,
    di_wire,
)
from meter import security as fw
from meter.core import Security
from protocol import payloads
from protocol.frame import address_to_wire

ADDR = "123456789012"
WIRE = address_to_wire(ADDR)


def pair(key=None, number=None):
    key = key or os.urandom(16)
    head = SecuritySession(ADDR, key, meter_number=number)
    meter = Security(key, 0, os.urandom)
    return head, meter


def authenticate(head: SecuritySession, meter: Security, now=100):
    rm = fw.challenge(meter)
    req = head.auth_request(di_wire(0x070003FF) + rm)
    assert req[:4] == di_wire(0x070000FF) and len(req) == 32
    c1, r1, disp = req[8:16], req[16:24], req[24:32]
    assert disp == b"\x00\x00" + customer_wire(ADDR)
    c2 = fw.authenticate(meter, c1, r1, disp, now)
    assert c2
    reply = di_wire(0x070000FF) + c2 + b"\x00\x00" + WIRE
    head.accept_auth_reply(reply, now)
    return reply


def test_wire_helpers():
    assert customer_wire("42") == bytes.fromhex("420000000000")
    assert di_wire(0x00010000) == bytes.fromhex("00000100")
    with pytest.raises(ValueError, match="12 decimal digits"):
        customer_wire("12345678901X")


def test_meter_key_derivation_matches_the_firmware_hmac():
    master = os.urandom(32)
    want = fw.hmac_sha256(master, b"prepaid645/meter" + WIRE + bytes([3]))[:16]
    assert derive_meter_key(master, ADDR, 3) == want
    assert derive_meter_key(master, ADDR, 3) != derive_meter_key(master, ADDR, 4)


def test_both_sides_derive_the_same_session_key():
    head, meter = pair()
    authenticate(head, meter)
    assert head._s == meter.s


def test_wrong_key_fails_the_meters_check():
    head = SecuritySession(ADDR, os.urandom(16))
    meter = Security(os.urandom(16), 0, os.urandom)
    req = head.auth_request(di_wire(0x070003FF) + fw.challenge(meter))
    assert not fw.authenticate(meter, req[8:16], req[16:24], req[24:32], 100)


def test_a_reply_without_the_meters_proof_is_refused():
    head, meter = pair()
    rm = fw.challenge(meter)
    req = head.auth_request(di_wire(0x070003FF) + rm)
    assert fw.authenticate(meter, req[8:16], req[16:24], req[24:32], 100)
    with pytest.raises(SecurityError, match="C2"):
        head.accept_auth_reply(di_wire(0x070000FF) + os.urandom(8) + b"\x00\x00" + WIRE, 100)


@settings(max_examples=25, deadline=None)
@given(amount=st.integers(1, 2**32 - 1), count=st.integers(1, 2**32 - 1), n=st.integers(1, 5))
def test_recharge_macs_and_sequence_match_the_meter(amount, count, n):
    head, meter = pair()
    authenticate(head, meter)
    for _ in range(n):  # every protected command moves the sequence by one on both sides
        data, seq = head.recharge_request(amount, count, "000000000042")
        assert seq == meter.last + 1
        fields = data[8:16]
        assert data[16:20] == fw.mac(meter, WIRE, 0x03, di_wire(DI_RECHARGE), fields, seq)
        assert data[26:30] == fw.mac(meter, WIRE, 0x03, di_wire(DI_RECHARGE), fields + data[20:26], seq)
        fw.remember(meter, seq, data, b"ok")
        head.confirm(seq)
    assert head.last == meter.last == n


def test_write_control_and_address_macs_match_the_meter():
    head, meter = pair()
    authenticate(head, meter)
    data, seq = head.write_request(0x04001001, b"\x00\x20\x00\x00")
    # DI + 99000000 + operator + value + seq + MAC
    assert data[4:8] == b"\x99\x00\x00\x00" and data[-8:-4] == seq.to_bytes(4, "little")
    assert data[-4:] == fw.mac(meter, WIRE, 0x14, data[:4], data[4:-8], seq)
    head.confirm(seq)
    n = bytes([0x1A, 0]) + bytes.fromhex("000011050625")
    data, seq = head.control_request(n)
    assert seq == 2 and data[8:16] == n
    assert data[-4:] == fw.mac(meter, WIRE, 0x1C, b"\x00" * 4, data[:-8], seq)
    head.confirm(seq)
    data, seq = head.write_address_request("000000000777")
    assert data[:6] == address_to_wire("000000000777") and data[6:10] == (3).to_bytes(4, "little")
    assert data[10:] == fw.mac(meter, WIRE, 0x15, b"\x00" * 4, data[:6], 3)
    with pytest.raises(ValueError, match="deadline"):
        head.control_request(bytes([0x1A, 0]) + bytes(6))


def _wallet_reply(meter: Security, seq: int, balance: int = -105, count: int = 7) -> bytes:
    body = ((balance & 0xFFFFFFFF).to_bytes(4, "little") + count.to_bytes(4, "little") + customer_wire("42")
            + bytes(4))
    return di_wire(DI_STATUS_QUERY) + body + fw.mac(meter, WIRE, 0x83, di_wire(DI_STATUS_QUERY), body, seq)


def test_status_reply_is_bound_to_its_request():
    head, meter = pair()
    authenticate(head, meter)
    data, seq = head.status_request()
    assert data[8:12] == fw.mac(meter, WIRE, 0x03, di_wire(DI_STATUS_QUERY), b"", seq)
    reply = _wallet_reply(meter, seq)
    w = head.parse_status_reply(reply, seq)
    assert (w.balance_fen, w.purchase_count, w.customer, w.krn) == (-105, 7, "000000000042", 0)
    head.confirm(seq)
    _, seq2 = head.status_request()
    with pytest.raises(SecurityError, match="replayed or forged"):
        head.parse_status_reply(reply, seq2)  # the earlier reply, played back
    forged = bytearray(_wallet_reply(meter, seq2))
    forged[4] ^= 1  # one fen more: the meter's MAC no longer fits
    with pytest.raises(SecurityError, match="MAC"):
        head.parse_status_reply(bytes(forged), seq2)


def test_refusals_claiming_a_result_need_the_meters_mac():
    head, meter = pair()
    authenticate(head, meter)
    _, seq = head.recharge_request(100, 2, "000000000042")
    head.check_reply(0xC3, b"\x08\x00", DI_RECHARGE, seq)  # no session / locked: a plain refusal
    with pytest.raises(SecurityError, match="forged"):
        head.check_reply(0xC3, b"\x02\x00", DI_RECHARGE, seq)  # "repeat recharge" with no MAC
    sealed = b"\x02\x00" + fw.mac(meter, WIRE, 0xC3, di_wire(DI_RECHARGE), b"\x02\x00", seq)
    head.check_reply(0xC3, sealed, DI_RECHARGE, seq)
    with pytest.raises(SecurityError):
        head.check_reply(0xC3, sealed, DI_RECHARGE, seq + 1)
    with pytest.raises(SecurityError):
        head.check_reply(0x83, di_wire(DI_RECHARGE), DI_RECHARGE, seq)  # an 83H with no MAC


def test_requests_are_the_schemas_bytes():
    head, meter = pair()
    assert payloads.parse_payload(0x03, head.challenge_request()) == {"di": 0x070003FF, "operator": 0, "body": {}}
    authenticate(head, meter)
    data, _ = head.end_session_request()
    assert payloads.parse_payload(0x03, data)["di"] == 0x070002FF and len(data) == 12
    data, _ = head.set_validity_request(10)
    assert payloads.parse_payload(0x03, data)["body"]["minutes"] == 10


def test_session_validity_margin_and_invalidate():
    head, meter = pair()
    assert not head.valid(0)
    with pytest.raises(SecurityError, match="authenticate"):
        head.write_request(0x04001001, b"\x00" * 4)
    authenticate(head, meter, now=1000)
    assert head.valid(1000) and head.valid(1000 + 300 - 21) and not head.valid(1000 + 300 - 19)
    head.invalidate()
    assert not head.valid(1000) and head.last == 0


def test_reply_from_another_meter_number_is_rejected():
    head, meter = pair()
    head.auth_request(di_wire(0x070003FF) + fw.challenge(meter))
    with pytest.raises(SecurityError, match="another meter number"):
        head.accept_auth_reply(di_wire(0x070000FF) + os.urandom(8) + b"\x00\x00" + address_to_wire("000000000001"), 0)
