"""protocol/SECURITY.md on the meter: sessions, MACs, the sequence rule, the purchase-count
rule and the MAC-failure lock, driven by a head-end written from the document with the
standard library's HMAC."""

import hashlib
import hmac

from hypothesis import given, settings, strategies as st

from meter import clock, security
from meter.store import RamFlash
from tests.firmware.hes import parse
from tests.firmware.core_support import (ADDR, KEY, T0, Rand, ask, headend, make, opened, serr, session,
                                         std_hmac)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=150), st.binary(max_size=300))
def test_hmac_matches_standard_library(key, msg):
    assert security.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


def test_meter_key_derivation_follows_the_document():
    master = bytes(range(32))
    addr = bytes.fromhex("129078563412")
    want = hmac.new(master, b"prepaid645/meter" + addr + bytes([3]), hashlib.sha256).digest()[:16]
    assert security.meter_key(master, addr, 3) == want


def test_identity_authentication_and_session_key():
    m, _ = make()
    he = headend()
    data = he.authed(m.handle(he.auth(b"\x01" * 8), T0))
    assert data[:4] == bytes.fromhex("ff000007")
    assert data[8:16] == b"\x00\x00" + bytes.fromhex("129078563412")  # serial = 0000 + meter number
    assert m.sec.s == he.s  # both sides derived the same session key
    assert m.status()["mac_fails"] == 0


def test_wrong_key_or_dispersion_fails_authentication():
    m, _ = make()
    bad = headend(key=bytes(16))
    assert serr(ask(m, bad.auth(b"\x02" * 8))) & 8
    assert m.status()["mac_fails"] == 1
    other = headend()
    other.number = bytes(6)
    assert serr(ask(m, other.auth(b"\x02" * 8))) & 8
    assert m.status()["mac_fails"] == 1  # a wrong meter number is no MAC failure


def test_protected_commands_need_a_session():
    m, _ = make()
    he = headend()
    he.s = bytes(16)
    assert serr(ask(m, he.purchase(100, 1, "000000000001", open_account=True))) == 8
    assert ask(m, he.write(0x04001001, bytes(4))) == (0xD4, b"\x04")
    assert ask(m, he.control(0x1A, T0 + 600)) == (0xDC, b"\x04")
    assert m.status()["count"] == 0


def test_open_account_and_recharge_apply_exactly_once():
    m, he, _ = opened(10000)
    st0 = m.status()
    assert (st0["balance_fen"], st0["count"], st0["customer"], st0["opened"]) == (10000, 1, "000000000042", True)
    req = he.purchase(5000, 2, "000000000042")
    first = m.handle(req, T0)
    assert first[8] == 0x83
    assert m.status()["balance_fen"] == 15000
    # the reply was lost: the identical retry gets the identical reply and credits nothing
    assert m.handle(req, T0 + 5) == first
    assert m.status()["balance_fen"] == 15000
    # a head-end that lost track authenticates again; the same count is "repeat recharge"
    session(m, he, T0 + 10, r1=b"\x22" * 8)
    assert serr(ask(m, he.purchase(5000, 2, "000000000042"), T0 + 10)) == 2
    assert m.status()["balance_fen"] == 15000 and m.status()["count"] == 2
    assert serr(ask(m, he.purchase(5000, 4, "000000000042"), T0 + 10)) == 1 << 5
    assert serr(ask(m, he.purchase(5000, 3, "000000000043"), T0 + 10)) == 1 << 4
    assert serr(ask(m, he.purchase(99999999, 3, "000000000042"), T0 + 10)) == 1 << 6
    assert m.status()["balance_fen"] == 15000 and m.status()["count"] == 2
    assert ask(m, he.purchase(100, 3, "000000000042"), T0 + 10)[0] == 0x83
    assert (m.status()["balance_fen"], m.status()["count"]) == (15100, 3)


def test_second_open_account_for_another_customer_is_refused():
    m, he, _ = opened(10000)
    assert serr(ask(m, he.purchase(100, 2, "000000000099", open_account=True))) == 1 << 4


def test_bad_mac_is_refused_counted_and_logged():
    m, he, _ = opened(10000)
    _, data = parse(he.purchase(5000, 2, "000000000042"))
    data = bytearray(data)
    data[-1] ^= 1  # last byte of MAC2
    assert serr(ask(m, he.frame(0x03, bytes(data)))) == 1 << 2
    assert m.status()["balance_fen"] == 10000
    assert m.status()["mac_fails"] == 1
    assert m.events.last(4, 1)[2:] == [0x03, 0x070102FF]


