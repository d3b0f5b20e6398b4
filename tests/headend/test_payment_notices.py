"""The "payment received" notice the sender derives from the payments (``notify_payments``), on
both engines: one notice per payment however often and from however many connections it runs,
and its mark on payment ids, which on PostgreSQL (ids not committed in id order) passes only
payments accepted more than PAYMENT_SLACK_S ago."""

from __future__ import annotations

import threading

import psycopg
import pytest

from headend.notices import notify_payments
from headend.notices.events import PAYMENT_SLACK_S
from headend.payments import accept_payment
from headend.store import open_store
from headend.vouchers.issue import issue_voucher
from tests.headend.payments_support import (KEYS, LOCAL_CUST, LOCAL_METER, REMOTE_CUST, T0, assert_books_balance,
                                            money_store)
from tests.headend.store_support import Clock
from tests.store_backends import raw_sql

MARK = "notices.payments"


@pytest.fixture
def clock():
    return Clock(T0)


@pytest.fixture
def store(store_db, clock):
    s = money_store(store_db, clock)
    yield s
    assert_books_balance(s)
    s.close()


def pay(store, txn, amount, *, customer=REMOTE_CUST, channel="agent"):
    return accept_payment(store, channel_id=channel, txn_id=txn, amount_fen=amount, paid_at=store.now() - 5,
                          customer=customer, actor=f"channel:{channel}")


def payment_notices(store) -> dict[str, list[int]]:
    """Each payment notice's key and the amounts of the notices under it."""
    out: dict[str, list[int]] = {}
    for n in store.find_notices(kind="payment_received", limit=100_000):
        out.setdefault(n.idem_key, []).append(n.detail["amount_fen"])
    return out


def test_every_payment_gets_one_notice_from_two_connections_deriving_them_while_payments_come_in(store, clock):
    """Four connections take payments while two others run ``notify_payments`` over and over; the
    store clock moves on between rounds, so the mark passes the earlier rounds' payments (on
    PostgreSQL too) while the current round's are still coming in."""
    done = threading.Event()
    errors: list[BaseException] = []
    queued: list[int] = []
    paid: dict[str, int] = {}
    ids: dict[int, list[int]] = {0: [], 1: [], 2: []}

    def payer(k: int, rnd: int) -> None:
        s = open_store(store.location, clock=clock)
        try:
            for j in range(6):
                txn, amount = f"R{rnd}-{k}-{j}", 100 + 10 * k + j
                p = pay(s, txn, amount, customer=(LOCAL_CUST, REMOTE_CUST)[k % 2], channel="agent")
                paid[f"pay:agent:{txn}"] = amount
                ids[rnd].append(p.id)
        except BaseException as exc:   # noqa: BLE001 - checked below
            errors.append(exc)
        finally:
            s.close()

    def notifier() -> None:
        s = open_store(store.location, clock=clock)
        try:
            while not done.is_set():
                queued.append(notify_payments(s))
                done.wait(0.001)    # lets the payers' connections at the write lock between rounds
            queued.append(notify_payments(s))       # after the round's last payment
        except BaseException as exc:   # noqa: BLE001 - checked below
            errors.append(exc)
        finally:
            s.close()

    marks = []
    for rnd in range(3):
        # the clock moves only between rounds, when no payment is in flight: each round's
        # payments are older than the slack in the next one
        clock.t = T0 + rnd * (PAYMENT_SLACK_S + 40)
        done.clear()
        notifiers = [threading.Thread(target=notifier) for _ in range(2)]
        payers = [threading.Thread(target=payer, args=(k, rnd)) for k in range(4)]
        for t in notifiers + payers:
            t.start()
        for t in payers:
            t.join(timeout=120)
        done.set()
        for t in notifiers:
            t.join(timeout=120)
        assert errors == []
        marks.append(store.mark(MARK))
    assert len(paid) == 3 * 4 * 6
    assert payment_notices(store) == {key: [amount] for key, amount in paid.items()}
    assert sum(queued) == len(paid)                 # each notice counted once, by whoever queued it
    assert notify_payments(store) == 0
    # in each round the mark passed the earlier rounds' payments, on either engine
    assert marks[1] >= max(ids[0]) and marks[2] >= max(ids[1])


