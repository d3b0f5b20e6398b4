"""What a cost-control decision does outside the store's state: the notice it sends and the
relay command it queues. Shared by the cycle (a million accounts at once) and by a payment that
lifts a cut account (one account, at once, instead of at the next cycle)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from headend.costctl.decide import (
    ACTIONS,
    CLOSE_PERMIT,
    CUT_NOTICE,
    DIRECT_CLOSE,
    NOTICE1,
    NOTICE2,
    REASONS,
    SUPPLY,
    TRIP,
    Rules,
    decide,
)
from headend.store import Store, yuan

__all__ = ["RELAY_KIND", "NOTICE_KIND", "NOTICE_TEXT", "restore_after_payment"]

RELAY_KIND = {TRIP: "trip", CLOSE_PERMIT: "close_permitted", DIRECT_CLOSE: "close_direct"}
# notice kinds as headend/notices/templates.py names them (the trip itself is the "cut" notice)
NOTICE_KIND = {**{a: ACTIONS[a] for a in (NOTICE1, NOTICE2, CUT_NOTICE, CLOSE_PERMIT, DIRECT_CLOSE)}, TRIP: "cut"}
NOTICE_TEXT = {
    NOTICE1: "Your electricity balance is low ({bal} yuan). Please top up.",
    NOTICE2: "Your electricity balance is very low ({bal} yuan). Please top up soon.",
    CUT_NOTICE: "Your electricity balance is exhausted ({bal} yuan). Supply will be cut unless you top up.",
    TRIP: "Your electricity supply has been cut: balance {bal} yuan. Top up to restore it.",
    CLOSE_PERMIT: "Payment received ({bal} yuan). Press the meter button for 3 s to restore supply.",
    DIRECT_CLOSE: "Payment received ({bal} yuan). Supply is being restored.",
}


def restore_after_payment(store: Store, customer: str, *, actor: str, utc_offset_s: int = 8 * 3600) -> str | None:
    """If a payment lifted a cut remote account above its close-permitted amount, decide and
    record the restore now, as the cycle would (state, notice, relay commands, audit, in one
    transaction, only if no money moved meanwhile). Returns the action taken, or None.

    Call it inside the payment's ``store.atomic()`` so the restore lands with the money.
    """
    a = store.get_account(customer)
    if a.supply != "cut":
        return None
    meters = [m.address for m in store.meters_of_customer(customer) if m.mode == "remote"]
    if not meters:
        return None
    now = store.now()
    local = datetime.fromtimestamp(now, timezone(timedelta(seconds=utc_offset_s)))
    d = decide([a.balance_fen], a.alarm1_fen, a.alarm2_fen, a.overdraft_fen, a.close_ok_fen, a.protected,
               a.restore_policy == "direct", [a.notice_level], [-1 if a.notice_at is None else a.notice_at],
               [SUPPLY.index(a.supply)], now,
               (local.hour * 60 + local.minute, (local.weekday() + 1) % 7, (local.year, local.month, local.day)),
               Rules(trips=False))
    action = int(d.action[0])
    if action not in (CLOSE_PERMIT, DIRECT_CLOSE):
        return None
    level, supply, reason = int(d.notice_level[0]), SUPPLY[int(d.supply[0])], int(d.reason[0])
    name, kind = ACTIONS[action], RELAY_KIND[action]
    detail: dict[str, Any] = {"balance_fen": a.balance_fen, "notice_level": level, "reason": REASONS[reason],
                              "supply": supply}
    stale = store.apply_decisions(
        [(customer, a.version, level, a.notice_at, supply, now)],
        # the facts the notice templates use (headend/notices/templates.py), as the cycle writes them
        notices=[(customer, NOTICE_KIND[action], NOTICE_TEXT[action].format(bal=yuan(a.balance_fen)),
                  f"payment:{name}:{customer}:{now}",
                  {"balance_fen": a.balance_fen, "customer": customer, "reason": REASONS[reason]})],
        commands=[(customer, m, kind, {}, f"payment:{kind}:{m}:{now}") for m in meters],
        audit=[(actor, f"costctl.{name}", customer, detail)],
        actor=actor,
    )
    return None if customer in stale else name
