"""Payments against a real `headend serve` and simulated meters (tools.fleet over TCP): the payment
follows its recharge to the meter, once, through lost replies; the journal, the cached balances
and the money on the meter agree to the fen."""

from __future__ import annotations

import json
import time

import pytest

from headend.payments import accept_payment, get_payment
from tests.headend.headend_proc import HeadEnd
from tests.headend.payments_support import assert_books_balance
from tests.headend.test_e2e import _start_bus, _stop

A1, A2 = "000000000001", "000000000002"
C1, C2 = "000000000101", "000000000102"


@pytest.fixture
def he(tmp_path):
    h = HeadEnd(tmp_path)
    yield h
    h.stop_serve()


def _meter_money(he: HeadEnd, address: str) -> str:
    code, out, err = he.cli("read", address, "remaining_money", "--json")
    assert code == 0, err
    return json.loads(out)[0]["reply"]["values"]["00900200"]["value"]


def _wait_state(he: HeadEnd, payment_id: int, state: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        with he.store() as s:
            p = get_payment(s, payment_id)
        if p.state == state or time.monotonic() > deadline:
            return p
        time.sleep(0.1)


def test_payments_reach_the_meter_or_the_account_once_and_the_books_agree(he):
    # the meter loses its first two recharge replies: the outbox retries, the meter answers
    # "repeat recharge" and credits once
    bus, buses = _start_bus(he, "--count", "2", "--drop", f"{A1}=recharge:2")
    try:
        link = {a: b["link"] for b in buses for a in b["meters"]}
        assert he.cli("meter", "add", A1, "--link", link[A1], "--customer", C1)[0] == 0
        assert he.cli("meter", "add", A2, "--link", link[A2], "--customer", C2, "--mode", "remote")[0] == 0
        he.start_serve()
        code, out, err = he.cli("recharge", A1, "50", "--idem", "hall-1")
        assert code == 0, err
        assert "50.00 yuan" in out
        with he.store() as s:
            s.add_channel("app", "mobile_app", actor="admin")
            p = accept_payment(s, channel_id="app", txn_id="A-1", amount_fen=1234, paid_at=s.now(), customer=C1,
                               actor="channel:app")
            again = accept_payment(s, channel_id="app", txn_id="A-1", amount_fen=1234, paid_at=p.paid_at,
                                   customer=C1, actor="channel:app")
            r = accept_payment(s, channel_id="app", txn_id="A-2", amount_fen=700, paid_at=s.now(), meter=A2,
                               actor="channel:app")
        assert again.id == p.id and r.state == "credited"
        p = _wait_state(he, p.id, "confirmed_on_meter")
        assert p.state == "confirmed_on_meter" and p.confirmed_at >= p.sent_at
        assert _meter_money(he, A1) == "62.34"                     # 50.00 + 12.34, each once
        assert _meter_money(he, A2) == "0.00"                      # remote: the money is on the account
        code, out, err = he.cli("ledger", "check")
        assert code == 0, err
        with he.store() as s:
            assert_books_balance(s)
            assert s.get_account(C2).balance_fen == 700
            on_meter = sum(e.meter_fen for e in s.ledger(C1, limit=100) if e.kind == "topup_confirmed")
            assert on_meter == 6234 and s.get_account(C1).balance_fen == 0
            [first] = s.list_payments(channel="operator")
            assert first.state == "confirmed_on_meter"
            recharges = s.list_commands(kind="recharge")
            assert len(recharges) == 2 and all(c.status == "confirmed" for c in recharges)
    finally:
        _stop(bus)
