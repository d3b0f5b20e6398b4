"""What a cost-control decision does outside the store's state: the notice it sends and the
relay command it queues. Shared by the cycle (a million accounts at once), by a payment that
lifts a cut account and by the reversal of that payment (one account, at once, instead of at
the next cycle)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from headend.costctl.decide import (
    ACTIONS,
    CLOSE_PERMIT,
    CUT,
    CUT_NOTICE,
    DIRECT_CLOSE,
    NOTICE1,
    NOTICE2,
    REASONS,
    SUPPLY,
    TRIP,
    Decisions,
    Rules,
    decide,
)
from headend.store import Account, Payment, Store, yuan

__all__ = ["RELAY_KIND", "NOTICE_KIND", "NOTICE_TEXT", "restore_after_payment", "redecide_after_reversal"]

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
    d = _decide_one(a, a.notice_level, SUPPLY.index(a.supply), now, Rules(trips=False), utc_offset_s)
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
        # keyed by the account's version too: a restore reversed and paid again within the same
        # second is a second restore, not the cancelled one again
        notices=[(customer, NOTICE_KIND[action], NOTICE_TEXT[action].format(bal=yuan(a.balance_fen)),
                  f"payment:{name}:{customer}:{now}:v{a.version}",
                  {"balance_fen": a.balance_fen, "customer": customer, "reason": REASONS[reason]})],
        commands=[(customer, m, kind, {}, f"payment:{kind}:{m}:{now}:v{a.version}") for m in meters],
        audit=[(actor, f"costctl.{name}", customer, detail)],
        actor=actor,
    )
    return None if customer in stale else name


# the restores a payment or the cycle queues (idempotency keys "payment:KIND:METER:T:vN", "costctl:...")
_RESTORE_KINDS = (RELAY_KIND[CLOSE_PERMIT], RELAY_KIND[DIRECT_CLOSE])


def redecide_after_reversal(store: Store, payment: Payment, *, actor: str, rules: Rules | None = None,
                            utc_offset_s: int = 8 * 3600) -> str | None:
    """Undo what a reversed payment's money paid for: if the account was lifted from cut since
    ``payment`` was taken and what is left is no longer above the close-permitted amount, the
    restore no longer has money behind it. Returns the action recorded, or None.

    The restore commands not sent yet are cancelled and the account is cut again (the relay never
    closed), with the restore notice withdrawn if it is still queued, or a "cut" notice if the
    customer may have heard of the restore. A restore that may have reached the meter is decided
    as the cycle would decide it now, with the cycle's ``rules`` (the ``[costctl]`` section; None:
    the cycle's defaults): trip at once, or hold for the reason the rules give (protected, night,
    no-trip day). Either way the cut notice that preceded the cut still stands (the lift lowered
    the level silently and kept its time), so no second notice period starts. A reversal that
    lifted nothing changes nothing.

    Call it inside the reversal's ``store.atomic()``, after the money is booked back, so the
    account never shows supply restored on money it no longer has.
    """
    a = store.get_account(payment.customer)
    if a.supply == "cut" or a.supply_at is None or a.supply_at < payment.accepted_at or a.balance_fen > a.close_ok_fen:
        return None
    meters = [m.address for m in store.meters_of_customer(a.customer) if m.mode == "remote"]
    if not meters:
        return None
    restores = [c for kind in _RESTORE_KINDS for c in store.list_commands(customer=a.customer, kind=kind)
                if c.meter in meters and c.created_at >= payment.accepted_at]
    cancelled = 0
    for c in restores:
        if c.status == "queued":
            store.cancel(c.id, actor=actor)
            cancelled += 1
    # a restore sent, unresolved or confirmed may have closed the relay; one that failed did not
    reached = any(c.status in ("sent", "unresolved", "confirmed") for c in restores)
    again = bool(restores) and not reached        # the relay never closed: the account is still cut
    # the cut notice that came before the cut counts again (the lift only lowered the level)
    level = 3 if a.notice_at is not None else a.notice_level
    now = store.now()
    d = _decide_one(a, level, CUT if again else SUPPLY.index(a.supply), now, Rules() if rules is None else rules,
                    utc_offset_s)
    action, level, reason = int(d.action[0]), int(d.notice_level[0]), int(d.reason[0])
    supply = SUPPLY[int(d.supply[0])]
    at = int(d.notice_at[0])
    notices, commands = [], []
    facts = {"balance_fen": a.balance_fen, "customer": a.customer, "reason": REASONS[reason]}
    told = 0
    if again:
        # the restore notice is false now: withdrawn if not sent yet, else the customer is told
        told = sum(store.withdraw_notices(f"payment:{ACTIONS[x]}:{a.customer}:", f"payment {payment.id} reversed")
                   for x in (CLOSE_PERMIT, DIRECT_CLOSE))
        if not told:
            notices.append((a.customer, NOTICE_KIND[TRIP], NOTICE_TEXT[TRIP].format(bal=yuan(a.balance_fen)),
                            f"reversal:cut:{a.customer}:{payment.id}", facts))
        name = "cut_again"
    else:
        name = ACTIONS[action]
        if action in NOTICE_TEXT:
            notices.append((a.customer, NOTICE_KIND[action], NOTICE_TEXT[action].format(bal=yuan(a.balance_fen)),
                            f"reversal:{name}:{a.customer}:{payment.id}", facts))
        if action in RELAY_KIND:
            commands = [(a.customer, m, RELAY_KIND[action], {}, f"reversal:{RELAY_KIND[action]}:{m}:{payment.id}")
                        for m in meters]
    detail: dict[str, Any] = {"balance_fen": a.balance_fen, "notice_level": level, "reason": REASONS[reason],
                              "supply": supply, "payment": payment.id, "restores_cancelled": cancelled,
                              "restore_notice_withdrawn": told}
    stale = store.apply_decisions(
        [(a.customer, a.version, level, None if at < 0 else at, supply, now if supply != a.supply else a.supply_at)],
        notices=notices, commands=commands, audit=[(actor, f"costctl.{name}", a.customer, detail)], actor=actor)
    return None if a.customer in stale else name


def _decide_one(a: Account, notice_level: int, supply: int, now: int, rules: Rules, utc_offset_s: int) -> Decisions:
    """``decide`` for one account, on its balance and limits, at ``now`` in local time."""
    local = datetime.fromtimestamp(now, timezone(timedelta(seconds=utc_offset_s)))
    return decide([a.balance_fen], a.alarm1_fen, a.alarm2_fen, a.overdraft_fen, a.close_ok_fen, a.protected,
                  a.restore_policy == "direct", [notice_level], [-1 if a.notice_at is None else a.notice_at],
                  [supply], now,
                  (local.hour * 60 + local.minute, (local.weekday() + 1) % 7, (local.year, local.month, local.day)),
                  rules)
