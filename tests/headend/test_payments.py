"""Payments domain on a real SQLite file: every channel kind, exactly once, to the meter or the
account, reversals, bad input; after every scenario the journal equals the cached balances."""

from __future__ import annotations

import pytest

from headend.notices import notify_payments
from headend.payments import (
    ERROR_CODES,
    PaymentError,
    accept_payment,
    account_view,
    find_payment,
    get_payment,
    mask_name,
    reverse_payment,
)
from headend.store import CHANNEL_KINDS, TransitionError
from tests.headend.payments_support import (
    LOCAL_CUST,
    LOCAL_METER,
    REMOTE_CUST,
    REMOTE_METER,
    T0,
    assert_books_balance,
    confirm_recharge,
    journal_total,
    money_store,
)
from tests.headend.store_support import Clock


@pytest.fixture
def clock():
    return Clock(T0)


@pytest.fixture
def store(store_db, clock):
    s = money_store(store_db, clock)
    yield s
    assert_books_balance(s)       # after every scenario, whatever it did
    s.close()


def pay(store, channel="mobile_app", txn="T1", amount=5000, **kw):
    kw.setdefault("customer", LOCAL_CUST)
    return accept_payment(store, channel_id=channel, txn_id=txn, amount_fen=amount, paid_at=T0 - 5,
                          actor=f"channel:{channel}", **kw)


@pytest.mark.parametrize("kind", CHANNEL_KINDS)
def test_every_channel_kind_tops_up_a_local_meter_exactly_once(store, clock, kind):
    p = pay(store, channel=kind, txn=f"{kind}-1", amount=3000)
    assert (p.state, p.customer, p.meter, p.amount_fen, p.sent_at) == ("sent_to_meter", LOCAL_CUST, LOCAL_METER,
                                                                       3000, T0)
    [cmd] = store.list_commands(kind="recharge")
    assert (cmd.meter, cmd.params["amount_fen"], cmd.idem_key, p.command_id) == (LOCAL_METER, 3000,
                                                                                 f"payment:{p.id}", cmd.id)
    assert pay(store, channel=kind, txn=f"{kind}-1", amount=3000) == p        # the retry: same receipt
    assert len(store.list_commands(kind="recharge")) == 1
    assert_books_balance(store)
    clock.t += 7
    confirm_recharge(store, cmd.id)
    p = get_payment(store, p.id)
    assert (p.state, p.confirmed_at) == ("confirmed_on_meter", T0 + 7)
    kinds = [(e.kind, e.amount_fen, e.meter_fen) for e in reversed(store.ledger(LOCAL_CUST))]
    assert kinds == [("payment", 3000, 0), ("topup_sent", -3000, 0), ("topup_confirmed", 0, 3000)]
    assert store.get_account(LOCAL_CUST).balance_fen == 0         # the money is on the meter


@pytest.mark.parametrize("kind", CHANNEL_KINDS)
def test_every_channel_kind_credits_a_remote_account_exactly_once(store, kind):
    p = pay(store, channel=kind, txn="R-1", amount=1234, customer=None, meter=REMOTE_METER)
    assert (p.state, p.customer, p.credited_at) == ("credited", REMOTE_CUST, T0)
    assert pay(store, channel=kind, txn="R-1", amount=1234, customer=None, meter=REMOTE_METER).id == p.id
    assert store.get_account(REMOTE_CUST).balance_fen == 1234
    assert store.list_commands(kind="recharge") == []              # nothing goes to a remote meter's wallet
    [entry] = store.ledger(REMOTE_CUST)
    assert (entry.kind, entry.channel, entry.txn_id, entry.payment_id, entry.actor) == (
        "payment", kind, "R-1", p.id, f"channel:{kind}")


def test_the_same_transaction_id_in_two_channels_is_two_payments(store):
    a = pay(store, channel="agent", txn="X", amount=100, customer=REMOTE_CUST)
    b = pay(store, channel="kiosk", txn="X", amount=100, customer=REMOTE_CUST)
    assert a.id != b.id and store.get_account(REMOTE_CUST).balance_fen == 200


