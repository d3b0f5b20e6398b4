"""Keypad vouchers (protocol/TOKENS.md): each one a payment through a voucher channel whose money
leaves the account for the meter at issue (the token carries it there), and is confirmed on the
meter when the meter reports the token used."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from headend.store.backend import Tx
from headend.store.models import Conflict, InvalidInput, NotFound, Payment
from headend.store.payments import Payments

__all__ = ["Voucher", "Vouchers", "VOUCHER_STATES", "Card", "CardBatch", "CARD_STATES", "CARD_PIN_TRIES"]

VOUCHER_STATES = ("issued", "used")
CARD_STATES = ("issued", "active", "redeemed", "expired", "voided")
CARD_PIN_TRIES = 5  # wrong PINs after which a card is refused unchecked
_CARD_COLS = ("c.serial, c.batch_id, b.face_fen, c.state, b.expires_at, c.bad_pins, c.changed_at, c.payment_id,"
              " c.redeemed_by")
_COLS = "id, meter, tid, customer, payment_id, amount_fen, field, rnd, krn, tkrn, state, issued_at, used_at, actor"


@dataclass(frozen=True)
class Voucher:
    """One issued token: what it was made from (the digits are not kept: they are made again
    from these fields and the meter's key when needed) and whether the meter has used it."""

    id: int
    meter: str
    tid: int
    customer: str
    payment_id: int
    amount_fen: int
    field: int
    rnd: int
    krn: int
    tkrn: int
    state: str
    issued_at: int
    used_at: int | None
    actor: str

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class CardBatch:
    """A batch of printed recharge cards of one face value and expiry."""

    id: int
    face_fen: int
    count: int
    expires_at: int
    created_at: int
    actor: str
    note: str

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Card:
    """One recharge card (never its PIN): its batch's face value and expiry, its state, the wrong
    PINs tried, when its state last changed, and the payment it became when redeemed."""

    serial: str
    batch_id: int
    face_fen: int
    state: str
    expires_at: int
    bad_pins: int
    changed_at: int | None
    payment_id: int | None
    redeemed_by: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return dict(self.__dict__)


class Vouchers(Payments):
    def record_voucher(self, *, channel: str, meter: str, customer: str, amount_fen: int, fee_fen: int, field: int,
                       rnd: int, krn: int, tkrn: int, minute: int, actor: str,
                       txn_id: str | None = None) -> tuple[Voucher, Payment]:
        """Record one voucher in one transaction: its token identifier (the issue minute, or one
        above the meter's last if that is not older), its payment through `channel` (journal
        "payment"), the money leaving the account for the meter ("topup_sent"), the payment
        ``sent_to_meter`` with no outbox command (the customer carries the token)."""
        if not 0 <= minute < 1 << 24:
            raise InvalidInput(f"issue minute {minute} is outside the token identifier range (2024 to 2055)")
        with self._tx() as tx:
            last = tx.one("SELECT MAX(tid) FROM vouchers WHERE meter = ?", (meter,))
            tid = max(minute, int(last[0]) + 1 if last and last[0] is not None else 0)
            if tid >= 1 << 24:
                raise Conflict(f"meter {meter} has used up its token identifiers")
            p = self.record_payment(channel=channel, txn_id=txn_id or f"voucher:{meter}:{tid}",
                                    customer=customer, meter=meter, amount_fen=amount_fen, fee_fen=fee_fen,
                                    paid_at=self.now(), actor=actor, to_meter=False,
                                    request={"meter": meter, "amount_fen": amount_fen, "tid": tid})
            self._book(tx, customer, "topup_sent", -amount_fen, actor=actor, meter=meter,
                       channel=channel, txn_id=p.txn_id, payment_id=p.id, ref=f"payment:{p.id}", day=p.day,
                       detail={"voucher_tid": tid})
            now = self.now()
            tx.execute("UPDATE payments SET state = 'sent_to_meter', sent_at = ?, credited_at = NULL WHERE id = ?",
                       (now, p.id))
            row = tx.one(f"INSERT INTO vouchers ({_COLS.removeprefix('id, ')}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'issued', ?, NULL, ?)"
                         " RETURNING id", (meter, tid, customer, p.id, amount_fen, field, rnd, krn, tkrn, now, actor))
            assert row is not None
            self.log_action(actor, "voucher.issue", meter,
                            {"voucher": int(row[0]), "tid": tid, "amount_fen": amount_fen, "payment": p.id})
            return self.get_voucher(int(row[0])), self.get_payment(p.id)

    def get_voucher(self, voucher_id: int) -> Voucher:
        """A voucher by id; NotFound if none."""
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {_COLS} FROM vouchers WHERE id = ?", (voucher_id,))
        if row is None:
            raise NotFound(f"no voucher {voucher_id}")
        return Voucher(*row)

    def get_voucher_by_tid(self, meter: str, tid: int) -> Voucher:
        """The voucher a meter's token identifier belongs to; NotFound if none."""
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {_COLS} FROM vouchers WHERE meter = ? AND tid = ?", (meter, tid))
        if row is None:
            raise NotFound(f"meter {meter} has no voucher with token identifier {tid}")
        return Voucher(*row)

    def voucher_of_payment(self, payment_id: int) -> Voucher | None:
        """The voucher a payment vended, or None."""
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {_COLS} FROM vouchers WHERE payment_id = ?", (payment_id,))
        return None if row is None else Voucher(*row)

    def list_vouchers(self, meter: str | None = None, state: str | None = None) -> list[Voucher]:
        """Vouchers, oldest first, optionally of one meter and/or in one state."""
        where, params = self._where({"meter": meter, "state": state})
        with self._tx(write=False) as tx:
            rows = tx.all(f"SELECT {_COLS} FROM vouchers{where} ORDER BY id", params)
        return [Voucher(*r) for r in rows]

    def mark_voucher_used(self, meter: str, tid: int, *, used_at: int, actor: str) -> Voucher:
        """The meter reported the token with this identifier used: the money is on the meter
        ("topup_confirmed") and the payment ``confirmed_on_meter``. Reporting it again changes
        nothing (the meter's purchase records are read more than once)."""
        with self._tx() as tx:
            row = tx.one(f"SELECT {_COLS} FROM vouchers WHERE meter = ? AND tid = ?", (meter, tid))
            if row is None:
                raise NotFound(f"meter {meter} reported token identifier {tid}, which no voucher of ours carries")
            v = Voucher(*row)
            if v.state == "used":
                return v
            self._mark(tx, v, used_at, actor)
            return self.get_voucher(v.id)

    def _mark(self, tx: Tx, v: Voucher, used_at: int, actor: str) -> None:
        p = self.get_payment(v.payment_id)
        self._book(tx, v.customer, "topup_confirmed", 0, actor=actor, meter=v.meter,
                   meter_fen=v.amount_fen, channel=p.channel_id, txn_id=p.txn_id, payment_id=p.id,
                   ref=f"voucher:{v.id}")
        now = self.now()
        tx.execute("UPDATE payments SET state = 'confirmed_on_meter', confirmed_at = ? WHERE id = ?", (now, p.id))
        tx.execute("UPDATE vouchers SET state = 'used', used_at = ? WHERE id = ?", (used_at, v.id))
        self.log_action(actor, "voucher.used", v.meter, {"voucher": v.id, "tid": v.tid})

    # --- token-key changes ---------------------------------------------------------------------
    def voucher_key(self, meter: str) -> tuple[int, int | None]:
        """(tkrn, krn) the meter's next vouchers are made under: its newest key change, else
        (0, None): revision 0, derived from the meter's current key."""
        with self._tx(write=False) as tx:
            row = tx.one("SELECT tkrn, krn FROM voucher_keys WHERE meter = ? ORDER BY tkrn DESC LIMIT 1", (meter,))
        return (0, None) if row is None else (int(row[0]), int(row[1]))

    def record_voucher_key(self, meter: str, *, tkrn: int, krn: int, actor: str) -> None:
        """A key change to token-key revision ``tkrn`` (derived at meter key revision ``krn``) was
        issued: the meter's vouchers are made under it from now on."""
        with self._tx() as tx:
            tx.execute("INSERT INTO voucher_keys (meter, tkrn, krn, issued_at, confirmed_at, actor)"
                       " VALUES (?, ?, ?, ?, NULL, ?)", (meter, tkrn, krn, self.now(), actor))
            self.log_action(actor, "voucher.key_change", meter, {"tkrn": tkrn, "krn": krn})

    def confirm_voucher_key(self, meter: str, tkrn: int, *, at: int, actor: str) -> bool:
        """The meter reported its key change to ``tkrn``; True the first time."""
        with self._tx() as tx:
            n = tx.execute("UPDATE voucher_keys SET confirmed_at = ? WHERE meter = ? AND tkrn = ?"
                           " AND confirmed_at IS NULL", (at, meter, tkrn))
            if n:
                self.log_action(actor, "voucher.key_confirmed", meter, {"tkrn": tkrn})
            return bool(n)

    def list_voucher_keys(self, meter: str) -> list[tuple[int, int, int, int | None]]:
        """A meter's key changes, oldest first: (tkrn, krn, issued_at, confirmed_at)."""
        with self._tx(write=False) as tx:
            return [tuple(r) for r in tx.all("SELECT tkrn, krn, issued_at, confirmed_at FROM voucher_keys"
                                             " WHERE meter = ? ORDER BY tkrn", (meter,))]  # type: ignore[misc]

    # --- recharge cards ------------------------------------------------------------------------
    def add_card_batch(self, *, face_fen: int, cards: list[tuple[str, str]], expires_at: int, actor: str,
                       note: str = "") -> CardBatch:
        """A batch of printed cards (serial, sealed PIN) in state ``issued``: not redeemable until
        activated. Serials are unique across batches (Conflict otherwise)."""
        if isinstance(face_fen, bool) or not isinstance(face_fen, int) or face_fen <= 0:
            raise InvalidInput(f"a card's face value must be a whole number of fen above 0, got {face_fen!r}")
        if not cards:
            raise InvalidInput("a batch needs at least one card")
        now = self.now()
        if expires_at <= now:
            raise InvalidInput("a batch's expiry must be in the future")
        with self._tx() as tx:
            row = tx.one("INSERT INTO card_batches (face_fen, count, expires_at, created_at, actor, note)"
                         " VALUES (?, ?, ?, ?, ?, ?) RETURNING id", (face_fen, len(cards), expires_at, now, actor, note))
            assert row is not None
            bid = int(row[0])
            try:
                tx.executemany("INSERT INTO recharge_cards (serial, batch_id, pin, state, changed_at)"
                               " VALUES (?, ?, ?, 'issued', ?)", [(s, bid, pin, now) for s, pin in cards])
            except Exception as exc:  # the one constraint that can fail: a serial already used
                if "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc):
                    raise Conflict("a card serial of this batch is already in use") from None
                raise
            self.log_action(actor, "card.batch", str(bid), {"face_fen": face_fen, "count": len(cards),
                                                           "expires_at": expires_at})
        return self.get_card_batch(bid)

    def get_card_batch(self, batch_id: int) -> CardBatch:
        """A card batch by id; NotFound if none."""
        with self._tx(write=False) as tx:
            row = tx.one("SELECT id, face_fen, count, expires_at, created_at, actor, note FROM card_batches"
                         " WHERE id = ?", (batch_id,))
        if row is None:
            raise NotFound(f"no card batch {batch_id}")
        return CardBatch(*row)

    def list_card_batches(self) -> list[CardBatch]:
        """Every card batch, oldest first."""
        with self._tx(write=False) as tx:
            rows = tx.all("SELECT id, face_fen, count, expires_at, created_at, actor, note FROM card_batches ORDER BY id")
        return [CardBatch(*r) for r in rows]

    def get_card(self, serial: str) -> Card:
        """A card by serial; NotFound if none."""
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {_CARD_COLS} FROM recharge_cards c JOIN card_batches b ON b.id = c.batch_id"
                         " WHERE c.serial = ?", (serial,))
        if row is None:
            raise NotFound(f"no recharge card {serial!r}")
        return Card(*row)

    def card_pin(self, serial: str) -> str:
        """The card's sealed PIN (open it with the key store's unseal, label "card:SERIAL")."""
        with self._tx(write=False) as tx:
            row = tx.one("SELECT pin FROM recharge_cards WHERE serial = ?", (serial,))
        if row is None:
            raise NotFound(f"no recharge card {serial!r}")
        return str(row[0])

    def list_cards(self, batch_id: int | None = None, state: str | None = None) -> list[Card]:
        """Cards in serial order, optionally of one batch and/or in one state."""
        where, params = self._where({"c.batch_id": batch_id, "c.state": state})
        with self._tx(write=False) as tx:
            rows = tx.all(f"SELECT {_CARD_COLS} FROM recharge_cards c JOIN card_batches b ON b.id = c.batch_id{where}"
                          " ORDER BY c.serial", params)
        return [Card(*r) for r in rows]

    def set_cards_state(self, serials: list[str], *, to: str, allowed_from: tuple[str, ...], actor: str,
                        reason: str = "") -> list[Card]:
        """Move cards to state ``to`` (activate, void, expire) from one of ``allowed_from``: all of
        them or none (Conflict naming the first that cannot move, NotFound for an unknown serial)."""
        if to not in CARD_STATES:
            raise InvalidInput(f"unknown card state {to!r}")
        now = self.now()
        with self._tx() as tx:
            for s in serials:
                c = self.get_card(s)
                if c.state == to:
                    continue
                if c.state not in allowed_from:
                    raise Conflict(f"card {s} is {c.state}: only a card that is {' or '.join(allowed_from)} can be"
                                   f" made {to}")
                tx.execute("UPDATE recharge_cards SET state = ?, changed_at = ? WHERE serial = ?", (to, now, s))
            self.log_action(actor, f"card.{to}", f"{len(serials)} cards",
                            {"serials": serials[:20], "count": len(serials), "reason": reason})
        return [self.get_card(s) for s in serials]

    def card_bad_pin(self, serial: str) -> int:
        """Count one wrong PIN for the card; the count now."""
        with self._tx() as tx:
            tx.execute("UPDATE recharge_cards SET bad_pins = bad_pins + 1 WHERE serial = ?", (serial,))
            row = tx.one("SELECT bad_pins FROM recharge_cards WHERE serial = ?", (serial,))
        return 0 if row is None else int(row[0])

    def card_redeemed(self, serial: str, *, payment_id: int, by: str) -> Card:
        """The active card became payment ``payment_id`` (Conflict unless it is active)."""
        with self._tx() as tx:
            n = tx.execute("UPDATE recharge_cards SET state = 'redeemed', changed_at = ?, payment_id = ?,"
                           " redeemed_by = ? WHERE serial = ? AND state = 'active'", (self.now(), payment_id, by, serial))
            if not n:
                raise Conflict(f"card {serial} is not active: it cannot be redeemed")
        return self.get_card(serial)
