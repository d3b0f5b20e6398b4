"""Events that deserve a notice, and the one way to queue one.

* ``notify_event(store, customer, kind, fields, event_key)``: any part of the head-end (payments,
  withholding, outages) queues a customer notice for an event.  The event key makes it once: a
  repeat with the same key queues nothing.  ``fields`` are the facts the kind's templates use, as
  integers and text (``amount_fen``, ``balance_fen``, ``channel`` ...); a missing one is refused.
* Remote cost-control accounts: the cost-control cycle queues alarm 1 and 2, the cut notice (with
  its notice period), the cut and the restore itself (``headend.costctl.cycle``).
* Local cost-control meters hold their own balance, so ``watch_local`` works from what the
  head-end reads: the remaining money (alarm 1 and 2, using the account's alarm amounts; the
  meter's own pre-trip alarm is at alarm 2), the relay bit of status word 3 (cut when it opens,
  restore when it closes) and the meter's recharge records (payment confirmed on the meter).
  Each change is noticed once: the watcher's view of every meter lands in the same transaction
  as the notices it queues.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from headend.notices.templates import BUILTIN, KINDS, Catalog, MissingField
from headend.store import InvalidInput, Notification, Store, check_customer, yuan

__all__ = ["notify_event", "notify_events", "notify_payments", "watch_local", "WATCH_EVENT_KINDS", "PAYMENT_SLACK_S"]

_BUILTIN = Catalog(BUILTIN)
WATCH_EVENT_KINDS = ("recharge",)
_LEVEL_KIND = {1: "alarm1_notice", 2: "alarm2_notice"}
_RELAY_OPEN = 0x10          # status word 3, bit 4
# where payments commit side by side (PostgreSQL), how long a payment's transaction may take from
# its payment's time to its commit and still have its notice found (see Store.payments_to_notify)
PAYMENT_SLACK_S = 60
_PAYMENTS_MARK = "notices.payments"   # the last payment id whose notice is settled


def notify_event(store: Store, customer: str, kind: str, fields: Mapping[str, Any], event_key: str, *,
                 not_before: int = 0, priority: int = 0) -> Notification:
    """Queue a notice for an event, once per ``event_key``; return it (the first one on a repeat).

    ``kind`` is one of ``headend.notices.templates.KINDS`` (payment_received, payment_confirmed,
    withholding_failed, ...); ``fields`` must hold every fact its templates use, money as integer
    fen (``amount_fen``), times as Unix seconds (``start_at``).  InvalidInput names what is wrong.
    """
    notify_events(store, [(customer, kind, fields, event_key)], not_before=not_before, priority=priority)
    n = store.notice_by_key(event_key)
    assert n is not None
    return n


def notify_events(store: Store, events: Iterable[tuple[str, str, Mapping[str, Any], str]], *,
                  not_before: int = 0, priority: int = 0) -> int:
    """``notify_event`` for many events (customer, kind, fields, event_key) in one statement;
    return how many notices are new. A key already used by another customer or kind is refused
    (InvalidInput), as one at a time."""
    rows = []
    for customer, kind, fields, event_key in events:
        customer = check_customer(customer)
        if kind not in KINDS:
            raise InvalidInput(f"unknown notice kind {kind!r}; known: {', '.join(sorted(KINDS))}")
        if not event_key:
            raise InvalidInput("a notice needs its event's key (e.g. the payment's channel and transaction id)")
        detail = {"customer": customer, **fields}
        for k, v in detail.items():
            if (k.endswith("_fen") or k.endswith("_at")) and type(v) is not int:
                raise InvalidInput(f"{kind} notice: {k} must be an integer ({'fen' if k.endswith('_fen') else 'Unix s'}),"
                                   f" got {v!r}")
        try:
            message = _BUILTIN.render(kind, "en", detail)
        except MissingField as exc:
            raise InvalidInput(f"{kind} notice for customer {customer}: {exc.args[0]}") from None
        rows.append((customer, kind, message, event_key, detail, not_before, priority))
    with store.atomic():
        n = store.queue_notices(rows)
        if n < len(rows):   # some keys were queued before: each must be this event's own notice
            for customer, kind, _, key, _, _, _ in rows:
                first = store.notice_by_key(key)
                if first is not None and (first.customer != customer or first.kind != kind):
                    raise InvalidInput(f"event key {key!r} belongs to notice {first.id} ({first.kind} for customer"
                                       f" {first.customer})")
    return n


def notify_payments(store: Store, *, limit: int = 5000) -> int:
    """Queue the "payment received" notice of every payment taken since the last call; return
    how many.

    Taking a payment queues nothing (it is the hottest write path, and a notice row with its
    index entries was a fifth of a payment's store work): the notice is derived here, from the
    payment and its journal row, once per payment (its key ``pay:CHANNEL:TXN``), with the
    balance right after it: the account's for a remote-cost-control account, or what the meter
    will hold once the money on its way reached it (local). The notices and the mark move in
    one transaction, and a payment whose notice stands is passed over, so a notice is never
    queued twice nor a payment missed, whichever process derives them and however often."""
    total = 0
    while True:
        mark = store.mark(_PAYMENTS_MARK)
        found, upto = store.payments_to_notify(mark, settled_at=store.now() - PAYMENT_SLACK_S, limit=limit)
        events = []
        for _pid, customer, channel, name, txn_id, amount, balance, detail in found:
            after = detail.get("meter_after_fen", balance) if isinstance(detail, dict) else balance
            events.append((customer, "payment_received", {"amount_fen": int(amount), "balance_fen": int(after),
                                                          "channel": name or channel}, f"pay:{channel}:{txn_id}"))
        with store.atomic():
            total += notify_events(store, events)
            if upto > mark:
                store.set_mark(_PAYMENTS_MARK, upto)
        if len(found) < limit:
            return total


def _band(balance: int, alarm1: int, alarm2: int) -> int:
    if alarm2 > 0 and balance <= alarm2:
        return 2
    if alarm1 > 0 and balance <= alarm1:
        return 1
    return 0


def _newest(*pairs: tuple[Any, Any]) -> tuple[Any, int]:
    """The value of the newest (value, at) pair that has both, or (None, 0)."""
    best: tuple[Any, int] = (None, 0)
    for value, at in pairs:
        if value is not None and at is not None and int(at) > best[1]:
            best = (value, int(at))
    return best


def watch_local(store: Store, *, limit: int = 5000) -> int:
    """Queue the notices local-cost-control meters' latest readings and records call for; return how many.

    A meter's balance and relay come from whichever is newer: what the outbox worker recorded
    (its reads and relay commands) or the read cycles' stored readings of the remaining money
    (00900200) and status word 3 (04000503, bit 4 = relay open)."""
    rows = []
    states = []
    for (meter, customer, a1, a2, w_level, w_relay, w_seen, m_bal, m_relay, m_seen,
         r_bal, r_bal_at, r_sw3, r_sw3_at) in store.watch_rows():
        bal, bal_at = _newest((m_bal, m_seen), (r_bal, r_bal_at))
        sw3_relay = None if r_sw3 is None else ("open" if int(r_sw3) & _RELAY_OPEN else "closed")
        relay, relay_at = _newest((m_relay, m_seen), (sw3_relay, r_sw3_at))
        seen = max(bal_at, relay_at)
        if not seen or (w_seen is not None and seen <= int(w_seen)):
            continue                                  # nothing new since the watcher last looked
        level = 0 if w_level is None else int(w_level)
        new_level = level if bal is None else _band(int(bal), int(a1), int(a2))
        base: dict[str, Any] = {"customer": customer, "meter": meter}
        if bal is not None:
            base["balance_fen"] = int(bal)
        if new_level > level:
            kind = _LEVEL_KIND[new_level]
            alarm = int(a1) if new_level == 1 else int(a2)
            rows.append(_row(customer, kind, {**base, "alarm_fen": alarm}, f"watch:{kind}:{meter}:{seen}"))
        if w_relay is not None and relay is not None and relay != w_relay:
            kind = "cut" if relay == "open" else "restore"
            rows.append(_row(customer, kind, base, f"watch:{kind}:{meter}:{seen}"))
        states.append((meter, new_level, relay if relay is not None else w_relay, seen))
    mark = store.mark("watch.events")
    events = store.events_after(mark, WATCH_EVENT_KINDS, limit=limit)
    for eid, meter, customer, _at, _kind, detail in events:
        d = detail if isinstance(detail, dict) else {}
        fields: dict[str, Any] = {"customer": customer, "meter": meter}
        if type(d.get("amount_fen")) is int:
            fields["amount_fen"] = d["amount_fen"]
        if type(d.get("balance_fen")) is int:
            fields["balance_fen"] = d["balance_fen"]
        rows.append(_row(customer, "payment_confirmed", fields, f"event:{eid}"))
    with store.atomic():
        n = store.queue_notices(rows)
        if states:
            store.set_watch(states)
        if events:
            store.set_mark("watch.events", events[-1][0])
    return n


def _row(customer: str, kind: str, detail: dict[str, Any], key: str) -> tuple[Any, ...]:
    try:
        message = _BUILTIN.render(kind, "en", detail)
    except MissingField:
        # the facts a template needs were not read: a plain text keeps the customer informed
        amount = f" {yuan(detail['amount_fen'])} yuan" if "amount_fen" in detail else ""
        message = f"Electricity: customer {customer}, {kind.replace('_', ' ')}{amount} (meter {detail.get('meter')})."
    return (customer, kind, message, key, detail, 0, 0)