@pytest.mark.parametrize("field, change", [
    ("amount_fen", {"amount": 5001}),
    ("customer", {"customer": REMOTE_CUST}),
    ("meter", {"meter": LOCAL_METER}),
])
def test_a_reused_transaction_id_with_another_body_is_refused_naming_the_field(store, field, change):
    pay(store, txn="D1")
    before = journal_total(store)
    with pytest.raises(PaymentError) as e:
        pay(store, txn="D1", **change)
    assert (e.value.code, e.value.http_status, e.value.field) == ("duplicate_conflict", 409, field)
    assert journal_total(store) == before
    assert store.audit_entries(action="payment.refused")[0].detail["code"] == "duplicate_conflict"


def test_a_payment_above_the_meters_hoarding_headroom_is_refused_with_the_headroom(store):
    store.update_meter(LOCAL_METER, actor="admin", hoarding_fen=10000)
    store.record_meter_state(LOCAL_METER, balance_fen=2500)
    pay(store, txn="H1", amount=4000)                              # on its way: counts against the room
    before = journal_total(store)
    with pytest.raises(PaymentError) as e:
        pay(store, txn="H2", amount=3501)
    assert e.value.code == "hoarding_headroom" and "3500 fen" in e.value.message
    assert journal_total(store) == before and len(store.list_commands(kind="recharge")) == 1
    assert pay(store, txn="H3", amount=3500).state == "sent_to_meter"


def test_a_confirmed_hoarding_limit_is_what_payments_are_checked_against(store):
    cmd = store.enqueue(LOCAL_METER, "set_limits", {"hoarding_fen": 2000}, actor="admin")
    store.claim_next()
    store.confirm(cmd.id, reply={"written": {}})
    assert store.get_meter(LOCAL_METER).hoarding_fen == 2000
    with pytest.raises(PaymentError) as e:
        pay(store, txn="L1", amount=2001)
    assert e.value.code == "hoarding_headroom"


def test_a_recharge_the_meter_refuses_puts_the_money_back_on_the_account(store, clock):
    p = pay(store, txn="F1", amount=700)
    store.claim_next()
    clock.t += 3
    store.fail(p.command_id, "meter refused: over-hoarding")
    p = get_payment(store, p.id)
    assert p.state == "credited" and p.credited_at == T0 + 3 and "over-hoarding" in p.note
    assert store.get_account(LOCAL_CUST).balance_fen == 700        # nothing lost


@pytest.mark.parametrize("end", ["reject", "fail", "cancel"])
def test_a_recharge_that_ends_without_the_meter_returns_the_money_and_a_retry_sends_it_again(store, end):
    p = pay(store, txn="E1", amount=900)
    if end == "cancel":
        store.cancel(p.command_id, actor="alice")
    else:
        store.claim_next()
        getattr(store, end)(p.command_id, "refused")
    assert (get_payment(store, p.id).state, store.get_account(LOCAL_CUST).balance_fen) == ("credited", 900)
    assert_books_balance(store)
    store.retry(p.command_id, actor="alice")                   # an operator sends it again
    assert (get_payment(store, p.id).state, store.get_account(LOCAL_CUST).balance_fen) == ("sent_to_meter", 0)
    assert_books_balance(store)
    confirm_recharge(store, p.command_id)
    assert get_payment(store, p.id).state == "confirmed_on_meter"
    kinds = [e.kind for e in reversed(store.ledger(LOCAL_CUST))]
    assert kinds == ["payment", "topup_sent", "topup_returned", "topup_sent", "topup_confirmed"]


