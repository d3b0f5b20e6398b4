"""Prepaid recharge cards (充值卡): printed in batches with a serial and a PIN, activated when
sold, redeemed once online (the payments API) as a payment through the built-in card channel
into a customer's account or meter, or voided (lost, stolen, unsold) or expired.

The PIN is kept sealed under the master key (bound to the card's serial) and shown only once,
when the batch is made. Five wrong PINs lock a card: it is then refused unchecked, so a PIN
(16 digits) cannot be guessed through the API. Redeeming is idempotent per card: the same card
redeemed again into the same account by the same channel answers with the first payment.
"""

from __future__ import annotations

import hmac
import secrets

from headend.keys import KeyStore
from headend.payments import accept_payment
from headend.store import Channel, Conflict, NotFound, Payment, Store
from headend.store.vouchers import CARD_PIN_TRIES, Card, CardBatch

__all__ = ["CARD_CHANNEL", "PIN_DIGITS", "CardError", "ensure_card_channel", "make_batch", "activate", "void",
           "expire_due", "redeem"]

CARD_CHANNEL = "card"  # the built-in channel redeemed cards are paid through
PIN_DIGITS = 16
# refusals: code -> HTTP status (the payments API answers with them)
_STATUS = {"card_unknown": 404, "card_pin_wrong": 403, "card_locked": 423, "card_not_active": 409,
           "card_expired": 409, "card_redeemed": 409}


class CardError(Exception):
    """A refused card operation; nothing was moved (but a wrong PIN is counted)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = _STATUS[code]


def ensure_card_channel(store: Store, *, actor: str) -> Channel:
    """The built-in recharge-card channel (created on first use)."""
    try:
        return store.get_channel(CARD_CHANNEL)
    except NotFound:
        return store.add_channel(CARD_CHANNEL, "recharge_card", actor=actor, name="prepaid recharge cards")


def _label(serial: str) -> str:
    return f"card:{serial}"


def make_batch(store: Store, keys: KeyStore, *, face_fen: int, count: int, expires_at: int, actor: str,
               note: str = "") -> tuple[CardBatch, list[tuple[str, str]]]:
    """Print a batch: (batch, [(serial, PIN)]). The PINs are returned this once only. Serials are
    the batch number (6 digits) and the card's place in it (6 digits)."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100_000:
        raise ValueError(f"a batch holds 1..100000 cards, got {count!r}")
    ensure_card_channel(store, actor=actor)
    with store.atomic():
        nxt = max((b.id for b in store.list_card_batches()), default=0) + 1
        cards = [(f"{nxt:06d}{i:06d}", "".join(secrets.choice("0123456789") for _ in range(PIN_DIGITS)))
                 for i in range(1, count + 1)]
        batch = store.add_card_batch(face_fen=face_fen, cards=[(s, keys.seal(_label(s), p.encode())) for s, p in cards],
                                     expires_at=expires_at, actor=actor, note=note)
    if batch.id != nxt:  # batch ids are never reused: only a concurrent batch could do this
        raise Conflict(f"batch {nxt} was made by another operator at the same time; make this one again")
    return batch, cards


def _serials(store: Store, batch_id: int | None, serials: list[str] | None) -> list[str]:
    if batch_id is not None:
        store.get_card_batch(batch_id)
        return [c.serial for c in store.list_cards(batch_id=batch_id)]
    return list(serials or [])


def activate(store: Store, *, batch_id: int | None = None, serials: list[str] | None = None, actor: str) -> list[Card]:
    """Make printed cards redeemable (they were sold or handed to a shop): all or none."""
    return store.set_cards_state(_serials(store, batch_id, serials), to="active", allowed_from=("issued",), actor=actor)


def void(store: Store, *, batch_id: int | None = None, serials: list[str] | None = None, actor: str,
         reason: str) -> list[Card]:
    """Void cards that were not redeemed (lost, stolen, unsold): all or none; a reason is required.
    In a batch, the cards already redeemed, expired or voided are left as they are."""
    if not reason.strip():
        raise ValueError("voiding cards needs a reason")
    todo = _serials(store, batch_id, serials)
    if batch_id is not None:
        todo = [s for s in todo if store.get_card(s).state in ("issued", "active")]
    return store.set_cards_state(todo, to="voided", allowed_from=("issued", "active"), actor=actor, reason=reason)


def expire_due(store: Store, *, actor: str) -> list[Card]:
    """Expire every card not redeemed whose batch's expiry has passed."""
    now = store.now()
    due = [c.serial for st in ("issued", "active") for c in store.list_cards(state=st) if c.expires_at <= now]
    return store.set_cards_state(due, to="expired", allowed_from=("issued", "active"), actor=actor) if due else []


def redeem(store: Store, keys: KeyStore, *, serial: str, pin: str, customer: str | None, meter: str | None,
           actor: str) -> tuple[Card, Payment, bool]:
    """Redeem an active card into a customer's account (or a meter's): (card, its payment, whether
    this call redeemed it). The payment goes through the card channel with transaction id
    "card:SERIAL", as any payment does (a local meter gets a recharge, a remote account a credit).

    CardError: unknown serial, locked (5 wrong PINs), wrong PIN (the caller counts it with
    ``store.card_bad_pin`` outside its rolled-back transaction), not active, expired, already
    redeemed elsewhere. PaymentError: the payment itself is refused (unknown customer, hoarding)."""
    try:
        card = store.get_card(serial)
    except NotFound:
        raise CardError("card_unknown", f"no recharge card {serial!r}: check the serial printed on the card") from None
    if card.bad_pins >= CARD_PIN_TRIES:
        raise CardError("card_locked", f"card {serial} is locked after {CARD_PIN_TRIES} wrong PINs: the customer"
                        " brings it to a business hall")
    want = keys.unseal(_label(serial), store.card_pin(serial))
    if not hmac.compare_digest(want, pin.encode()):
        raise CardError("card_pin_wrong", f"the PIN does not match card {serial}"
                        f" ({CARD_PIN_TRIES - card.bad_pins - 1} tries left before it locks)")
    txn = f"card:{serial}"
    if card.state == "redeemed":
        p = store.get_payment(card.payment_id) if card.payment_id else None
        if p is not None and card.redeemed_by == actor and (p.request or {}).get("customer") == customer \
                and (p.request or {}).get("meter") == meter:
            return card, p, False
        raise CardError("card_redeemed", f"card {serial} was already redeemed (payment {card.payment_id})")
    if card.state == "active" and card.expires_at <= store.now():
        raise CardError("card_expired", f"card {serial} expired; it can no longer be redeemed")
    if card.state != "active":
        raise CardError("card_expired" if card.state == "expired" else "card_not_active",
                        f"card {serial} is {card.state}: only an active card can be redeemed"
                        + (" (it has not been activated: sold cards are activated by the seller)"
                           if card.state == "issued" else ""))
    with store.atomic():
        ensure_card_channel(store, actor=actor)
        p = accept_payment(store, channel_id=CARD_CHANNEL, txn_id=txn, amount_fen=card.face_fen,
                           paid_at=int(store.now()), customer=customer, meter=meter, actor=actor,
                           extra={"card": serial})
        card = store.card_redeemed(serial, payment_id=p.id, by=actor)
    return card, p, True

