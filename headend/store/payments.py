"""Payment records and their journal rows; a payment's state follows its recharge in the outbox.

The rules (what may be paid, by whom, reversal windows) live in ``headend.payments``; this part
writes each step in one transaction with its journal rows, so a payment is never recorded
without its money or its recharge, nor the other way round.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, NamedTuple, Sequence

from headend.store.base import Tx
from headend.store.ledger import _CLOSED_FROM, Booking, Ledger
from headend.store.meters import _METER_COLS, _meter
from headend.store.models import Command, InvalidInput, Meter, NotFound, Payment, TransitionError, dumps, loads
from headend.store.notices import withdraw_queued
from headend.store.outbox import Outbox

_PAYMENT_COLS = ("id, channel, txn_id, customer, meter, amount_fen, fee_fen, state, paid_at, accepted_at, sent_at,"
                 " confirmed_at, credited_at, reversed_at, command_id, day, actor, tender, shift_id, request, extra,"
                 " note")


# money on its way to some meters (``in_flight_by_meter``): read through the partial index of the
# payments still sent_to_meter, not a scan of every payment ever taken
_IN_FLIGHT = ("SELECT meter, SUM(amount_fen) FROM payments WHERE state = 'sent_to_meter' AND meter IN (%s)"
              " GROUP BY meter")


class PaymentInputs(NamedTuple):
    """What deciding a batch of payments reads (``payment_inputs``)."""

    earlier: dict[tuple[str, str], Payment]  # (channel, txn_id) -> the payment already made under it
    accounts: dict[str, tuple[int, str]]     # customer -> (balance_fen, supply)
    meters: dict[str, list[Meter]]           # customer -> its meters, by address
    day: str                                 # the booking day of a payment made now


def _chunks(items: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    """``items`` in pieces under every engine's parameter limit."""
    for lo in range(0, len(items), size):
        yield items[lo:lo + size]