def test_a_payment_that_lifts_a_cut_account_queues_the_restore(store):
    store.credit(REMOTE_CUST, -800, actor="costctl", idem_key="k", kind="rerate")
    a = store.get_account(REMOTE_CUST)
    store.set_account_state(REMOTE_CUST, supply="cut", supply_at=T0 - 100, notice_level=3, notice_at=T0 - 9000,
                            expected_version=a.version)
    pay(store, txn="C1", amount=1000, customer=REMOTE_CUST)      # 2.00 yuan: not above close-permitted 5.00
    assert store.list_commands(meter=REMOTE_METER) == [] and store.get_account(REMOTE_CUST).supply == "cut"
    notify_payments(store)                                       # the notice sender's round between the two
    pay(store, txn="C2", amount=400, customer=REMOTE_CUST)       # 6.00 yuan
    notify_payments(store)
    [cmd] = store.list_commands(meter=REMOTE_METER)
    assert cmd.kind == "close_permitted"
    acct = store.get_account(REMOTE_CUST)
    assert (acct.supply, acct.balance_fen) == ("close_permitted", 600)
    kinds = [n.kind for n in store.list_notifications(customer=REMOTE_CUST)]
    assert kinds == ["payment_received", "close_permitted", "payment_received"]


def _lifted(store, *, protected=False):
    """A remote account cut after its cut notice two days ago, then lifted by a 14.00 yuan payment
    (-8.00 -> 6.00, above close-permitted 5.00): the restore is queued."""
    store.credit(REMOTE_CUST, -800, actor="costctl", idem_key="k", kind="rerate")
    if protected:
        store.update_account(REMOTE_CUST, actor="admin", protected=True)
    a = store.get_account(REMOTE_CUST)
    store.set_account_state(REMOTE_CUST, supply="cut", supply_at=T0 - 100, notice_level=3,
                            notice_at=T0 - 2 * 86400, expected_version=a.version)
    p = pay(store, channel="online_banking", txn="L1", amount=1400, customer=REMOTE_CUST)
    [close] = store.list_commands(meter=REMOTE_METER)
    assert (close.kind, close.status, store.get_account(REMOTE_CUST).supply) == ("close_permitted", "queued",
                                                                                "close_permitted")
    return p, close


def _reverse(store, p):
    return reverse_payment(store, p.id, channel_id="online_banking", actor="channel:online_banking",
                           reason="charged back")


def test_reversing_the_payment_that_lifted_a_cut_account_cuts_it_again_before_the_restore_is_sent(store, clock):
    p, close = _lifted(store)
    clock.t += 60
    _reverse(store, p)
    a = store.get_account(REMOTE_CUST)
    assert (a.balance_fen, a.supply, a.notice_level, a.notice_at) == (-800, "cut", 3, T0 - 2 * 86400)
    assert store.get_command(close.id).status == "cancelled"
    assert store.claim_next() == []                              # the restore never reaches the meter
    # the "press the button to restore supply" notice, not sent yet, is now false: withdrawn
    pending = [n.kind for n in store.list_notifications(customer=REMOTE_CUST) if n.status == "queued"]
    assert "close_permitted" not in pending and "cut" not in pending


def test_a_customer_told_of_the_restore_is_told_of_the_cut_when_it_is_undone(store, clock):
    p, close = _lifted(store)
    [told] = [n for n in store.list_notifications(customer=REMOTE_CUST) if n.kind == "close_permitted"]
    store.mark_notification(told.id, "sent")                     # the SMS went out before the reversal
    clock.t += 60
    _reverse(store, p)
    assert store.get_account(REMOTE_CUST).supply == "cut" and store.get_command(close.id).status == "cancelled"
    [cut] = [n for n in store.list_notifications(customer=REMOTE_CUST) if n.kind == "cut"]
    assert cut.status == "queued" and "-8.00" in cut.message


def test_a_payment_after_a_reversal_in_the_same_second_lifts_the_account_again(store, clock):
    p, close = _lifted(store)
    _reverse(store, p)                                           # the same second as the payment
    pay(store, channel="online_banking", txn="L2", amount=1400, customer=REMOTE_CUST)
    again = [c for c in store.list_commands(meter=REMOTE_METER) if c.id != close.id]
    assert [(c.kind, c.status) for c in again] == [("close_permitted", "queued")]
    assert store.get_account(REMOTE_CUST).supply == "close_permitted"
    queued = [n.kind for n in store.list_notifications(customer=REMOTE_CUST) if n.status == "queued"]
    assert queued.count("close_permitted") == 1


