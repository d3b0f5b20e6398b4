"""Vending: a voucher for a meter is a payment through a voucher channel, booked at issue, and a
20-digit token made under the meter's token key (protocol/TOKENS.md)."""

from __future__ import annotations

import secrets

from headend.keys import KeyStore
from headend.payments import PaymentError, headroom_fen
from headend.payments.service import MAX_PAYMENT_FEN
from headend.store import Channel, NotFound, Payment, Store
from headend.store.channels import fee_of
from headend.store.vouchers import Voucher
from headend.vouchers import token as T

__all__ = ["VOUCHER_CHANNEL", "ensure_voucher_channel", "issue_voucher", "voucher_token", "issue_key_change"]

# The built-in voucher channel `headend voucher issue` vends through.
VOUCHER_CHANNEL = "voucher"


def ensure_voucher_channel(store: Store, *, actor: str) -> Channel:
    """The built-in voucher channel (created on first use)."""
    try:
        return store.get_channel(VOUCHER_CHANNEL)
    except NotFound:
        return store.add_channel(VOUCHER_CHANNEL, "voucher", actor=actor, name="recharge vouchers (keypad tokens)")


def voucher_token(store: Store, keys: KeyStore, v: Voucher) -> str:
    """The 20 digits of an issued voucher, made again from its fields and the meter's key."""
    key = T.token_key(keys.meter_key(v.meter, v.krn), v.tkrn)
    return T.encode(key, T.CREDIT, 0, v.tid, v.field, v.rnd)


def issue_voucher(store: Store, keys: KeyStore, *, meter: str, amount_fen: int, actor: str,
                  channel_id: str = VOUCHER_CHANNEL, txn_id: str | None = None) -> tuple[Voucher, Payment, str]:
    """Vend one voucher for a local-cost-control meter: (voucher, its payment, the 20 digits).

    Refused (PaymentError, nothing written) when the channel is not an enabled voucher channel,
    the meter is unknown or not under local cost control, the amount cannot be coded in a token
    or is above the channel's maximum, or it would take the meter past its hoarding limit
    (unused vouchers count as money on its way). ``txn_id`` (a vending channel's own
    transaction id) makes the vend idempotent: the same id again gives the same voucher."""
    if isinstance(amount_fen, bool) or not isinstance(amount_fen, int) or amount_fen <= 0:
        raise PaymentError("amount_invalid", f"amount must be a whole number of fen above 0, got {amount_fen!r}",
                           field="amount_fen")
    try:
        field = T.amount_field(amount_fen)
    except T.TokenError as exc:
        raise PaymentError("amount_invalid", str(exc), field="amount_fen") from None
    with store.atomic():
        try:
            ch = store.get_channel(channel_id)
        except NotFound:
            raise PaymentError("unknown_channel", f"unknown channel {channel_id!r}", field="channel") from None
        if ch.kind != "voucher":
            raise PaymentError("unknown_channel", f"channel {channel_id} is a {ch.kind} channel: only voucher"
                               " channels vend tokens", field="channel")
        if not ch.enabled:
            raise PaymentError("channel_disabled", f"channel {channel_id} is disabled: it cannot vend", field="channel")
        try:
            m = store.get_meter(meter)
        except NotFound:
            raise PaymentError("unknown_meter", f"no meter {meter}", field="meter") from None
        if m.mode != "local" or m.customer is None:
            raise PaymentError("unknown_meter", f"meter {meter} is not under local cost control (with a customer):"
                               " a token adds money to the meter's own wallet", field="meter")
        limit = ch.max_amount_fen or MAX_PAYMENT_FEN
        if amount_fen > limit:
            raise PaymentError("amount_too_large", f"{amount_fen} fen is above the channel's maximum of {limit} fen",
                               field="amount_fen")
        room = headroom_fen(store, m)
        if amount_fen > room:
            raise PaymentError("hoarding_headroom", f"meter {meter} can take at most {room} fen more (its hoarding"
                               f" limit, unused vouchers included); {amount_fen} fen is too much", field="amount_fen")
        if txn_id is not None:
            first = store.payment_by_txn(channel_id, txn_id)
            if first is not None:
                v = store.voucher_of_payment(first.id)
                if v is None or v.meter != meter or v.amount_fen != amount_fen:
                    raise PaymentError("duplicate_conflict", f"transaction {txn_id} of channel {channel_id} already"
                                       " vended another voucher; a new voucher needs a new transaction id",
                                       field="txn_id")
                return v, first, voucher_token(store, keys, v)
        minute = max(0, (int(store.now()) - T.TID_BASE_UNIX) // 60)
        tkrn, krn = store.voucher_key(meter)
        v, p = store.record_voucher(channel=channel_id, meter=meter, customer=m.customer, amount_fen=amount_fen,
                                    fee_fen=fee_of(ch.fee_rule, amount_fen), field=field, rnd=secrets.randbelow(16),
                                    krn=m.krn if krn is None else krn, tkrn=tkrn, minute=minute, actor=actor,
                                    txn_id=txn_id)
    return v, p, voucher_token(store, keys, v)


def issue_key_change(store: Store, keys: KeyStore, *, meter: str, actor: str) -> tuple[int, list[str]]:
    """The four key-change tokens moving a meter's token key to the next revision: (new tkrn,
    tokens). The new key derives from the meter's current key (its KRN now), so nothing secret
    is stored. Vouchers vended from now on are made under the new key, so the customer enters the
    four tokens first. Refused (PaymentError, nothing written) while the meter has vouchers it has
    not reported used: they are made under the old key, which the meter forgets."""
    with store.atomic():
        try:
            m = store.get_meter(meter)
        except NotFound:
            raise PaymentError("unknown_meter", f"no meter {meter}", field="meter") from None
        if m.mode != "local":
            raise PaymentError("unknown_meter", f"meter {meter} is not under local cost control: it takes no"
                               " tokens", field="meter")
        open_ = store.list_vouchers(meter=meter, state="issued")
        if open_:
            ids = ", ".join(str(v.id) for v in open_[:10])
            raise PaymentError("vouchers_outstanding", f"meter {meter} has {len(open_)} voucher(s) not reported used ({ids}):"
                               " they are under the current token key; read the meter's token records"
                               " (`headend read METER 033D00FF`) once they are entered, then change the key",
                               field="meter")
        tkrn, krn = store.voucher_key(meter)
        old = T.token_key(keys.meter_key(meter, m.krn if krn is None else krn), tkrn)
        if tkrn >= 255:
            raise PaymentError("vouchers_outstanding", f"meter {meter} is at token-key revision 255, the last"
                               " one: change its meter key (KRN) instead", field="meter")
        new = T.token_key(keys.meter_key(meter, m.krn), tkrn + 1)
        store.record_voucher_key(meter, tkrn=tkrn + 1, krn=m.krn, actor=actor)
    return tkrn + 1, T.key_change(old, new, tkrn + 1)