class NewPayment(NamedTuple):
    """A payment the rules accepted, to record (``record_payments``)."""

    channel: str
    txn_id: str
    customer: str
    meter: str | None
    amount_fen: int
    fee_fen: int
    paid_at: int
    to_meter: bool
    request: Any
    tender: Any = None
    extra: Any = None
    shift_id: int | None = None
    # a payment to a meter: what the meter holds once this payment (and those before it on their
    # way) reached it, as the rules saw it; kept with the payment's journal row, where the
    # "payment received" notice reads it (headend.notices.events.notify_payments)
    meter_after: int | None = None


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

    def standing_payment_of_slip(self, channel_id: str, tender: dict[str, Any]) -> Payment | None:
        """A payment of the channel that stands (not reversed) with the same UnionPay POS slip
        (terminal id and reference number), or None."""
        terminal, ref = tender.get("terminal_id"), tender.get("ref_no")
        # the tender is JSON text (compact, keys sorted): the reference number narrows it in SQL,
        # the terminal is compared on the parsed rows
        like = "%" + (dumps({"ref_no": ref}) or "")[1:-1] + "%"   # "_" matches itself too: no false miss
        with self._tx(write=False) as tx:
            rows = tx.all(f"SELECT {_PAYMENT_COLS} FROM payments WHERE channel = ? AND state <> 'reversed'"
                          " AND tender LIKE ?", (channel_id, like))
        for p in map(_payment, rows):
            t = p.tender or {}
            if t.get("kind") == "unionpay_pos" and t.get("terminal_id") == terminal and t.get("ref_no") == ref:
                return p
        return None

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
        return self.in_flight_by_meter([meter]).get(meter, 0)

    def in_flight_by_meter(self, meters: Iterable[str]) -> dict[str, int]:
        """``in_flight_fen`` of several meters at once (meters with nothing on its way left out)."""
        out: dict[str, int] = {}
        addresses = list(dict.fromkeys(meters))
        with self._tx(write=False) as tx:
            for lo in range(0, len(addresses), 500):  # under every engine's parameter limit
                chunk = addresses[lo:lo + 500]
                out.update((m, int(f)) for m, f in tx.all(_IN_FLIGHT % ", ".join("?" for _ in chunk), chunk))
        return out

    def payments_by_txn(self, channel_id: str, txn_ids: Iterable[str]) -> dict[str, Payment]:
        """``payment_by_txn`` of several transaction ids of one channel (ids never paid left out)."""
        ids = list(dict.fromkeys(txn_ids))
        out: dict[str, Payment] = {}
        with self._tx(write=False) as tx:
            for lo in range(0, len(ids), 500):
                chunk = ids[lo:lo + 500]
                out.update((r[2], _payment(r)) for r in tx.all(
                    f"SELECT {_PAYMENT_COLS} FROM payments WHERE channel = ? AND txn_id IN"
                    f" ({', '.join('?' for _ in chunk)})", (channel_id, *chunk)))
        return out

    def payment_inputs(self, txns: Iterable[tuple[str, str]], customers: Iterable[str], meters: Iterable[str], *,
                       at: int) -> PaymentInputs:
        """What deciding a batch of payments reads, for the write transaction that records them:
        the payments already made under the (channel, txn_id) keys, the accounts named or owning
        the named meters, every meter of those accounts, and the booking day of a payment at ``at``.

        The keys and the accounts stay locked until that transaction ends (``Tx.lock``;
        ``for_update``, in customer order), so a request racing in under the same key waits, then
        finds this payment, and payments taken side by side to one account (and its meters) decide
        one after the other, each on what the one before left (see ``atomic(row_locked=True)``).
        The queries go out together where the engine pipelines them (a named meter's account is
        looked up first)."""
        keys = list(dict.fromkeys((str(c), str(t)) for c, t in txns))
        by_channel: dict[str, list[str]] = {}
        for c, t in keys:
            by_channel.setdefault(c, []).append(t)
        addresses = list(dict.fromkeys(meters))
        wanted = dict.fromkeys(customers)
        with self._tx() as tx:
            tx.lock([f"payment:{c}:{t}" for c, t in keys])
            paid = []
            for c, ids in by_channel.items():
                for chunk in _chunks(ids):
                    among, values = tx.one_of("txn_id", chunk)
                    paid.append(tx.submit(f"SELECT {_PAYMENT_COLS} FROM payments WHERE channel = ? AND {among}",
                                          (c, *values)))
            closed = tx.submit(_CLOSED_FROM, (self.business_day(at),))
            for chunk in _chunks(addresses):
                among, values = tx.one_of("address", chunk)
                wanted.update((r[0], None) for r in tx.all(f"SELECT customer FROM meters WHERE {among}", values))
            found = []
            for chunk in _chunks(sorted(wanted)):
                among, values = tx.one_of("customer", chunk)
                found.append((tx.submit(f"SELECT customer, balance_fen, supply FROM accounts WHERE {among}"
                                        " ORDER BY customer" + tx.for_update, values),
                              tx.submit(f"SELECT {_METER_COLS} FROM meters WHERE {among} ORDER BY address", values)))
            earlier = {(p.channel_id, p.txn_id): p for q in paid for p in map(_payment, q.all())}
            accounts: dict[str, tuple[int, str]] = {}
            by_customer: dict[str, list[Meter]] = {}
            for acc, met in found:
                accounts.update((c, (int(b), s)) for c, b, s in acc.all())
                for r in met.all():
                    m = _meter(r)
                    by_customer.setdefault(m.customer, []).append(m)
            return PaymentInputs(earlier, accounts, by_customer, self._first_open_day(closed, at))

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
        """Record one accepted payment (see ``record_payments``)."""
        return self.record_payments([NewPayment(channel, txn_id, customer, meter, amount_fen, fee_fen, paid_at,
                                                to_meter, request, tender, extra, shift_id)], actor=actor)[0]

    def record_payments(self, new: Sequence[NewPayment], *, actor: str, day: str | None = None,
                        audit: bool = True) -> list[Payment]:
        """Record accepted payments with their journal rows, in one transaction, in order.

        Each account is credited ("payment"); with ``to_meter`` (local cost control) the money
        then leaves the account for the meter ("topup_sent") and exactly one recharge is queued
        in the outbox (idempotency key ``payment:ID``), and the payment is ``sent_to_meter``;
        otherwise it is ``credited``. A second payment under the same (channel, txn_id) is a
        Conflict: the rules in ``headend.payments`` look it up first. A batch writes each table
        with one statement per row at most (journal, audit and state in bulk). ``day``: the
        booking day the caller read in this transaction (``payment_inputs``). ``audit=False``: no
        "payment.accept" audit row (a channel's payment through the API: its payment row, with its
        actor, channel, transaction id and times, is the record of who took it and when).
        """
        for p in new:
            if not isinstance(p.amount_fen, int) or isinstance(p.amount_fen, bool) or p.amount_fen <= 0:
                raise InvalidInput(f"a payment is whole fen > 0, got {p.amount_fen!r}")
            if p.to_meter and not p.meter:
                raise InvalidInput("a payment to a meter names the meter")
        now = self.now()
        with self._tx() as tx:
            day = day or self._open_day(tx, now)
            values = [(p.channel, p.txn_id, p.customer, p.meter, p.amount_fen, p.fee_fen,
                       "sent_to_meter" if p.to_meter else "credited", int(p.paid_at), now, now if p.to_meter else None,
                       None if p.to_meter else now, day, actor, dumps(p.tender), p.shift_id, dumps(p.request),
                       dumps(p.extra)) for p in new]
            balances = self._balances(tx, (p.customer for p in new))   # out with the inserts
            # the batch in as few statements as the engine does best (Tx.insert_rows), each row's id
            # matched by its unique key: one INSERT per payment cost the most of recording a batch
            made = tx.insert_rows(f"INSERT INTO payments ({_PAYMENT_COLS.removeprefix('id, ')}) VALUES ",
                                  "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, NULL, NULL, ?, ?, ?, ?, ?, ?, NULL)", values,
                                  " RETURNING id, channel, txn_id")
            found = {(ch, t): int(i) for i, ch, t in made}
            ids = [found[(p.channel, p.txn_id)] for p in new]
            cmds = self._insert_commands(
                tx, [(str(p.meter), "recharge", {"amount_fen": p.amount_fen, "customer": p.customer, "payment": pid},
                      f"payment:{pid}", 0) for p, pid in zip(new, ids) if p.to_meter], actor=actor)
            tx.write_many("UPDATE payments SET command_id = ? WHERE id = ?", [(c.id, c.params["payment"]) for c in cmds])
            command = {c.params["payment"]: c.id for c in cmds}
            bookings: list[Booking] = []
            for p, pid in zip(new, ids):
                refs = {"channel": p.channel, "txn_id": p.txn_id, "payment_id": pid, "ref": f"payment:{pid}",
                        "meter": p.meter}
                bookings.append(Booking(p.customer, "payment", p.amount_fen, detail=None if p.meter_after is None
                                        else {"meter_after_fen": p.meter_after}, **refs))
                if p.to_meter:
                    bookings.append(Booking(p.customer, "topup_sent", -p.amount_fen,
                                            detail={"command": command[pid]}, **refs))
            self._book_many(tx, bookings, actor=actor, day=day, balances=balances)
            if audit:
                self.log_actions((actor, "payment.accept", p.customer,
                                  {"payment": pid, "channel": p.channel, "txn_id": p.txn_id, "amount_fen": p.amount_fen,
                                   "meter": p.meter}) for p, pid in zip(new, ids))
            return [Payment(pid, p.channel, p.txn_id, p.customer, p.meter, p.amount_fen, p.fee_fen,
                            "sent_to_meter" if p.to_meter else "credited", int(p.paid_at), now,
                            now if p.to_meter else None, None, None if p.to_meter else now, None, command.get(pid),
                            day, actor, p.tender, p.shift_id, p.request, p.extra, None) for p, pid in zip(new, ids)]

    def reverse_payment_record(self, payment_id: int, *, actor: str, reason: str) -> Payment:
        """Void a payment whose money has not reached a meter: a ``credited`` one, or one
        ``sent_to_meter`` whose recharge is still queued (the recharge fails first, so the money
        comes back to the account). Books the "reversal" row and withdraws the payment's
        "payment received" notice if it is still queued; TransitionError otherwise."""
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
            now = self.now()
            tx.execute("UPDATE payments SET state = 'reversed', reversed_at = ?, note = ? WHERE id = ?",
                       (now, reason.strip(), p.id))
            # its "payment received" notice (headend.notices.events.notify_payments), if derived
            # but not sent yet, would tell the customer of money that is gone: withdrawn
            withdraw_queued(tx, f"pay:{p.channel_id}:{p.txn_id}", f"payment {p.id} reversed before this notice"
                            " was sent", now)
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
