"""The journal: balances derived from it, daily close, operator corrections, charges joining it,
and a property test that random money sequences keep journal sums equal to cached balances."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headend.payments import PaymentError, accept_payment, reverse_payment
from headend.store import Conflict, InvalidInput
from tests.headend.payments_support import (
    LOCAL_CUST,
    LOCAL_METER,
    REMOTE_CUST,
    T0,
    assert_books_balance,
    money_store,
)
from tests.headend.store_support import Clock
from tests.store_backends import raw_sql


@pytest.fixture
def clock():
    return Clock(T0)


@pytest.fixture
def store(store_db, clock):
    s = money_store(store_db, clock)
    yield s
    assert_books_balance(s)
    s.close()


def test_check_ledger_finds_a_balance_changed_behind_the_journal(store, store_db):
    store.credit(REMOTE_CUST, 500, actor="t", idem_key="k1")
    assert store.check_ledger() == []
    raw_sql(store_db, "UPDATE accounts SET balance_fen = balance_fen + 1 WHERE customer = ?", (REMOTE_CUST,))
    [problem] = store.check_ledger()
    assert REMOTE_CUST in problem and "501" in problem and "journal sum 500" in problem
    raw_sql(store_db, "UPDATE accounts SET balance_fen = balance_fen - 1 WHERE customer = ?", (REMOTE_CUST,))


def test_check_ledger_finds_money_in_flight_without_a_payment(store, store_db):
    accept_payment(store, channel_id="agent", txn_id="F1", amount_fen=100, paid_at=T0, customer=LOCAL_CUST,
                   actor="a")
    raw_sql(store_db, "UPDATE payments SET state = 'credited'")
    [problem] = store.check_ledger()
    assert LOCAL_METER in problem and "100 fen sent" in problem
    raw_sql(store_db, "UPDATE payments SET state = 'sent_to_meter'")


def test_refund_and_adjustment_need_an_operator_reason(store):
    store.credit(REMOTE_CUST, 1000, actor="t", idem_key="k1")
    with pytest.raises(InvalidInput, match="reason"):
        store.adjust(REMOTE_CUST, 100, actor="alice", reason=" ")
    with pytest.raises(InvalidInput, match="more than 0"):
        store.adjust(REMOTE_CUST, -100, actor="alice", reason="x", kind="refund")
    e, new = store.adjust(REMOTE_CUST, 300, actor="alice", reason="paid back at the counter", kind="refund")
    assert (e.kind, e.amount_fen, e.balance_after, e.actor, e.detail, new) == (
        "refund", -300, 700, "alice", {"reason": "paid back at the counter"}, True)
    e2, _ = store.adjust(REMOTE_CUST, -50, actor="bob", reason="meter reading corrected", idem_key="adj-1")
    assert store.adjust(REMOTE_CUST, -50, actor="bob", reason="again", idem_key="adj-1") == (e2, False)
    assert store.get_account(REMOTE_CUST).balance_fen == 650
    assert store.audit_entries(action="account.refund")[0].actor == "alice"


def test_a_closed_day_is_frozen_and_corrections_go_to_the_next_open_day(store, clock):
    store.credit(REMOTE_CUST, 1000, actor="t", idem_key="k1")
    today = store.business_day()
    assert today == "2025-12-05"
    totals = store.close_day(today, actor="auditor")
    assert totals["kinds"]["payment"] == {"rows": 1, "amount_fen": 1000, "meter_fen": 0}
    with pytest.raises(Conflict, match="already closed"):
        store.close_day(today, actor="auditor")
    with pytest.raises(InvalidInput, match="not begun"):
        store.close_day("2025-12-07", actor="auditor")
    e, _ = store.adjust(REMOTE_CUST, -10, actor="alice", reason="late correction for the 5th")
    assert e.day == "2025-12-06"                                   # not into the closed day
    assert store.day_totals(today) == totals                       # the closed day did not move
    clock.t += 86400
    store.close_day("2025-12-06", actor="auditor")
    e, _ = store.adjust(REMOTE_CUST, -10, actor="alice", reason="another")
    assert e.day == "2025-12-07"
    assert [d[0] for d in store.closed_days()] == ["2025-12-06", "2025-12-05"]


def test_rating_charges_join_the_journal_with_their_day_and_batch(store):
    store.credit(REMOTE_CUST, 1000, actor="t", idem_key="k1")
    assert store.charge_accounts("daily:2025-12-05", [(REMOTE_CUST, 153, 4200, 9000)], actor="costctl") == 1
    [charge] = [e for e in store.ledger(REMOTE_CUST) if e.kind == "charge"]
    assert (charge.amount_fen, charge.balance_after, charge.day, charge.ref) == (-153, 847, "2025-12-05",
                                                                                 "batch:daily:2025-12-05")


def test_a_fixed_charge_is_booked_as_its_own_journal_row(store):
    store.credit(REMOTE_CUST, 1000, actor="t", idem_key="k1")
    store.charge_accounts("daily:2", [(REMOTE_CUST, 153, 4200, 9000, T0)], actor="costctl", interval_s=86400,
                          fixed_fen=[50])
    rows = [(e.kind, e.amount_fen, e.balance_after) for e in reversed(store.ledger(REMOTE_CUST)) if e.kind != "payment"]
    assert rows == [("charge", -103, 897), ("fixed_charge", -50, 847)]
    assert store.get_account(REMOTE_CUST).balance_fen == 847
    assert store.remainder_at(REMOTE_CUST, T0 + 86400) == 4200
    assert store.charged_between(REMOTE_CUST, T0, T0 + 86400) == 153      # re-rating compares the whole charge
    with pytest.raises(InvalidInput, match="fixed"):
        store.charge_accounts("daily:3", [(REMOTE_CUST, 10, 0, 0)], actor="costctl", fixed_fen=[11])


def test_rerating_corrections_join_the_journal(store):
    store.credit(REMOTE_CUST, -42, actor="rerate", idem_key="rerate:x", kind="rerate")
    assert store.journal(kind="rerate")[0].amount_fen == -42


def test_operator_accounts_keep_profile_fields(store):
    a = store.add_account("000000000200", actor="alice", name="王五", phones=["13800000001", "010-5555 1234"],
                          address="1 Road", district="Haidian", segment="residential", language="en", important=True,
                          withholding={"bank": "ICBC", "account": "6222****1234", "agreement": "W-77"})
    assert (a.phone, a.phones, a.district, a.important, a.withholding["agreement"]) == (
        "13800000001", ("13800000001", "010-5555 1234"), "Haidian", True, "W-77")
    a = store.update_account("000000000200", actor="bob", phone="13900000002")
    assert a.phones == ("13900000002", "010-5555 1234") and a.phone == "13900000002"
    with pytest.raises(InvalidInput, match="phone"):
        store.update_account("000000000200", actor="bob", phones=["1" * 41])


# ----------------------------------------------------------------------------- property
_step = st.one_of(
    st.tuples(st.just("pay"), st.sampled_from([LOCAL_CUST, REMOTE_CUST]), st.integers(1, 20000),
              st.sampled_from(["agent", "kiosk", "mobile_app"]), st.integers(0, 5)),
    st.tuples(st.just("reverse"), st.integers(0, 30)),
    st.tuples(st.just("charge"), st.integers(0, 3000)),
    st.tuples(st.just("confirm"),),
    st.tuples(st.just("fail"),),
    st.tuples(st.just("reject"),),
    st.tuples(st.just("cancel"),),
    st.tuples(st.just("retry"),),
    st.tuples(st.just("adjust"), st.integers(-500, 500).filter(bool)),
    st.tuples(st.just("next_day"),),
    st.tuples(st.just("close_day"),),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_step, max_size=25))
def test_random_money_sequences_keep_journal_sums_equal_to_balances(tmp_path_factory, steps):
    clock = Clock(T0)
    s = money_store(str(tmp_path_factory.mktemp("prop") / "p.db"), clock)
    try:
        paid: list[int] = []
        n = 0
        for step in steps:
            kind = step[0]
            try:
                if kind == "pay":
                    _, cust, amount, channel, dup = step
                    n += 1
                    p = accept_payment(s, channel_id=channel, txn_id=f"T{n - dup if n > dup else n}",
                                       amount_fen=amount, paid_at=T0, customer=cust, actor="prop")
                    paid.append(p.id)
                elif kind == "reverse" and paid:
                    pid = paid[step[1] % len(paid)]
                    reverse_payment(s, pid, channel_id=None, actor="prop", reason="property")
                elif kind == "charge":
                    n += 1
                    s.charge_accounts(f"b{n}", [(REMOTE_CUST, step[1], 0, 0)], actor="costctl")
                elif kind in ("confirm", "fail", "reject"):
                    for cmd in s.claim_next(limit=5):
                        if kind == "confirm":
                            s.confirm(cmd.id)
                        else:
                            getattr(s, kind)(cmd.id, "refused")
                elif kind == "cancel":
                    for cmd in s.list_commands(status="queued"):
                        s.cancel(cmd.id, actor="prop")
                elif kind == "retry":
                    for status in ("failed", "rejected", "cancelled"):
                        for cmd in s.list_commands(status=status):
                            try:
                                s.retry(cmd.id, actor="prop")
                            except Conflict:
                                pass          # a reversed payment's recharge: refused, nothing moved
                elif kind == "adjust":
                    s.adjust(REMOTE_CUST, step[1], actor="prop", reason="property")
                elif kind == "next_day":
                    clock.t += 86400
                elif kind == "close_day":
                    s.close_day(s.booking_day(), actor="prop")
            except (PaymentError, Conflict, InvalidInput):
                pass                      # refused steps must move nothing: the check below proves it
            assert s.check_ledger() == []
        assert_books_balance(s)
        for p in s.list_payments(limit=1000):
            rows = s.journal(payment_id=p.id)
            net = sum(e.amount_fen for e in rows)
            on_meter = sum(e.meter_fen for e in rows)
            # each payment's money is exactly once somewhere: on the account, on the meter, or reversed
            expected = {"sent_to_meter": (0, 0), "confirmed_on_meter": (0, p.amount_fen),
                        "credited": (p.amount_fen, 0), "reversed": (0, 0)}[p.state]
            assert (net, on_meter) == expected, (p, rows)
    finally:
        s.close()


def test_a_batch_moves_each_account_as_its_rows_one_at_a_time_would(store, clock):
    """``_book_many`` moves each account with one statement for the batch: the balance, a version
    per row and the owing-since time come out as booking the rows one by one (``_book``) leaves
    them, also when the batch takes an account across zero and back below it."""
    from headend.store.ledger import Booking

    names = ["000000000201", "000000000202", "000000000203", "000000000204"]
    twins = [f"0000000003{n[-2:]}" for n in names]
    for c in names + twins:
        store.add_account(c, actor="admin")
    for c in names[:3] + twins[:3]:   # owing since T0
        store.adjust(c, -50, actor="admin", reason="arrears", kind="adjustment")
    clock.t += 3600
    moves = {names[0]: [100, -200],          # above zero, then below again: owing from now
             names[1]: [-10, -20],           # below zero throughout: still owing since T0
             names[2]: [100],                # paid off
             names[3]: [-30, 40, -15]}       # from zero: below, above, below again
    with store._tx() as tx:
        store._book_many(tx, [Booking(c, "adjustment", fen, detail={"reason": "test"}) for c, fens in moves.items()
                              for fen in fens], actor="admin", day=store.business_day())
    for c, twin in zip(names, twins):
        for fen in moves[c]:
            with store._tx() as tx:
                store._book(tx, twin, "adjustment", fen, actor="admin", detail={"reason": "test"})
    with store._tx(write=False) as tx:
        state = {c: tx.one("SELECT balance_fen, owing_since, version FROM accounts WHERE customer = ?", (c,))
                 for c in names + twins}
    assert [state[c] for c in names] == [state[t] for t in twins]
    assert [state[c][1] for c in names] == [T0 + 3600, T0, None, T0 + 3600]
