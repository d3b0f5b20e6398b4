"""The business-hall counter: a cashier's shift, payments by tender, receipts, voids, the close.

A shift belongs to one cashier at one counter channel. Payments taken in it carry their tender
(cash; cheque with its number; UnionPay POS with terminal id, trace number and reference
number) and the shift. A payment may be voided only within its shift (and by the payment
rules: the same day, before the money reached the meter). Closing the shift (日结) compares,
per tender, the count and sum of its payments that stand with what the cashier counted, and
records the differences.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from headend.payments.errors import PaymentError
from headend.payments.service import accept_payment, mask_name, reverse_payment
from headend.store import TENDERS, Channel, InvalidInput, NotFound, Payment, Shift, Store, yuan

if TYPE_CHECKING:  # the rules module loads numpy: only when a reversal decides
    from headend.costctl.decide import Rules

__all__ = ["TENDERS", "ensure_counter_channel", "open_shift", "take_payment", "void_payment", "close_shift",
           "shift_totals", "receipt_text", "check_tender"]

DEFAULT_COUNTER = "hall"
_POS_FIELDS = {"terminal_id": re.compile(r"^[0-9A-Za-z]{8}$"), "trace_no": re.compile(r"^[0-9]{6}$"),
               "ref_no": re.compile(r"^[0-9A-Za-z]{12}$")}


def ensure_counter_channel(store: Store, channel_id: str = DEFAULT_COUNTER, *, actor: str) -> Channel:
    """The counter channel of a business hall (created, without API access, on first use)."""
    try:
        ch = store.get_channel(channel_id)
    except NotFound:
        return store.add_channel(channel_id, "counter", actor=actor, name="business hall counter")
    if ch.kind != "counter":
        raise InvalidInput(f"channel {channel_id} is a {ch.kind} channel, not a counter")
    if not ch.enabled:
        # a shift there could take no payment: say so before the cashier starts, not at the first customer
        raise InvalidInput(f"counter {channel_id} is disabled: ask an admin to enable it"
                           f" (`headend channel enable {channel_id}`) or open the shift at another counter (--channel)")
    return ch


def check_tender(tender: dict[str, Any]) -> dict[str, Any]:
    """A tender as recorded: {"kind": cash} | {"kind": cheque, "cheque_no"} | {"kind":
    unionpay_pos, "terminal_id" (8), "trace_no" (6 digits), "ref_no" (12)}."""
    kind = tender.get("kind")
    if kind not in TENDERS:
        raise InvalidInput(f"tender must be one of {', '.join(TENDERS)}, got {kind!r}")
    if kind == "cash":
        return {"kind": "cash"}
    if kind == "cheque":
        no = str(tender.get("cheque_no") or "").strip()
        if not no:
            raise InvalidInput("a cheque payment needs the cheque number (--cheque-no)")
        return {"kind": "cheque", "cheque_no": no}
    out: dict[str, Any] = {"kind": "unionpay_pos"}
    for f, rx in _POS_FIELDS.items():
        v = str(tender.get(f) or "").strip()
        if not rx.match(v):
            raise InvalidInput(f"a UnionPay POS payment needs {f.replace('_', ' ')} as on the slip"
                               f" ({'8 letters/digits' if f == 'terminal_id' else '6 digits' if f == 'trace_no' else '12 letters/digits'}),"
                               f" got {v!r}")
        out[f] = v
    return out


def open_shift(store: Store, cashier: str, channel_id: str = DEFAULT_COUNTER) -> Shift:
    """Open the cashier's shift at a counter (its channel created on first use)."""
    with store.atomic():
        ensure_counter_channel(store, channel_id, actor=cashier)
        return store.open_shift(cashier, channel_id, actor=cashier)


def _shift_of(store: Store, cashier: str) -> Shift:
    shift = store.current_shift(cashier)
    if shift is None:
        raise InvalidInput(f"cashier {cashier} has no open shift: open one with `headend counter open`")
    return shift


def take_payment(store: Store, cashier: str, *, customer: str, amount_fen: int, tender: dict[str, Any],
                 meter: str | None = None, txn_id: str | None = None) -> Payment:
    """Take a payment at the counter in the cashier's open shift (see accept_payment)."""
    shift = _shift_of(store, cashier)
    t = check_tender(tender)
    if t["kind"] == "unionpay_pos":
        # one card transaction, one payment: the same slip keyed again would credit it twice
        taken = store.standing_payment_of_slip(shift.channel, t)
        if taken is not None:
            raise InvalidInput(f"UnionPay POS slip terminal {t['terminal_id']} ref {t['ref_no']} was already taken as"
                               f" payment {taken.id} ({yuan(taken.amount_fen)} yuan, customer {taken.customer},"
                               f" cashier {taken.actor}): reprint it with `headend counter receipt {taken.id}`;"
                               " a slip of a voided payment may be taken again")
    if txn_id is None:
        # the counter's own transaction id: shift and a number within it, so a re-run is visible
        txn_id = f"S{shift.id}-{len(store.list_payments(shift_id=shift.id, limit=100_000)) + 1}"
    return accept_payment(store, channel_id=shift.channel, txn_id=txn_id, amount_fen=amount_fen,
                          paid_at=store.now(), customer=customer, meter=meter, actor=cashier, tender=t,
                          shift_id=shift.id)


