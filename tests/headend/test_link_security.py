"""The head-end's security session against the meter's own half (firmware meter.security)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headend.link.security import (
    DI_RECHARGE,
    SecurityError,
    SecuritySession,
    address_wire,
    customer_wire,
    derive_meter_key,
    di_wire,
)
from meter import security as fw

ADDR = "123456789012"


def pair(key=None, number=None):
    key = key or os.urandom(16)
    head = SecuritySession(ADDR, key, meter_number=number)
    meter = fw.Security(key, 0, os.urandom)
    return head, meter


def authenticate(head: SecuritySession, meter: fw.Security, now=100):
    req = head.auth_request()
    assert req[:4] == di_wire(0x070000FF) and len(req) == 32
    c1, r1, disp = req[8:16], req[16:24], req[24:32]
    assert disp == b"\x00\x00" + customer_wire(ADDR)
    assert meter.authenticate(c1, r1, disp, now)
    reply = di_wire(0x070000FF) + meter.r2 + b"\x00\x00" + address_wire(ADDR)
    head.accept_auth_reply(reply, now)
    return reply


def test_wire_helpers():
    assert address_wire(ADDR) == bytes.fromhex("129078563412")
    assert di_wire(0x00010000) == bytes.fromhex("00000100")
    with pytest.raises(ValueError, match="12 decimal digits"):
        address_wire("12345678901X")


def test_meter_key_derivation_matches_firmware():
    master = os.urandom(32)
    assert derive_meter_key(master, ADDR, 3) == fw.meter_key(master, address_wire(ADDR), 3)
    assert derive_meter_key(master, ADDR, 3) != derive_meter_key(master, ADDR, 4)


def test_wrong_key_fails_the_meters_check():
    head = SecuritySession(ADDR, os.urandom(16))
    meter = fw.Security(os.urandom(16), 0, os.urandom)
    req = head.auth_request()
    assert not meter.authenticate(req[8:16], req[16:24], req[24:32], 100)


@settings(max_examples=25, deadline=None)
@given(amount=st.integers(1, 2**32 - 1), count=st.integers(1, 2**32 - 1), n=st.integers(1, 5))
def test_recharge_macs_and_sequence_match_the_meter(amount, count, n):
    head, meter = pair()
    authenticate(head, meter)
    for _ in range(n):  # every protected command moves the sequence by one on both sides
        data, seq = head.recharge_request(amount, count, "000000000042")
        assert seq == meter.last + 1
        fields = data[8:16]
        assert data[16:20] == meter.mac(address_wire(ADDR), 0x03, di_wire(DI_RECHARGE), fields, seq)
        assert data[26:30] == meter.mac(address_wire(ADDR), 0x03, di_wire(DI_RECHARGE), fields + data[20:26], seq)
        meter.remember(seq, data, b"ok")
        head.confirm(seq)
    assert head.last == meter.last == n


def test_write_and_control_macs_match_the_meter():
    head, meter = pair()
    authenticate(head, meter)
    data, seq = head.write_request(0x04001001, b"\x00\x20\x00\x00")
    # DI + 99000000 + operator + value + seq + MAC
    assert data[4:8] == b"\x99\x00\x00\x00" and data[-8:-4] == seq.to_bytes(4, "little")
    want = meter.mac(address_wire(ADDR), 0x14, data[:4], data[4:-8], seq)
    assert data[-4:] == want
    head.confirm(seq)
    n = bytes([0x1A, 0]) + bytes(6)
    data, seq = head.control_request(n)
    assert seq == 2 and data[8:16] == n
    assert data[-4:] == meter.mac(address_wire(ADDR), 0x1C, b"\x00" * 4, data[:-8], seq)


def test_status_reply_is_verified():
    head, meter = pair()
    authenticate(head, meter)
    bal = (-105 & 0xFFFFFFFF).to_bytes(4, "little")
    cnt = (7).to_bytes(4, "little")
    addr = address_wire(ADDR)
    reply = (di_wire(0x078102FF) + bal + meter.tagged(b"bal", addr, bal) + cnt + meter.tagged(b"cnt", addr, cnt)
             + customer_wire("000000000042") + bytes([0, 0, 0, 0]))
    w = head.parse_status_reply(reply)
    assert (w.balance_fen, w.purchase_count, w.customer, w.krn) == (-105, 7, "000000000042", 0)
    forged = bytearray(reply)
    forged[4] ^= 1  # one fen more: the meter's MAC no longer fits
    with pytest.raises(SecurityError, match="MAC"):
        head.parse_status_reply(bytes(forged))


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
    head.auth_request()
    with pytest.raises(SecurityError, match="another meter number"):
        head.accept_auth_reply(di_wire(0x070000FF) + b"\x01\x02\x03\x04" + b"\x00\x00" + address_wire("000000000001"), 0)
