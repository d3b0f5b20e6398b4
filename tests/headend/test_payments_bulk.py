"""A batch of payments (accept_payments: the bank return file's path) does exactly what the same
payments one at a time do, on the same ledger: same payments, journal rows, balances, outbox
recharges, audit and notices; all or nothing; a retried batch moves no money again."""

from __future__ import annotations

import pytest

from headend.payments import PaymentError, PaymentRequest, accept_payment, accept_payments
from tests.headend.payments_support import (
    LOCAL_CUST,
    LOCAL_METER,
    REMOTE_CUST,
    REMOTE_METER,
    T0,
    assert_books_balance,
    journal_total,
    money_store,
)
from tests.headend.store_support import Clock

OTHER_LOCAL, OTHER_METER = "000000000103", "000000000003"
CUT = "000000000104"


def _store(path):
    s = money_store(str(path), Clock(T0))
    s.add_account(OTHER_LOCAL, actor="admin", name="王五")
    s.add_meter(OTHER_METER, link="tcp://127.0.0.1:9003", customer=OTHER_LOCAL, actor="admin", mode="local")
    s.add_account(CUT, actor="admin", name="Cut Off", close_ok_fen=500)
    s.add_meter("000000000004", link="tcp://127.0.0.1:9004", customer=CUT, actor="admin", mode="remote")
    s.adjust(CUT, -300, actor="admin", reason="arrears", kind="adjustment")
    with s._tx() as tx:   # as the cost-control cycle leaves an account it cut
        tx.execute("UPDATE accounts SET supply = 'cut' WHERE customer = ?", (CUT,))
    return s


def _requests():
    return [
        PaymentRequest("online_banking", "T1", 5000, T0 - 60, customer=LOCAL_CUST),
        PaymentRequest("online_banking", "T2", 3000, T0 - 50, customer=REMOTE_CUST),
        PaymentRequest("mobile_app", "A1", 700, T0 - 40, meter=OTHER_METER, extra={"note": "app"}),
        PaymentRequest("online_banking", "T3", 1200, T0 - 30, meter=LOCAL_METER),          # same meter again
        PaymentRequest("bank_withholding", "B1-1", 900, T0 - 20, customer=REMOTE_CUST, extra={"seq": 1}),
        PaymentRequest("counter", "C1", 2000, T0 - 10, customer=CUT, tender={"kind": "cash"}),
        PaymentRequest("agent", "G1", 800, T0 - 5, meter=REMOTE_METER),                  # remote, by meter
        PaymentRequest("online_banking", "T2", 3000, T0 - 50, customer=REMOTE_CUST),       # T2 again
    ]


def _everything(s):
    """The whole state money touches, without row ids' own order of allocation."""
    with s._tx(write=False) as tx:
        def rows(sql):
            return tx.all(sql)
        return {
            "payments": rows("SELECT channel, txn_id, customer, meter, amount_fen, fee_fen, state, paid_at, day,"
                             " actor, tender, request, extra, command_id IS NOT NULL FROM payments ORDER BY id"),
            "ledger": rows("SELECT customer, kind, amount_fen, balance_after, actor, meter, channel, txn_id, day,"
                           " meter_fen, detail IS NOT NULL FROM ledger ORDER BY id"),
            "accounts": rows("SELECT customer, balance_fen, version, supply, owing_since, updated_at FROM accounts"
                             " ORDER BY customer"),
            "commands": rows("SELECT meter, kind, params, status, actor FROM commands ORDER BY id"),
            # a batch writes each kind of row together: the same rows, in another order
            "notices": sorted(rows("SELECT customer, kind, message, idem_key FROM notifications")),
            "audit": sorted(rows("SELECT actor, action, target, detail FROM audit WHERE action != 'channel.add'")),
        }


