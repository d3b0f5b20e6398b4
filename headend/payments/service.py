"""Accept, look up and reverse payments; what an account shows before a customer pays.

See the package docstring for the contract. Each call is one store transaction: the checks
and the writes see the same data, and a refused request writes nothing but its audit row.
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

from headend.keys import KeyStore
from headend.payments.errors import PaymentError
from headend.money import yuan
from headend.store import Channel, Meter, NotFound, Payment, Store, TransitionError
from headend.store.channels import fee_of
from headend.store.payments import NewPayment

if TYPE_CHECKING:  # the rules module loads numpy: only when a reversal decides
    from headend.costctl.decide import Rules

__all__ = [
    "MAX_PAYMENT_FEN",
    "OPERATOR_CHANNEL",
    "DEFAULT_HOARDING_FEN",
    "PaymentRequest",
    "accept_payment",
    "accept_payments",
    "get_payment",
    "find_payment",
    "reverse_payment",
    "account_view",
    "channel_secret",
    "issue_credentials",
    "ensure_operator_channel",
    "mask_name",
    "headroom_fen",
]

# Largest single payment unless a channel sets its own (100,000.00 yuan); a recharge frame
# carries at most 8 BCD digits of fen anyway.
MAX_PAYMENT_FEN = 10_000_000
# A meter never told otherwise holds 999,999.99 yuan at most (its firmware default).
DEFAULT_HOARDING_FEN = 99_999_999
# The channel the operator's `headend recharge` pays through: a counter without API access.
OPERATOR_CHANNEL = "operator"
_TXN_RE = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")
_COMPARED = ("customer", "meter", "amount_fen", "paid_at", "tender")


def ensure_operator_channel(store: Store, *, actor: str) -> Channel:
    """The built-in counter channel for operators' recharges (created on first use)."""
    try:
        return store.get_channel(OPERATOR_CHANNEL)
    except NotFound:
        return store.add_channel(OPERATOR_CHANNEL, "counter", actor=actor, name="operator recharges (headend recharge)")


def issue_credentials(keys: KeyStore, channel_id: str) -> tuple[str, str, str]:
    """New API credentials for a channel: (key id, secret to hand over once, sealed secret to store)."""
    key_id = f"{channel_id}-{secrets.token_hex(4)}"
    secret = secrets.token_urlsafe(32)
    return key_id, secret, keys.seal(f"channel:{channel_id}:{key_id}", secret.encode())


def channel_secret(keys: KeyStore, channel: Channel) -> bytes:
    """The HMAC-SHA256 key of a channel's API requests (its secret, unsealed)."""
    if channel.key_id is None or channel.secret is None:
        raise PaymentError("unknown_channel", f"channel {channel.id} has no API credentials (counter use only)")
    return keys.unseal(f"channel:{channel.id}:{channel.key_id}", channel.secret)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _channel(store: Store, channel_id: str) -> Channel:
    try:
        ch = store.get_channel(channel_id)
    except NotFound:
        raise PaymentError("unknown_channel", f"unknown channel {channel_id!r}", field="channel") from None
    if not ch.enabled:
        raise PaymentError("channel_disabled", f"channel {channel_id} is disabled: it cannot take payments",
                           field="channel")
    return ch


def _refuse(store: Store, actor: str, target: str | None, err: PaymentError, request: dict[str, Any]) -> PaymentError:
    """Audit a refused request (nothing else is written) and hand the error back to raise."""
    try:
        store.log_action(actor or "unknown", "payment.refused", target,
                         {"code": err.code, "field": err.field, "message": err.message, **request})
    except Exception:  # the refusal itself matters more than its audit row
        pass
    return err


def _room(meter: Meter, in_flight: int) -> int:
    limit = DEFAULT_HOARDING_FEN if meter.hoarding_fen in (None, 0) else int(meter.hoarding_fen or 0)
    return max(0, limit - (meter.balance_fen or 0) - in_flight)