@pytest.mark.parametrize("reached", ["sent", "confirmed"])
def test_reversing_the_payment_whose_restore_reached_the_meter_trips_as_the_cycle_would(store, clock, reached):
    p, close = _lifted(store)
    [sent] = store.claim_next()
    assert sent.id == close.id
    if reached == "confirmed":
        store.confirm(close.id)
    clock.t += 60                                                # 10:01 local, a working day
    _reverse(store, p)
    a = store.get_account(REMOTE_CUST)
    assert (a.balance_fen, a.supply, a.notice_level) == (-800, "cut", 3)
    [trip] = [c for c in store.list_commands(meter=REMOTE_METER) if c.id != close.id]
    assert (trip.kind, trip.status) == ("trip", "queued")
    assert "cut" in [n.kind for n in store.list_notifications(customer=REMOTE_CUST) if n.status == "queued"]


@pytest.mark.parametrize("why", ["protected", "night"])
def test_a_trip_the_rules_forbid_is_held_after_a_reversal_too(store, clock, why):
    p, close = _lifted(store, protected=why == "protected")
    store.claim_next()
    store.confirm(close.id)
    if why == "night":
        clock.t += 12 * 3600                                     # 22:00 local: no trips at night
    _reverse(store, p)
    assert store.get_account(REMOTE_CUST).supply == "close_permitted"
    assert [c.id for c in store.list_commands(meter=REMOTE_METER)] == [close.id]
    held = [e for e in store.audit_entries() if e.action == "costctl.hold" and e.target == REMOTE_CUST]
    assert len(held) == 1 and why in held[0].detail["reason"]


@pytest.mark.parametrize("derived", [False, True])
def test_a_reversed_payment_is_not_announced_as_received(store, clock, derived):
    p = pay(store, channel="online_banking", txn="R1", amount=900, customer=REMOTE_CUST)
    pay(store, channel="online_banking", txn="R10", amount=100, customer=REMOTE_CUST)   # kept, told
    if derived:
        notify_payments(store)                                   # queued before the reversal, not sent
    clock.t += 60
    _reverse(store, p)
    clock.t += 60
    notify_payments(store)
    told = {n.idem_key: n.status for n in store.list_notifications(customer=REMOTE_CUST)
            if n.kind == "payment_received"}
    assert told == ({"pay:online_banking:R1": "failed", "pay:online_banking:R10": "queued"} if derived
                    else {"pay:online_banking:R10": "queued"})


@pytest.mark.parametrize("cut", [False, True])
def test_reversing_a_payment_that_lifted_nothing_changes_no_supply_state(store, clock, cut):
    store.credit(REMOTE_CUST, -800, actor="costctl", idem_key="k", kind="rerate")
    a = store.get_account(REMOTE_CUST)
    store.set_account_state(REMOTE_CUST, supply="cut" if cut else "on", supply_at=T0 - 100, notice_level=3,
                            notice_at=T0 - 2 * 86400, expected_version=a.version)
    p = pay(store, channel="online_banking", txn="N1", amount=1000, customer=REMOTE_CUST)   # -8.00 -> 2.00
    before = store.get_account(REMOTE_CUST)
    clock.t += 60
    _reverse(store, p)
    after = store.get_account(REMOTE_CUST)
    assert ((after.supply, after.supply_at, after.notice_level, after.notice_at)
            == (before.supply, before.supply_at, before.notice_level, before.notice_at))
    assert store.list_commands(meter=REMOTE_METER) == []


def test_reversal_of_a_credited_payment_the_same_day(store, clock):
    p = pay(store, channel="online_banking", txn="V1", amount=900, customer=REMOTE_CUST)
    clock.t += 60
    r = reverse_payment(store, p.id, channel_id="online_banking", actor="channel:online_banking", reason="customer")
    assert (r.state, r.reversed_at) == ("reversed", T0 + 60)
    assert store.get_account(REMOTE_CUST).balance_fen == 0
    again = reverse_payment(store, p.id, channel_id="online_banking", actor="x", reason="retry")
    assert again == r and len(store.ledger(REMOTE_CUST)) == 2