def test_a_batch_does_what_the_same_payments_one_at_a_time_do(tmp_path):
    one, bulk = _store(tmp_path / "one.db"), _store(tmp_path / "bulk.db")
    singles = [accept_payment(one, channel_id=r.channel_id, txn_id=r.txn_id, amount_fen=r.amount_fen,
                              paid_at=r.paid_at, customer=r.customer, meter=r.meter, tender=r.tender, extra=r.extra,
                              actor="bank") for r in _requests()]
    made = accept_payments(bulk, _requests(), actor="bank")
    assert [p.to_dict() for p, _ in made] == [p.to_dict() for p in singles]
    assert [created for _, created in made] == [True] * 7 + [False]
    a, b = _everything(one), _everything(bulk)
    for table in a:
        assert b[table] == a[table], table
    assert bulk.get_account(CUT).supply != "cut"        # the payment lifted it: restore queued
    assert_books_balance(bulk)


def test_a_batch_with_one_refused_payment_writes_nothing_and_names_it(tmp_path):
    s = _store(tmp_path / "m.db")
    before = journal_total(s), len(s.list_payments(limit=1000)), len(s.list_commands(limit=1000))
    reqs = _requests()
    reqs.insert(3, PaymentRequest("online_banking", "BIG", 100_000_000, T0, customer=REMOTE_CUST))
    with pytest.raises(PaymentError) as exc:
        accept_payments(s, reqs, actor="bank")
    assert exc.value.index == 3 and exc.value.code == "amount_too_large"
    assert (journal_total(s), len(s.list_payments(limit=1000)), len(s.list_commands(limit=1000))) == before


def test_the_headroom_counts_the_batchs_own_payments_to_the_same_meter(tmp_path):
    s = _store(tmp_path / "m.db")
    s.update_meter(LOCAL_METER, actor="admin", hoarding_fen=6000)
    with pytest.raises(PaymentError) as exc:
        accept_payments(s, [PaymentRequest("online_banking", "H1", 4000, T0, meter=LOCAL_METER),
                            PaymentRequest("online_banking", "H2", 4000, T0, meter=LOCAL_METER)], actor="bank")
    assert exc.value.index == 1 and exc.value.code == "hoarding_headroom" and "2000 fen" in exc.value.message


def test_a_retried_batch_moves_no_money_and_returns_the_first_payments(tmp_path):
    s = _store(tmp_path / "m.db")
    first = accept_payments(s, _requests(), actor="bank")
    books = journal_total(s), len(s.list_commands(limit=1000)), len(s.find_notices(limit=1000))
    again = accept_payments(s, _requests(), actor="bank")
    assert [p.id for p, _ in again] == [p.id for p, _ in first]
    assert not any(created for _, created in again)
    assert (journal_total(s), len(s.list_commands(limit=1000)), len(s.find_notices(limit=1000))) == books
    changed = _requests()
    changed[4] = PaymentRequest("bank_withholding", "B1-1", 901, T0 - 20, customer=REMOTE_CUST)
    with pytest.raises(PaymentError) as exc:
        accept_payments(s, changed, actor="bank")
    assert exc.value.code == "duplicate_conflict" and exc.value.index == 4 and exc.value.field == "amount_fen"


def test_a_big_batch_written_with_one_statement_per_table_equals_one_at_a_time(tmp_path):
    # 150 payments: past the size where rows go in with one statement each table and ids are read back
    reqs = [PaymentRequest("online_banking", f"N{i}", 100 + i, T0 - 1000 + i,
                           customer=(REMOTE_CUST, LOCAL_CUST, OTHER_LOCAL)[i % 3]) for i in range(150)]
    one, bulk = _store(tmp_path / "one.db"), _store(tmp_path / "bulk.db")
    singles = [accept_payment(one, channel_id=r.channel_id, txn_id=r.txn_id, amount_fen=r.amount_fen,
                              paid_at=r.paid_at, customer=r.customer, actor="bank") for r in reqs]
    made = accept_payments(bulk, reqs, actor="bank")
    assert [p.to_dict() for p, _ in made] == [p.to_dict() for p in singles]
    a, b = _everything(one), _everything(bulk)
    for table in a:
        assert b[table] == a[table], table
    assert len(b["commands"]) == 100
    assert_books_balance(bulk)