def headroom_fen(store: Store, meter: Meter) -> int:
    """How much more a local-cost-control meter can take: its hoarding limit minus its last
    known balance and the payments still on their way to it."""
    return _room(meter, store.in_flight_fen(meter.address))


class PaymentRequest(NamedTuple):
    """One payment as a channel asks for it (the arguments of ``accept_payment`` but the actor);
    a NamedTuple, as immutable as a frozen dataclass and cheaper to make, once per API request."""

    channel_id: str
    txn_id: str
    amount_fen: int
    paid_at: int
    customer: str | None = None
    meter: str | None = None
    tender: Any = None
    extra: Any = None
    shift_id: int | None = None
    # money already taken from the customer (a bank's return file) cannot be refused: more than
    # the meter's hoarding headroom is credited to the account instead of refused
    to_account_if_full: bool = False

    def compared(self) -> dict[str, Any]:
        """What a repeat of the same transaction id must match, but the tender (kept in a column
        of its own, and compared too)."""
        return {"customer": self.customer, "meter": self.meter, "amount_fen": self.amount_fen,
                "paid_at": self.paid_at}

    def asked(self) -> dict[str, Any]:
        """Every field of ``_COMPARED``: ``compared`` and the tender."""
        return {**self.compared(), "tender": self.tender}


def _check_form(r: PaymentRequest, now: int) -> None:
    if not isinstance(r.txn_id, str) or not _TXN_RE.match(r.txn_id):
        raise PaymentError("txn_id_invalid", f"bad transaction id {r.txn_id!r}: 1-64 of A-Z a-z 0-9 _ . : / -",
                           field="txn_id")
    if not _int(r.amount_fen) or r.amount_fen <= 0:
        raise PaymentError("amount_invalid", f"amount must be a whole number of fen above 0, got {r.amount_fen!r}",
                           field="amount_fen")
    if not _int(r.paid_at) or r.paid_at <= 0 or r.paid_at > now + 86400:
        raise PaymentError("paid_at_invalid", f"paid_at must be Unix seconds, not in the future, got {r.paid_at!r}",
                           field="paid_at")


def _repeat(first: dict[str, Any] | None, r: PaymentRequest) -> None:
    """Refuse this request unless it is the same one again as the first under its transaction id
    (``first``: what that one asked, ``PaymentRequest.asked``)."""
    before = first or {}
    asked = r.asked()
    for f in _COMPARED:
        if before.get(f) != asked[f]:
            raise PaymentError("duplicate_conflict",
                               f"transaction {r.txn_id} of channel {r.channel_id} was already paid with"
                               f" {f} = {before.get(f)!r}, not {asked[f]!r}; a different"
                               " payment needs a new transaction id", field=f)


def _target(r: PaymentRequest, accounts: dict[str, tuple[int, str]], meters: dict[str, list[Meter]],
            by_address: dict[str, Meter]) -> tuple[str, Meter | None]:
    """Where the money goes: (customer, the local meter to top up or None for the account)."""
    if r.meter is not None:
        m = by_address.get(r.meter)
        if m is None:
            raise PaymentError("unknown_meter", f"no meter {r.meter}", field="meter")
        if r.customer is not None and r.customer != m.customer:
            raise PaymentError("meter_customer_mismatch",
                               f"meter {r.meter} belongs to another customer, not {r.customer}", field="meter")
        return m.customer, (m if m.mode == "local" else None)
    if r.customer is None:
        raise PaymentError("unknown_customer", "name the customer (customer number) or the meter", field="customer")
    if r.customer not in accounts:
        raise PaymentError("unknown_customer", f"no customer {r.customer}", field="customer")
    theirs = meters.get(r.customer, [])
    local = [x for x in theirs if x.mode == "local"]
    if not local:
        return r.customer, None
    if len(theirs) == 1:
        return r.customer, local[0]
    raise PaymentError("meter_required", f"customer {r.customer} has {len(theirs)} meters"
                       f" ({', '.join(x.address for x in theirs)}): say which one to top up", field="meter")