def test_reversal_cancels_a_recharge_still_queued(store):
    p = pay(store, txn="Q1", amount=500)
    r = reverse_payment(store, p.id, channel_id="mobile_app", actor="channel:mobile_app", reason="duplicate order")
    assert r.state == "reversed" and store.get_command(p.command_id).status == "cancelled"
    with pytest.raises(TransitionError, match="reversed"):
        store.retry(p.command_id, actor="alice")              # a reversed payment's recharge never goes again
    assert store.get_command(p.command_id).status == "cancelled"
    assert store.claim_next() == []                                # never reaches the meter
    assert store.get_account(LOCAL_CUST).balance_fen == 0


@pytest.mark.parametrize("how", ["sent", "confirmed"])
def test_no_reversal_once_the_money_may_be_on_the_meter(store, how):
    p = pay(store, txn="S1", amount=500)
    [cmd] = store.claim_next()
    if how == "confirmed":
        store.confirm(cmd.id)
    before = journal_total(store)
    with pytest.raises(PaymentError) as e:
        reverse_payment(store, p.id, channel_id="mobile_app", actor="x", reason="r")
    assert e.value.code == "not_reversible" and journal_total(store) == before


def test_a_channel_never_sees_another_channels_payment(store):
    p = pay(store, channel="agent", txn="A1", amount=300, customer=REMOTE_CUST)
    with pytest.raises(PaymentError) as e:
        reverse_payment(store, p.id, channel_id="kiosk", actor="channel:kiosk", reason="r")
    assert e.value.code == "unknown_payment" and store.get_account(REMOTE_CUST).balance_fen == 300
    with pytest.raises(PaymentError):
        find_payment(store, "kiosk", "A1")
    with pytest.raises(PaymentError) as e:
        get_payment(store, p.id, channel_id="kiosk")
    assert e.value.code == "unknown_payment" and get_payment(store, p.id, channel_id="agent") == p
    assert find_payment(store, "agent", "A1") == p


def test_reversals_are_same_day_only_and_never_into_a_closed_day(store, clock):
    p = pay(store, txn="N1", amount=300, customer=REMOTE_CUST)
    store.close_day(p.day, actor="auditor")
    with pytest.raises(PaymentError) as e:
        reverse_payment(store, p.id, channel_id="mobile_app", actor="x", reason="r")
    assert e.value.code == "day_closed"
    q = pay(store, txn="N2", amount=300, customer=REMOTE_CUST)
    assert q.day > p.day                                           # booked into the next open day
    clock.t += 2 * 86400
    with pytest.raises(PaymentError) as e:
        reverse_payment(store, q.id, channel_id="mobile_app", actor="x", reason="r")
    assert e.value.code == "not_reversible"


@pytest.mark.parametrize("kw, code, field", [
    ({"amount": 0}, "amount_invalid", "amount_fen"),
    ({"amount": -5}, "amount_invalid", "amount_fen"),
    ({"amount": 10.5}, "amount_invalid", "amount_fen"),
    ({"amount": True}, "amount_invalid", "amount_fen"),
    ({"amount": 10_000_001}, "amount_too_large", "amount_fen"),
    ({"customer": "000000000999"}, "unknown_customer", "customer"),
    ({"customer": None, "meter": "000000000999"}, "unknown_meter", "meter"),
    ({"customer": REMOTE_CUST, "meter": LOCAL_METER}, "meter_customer_mismatch", "meter"),
    ({"channel": "nobody"}, "unknown_channel", "channel"),
    ({"txn": ""}, "txn_id_invalid", "txn_id"),
    ({"txn": "has space"}, "txn_id_invalid", "txn_id"),
])
def test_bad_input_is_refused_with_a_code_an_audit_row_and_no_money(store, kw, code, field):
    before = journal_total(store)
    with pytest.raises(PaymentError) as e:
        pay(store, **kw)
    assert (e.value.code, e.value.field, e.value.http_status) == (code, field, ERROR_CODES[code])
    assert journal_total(store) == before and store.list_payments() == []
    assert store.audit_entries(action="payment.refused")[0].detail["code"] == code


