"""The head-end learns what the meter did with its tokens: the meter's token records (DIs 033D00nn,
read from a real firmware core) mark vouchers used and confirm key changes; a key change is
refused while vouchers under the old key are outstanding, and vouchers vended after it are made
under the new key, which the meter takes once the four key-change tokens are in."""

from __future__ import annotations

import pytest

from headend.payments import PaymentError
from headend.vouchers import token as H
from headend.vouchers.issue import issue_key_change, issue_voucher
from headend.vouchers.used import note_token_records
from meter import token as T
from meter import topup
from meter.core import Meter
from meter.desktop import RamFlash
from protocol import di, parse_frame
from tests.headend.payments_support import KEYS, LOCAL_CUST, LOCAL_METER, REMOTE_METER, assert_books_balance, money_store
from tools.bench.hes import HeadEnd
from tools.sim.seeded_rand import Rand


@pytest.fixture
def store(tmp_path):
    s = money_store(str(tmp_path / "v.db"))
    yield s
    assert_books_balance(s)
    s.close()


def _meter(store):
    """The meter LOCAL_METER as its firmware core, with the key the head-end derives for it."""
    key = KEYS.meter_key(LOCAL_METER, store.get_meter(LOCAL_METER).krn)
    m = Meter({"address": LOCAL_METER, "key": key, "krn": 0, "mode": "local"}, RamFlash(16384), 900_000_000, Rand())
    m.wallet.opened = True  # an account opened over the line before
    m.wallet.customer = LOCAL_CUST
    return m, key


def _read(m, key, d):
    """Read DI d from the meter as the head-end's link does: frame out, reply parsed and decoded."""
    he = HeadEnd(LOCAL_METER, key, None)
    f = parse_frame(m.handle(he.read(d), 900_000_100))
    value, seq = f.data[4:], 0
    while f.control in (0xB1, 0xB2):  # a block longer than one reply: follow-ups (12H) with SEQ
        seq += 1
        f = parse_frame(m.handle(he.frame(0x12, di.di_to_wire(d) + bytes([seq])), 900_000_100))
        value += f.data[4:-1]
    assert f.control in (0x91, 0x92)
    return d, di.decode_value(d, value)


def test_reading_the_token_records_marks_the_vouchers_the_meter_took_used_once(store):
    m, key = _meter(store)
    v1, p1, t1 = issue_voucher(store, KEYS, meter=LOCAL_METER, amount_fen=5000, actor="alice")
    v2, p2, t2 = issue_voucher(store, KEYS, meter=LOCAL_METER, amount_fen=1_234_500, actor="alice")
    v3, _, _ = issue_voucher(store, KEYS, meter=LOCAL_METER, amount_fen=700, actor="alice")
    topup.set_limits(m.wallet, hoard=0)
    assert m.token(t2, 900_000_010) == T.OK and m.token(t1, 900_000_020) == T.OK
    assert note_token_records(store, LOCAL_METER, [_read(m, key, 0x033D00FF)], actor="serve") == 2
    assert {v.id: v.state for v in store.list_vouchers()} == {v1.id: "used", v2.id: "used", v3.id: "issued"}
    assert store.get_payment(p2.id).state == "confirmed_on_meter"
    assert store.in_flight_fen(LOCAL_METER) == 700
    # read again, one by one this time: nothing counts twice
    assert note_token_records(store, LOCAL_METER, [_read(m, key, 0x033D0001), _read(m, key, 0x033D0002)],
                              actor="serve") == 0
    assert [e.kind for e in store.ledger(LOCAL_CUST)].count("topup_confirmed") == 2


def test_a_key_change_waits_for_outstanding_vouchers_then_moves_the_meter_and_later_vouchers_to_the_new_key(store):
    m, key = _meter(store)
    v, _, tok = issue_voucher(store, KEYS, meter=LOCAL_METER, amount_fen=5000, actor="alice")
    with pytest.raises(PaymentError) as e:
        issue_key_change(store, KEYS, meter=LOCAL_METER, actor="alice")
    assert e.value.code == "vouchers_outstanding" and str(v.id) in e.value.message
    assert m.token(tok, 900_000_010) == T.OK
    note_token_records(store, LOCAL_METER, [_read(m, key, 0x033D0001)], actor="serve")
    tkrn, parts = issue_key_change(store, KEYS, meter=LOCAL_METER, actor="alice")
    assert tkrn == 1 and len(parts) == 4
    v2, _, tok2 = issue_voucher(store, KEYS, meter=LOCAL_METER, amount_fen=3000, actor="alice")
    assert v2.tkrn == 1
    assert m.token(tok2, 900_000_020) == T.INVALID  # typed before the key change: not yet its key
    for p in parts[:3]:
        assert m.token(p, 900_000_030) == T.PART
    assert store.list_voucher_keys(LOCAL_METER)[0][3] is None  # not confirmed yet
    assert m.token(parts[3], 900_000_040) == T.OK
    assert m.token(tok2, 900_000_050) == T.OK
    note_token_records(store, LOCAL_METER, [_read(m, key, 0x033D00FF)], actor="serve")
    assert store.get_voucher(v2.id).state == "used"
    assert store.list_voucher_keys(LOCAL_METER)[0][3] is not None  # the meter reported the key change
    assert m.status()["balance_fen"] == 8000
    with pytest.raises(PaymentError) as e:
        issue_key_change(store, KEYS, meter=REMOTE_METER, actor="alice")
    assert e.value.code == "unknown_meter"


def test_a_record_of_a_tid_no_voucher_carries_is_skipped(store):
    m, key = _meter(store)
    tk = H.token_key(key, 0)
    assert m.token(H.encode(tk, H.CREDIT, 0, 12345, H.amount_field(100)), 900_000_010) == T.OK
    assert note_token_records(store, LOCAL_METER, [_read(m, key, 0x033D0001)], actor="serve") == 0


def test_the_outbox_workers_read_of_the_token_records_marks_the_voucher_used_over_tcp(tmp_path):
    """End to end over loopback TCP: the worker reads a real meter core's token block (with
    follow-ups) and the voucher the customer typed there becomes used, its money confirmed."""
    import asyncio

    from headend.vouchers.issue import ensure_voucher_channel
    from tests.headend.test_commands import Rig

    async def main():
        async with Rig(tmp_path, n=1) as rig:
            a = rig.addresses[0]
            s = rig.store
            opened = await rig.run(a, "recharge", {"amount_fen": 1000})  # opens the meter's account
            assert opened.status == "confirmed", opened.last_error
            ensure_voucher_channel(s, actor="test")
            v, p, tok = issue_voucher(s, rig.keys, meter=a, amount_fen=2500, actor="alice")
            core = rig.meter(a)
            assert core.token(tok, core.last_t) == T.OK
            cmd = await rig.run(a, "read", {"dis": ["033D00FF"]})
            return cmd, s.get_voucher(v.id), s.get_payment(p.id), core.status()["balance_fen"]

    cmd, v, p, balance = asyncio.run(main())
    assert cmd.status == "confirmed", cmd.last_error
    assert v.state == "used" and p.state == "confirmed_on_meter" and balance == 3500
