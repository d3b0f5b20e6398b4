"""Payment records and their journal rows; a payment's state follows its recharge in the outbox.

The rules (what may be paid, by whom, reversal windows) live in ``headend.payments``; this part
writes each step in one transaction with its journal rows, so a payment is never recorded
without its money or its recharge, nor the other way round.
"""

from __future__ import annotations

from typing import Any, Sequence

from headend.store.base import Tx
from headend.store.ledger import Ledger
from headend.store.models import Command, Conflict, InvalidInput, NotFound, Payment, TransitionError, dumps, loads
from headend.store.outbox import Outbox

_PAYMENT_COLS = ("id, channel, txn_id, customer, meter, amount_fen, fee_fen, state, paid_at, accepted_at, sent_at,"
                 " confirmed_at, credited_at, reversed_at, command_id, day, actor, tender, shift_id, request, extra,"
                 " note")


def _payment(row: Sequence[Any]) -> Payment:
    r = list(row)
    r[17] = loads(r[17])
    r[19] = loads(r[19])
    r[20] = loads(r[20])
    return Payment(*r)


class Payments(Ledger, Outbox):
    """Payments through channels: recorded, sent to the meter or credited, confirmed, reversed."""

    def get_payment(self, payment_id: int) -> Payment:
        """One payment by id; NotFound if there is none."""
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {_PAYMENT_COLS} FROM payments WHERE id = ?", (int(payment_id),))
        if row is None:
            raise NotFound(f"no payment {payment_id}")
        return _payment(row)

    def payment_by_txn(self, channel_id: str, txn_id: str) -> Payment | None:
        """The payment a channel made under its transaction id, or None."""
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {_PAYMENT_COLS} FROM payments WHERE channel = ? AND txn_id = ?",
                         (channel_id, txn_id))
        return None if row is None else _payment(row)

    def list_payments(
        self,
        *,
        customer: str | None = None,
        channel: str | None = None,
        shift_id: int | None = None,
        day: str | None = None,
        state: str | None = None,
        limit: int = 100,
    ) -> list[Payment]:
        """Payments, newest first, optionally filtered."""
        where, params = self._where({"customer": customer, "channel": channel, "shift_id": shift_id, "day": day,
                                     "state": state})
        with self._tx(write=False) as tx:
            rows = tx.all(f"SELECT {_PAYMENT_COLS} FROM payments{where} ORDER BY id DESC LIMIT ?", (*params, int(limit)))
        return [_payment(r) for r in rows]

    def in_flight_fen(self, meter: str) -> int:
        """Fen of payments on their way to a meter (recharges queued or sent, not yet confirmed)."""
        with self._tx(write=False) as tx:
            row = tx.one("SELECT COALESCE(SUM(amount_fen), 0) FROM payments WHERE meter = ? AND state = 'sent_to_meter'",
                         (meter,))
        return int(row[0]) if row else 0

    def record_payment(
        self,
        *,
        channel: str,
        txn_id: str,
        customer: str,
        meter: str | None,
        amount_fen: int,
        fee_fen: int,
        paid_at: int,
        actor: str,
        to_meter: bool,
        request: Any,
        tender: Any = None,
        extra: Any = None,
        shift_id: int | None = None,
    ) -> Payment:
        """Record an accepted payment with its journal rows, in one transaction.

        The account is credited ("payment"); with ``to_meter`` (local cost control) the money
        then leaves the account for the meter ("topup_sent") and exactly one recharge is queued
        in the outbox (idempotency key ``payment:ID``), and the payment is ``sent_to_meter``;
        otherwise it is ``credited``. A second payment under the same (channel, txn_id) is a
        Conflict: look it up with ``payment_by_txn`` first.
        """
        if not isinstance(amount_fen, int) or isinstance(amount_fen, bool) or amount_fen <= 0:
            raise InvalidInput(f"a payment is whole fen > 0, got {amount_fen!r}")
        if to_meter and not meter:
            raise InvalidInput("a payment to a meter names the meter")
        now = self.now()
        with self._tx() as tx:
            if tx.one("SELECT 1 FROM payments WHERE channel = ? AND txn_id = ?", (channel, txn_id)):
                raise Conflict(f"channel {channel} already has a payment with transaction id {txn_id!r}")
            day = self._open_day(tx, now)
            row = tx.one(
                f"INSERT INTO payments ({_PAYMENT_COLS}) VALUES (NULL, ?, ?, ?, ?, ?, ?, 'accepted', ?, ?, NULL, NULL,"
                " NULL, NULL, NULL, ?, ?, ?, ?, ?, ?, NULL) RETURNING id",
                (channel, txn_id, customer, meter, amount_fen, fee_fen, int(paid_at), now, day, actor, dumps(tender),
                 shift_id, dumps(request), dumps(extra)),
            )
            assert row is not None
            pid = int(row[0])
            refs = {"channel": channel, "txn_id": txn_id, "payment_id": pid, "ref": f"payment:{pid}"}
            self._book(tx, customer, "payment", amount_fen, actor=actor, meter=meter, day=day, **refs)
            if to_meter:
                assert meter is not None
                cmd = self.enqueue(meter, "recharge", {"amount_fen": amount_fen, "customer": customer, "payment": pid},
                                   actor=actor, idem_key=f"payment:{pid}")
                self._book(tx, customer, "topup_sent", -amount_fen, actor=actor, meter=meter,
                           detail={"command": cmd.id}, day=day, **refs)
                tx.execute("UPDATE payments SET state = 'sent_to_meter', sent_at = ?, command_id = ? WHERE id = ?",
                           (now, cmd.id, pid))
            else:
                tx.execute("UPDATE payments SET state = 'credited', credited_at = ? WHERE id = ?", (now, pid))
            self.log_action(actor, "payment.accept", customer,
                            {"payment": pid, "channel": channel, "txn_id": txn_id, "amount_fen": amount_fen,
                             "meter": meter})
            return self.get_payment(pid)

    def reverse_payment_record(self, payment_id: int, *, actor: str, reason: str) -> Payment:
        """Void a payment whose money has not reached a meter: a ``credited`` one, or one
        ``sent_to_meter`` whose recharge is still queued (the recharge fails first, so the money
        comes back to the account). Books the "reversal" row; TransitionError otherwise."""
        if not reason or not reason.strip():
            raise InvalidInput("a reversal needs a reason")
        with self._tx() as tx:
            p = self.get_payment(payment_id)
            if p.state == "sent_to_meter" and p.command_id is not None:
                cmd = self.get_command(p.command_id)
                if cmd.status != "queued":
                    raise TransitionError(f"payment {p.id}: its recharge is {cmd.status} to meter {p.meter}; the money"
                                          " may already be on the meter, so it cannot be reversed")
                self.cancel(cmd.id, actor=actor)     # refused if the frame may have reached the meter
                p = self.get_payment(payment_id)
            if p.state != "credited":
                raise TransitionError(f"payment {p.id} is {p.state}: only a payment whose money has not reached the"
                                      " meter can be reversed (use a refund or adjustment after that)")
            self._book(tx, p.customer, "reversal", -p.amount_fen, actor=actor, meter=p.meter, channel=p.channel_id,
                       txn_id=p.txn_id, payment_id=p.id, ref=f"payment:{p.id}", detail={"reason": reason.strip()})
            tx.execute("UPDATE payments SET state = 'reversed', reversed_at = ?, note = ? WHERE id = ?",
                       (self.now(), reason.strip(), p.id))
            self.log_action(actor, "payment.reverse", p.customer,
                            {"payment": p.id, "channel": p.channel_id, "txn_id": p.txn_id, "reason": reason.strip()})
            return self.get_payment(p.id)

    def _command_moved(self, tx: Tx, cmd: Command) -> None:
        super()._command_moved(tx, cmd)
        if cmd.kind != "recharge":
            return
        if cmd.status == "queued":
            self._recharge_requeued(tx, cmd)
            return
        if cmd.status not in ("confirmed", "failed", "rejected", "cancelled"):
            return               # queued, sent, unresolved: the money is still on its way
        row = tx.one(f"SELECT {_PAYMENT_COLS} FROM payments WHERE command_id = ? AND state = 'sent_to_meter'",
                     (cmd.id,))
        if row is None:
            return
        p = _payment(row)
        now = self.now()
        refs = {"meter": p.meter, "channel": p.channel_id, "txn_id": p.txn_id, "payment_id": p.id,
                "ref": f"command:{cmd.id}"}
        if cmd.status == "confirmed":
            self._book(tx, p.customer, "topup_confirmed", 0, actor=cmd.actor, meter_fen=p.amount_fen, **refs)
            tx.execute("UPDATE payments SET state = 'confirmed_on_meter', confirmed_at = ? WHERE id = ?", (now, p.id))
        else:
            # the meter refused, the recharge can never succeed, or it was taken out of the queue
            # before it was sent: the money is back on the account
            self._book(tx, p.customer, "topup_returned", p.amount_fen, actor=cmd.actor,
                       detail={"error": cmd.last_error, "status": cmd.status}, **refs)
            tx.execute("UPDATE payments SET state = 'credited', credited_at = ?, note = ? WHERE id = ?",
                       (now, f"recharge {cmd.status}: {cmd.last_error}", p.id))

    def _recharge_requeued(self, tx: Tx, cmd: Command) -> None:
        """An operator put a final recharge back in the queue: its payment's money, returned to the
        account when it ended, leaves for the meter again; a reversed payment's never does."""
        row = tx.one(f"SELECT {_PAYMENT_COLS} FROM payments WHERE command_id = ? AND state IN ('credited', 'reversed')",
                     (cmd.id,))
        if row is None:
            return
        p = _payment(row)
        if p.state == "reversed":
            raise TransitionError(f"command {cmd.id} is the recharge of payment {p.id}, which was reversed: it is not"
                                  " sent again (take a new payment instead)")
        self._book(tx, p.customer, "topup_sent", -p.amount_fen, actor=cmd.actor, meter=p.meter, channel=p.channel_id,
                   txn_id=p.txn_id, payment_id=p.id, ref=f"command:{cmd.id}", detail={"command": cmd.id, "again": True})
        tx.execute("UPDATE payments SET state = 'sent_to_meter', sent_at = ?, note = ? WHERE id = ?",
                   (self.now(), f"recharge requeued after: {p.note or ''}", p.id))