def void_payment(store: Store, cashier: str, payment_id: int, *, reason: str, rules: Rules | None = None) -> Payment:
    """Void a payment of the cashier's open shift (same day, before the money reached the meter);
    ``rules`` as ``reverse_payment`` takes them."""
    shift = _shift_of(store, cashier)
    p = store.get_payment(payment_id)
    if p.shift_id != shift.id:
        other = store.get_shift(p.shift_id) if p.shift_id is not None else None
        if other is not None and other.state == "open":
            raise PaymentError("not_reversible", f"payment {payment_id} was taken in shift {other.id} of cashier"
                               f" {other.cashier}, not in your shift {shift.id}: {other.cashier} can void it"
                               " while that shift is open")
        raise PaymentError("not_reversible", f"payment {payment_id} is not from your open shift {shift.id}:"
                           " only a refund can undo it now")
    return reverse_payment(store, payment_id, channel_id=shift.channel, actor=cashier, reason=reason, rules=rules)


def shift_totals(store: Store, shift_id: int) -> dict[str, dict[str, int]]:
    """Per tender: count and sum of the shift's payments that stand (voided ones left out)."""
    out = {t: {"count": 0, "fen": 0} for t in TENDERS}
    for p in store.list_payments(shift_id=shift_id, limit=1_000_000):
        if p.state == "reversed":
            continue
        kind = (p.tender or {}).get("kind", "cash")
        out[kind]["count"] += 1
        out[kind]["fen"] += p.amount_fen
    return out


def close_shift(store: Store, cashier: str, counted: dict[str, dict[str, int]], *, actor: str | None = None) -> Shift:
    """Close the cashier's shift (日结): expected vs counted per tender, differences recorded.

    ``counted`` is {tender: {"count": n, "fen": sum}}; a tender left out counts as nothing.
    ``actor``: who closes it, when not the cashier (an admin closing for one who cannot).
    """
    for t in counted:
        if t not in TENDERS:
            raise InvalidInput(f"unknown tender {t!r} in the count; tenders are {', '.join(TENDERS)}")
        for what in ("count", "fen"):
            v = (counted[t] or {}).get(what, 0)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise InvalidInput(f"counted {t} {what} must be a whole number of 0 or more, got {v!r}:"
                                   " count again and give what is in the drawer")
    with store.atomic():
        shift = _shift_of(store, cashier)
        expected = shift_totals(store, shift.id)
        got = {t: {"count": int((counted.get(t) or {}).get("count", 0)), "fen": int((counted.get(t) or {}).get("fen", 0))}
               for t in TENDERS}
        diff = {t: {"count": got[t]["count"] - expected[t]["count"], "fen": got[t]["fen"] - expected[t]["fen"]}
                for t in TENDERS if got[t] != expected[t]}
        return store.close_shift_record(shift.id, expected=expected, counted=got, differences=diff, actor=actor or cashier)


def receipt_text(store: Store, payment_id: int, fmt_time: Any) -> str:
    """The counter receipt of a payment as text; shows when the meter confirmed the top-up."""
    p = store.get_payment(payment_id)
    a = store.get_account(p.customer)
    t = p.tender or {}
    tender = {"cash": "cash", "cheque": f"cheque no. {t.get('cheque_no')}",
              "unionpay_pos": f"UnionPay POS terminal {t.get('terminal_id')} trace {t.get('trace_no')}"
                              f" ref {t.get('ref_no')}"}.get(t.get("kind", ""), "-")
    state = {
        "sent_to_meter": "sent to meter, not yet confirmed",
        "confirmed_on_meter": f"confirmed on meter at {fmt_time(p.confirmed_at)}",
        "credited": f"credited to account at {fmt_time(p.credited_at)}",
        "reversed": f"VOID at {fmt_time(p.reversed_at)} ({p.note or ''})",
        "accepted": "accepted",
    }[p.state]
    lines = [
        "prepaid645 electricity payment receipt",
        "-" * 40,
        f"Receipt no.  {p.id}   ({p.channel_id} {p.txn_id})",
        f"Customer     {p.customer}  {mask_name(a.name)}",
        f"Meter        {p.meter or '(account)'}",
        f"Amount       {yuan(p.amount_fen)} yuan",
        f"Tender       {tender}",
        f"Cashier      {p.actor}" + (f"   shift {p.shift_id}" if p.shift_id else ""),
        f"Paid at      {fmt_time(p.accepted_at)}   business day {p.day}",
        f"State        {state}",
        "-" * 40,
    ]
    return "\n".join(lines)