def test_a_disabled_channel_takes_nothing(store):
    store.update_channel("kiosk", actor="admin", enabled=False)
    with pytest.raises(PaymentError) as e:
        pay(store, channel="kiosk")
    assert e.value.code == "channel_disabled" and journal_total(store)[0] == 0


def test_a_customer_with_several_meters_must_say_which(store):
    store.add_meter("000000000003", link="tcp://127.0.0.1:9003", customer=LOCAL_CUST, actor="admin")
    with pytest.raises(PaymentError) as e:
        pay(store, txn="M1")
    assert e.value.code == "meter_required"
    assert pay(store, txn="M1", meter="000000000003").meter == "000000000003"


def test_channel_fee_rule_is_recorded_on_the_payment(store):
    store.update_channel("third_party", actor="admin", fee_rule="bp:30,min:10,max:2000")
    assert pay(store, channel="third_party", txn="P1", amount=10000).fee_fen == 30
    assert pay(store, channel="third_party", txn="P2", amount=100).fee_fen == 10
    assert pay(store, channel="third_party", txn="P3", amount=1_000_000, customer=REMOTE_CUST).fee_fen == 2000


def test_account_view_is_what_a_bank_shows_before_payment(store):
    store.credit(REMOTE_CUST, -1500, actor="costctl", idem_key="c1", kind="rerate")
    v = account_view(store, REMOTE_CUST)
    assert v == {"customer": REMOTE_CUST, "name": "L* W**", "balance_fen": -1500, "arrears_fen": 1500,
                 "state": "alarm", "minimum_fen": 1500, "suggested_fen": 5000, "max_fen": None, "mode": "remote"}
    a = store.get_account(REMOTE_CUST)
    store.set_account_state(REMOTE_CUST, supply="cut", expected_version=a.version)
    assert account_view(store, REMOTE_CUST)["state"] == "cut"
    assert account_view(store, REMOTE_CUST)["minimum_fen"] == 2100     # above close-permitted 5.00
    store.update_meter(LOCAL_METER, actor="admin", hoarding_fen=4000)
    store.record_meter_state(LOCAL_METER, balance_fen=2000)
    v = account_view(store, LOCAL_CUST)
    assert (v["name"], v["balance_fen"], v["state"], v["max_fen"], v["suggested_fen"]) == ("张*", 2000, "credit",
                                                                                            2000, 2000)
    with pytest.raises(PaymentError) as e:
        account_view(store, "000000000999")
    assert e.value.code == "unknown_customer"


def test_mask_name():
    assert [mask_name(n) for n in ("张三", "欧阳娜娜", "Li Wei", "", "X")] == ["张*", "欧***", "L* W**", "", "X"]


def test_the_customer_hears_of_a_payment_once(store):
    """Taking a payment queues nothing; the notice sender's round (``notify_payments``) derives one
    notice per payment, however often it runs and however often the payment was posted."""
    pay(store, channel="agent", txn="N1", amount=2500, customer=REMOTE_CUST)
    assert store.find_notices(customer=REMOTE_CUST) == []
    assert notify_payments(store) == 1
    pay(store, channel="agent", txn="N1", amount=2500, customer=REMOTE_CUST)          # the retry
    assert notify_payments(store) == 0
    [n] = store.find_notices(customer=REMOTE_CUST)
    assert n.kind == "payment_received" and n.detail["amount_fen"] == 2500 and n.detail["balance_fen"] == 2500
    assert n.idem_key == "pay:agent:N1"
    pay(store, channel="kiosk", txn="N1", amount=700)                                  # local: on its way
    pay(store, channel="kiosk", txn="N2", amount=300)                                  # both on their way
    assert notify_payments(store) == 2 and notify_payments(store) == 0
    m, m2 = store.find_notices(customer=LOCAL_CUST, newest_first=False)
    assert (m.detail["balance_fen"], m2.detail["balance_fen"]) == (700, 1000) and m.detail["channel"] == "kiosk"


