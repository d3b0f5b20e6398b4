"""Vending through the voucher channel: `headend voucher issue` on a real SQLite file and key
file books the payment at issue, prints a token the meter's decoder accepts for that meter only,
and reading the token back as used confirms the money on the meter."""

from __future__ import annotations

import json

import pytest

from headend.cli.main import main
from headend.keys import KeyStore
from headend.payments import PaymentError
from headend.store import open_store
from headend.vouchers import token as H
from headend.vouchers.issue import issue_voucher
from meter import token as T
from tests.headend.payments_support import (KEYS, LOCAL_CUST, LOCAL_METER, REMOTE_METER, T0, assert_books_balance,
                                            money_store)

PASS = "correct horse battery"


def _key(keys, store, meter):
    return H.token_key(keys.meter_key(meter, store.get_meter(meter).krn), 0)


@pytest.fixture
def store(tmp_path):
    s = money_store(str(tmp_path / "v.db"))
    yield s
    assert_books_balance(s)
    s.close()


def test_issue_books_the_payment_and_money_leaving_for_the_meter_and_the_token_decodes_on_that_meter(store):
    v, p, tok = issue_voucher(store, KEYS, meter=LOCAL_METER, amount_fen=100_000, actor="alice")
    assert (p.channel_id, p.state, p.amount_fen, p.command_id) == ("voucher", "sent_to_meter", 100_000, None)
    kinds = [(e.kind, e.amount_fen) for e in store.ledger(LOCAL_CUST)]
    assert kinds[:2] == [("topup_sent", -100_000), ("payment", 100_000)]   # newest first
    assert store.in_flight_fen(LOCAL_METER) == 100_000       # counts against the hoarding limit
    assert store.list_commands(kind="recharge") == []         # the customer carries it, not the outbox
    assert v.tid == (T0 - H.TID_BASE_UNIX) // 60
    d = T.decode(_key(KEYS, store, LOCAL_METER), tok)
    assert d == (0, 0, v.tid, v.field) and T.fen(d[3]) == 100_000
    assert T.decode(_key(KEYS, store, REMOTE_METER), tok) is None
    # a second one in the same minute gets the next identifier; the meter's memory tells them apart
    v2, _, tok2 = issue_voucher(store, KEYS, meter=LOCAL_METER, amount_fen=5000, actor="alice")
    assert v2.tid == v.tid + 1 and tok2 != tok
    # the meter reports the first used: confirmed on the meter, once however often it is read
    for _ in range(2):
        used = store.mark_voucher_used(LOCAL_METER, v.tid, used_at=T0 + 60, actor="serve")
        assert used.state == "used"
    assert store.get_payment(p.id).state == "confirmed_on_meter"
    assert [e.kind for e in store.ledger(LOCAL_CUST)].count("topup_confirmed") == 1
    assert store.in_flight_fen(LOCAL_METER) == 5000


def test_a_voucher_payment_cannot_be_reversed_once_the_token_exists(store):
    from headend.payments import reverse_payment
    _, p, _ = issue_voucher(store, KEYS, meter=LOCAL_METER, amount_fen=5000, actor="alice")
    with pytest.raises(PaymentError) as e:
        reverse_payment(store, p.id, channel_id=None, actor="alice", reason="changed mind")
    assert e.value.code == "not_reversible"


@pytest.mark.parametrize("kw, code", [
    ({"meter": REMOTE_METER, "amount_fen": 5000}, "unknown_meter"),
    ({"meter": "000000000999", "amount_fen": 5000}, "unknown_meter"),
    ({"meter": LOCAL_METER, "amount_fen": 0}, "amount_invalid"),
    ({"meter": LOCAL_METER, "amount_fen": 200_001}, "amount_invalid"),         # 2,000.01 yuan: not whole yuan
    ({"meter": LOCAL_METER, "amount_fen": 5000, "channel_id": "counter"}, "unknown_channel"),
    ({"meter": LOCAL_METER, "amount_fen": 5000, "channel_id": "nope"}, "unknown_channel"),
])
def test_refused_issues_write_nothing(store, kw, code):
    before = store.journal(limit=1000)
    with pytest.raises(PaymentError) as e:
        issue_voucher(store, KEYS, actor="alice", **kw)
    assert e.value.code == code
    assert store.journal(limit=1000) == before and store.list_vouchers() == []


def test_hoarding_limit_counts_unused_vouchers(store):
    store.update_meter(LOCAL_METER, hoarding_fen=10_000, actor="t")
    issue_voucher(store, KEYS, meter=LOCAL_METER, amount_fen=8000, actor="alice")
    with pytest.raises(PaymentError) as e:
        issue_voucher(store, KEYS, meter=LOCAL_METER, amount_fen=3000, actor="alice")
    assert e.value.code == "hoarding_headroom"


def test_cli_voucher_issue_prints_a_token_for_the_meter_and_list_shows_it(tmp_path, monkeypatch, capsys):
    db = str(tmp_path / "cli.db")
    monkeypatch.setenv("PREPAID645_DB", db)
    monkeypatch.delenv("PREPAID645_CONFIG", raising=False)
    monkeypatch.delenv("PREPAID645_OPERATOR", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREPAID645_KEY_PASSPHRASE", PASS)
    monkeypatch.setenv("USER", "alice")
    assert main(["keys", "init"]) == 0
    capsys.readouterr()
    with open_store(db) as s:
        s.add_account(LOCAL_CUST, actor="t", name="张三")
        s.add_meter(LOCAL_METER, link="tcp://127.0.0.1:9", customer=LOCAL_CUST, actor="t", mode="local")
    assert main(["voucher", "issue", LOCAL_METER, "1000"]) == 0
    out = capsys.readouterr().out
    assert "1000.00 yuan" in out
    digits = out.split("token:")[1].split()
    assert [len(g) for g in digits] == [4] * 5
    [keyfile] = [f for f in tmp_path.iterdir() if f.name.endswith(".key")]
    keys = KeyStore.unlock(keyfile, PASS)
    assert main(["voucher", "list", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["meter"], row["amount_fen"], row["state"]) == (LOCAL_METER, 100_000, "issued")
    with open_store(db) as s:
        assert T.decode(_key(keys, s, LOCAL_METER), "".join(digits)) == (0, 0, row["tid"], row["field"])
    assert main(["voucher", "issue", LOCAL_METER, "1000.05"]) == 2
    assert "whole number of jiao" in capsys.readouterr().err
    with open_store(db) as s:
        assert_books_balance(s)