def test_a_payment_older_than_the_slack_with_its_notice_is_not_looked_at_again(store, clock):
    """Once a payment is older than the slack and noticed, the mark passes it: were its notice
    gone, no later round would queue it again (it is never read again)."""
    p1 = pay(store, "OLD-1", 1100)
    p2 = pay(store, "OLD-2", 1200)
    assert notify_payments(store) == 2
    clock.t += PAYMENT_SLACK_S + 1
    assert notify_payments(store) == 0
    assert store.mark(MARK) == p2.id > p1.id
    # the notices gone behind the store's back: only a payment read again would be noticed again
    raw_sql(store.location, "DELETE FROM notifications WHERE idem_key IN (?, ?)",
            ("pay:agent:OLD-1", "pay:agent:OLD-2"))
    assert notify_payments(store) == 0 and payment_notices(store) == {}


def test_a_payment_committed_after_a_higher_id_was_noticed_still_gets_its_notice(store, clock):
    """PostgreSQL: payment A takes the lower id and commits only after payment B (higher id) was
    committed and a ``notify_payments`` round read the payments; the next round queues A's notice,
    and the mark passes neither while they are within the slack."""
    if not store.location.startswith("postgresql://"):
        pytest.skip("SQLite takes one writer at a time: a payment cannot commit past an open one")
    held = open_store(store.location, clock=clock)
    other = open_store(store.location, clock=clock)
    round_done: list[int] = []
    errors: list[BaseException] = []

    def notice_round() -> None:
        try:
            round_done.append(notify_payments(other))
        except BaseException as exc:   # noqa: BLE001 - checked below
            errors.append(exc)

    try:
        with held.atomic(row_locked=True):
            a = pay(held, "LATE-A", 700, customer=LOCAL_CUST, channel="kiosk")
            clock.t += 20
            b = pay(store, "EARLY-B", 900)
            assert a.id < b.id
            # the round reads the payments (B, not A) and then waits for its write lock, which
            # A's transaction still shares: A commits between the round's read and its write
            t = threading.Thread(target=notice_round)
            t.start()
            _wait_for_lock_waiter(store.location, t)
        t.join(timeout=120)
        assert errors == [] and round_done == [1]
        assert set(payment_notices(store)) == {"pay:agent:EARLY-B"}
        assert store.mark(MARK) < a.id                  # neither is older than the slack
        clock.t += PAYMENT_SLACK_S - 21                  # A is 59 s old: still within the slack
        assert notify_payments(store) == 1               # A's notice, at the next round
        assert payment_notices(store) == {"pay:agent:EARLY-B": [900], "pay:kiosk:LATE-A": [700]}
        assert store.mark(MARK) < a.id
        clock.t += 2                                     # A 61 s old, B 41 s: the mark passes A only
        assert notify_payments(store) == 0
        assert a.id <= store.mark(MARK) < b.id
        clock.t += 20
        assert notify_payments(store) == 0 and store.mark(MARK) == b.id
        assert payment_notices(store) == {"pay:agent:EARLY-B": [900], "pay:kiosk:LATE-A": [700]}
    finally:
        held.close()
        other.close()


def _wait_for_lock_waiter(location: str, thread: threading.Thread) -> None:
    """Return once another session of this database waits for a lock (the notice round's), or the
    thread running the round has ended."""
    with psycopg.connect(location, autocommit=True) as conn:
        while thread.is_alive():
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                               " AND wait_event_type = 'Lock' AND wait_event = 'advisory'").fetchone()
            if row and row[0]:
                return
            conn.execute("SELECT pg_sleep(0.01)")


def test_a_voucher_payment_gets_no_payment_notice(store):
    """A voucher is a payment the customer carries to the meter as a token (the vend hands it
    over): taking it never queued a "payment received" notice, and the balance the sender would
    derive for it (the account's, before the money left it for the token) is no balance the
    customer has."""
    _v, vp, _tok = issue_voucher(store, KEYS, meter=LOCAL_METER, amount_fen=5000, actor="alice")
    p = pay(store, "AFTER-VOUCHER", 300, customer=LOCAL_CUST, channel="kiosk")
    assert notify_payments(store) == 1
    assert payment_notices(store) == {"pay:kiosk:AFTER-VOUCHER": [300]}
    assert vp.id < p.id