def test_payment_notices_resume_from_the_mark_and_pass_over_those_already_queued(store):
    """A payment whose notice was queued before (by an earlier round, or under its key by anyone)
    is passed over; a round that stops at its limit leaves the rest to the next one."""
    for i in range(5):
        pay(store, channel="agent", txn=f"M{i}", amount=100 + i, customer=REMOTE_CUST)
    assert notify_payments(store, limit=2) == 5                       # in rounds of two, none lost
    assert [n.detail["amount_fen"] for n in store.find_notices(customer=REMOTE_CUST, newest_first=False)] == \
        [100, 101, 102, 103, 104]
    store.set_mark("notices.payments", 0)                             # as if the mark were lost
    assert notify_payments(store) == 0                                # every one stands: none again


def test_the_same_payment_posted_at_once_from_several_connections_moves_money_once(store, tmp_path):
    import threading

    from headend.store import open_store

    results, errors = [], []

    def post():
        s = open_store(store.location)            # its own connection, as another process would have
        try:
            for _ in range(5):
                results.append(accept_payment(s, channel_id="agent", txn_id="PAR-1", amount_fen=4321, paid_at=T0,
                                              customer=LOCAL_CUST, actor="channel:agent").id)
        except Exception as exc:   # noqa: BLE001 - every outcome is checked below
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and len(results) == 20 and len(set(results)) == 1
    assert len(store.list_commands(kind="recharge")) == 1 and len(store.journal(kind="payment")) == 1


def _side_by_side(location: str, n_threads: int, work) -> list[BaseException]:
    """Run ``work(store, k)`` in threads, each on its own connection (as separate head-ends would),
    started together; the errors they raised."""
    import threading

    from headend.store import open_store

    errors: list[BaseException] = []
    start = threading.Barrier(n_threads)

    def run(k: int) -> None:
        s = open_store(location, clock=Clock(T0))
        try:
            start.wait(60)
            work(s, k)
        except BaseException as exc:   # noqa: BLE001 - every outcome is checked by the caller
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return errors


def test_payments_to_one_account_from_several_connections_at_once_each_book_on_the_last(store):
    def work(s, k):
        for j in range(10):
            accept_payment(s, channel_id="agent", txn_id=f"SAME-{k}-{j}", amount_fen=100 + k, paid_at=T0,
                           customer=REMOTE_CUST, actor="channel:agent")

    assert _side_by_side(store.location, 4, work) == []
    assert store.get_account(REMOTE_CUST).balance_fen == sum(10 * (100 + k) for k in range(4))
    rows = list(reversed(store.ledger(REMOTE_CUST, limit=100)))
    # every row's balance_after is the one before plus its amount: no two bookings read one balance
    assert [r.balance_after for r in rows] == [sum(r.amount_fen for r in rows[:i + 1]) for i in range(len(rows))]
    notify_payments(store)
    notices = sorted(n.detail["balance_fen"] for n in store.find_notices(customer=REMOTE_CUST))
    assert notices == [r.balance_after for r in rows]    # each customer SMS tells the balance its payment left


def test_payments_racing_to_one_meter_never_pass_its_hoarding_limit_together(store):
    store.update_meter(LOCAL_METER, actor="admin", hoarding_fen=10_000)
    taken: list[int] = []

    def work(s, k):
        try:
            taken.append(pay(s, txn=f"HOARD-{k}", amount=6_000).amount_fen)
        except PaymentError as err:
            assert err.code == "hoarding_headroom"

    assert _side_by_side(store.location, 3, work) == []
    assert taken == [6_000] and store.in_flight_fen(LOCAL_METER) == 6_000