def accept_payments(store: Store, requests: Sequence[PaymentRequest], *, actor: str,
                    channel: Channel | None = None, audit: bool = True) -> list[tuple[Payment, bool]]:
    """Take many payments in one transaction, each exactly as ``accept_payment`` takes one:
    (payment, whether this call made it) for each request, in order.

    The same rules, checked for the whole batch with a few queries (channels, earlier payments,
    accounts and meters, money on its way to the meters) and written in bulk (``record_payments``,
    the journal, the outbox; the customer's notice follows from the journal, ``notify_payments``).
    All or nothing: the first refused request raises its PaymentError with ``index`` set to its
    place in ``requests``, and nothing is written. A transaction id twice in one batch is one
    payment, as it would be in two calls.
    A cut account is restored on its balance after all of the batch's payments to it.
    ``channel``: the caller's channel record, read in the same transaction (saves reading it again).
    ``audit=False``: no "payment.accept" audit row per payment (the payments API: a channel's
    accepted payment is recorded by its payment row; operators' payments and every refusal are
    audited).
    """
    now = store.now()
    for i, r in enumerate(requests):
        try:
            _check_form(r, now)
        except PaymentError as err:
            err.index = i
            raise
    # row_locked: on PostgreSQL payments are taken side by side; each locks its transaction ids
    # and its accounts (payment_inputs) before it reads what it decides on
    with store.atomic(row_locked=True):
        channels: dict[str, Channel] = {} if channel is None else {channel.id: channel}
        for i, r in enumerate(requests):
            if r.channel_id not in channels:
                try:
                    channels[r.channel_id] = _channel(store, r.channel_id)
                except PaymentError as err:
                    err.index = i
                    raise
            elif not channels[r.channel_id].enabled:
                err = PaymentError("channel_disabled", f"channel {r.channel_id} is disabled: it cannot take payments",
                                   field="channel")
                err.index = i
                raise err
        inputs = store.payment_inputs([(r.channel_id, r.txn_id) for r in requests],
                                      [r.customer for r in requests if r.customer is not None],
                                      [r.meter for r in requests if r.meter is not None], at=now)
        earlier: dict[tuple[str, str], Payment] = dict(inputs.earlier)
        # what the first payment under each key asked: those before, and those of this batch
        # (the tender too: it is kept in its own column, not in the request)
        asked = {key: {**(p.request or {}), "tender": p.tender} for key, p in earlier.items()}
        accounts, meters = inputs.accounts, inputs.meters
        by_address = {m.address: m for ms in meters.values() for m in ms}
        in_flight = store.in_flight_by_meter(a for a, m in by_address.items() if m.mode == "local")
        plan: list[tuple[int, PaymentRequest, Meter | None]] = []   # (index, request, local meter)
        new: list[NewPayment] = []
        again: dict[int, tuple[str, str]] = {}   # index -> key of the payment it repeats
        for i, r in enumerate(requests):
            try:
                key = (r.channel_id, r.txn_id)
                if key in asked:
                    _repeat(asked[key], r)
                    again[i] = key
                    continue
                ch = channels[r.channel_id]
                limit = ch.max_amount_fen or MAX_PAYMENT_FEN
                if r.amount_fen > limit:
                    # fen for the channels' programs, yuan for the cashier who typed it
                    raise PaymentError("amount_too_large", f"{r.amount_fen} fen ({yuan(r.amount_fen)} yuan) is above"
                                       f" the channel's maximum of {limit} fen ({yuan(limit)} yuan) per payment",
                                       field="amount_fen")
                cust, to_meter = _target(r, accounts, meters, by_address)
                meter_after = None
                if to_meter is not None:
                    on_way = in_flight.get(to_meter.address, 0)
                    room = _room(to_meter, on_way)
                    if r.amount_fen > room and r.to_account_if_full:
                        to_meter = None
                    elif r.amount_fen > room:
                        raise PaymentError("hoarding_headroom", f"meter {to_meter.address} can take at most {room}"
                                           f" fen ({yuan(room)} yuan) more (its hoarding limit); {r.amount_fen} fen"
                                           f" ({yuan(r.amount_fen)} yuan) is too much", field="amount_fen")
                    else:
                        in_flight[to_meter.address] = on_way + r.amount_fen
                        # what the customer is told the meter will hold (the "payment received" notice)
                        meter_after = (to_meter.balance_fen or 0) + on_way + r.amount_fen
            except PaymentError as err:
                err.index = i
                raise
            plan.append((i, r, to_meter))
            # a later request under the same id is this payment again (checked against it above)
            asked[key] = r.asked()
            new.append(NewPayment(r.channel_id, r.txn_id, cust, to_meter.address if to_meter else r.meter,
                                  r.amount_fen, fee_of(ch.fee_rule, r.amount_fen), r.paid_at, to_meter is not None,
                                  r.compared(), r.tender, r.extra, r.shift_id, meter_after))
        made = store.record_payments(new, actor=actor, day=inputs.day, audit=audit)
        for p in made:
            earlier[(p.channel_id, p.txn_id)] = p
        from headend.costctl.act import restore_after_payment

        for cust in dict.fromkeys(p.customer for p, (_, _, m) in zip(made, plan) if m is None):
            if accounts[cust][1] == "cut":
                restore_after_payment(store, cust, actor=actor, utc_offset_s=store.utc_offset_s)
        # the customer hears of each payment once: the notice sender derives the "payment
        # received" notice from the payment and its journal row (headend.notices.events.
        # notify_payments), so taking a payment queues no notice of its own
        made_at = {i: p for p, (i, _, _) in zip(made, plan)}
        return [(made_at[i], True) if i in made_at else (earlier[again[i]], False) for i in range(len(requests))]


