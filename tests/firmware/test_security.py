"""protocol/SECURITY.md on the meter: sessions, MACs, the sequence rule, the purchase-count
rule and the MAC-failure lock, driven by a head-end written from the document with the
standard library's HMAC."""

import hashlib
import hmac

from hypothesis import given, settings, strategies as st

from meter import clock, disrec, security
from tools.bench.hes import parse
from tests.firmware.core_support import (ADDR, KEY, T0, ask, headend, make, opened, serr, session,
                                         std_hmac)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=150), st.binary(max_size=300))
def test_hmac_matches_standard_library(key, msg):
    assert security.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


def test_meter_key_derivation_follows_the_document():
    from headend.keys import derive_meter_key
    master = bytes(range(32))
    addr = bytes.fromhex("129078563412")
    want = hmac.new(master, b"prepaid645/meter" + addr + bytes([3]), hashlib.sha256).digest()[:16]
    assert derive_meter_key(master, "123456789012", 3) == want


def test_identity_authentication_is_challenge_response_both_ways():
    m, _ = make()
    he = headend()
    rm = he.challenged(m.handle(he.challenge(), T0))
    assert len(rm) == 8
    data = he.authed(m.handle(he.auth(b"\x01" * 8), T0))  # checks the meter's proof C2 too
    assert data[:4] == bytes.fromhex("ff000007") and len(data) == 20
    assert data[12:20] == b"\x00\x00" + bytes.fromhex("129078563412")  # serial = 0000 + meter number
    assert m.sec.s == he.s == std_hmac(KEY, b"session" + rm + b"\x01" * 8)[:16]
    assert m.status()["mac_fails"] == 0


def test_a_captured_authentication_cannot_open_a_session_again():
    m, _ = make()
    he = headend()
    he.challenged(m.handle(he.challenge(), T0))
    captured = he.auth(b"\x01" * 8)
    assert ask(m, captured)[0] == 0x83
    # the challenge was used: the same frame again is refused unchecked (not counted)
    assert serr(ask(m, captured, T0 + 1)) == 8 and m.status()["mac_fails"] == 0
    # a new challenge is outstanding: the old proof does not fit it (a failed proof, counted)
    ask(m, he.challenge(), T0 + 2)
    assert serr(ask(m, captured, T0 + 3)) == 8 and m.status()["mac_fails"] == 1


def test_a_repeated_challenge_request_gets_the_same_challenge_until_a_proof_uses_it():
    m, _ = make()
    he = headend()
    first = he.challenged(m.handle(he.challenge(), T0))
    assert he.challenged(m.handle(he.challenge(), T0)) == first  # a retry or a doubled frame
    he.authed(m.handle(he.auth(b"\x04" * 8), T0))  # the proof over it still fits
    he.rm = None
    assert he.challenged(m.handle(he.challenge(), T0)) != first  # used: a fresh one


def test_each_challenge_takes_one_guess():
    m, _ = make()
    bad = headend(key=bytes(16))
    bad.challenged(m.handle(bad.challenge(), T0))
    assert serr(ask(m, bad.auth(b"\x02" * 8))) == 8
    assert serr(ask(m, bad.auth(b"\x03" * 8))) == 8  # no second guess on that challenge
    assert m.status()["mac_fails"] == 1


def test_a_meter_without_the_key_cannot_pass_as_the_meter():
    m, _ = make(key=bytes(16))
    he = headend()
    he.challenged(m.handle(he.challenge(), T0))
    reply = m.handle(he.auth(b"\x01" * 8), T0)
    assert parse(reply)[0] == 0xC3  # the head-end's C1 fails there ...
    fake = bytearray(parse(he.auth(b"\x01" * 8))[1][:4]) + bytes(16)  # ... and a made-up 83H reply
    from tools.bench.hes import le  # noqa: F401
    try:
        he.authed(he.frame(0x83, bytes(fake)))
    except ValueError as exc:
        assert "C2" in str(exc)
    else:
        raise AssertionError("a reply without the meter's proof was taken")


def test_wrong_key_or_dispersion_fails_authentication():
    m, _ = make()
    bad = headend(key=bytes(16))
    bad.challenged(m.handle(bad.challenge(), T0))
    assert serr(ask(m, bad.auth(b"\x02" * 8))) & 8
    assert m.status()["mac_fails"] == 1
    other = headend()
    other.number = bytes(6)
    other.challenged(m.handle(other.challenge(), T0))
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
    assert disrec.last(m.events, 4, 1)[2:] == [0x03, 0x070102FF]


def _burst(m, n, t=T0):
    bad = headend(key=bytes(16))
    for i in range(n):
        r = ask(m, bad.challenge(), t)
        bad.rm = r[1][4:12] if r[0] == 0x83 else None  # refused once at the limit
        ask(m, bad.auth(bytes([i]) * 8), t)


def test_a_burst_of_failed_proofs_holds_the_meter_for_minutes_not_the_day():
    m, flash = make()
    _burst(m, 12)
    assert m.status()["mac_fails"] == 5  # at the limit, proofs go unchecked: nothing more counts
    good = headend()
    assert serr(ask(m, good.challenge())) == 8  # refused unchecked: even the right key waits
    assert ask(m, good.read(0x00010000))[0] == 0x91  # reads still work
    # power cycle: the level is kept
    m2, _ = make(flash=flash, now=T0 + 60)
    assert serr(ask(m2, good.challenge(), T0 + 60)) == 8
    assert serr(ask(m2, good.challenge(), T0 + 599)) == 8
    # ten minutes after the burst one failed proof is forgiven: the key holder gets in
    session(m2, good, T0 + 600)
    assert m2.status()["mac_fails"] == 4
    m2.tick(T0 + 3000)
    assert m2.status()["mac_fails"] == 0


