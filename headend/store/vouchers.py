"""Keypad vouchers (protocol/TOKENS.md): each one a payment through a voucher channel whose money
leaves the account for the meter at issue (the token carries it there), and is confirmed on the
meter when the meter reports the token used."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from headend.store.backend import Tx
from headend.store.models import Conflict, InvalidInput, NotFound, Payment
from headend.store.payments import Payments

__all__ = ["Voucher", "Vouchers", "VOUCHER_STATES"]

VOUCHER_STATES = ("issued", "used")
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


class Vouchers(Payments):
    def record_voucher(self, *, channel: str, meter: str, customer: str, amount_fen: int, fee_fen: int, field: int,
                       rnd: int, krn: int, tkrn: int, minute: int, actor: str) -> tuple[Voucher, Payment]:
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
            p = self.record_payment(channel=channel, txn_id=f"voucher:{meter}:{tid}",
                                    customer=customer, meter=meter, amount_fen=amount_fen, fee_fen=fee_fen,
                                    paid_at=self.now(), actor=actor, to_meter=False,
                                    request={"meter": meter, "amount_fen": amount_fen, "tid": tid})
            self._book(tx, customer, "topup_sent", -amount_fen, actor=actor, meter=meter,
                       channel=channel, txn_id=p.txn_id, payment_id=p.id, ref=f"payment:{p.id}", day=p.day,
                       detail={"voucher_tid": tid})
            now = self.now()
            tx.execute("UPDATE payments SET state = 'sent_to_meter', sent_at = ?, credited_at = NULL WHERE id = ?",
                       (now, p.id))
            row = tx.one(f"INSERT INTO vouchers ({_COLS}) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'issued', ?, NULL, ?)"
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