def accept_payment(
    store: Store,
    *,
    channel_id: str,
    txn_id: str,
    amount_fen: int,
    paid_at: int,
    customer: str | None = None,
    meter: str | None = None,
    actor: str,
    tender: Any = None,
    extra: Any = None,
    shift_id: int | None = None,
) -> Payment:
    """Take one payment through a channel, exactly once (see the package docstring)."""
    r = PaymentRequest(channel_id, txn_id, amount_fen, paid_at, customer, meter, tender, extra, shift_id)
    try:
        return accept_payments(store, [r], actor=actor)[0][0]
    except PaymentError as err:
        raise _refuse(store, actor, customer or meter, err, {"channel": channel_id, **r.compared(),
                                                             "txn_id": txn_id}) from None


def get_payment(store: Store, payment_id: int, *, channel_id: str | None = None) -> Payment:
    """A payment by id; PaymentError unknown_payment if none, or (with channel_id) if it is
    another channel's: a channel never sees another channel's payments."""
    try:
        p = store.get_payment(int(payment_id))
    except (NotFound, ValueError, TypeError):
        raise PaymentError("unknown_payment", f"no payment {payment_id}") from None
    if channel_id is not None and p.channel_id != channel_id:
        raise PaymentError("unknown_payment", f"no payment {payment_id}")
    return p


def find_payment(store: Store, channel_id: str, txn_id: str) -> Payment:
    """A channel's payment by its transaction id; PaymentError unknown_payment if none."""
    p = store.payment_by_txn(channel_id, txn_id)
    if p is None:
        raise PaymentError("unknown_payment", f"channel {channel_id} has no payment with transaction id {txn_id!r}",
                           field="txn_id")
    return p