def test_failed_proofs_are_counted_at_a_bounded_rate_all_day():
    m, _ = make()
    t = T0
    checked = 0
    bad = headend(key=bytes(16))
    day_end = clock.from_fields(2025, 6, 6)
    while t < day_end:  # an attacker sending a made-up proof every minute all day
        r = ask(m, bad.challenge(), t)
        if r[0] == 0x83:
            bad.rm = r[1][4:12]
            ask(m, bad.auth(b"\x09" * 8), t)
            checked += 1
        t += 60
    # 5 at once, then one per 10 minutes: the daily limit on guesses
    assert checked <= 5 + (day_end - T0) // 600 + 1
    m.tick(t + 600)
    session(m, headend(), t + 600)  # and the key holder gets in ten minutes after it stops


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


def test_status_query_and_end_need_the_session_and_are_bound_to_their_seq():
    m, he, _ = opened(12345)
    first = m.handle(he.query(), T0)
    assert he.query_check(first) == (12345, 1, "000000000042")
    assert ask(m, he.purchase(100, 2, "000000000042"))[0] == 0x83
    # an earlier reply played back fails the head-end's check (it was for another seq)
    he.query()
    try:
        he.query_check(first)
    except ValueError as exc:
        assert "MAC" in str(exc)
    else:
        raise AssertionError("a replayed status reply was taken")
    # a query or end without the session's MAC reveals nothing
    stranger = headend()
    stranger.s = bytes(16)
    assert serr(ask(m, stranger.query())) == 4
    assert serr(ask(m, stranger.end())) == 4
    he.seq -= 1  # the last query above never reached the meter
    assert he.query_check(m.handle(he.query(), T0))[:2] == (12445, 2)
    ctrl, body = he.sealed(m.handle(he.end(), T0), 0x070002FF)
    assert ctrl == 0x83
    assert body == (12445).to_bytes(4, "little") + (2).to_bytes(4, "little") + bytes.fromhex("420000000000") + bytes(4)
    assert serr(ask(m, he.purchase(1, 3, "000000000042"))) == 8  # session over


def test_recharge_replies_and_refusals_are_sealed_with_the_seq():
    m, he, _ = opened(10000)
    ok = m.handle(he.purchase(500, 2, "000000000042"), T0)
    assert he.sealed(ok, 0x070102FF) == (0x83, b"")
    repeat = m.handle(he.purchase(500, 2, "000000000042"), T0)
    ctrl, body = he.sealed(repeat, 0x070102FF)
    assert (ctrl, body) == (0xC3, b"\x02\x00")  # "repeat recharge", under the meter's MAC
    try:
        he.sealed(repeat, 0x070102FF, seq=he.seq + 1)  # the same refusal replayed for a later one
    except ValueError as exc:
        assert "MAC" in str(exc)
    else:
        raise AssertionError("an old repeat-recharge reply was taken")


def test_validity_window_is_for_its_session_only():
    m, he, flash = opened(100)
    assert ask(m, he.validity(1))[0] == 0x83
    assert ask(m, he.query(), T0 + 59)[0] == 0x83
    assert serr(ask(m, he.query(), T0 + 61)) == 8
    session(m, he, T0 + 62)
    assert ask(m, he.query(), T0 + 62 + 299)[0] == 0x83  # the next session: 5 minutes again
    assert ask(m, he.validity(30), T0 + 62 + 299)[0] == 0x83
    m2, _ = make(flash=flash, now=T0 + 400)  # a power cycle ends the session, window and all
    session(m2, he, T0 + 400)
    assert serr(ask(m2, he.query(), T0 + 700)) == 8
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
    old = headend()
    old.challenged(m2.handle(old.challenge(), T0 + 10))
    assert serr(ask(m2, old.auth(b"\x09" * 8), T0 + 10)) & 8
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
    from tools.bench.hes import le
    di = le(0x070101FF, 4)
    ac = le(100, 4) + le(1, 4)
    cust = bytes.fromhex("1a0000000000")
    frame = he.frame(0x03, di + le(0, 4) + ac + he.mac(0x03, di, ac, 1) + cust + he.mac(0x03, di, ac + cust, 1))
    assert serr(ask(m, frame)) == 1 << 4
    assert not m.status()["opened"]
    assert ask(m, he.read(0x0400040E))[0] == 0x91


def test_write_address_needs_the_session_mac():
    from tools.bench.hes import HeadEnd
    m, he, flash = opened(100)
    allaa = HeadEnd("AAAAAAAAAAAA", KEY, std_hmac)
    assert ask(m, allaa.frame(0x15, bytes.fromhex("770700000000"))) == (0xD5, b"\x04")  # plain: bench only
    stranger = headend()
    stranger.s = bytes(16)
    stranger.seq = he.seq  # the right seq, a made-up MAC
    assert ask(m, stranger.write_address("000000000777")) == (0xD5, b"\x04")
    assert m.status()["address"] == ADDR and m.status()["mac_fails"] == 1
    req = he.write_address("000000000777")
    first = m.handle(req, T0)
    assert parse(first)[0] == 0x95 and m.status()["address"] == "000000000777"
    assert m.handle(req, T0) is None  # the old address no longer answers
    assert not m.sec.active(T0)  # and the session (its MACs bound the old address) is over
    m2, _ = make(flash=flash, now=T0 + 5)
    assert m2.status()["address"] == "000000000777"
    bench, _ = make(bench=True)
    assert parse(bench.handle(allaa.frame(0x15, bytes.fromhex("770700000000")), T0))[0] == 0x95