def test_five_mac_failures_lock_until_midnight_even_across_power_cycles():
    m, flash = make()
    bad = headend(key=bytes(16))
    for i in range(5):
        assert serr(ask(m, bad.auth(bytes([i]) * 8))) & 8
    good = headend()
    assert serr(ask(m, good.auth(b"\x05" * 8))) == 8  # locked: even the right key
    # reads still work
    assert ask(m, good.read(0x00010000))[0] == 0x91
    # power cycle: still locked the same day
    m2, _ = make(flash=flash, now=T0 + 60)
    assert serr(ask(m2, good.auth(b"\x06" * 8), T0 + 60)) == 8
    midnight = clock.from_fields(2025, 6, 6)
    assert serr(ask(m2, good.auth(b"\x07" * 8), midnight - 1)) == 8
    m2.tick(midnight)
    assert m2.status()["mac_fails"] == 0
    assert ask(m2, good.auth(b"\x08" * 8), midnight)[0] == 0x83


def test_sequence_rule_on_writes():
    m, he, _ = opened(10000)
    value = bytes.fromhex("00300000")  # 30.00 yuan
    assert ask(m, he.write(0x04001001, value, seq=5)) == (0xD4, b"\x04")  # skipped ahead
    assert m.status()["mac_fails"] == 0  # a wrong sequence is not a MAC failure
    req = he.write(0x04001001, value)
    ok = m.handle(req, T0)
    assert ok[8] == 0x94 and m.wallet.alarm1 == 3000
    assert m.handle(req, T0 + 1) == ok  # retry: same reply, executes nothing
    n_prog = m.events.counts[3]
    assert m.handle(req, T0 + 1) == ok and m.events.counts[3] == n_prog
    other = he.write(0x04001002, value, seq=he.seq)  # same seq, different request
    assert ask(m, other) == (0xD4, b"\x04")
    assert m.wallet.alarm2 == 500
    # a MAC made with the wrong session key counts
    he.s = bytes(16)
    assert ask(m, he.write(0x04001002, value)) == (0xD4, b"\x04")
    assert m.status()["mac_fails"] == 1


def test_status_query_is_signed_and_end_reports():
    m, he, _ = opened(12345)
    bal, cnt, cust = he.query_check(m.handle(he.query(), T0))
    assert (bal, cnt, cust) == (12345, 1, "000000000042")
    ctrl, data = ask(m, he.end())
    assert ctrl == 0x83
    assert data[4:10] == bytes.fromhex("420000000000")
    assert int.from_bytes(data[10:14], "little", signed=True) == 12345
    assert int.from_bytes(data[14:18], "little") == 1
    assert serr(ask(m, he.purchase(1, 2, "000000000042"))) == 8  # session over


def test_validity_window():
    m, he, _ = opened(100)
    assert ask(m, he.validity(1))[0] == 0x83
    assert ask(m, he.query(), T0 + 59)[0] == 0x83
    assert serr(ask(m, he.query(), T0 + 61)) == 8
    m2, he2, _ = opened(100)
    assert serr(ask(m2, he2.validity(0))) == 1  # 0 minutes is refused (after a good MAC)
    assert ask(m2, he2.query(), T0 + 299)[0] == 0x83
    assert serr(ask(m2, he2.query(), T0 + 300)) == 8  # default 5 minutes


def test_key_update_rotates_the_key_and_survives_power_cycle():
    m, he, flash = opened(100)
    new = bytes(range(100, 116))
    assert ask(m, he.key_update(1, new))[0] == 0x83
    assert m.status()["krn"] == 1
    m2, _ = make(flash=flash, now=T0 + 10)
    assert serr(ask(m2, headend().auth(b"\x09" * 8), T0 + 10)) & 8
    he2 = session(m2, headend(key=new), T0 + 10)
    assert he2.query_check(m2.handle(he2.query(), T0 + 10))[1] == 1


def test_plain_levels_only_in_bench_mode():
    m, _ = make()
    he = headend()
    assert ask(m, he.write_plain(0x04001001, bytes(4))) == (0xD4, b"\x04")
    assert ask(m, he.control_plain(0x1A, T0 + 600)) == (0xDC, b"\x04")
    assert not m.relay_open
    b, _ = make(bench=True)
    assert ask(b, he.write_plain(0x04001001, bytes.fromhex("00200000")))[0] == 0x94
    assert b.wallet.alarm1 == 2000
    assert ask(b, he.control_plain(0x1A, T0 + 600))[0] == 0x9C
    assert b.relay_open
    assert ask(b, he.write_plain(0x04001001, bytes(4), level=3)) == (0xD4, b"\x04")
    sw3 = ask(b, he.read(0x04000503))[1][4:6]
    assert sw3[0] & 0x08  # status word 3 bit 3 reports bench mode
    assert not ask(m, he.read(0x04000503))[1][4] & 0x08


def test_customer_number_must_be_bcd():
    m, _ = make()
    he = session(m, headend())
    from tests.firmware.hes import le
    di = le(0x070101FF, 4)
    ac = le(100, 4) + le(1, 4)
    cust = bytes.fromhex("1a0000000000")
    frame = he.frame(0x03, di + le(0, 4) + ac + he.mac(0x03, di, ac, 1) + cust + he.mac(0x03, di, ac + cust, 1))
    assert serr(ask(m, frame)) == 1 << 4
    assert not m.status()["opened"]
    assert ask(m, he.read(0x0400040E))[0] == 0x91