def reverse_payment(store: Store, payment_id: int, *, channel_id: str | None, actor: str, reason: str,
                    rules: Rules | None = None) -> Payment:
    """Void a payment the same business day, before its money reached the meter.

    A remote account the payment lifted from cut is decided again in the same transaction
    (``redecide_after_reversal``): supply restored on money taken back would otherwise stay
    restored until the next cost-control cycle. ``rules``: the cycle's trip rules (the
    ``[costctl]`` section; default: the cycle's defaults)."""
    request = {"payment": payment_id, "channel": channel_id, "reason": reason}
    try:
        if not reason or not str(reason).strip():
            raise PaymentError("reason_required", "a reversal needs a reason", field="reason")
        with store.atomic():
            p = get_payment(store, payment_id, channel_id=channel_id)
            if p.state == "reversed":
                return p
            if store.is_day_closed(p.day):
                raise PaymentError("day_closed", f"payment {p.id} was booked on {p.day}, which is closed: only an"
                                   " operator refund or adjustment can undo it now")
            today = store.booking_day()
            if p.day != today:
                raise PaymentError("not_reversible", f"payment {p.id} was booked on {p.day}; reversals are same-day"
                                   f" only (today is {today}): use a refund")
            try:
                r = store.reverse_payment_record(p.id, actor=actor, reason=str(reason))
            except TransitionError as exc:
                raise PaymentError("not_reversible", str(exc)) from None
            from headend.costctl.act import redecide_after_reversal

            redecide_after_reversal(store, r, actor=actor, rules=rules, utc_offset_s=store.utc_offset_s)
            return r
    except PaymentError as err:
        raise _refuse(store, actor, str(payment_id), err, request) from None


def mask_name(name: str) -> str:
    """A name as a bank shows it to whoever types the customer number: the first character of
    each word, the rest starred ("张三" -> "张*", "Li Wei" -> "L* W**")."""
    words = name.split()
    return " ".join(w[0] + "*" * (len(w) - 1) if len(w) > 1 else w for w in words)


def _round_up(fen: int, step: int) -> int:
    return -(-fen // step) * step


def account_view(store: Store, customer_no: str) -> dict[str, Any]:
    """What a bank or app shows before the customer pays (see the package docstring)."""
    try:
        a = store.get_account(customer_no)
    except NotFound:
        raise PaymentError("unknown_customer", f"no customer {customer_no}", field="customer") from None
    meters = store.meters_of_customer(customer_no)
    local = [m for m in meters if m.mode == "local"]
    now = store.now()
    month_ago = now - 30 * 86400
    if local:
        mode = "local"
        balance = a.balance_fen + sum((m.balance_fen or 0) + store.in_flight_fen(m.address) for m in local)
        cut = any(m.relay == "open" for m in local)
        max_fen: int | None = min(headroom_fen(store, m) for m in local) if len(local) == 1 else None
        used = sum(e.meter_fen for e in store.ledger(customer_no, limit=200)
                   if e.kind == "topup_confirmed" and e.at >= month_ago)
    else:
        mode = "remote"
        balance = a.balance_fen
        cut = a.supply == "cut"
        max_fen = None
        used = -sum(e.amount_fen for e in store.ledger(customer_no, limit=500)
                    if e.kind in ("charge", "fixed_charge") and e.at >= month_ago)
    if cut:
        state = "cut"
    elif balance <= 0 or (a.alarm1_fen > 0 and balance <= a.alarm1_fen):
        state = "alarm"
    else:
        state = "credit"
    need = a.close_ok_fen - balance + 1 if cut else -balance
    minimum = max(100, _round_up(max(need, 0), 100))
    suggested = max(minimum, _round_up(max(used, 5000), 1000))
    if max_fen is not None:
        suggested = max(minimum, min(suggested, max_fen))
    return {"customer": a.customer, "name": mask_name(a.name), "balance_fen": balance,
            "arrears_fen": max(0, -balance), "state": state, "minimum_fen": minimum, "suggested_fen": suggested,
            "max_fen": max_fen, "mode": mode}
