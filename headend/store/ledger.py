"""The ledger: an append-only journal of every money movement of an account, in fen.

Each row says what it does to the account's balance (``amount_fen``, with ``balance_after``) and,
for local cost control, to the money the head-end has put on a meter's wallet (``meter_fen``);
with the channel, the channel's transaction id, the payment, the operator (``actor``), the time,
what caused it (``ref``) and its business ``day``.  The account's cached ``balance_fen`` is the
sum of its rows: every writer here updates both in one transaction, and ``check_ledger`` proves
it.  A closed day (``close_day``) is frozen: rows are booked into the first open day on or after
their own, so a correction made after a close lands in the next open day.
"""

from __future__ import annotations

from typing import Any, Iterable, NamedTuple, Sequence

from headend.store.accounts import Accounts
from headend.store.backend import Rows
from headend.store.base import Tx
from headend.store.models import (
    LEDGER_KINDS,
    SUBFEN,
    Conflict,
    InvalidInput,
    LedgerEntry,
    NotFound,
    business_day,
    decision_state,
    dumps,
    loads,
    yuan,
)
from headend.store.reporting import OWING_SINCE, snapshot_day

# what a rating charge sets on its account's row, from its row ``t`` of the batch's charges
# (rated_until stays as it is where the charge does not give one); bench_tariff --write-forms
# times the same clause
CHARGE_SETS = (f"balance_fen = balance_fen - t.fen, {OWING_SINCE % '- t.fen'}, rem = t.rem, ladder_wh = t.lad,"
               " rated_until = COALESCE(t.until, rated_until), version = version + 1")
# a column of numbers: a sequence of ints, or an int array
Ints = Any
# the transaction's own table of a batch's charges (``charge_and_set_states``): its position, the
# account's key and customer, the charge, and the account as read (version, balance, rem, ladder);
# bench_tariff --write-forms builds the same table
CHARGES = "charge_batch"


def charges_table(key_type: str) -> str:
    """The statement that makes the batch's table of charges, keyed by a ``key_type`` column."""
    return (f"CREATE TEMP TABLE IF NOT EXISTS {CHARGES} (pos INTEGER PRIMARY KEY, k {key_type}, c TEXT NOT NULL,"
            " fen BIGINT NOT NULL, rem BIGINT NOT NULL, lad BIGINT NOT NULL, until BIGINT, fixed BIGINT NOT NULL,"
            " v BIGINT, bal BIGINT, orem BIGINT, olad BIGINT)")

_LEDGER_COLS = ("id, customer, at, kind, amount_fen, balance_after, idem_key, actor, detail, meter, channel, txn_id,"
                " payment_id, ref, day, meter_fen")


# the closed days on or after a business day: what the booking day of a movement follows from
_CLOSED_FROM = "SELECT day FROM ledger_days WHERE day >= ?"


class Booking(NamedTuple):
    """One journal row to book with ``_book_many`` (no idempotency key: its cause is its key)."""

    customer: str
    kind: str
    amount_fen: int
    meter: str | None = None
    channel: str | None = None
    txn_id: str | None = None
    payment_id: int | None = None
    ref: str | None = None
    detail: Any = None
    meter_fen: int = 0


def _ledger(row: Sequence[Any]) -> LedgerEntry:
    r = list(row)
    r[8] = loads(r[8])
    return LedgerEntry(*r)


def _fen(amount_fen: Any) -> int:
    if not isinstance(amount_fen, int) or isinstance(amount_fen, bool):
        raise InvalidInput(f"amount must be whole fen (int), got {amount_fen!r}")
    return amount_fen


def _day(day: str) -> str:
    import datetime as _dt

    try:
        return _dt.date.fromisoformat(str(day)).isoformat()
    except ValueError:
        raise InvalidInput(f"bad day {day!r}: write YYYY-MM-DD") from None


class Ledger(Accounts):
    """The journal: credits, charges, top-ups, refunds and adjustments, each exactly once per key."""

    # ----------------------------------------------------------------- business days
    def business_day(self, at: int | None = None) -> str:
        """The calendar day a time belongs to (local time, ``utc_offset_s``), closed or not."""
        return business_day(self.now() if at is None else at, self.utc_offset_s)

    def booking_day(self, at: int | None = None) -> str:
        """The day a movement at ``at`` (default now) is booked into: its own day, or the first
        open day after it when that day is closed."""
        with self._tx(write=False) as tx:
            return self._open_day(tx, self.now() if at is None else at)

    def _open_day(self, tx: Tx, at: int) -> str:
        return self._first_open_day(tx.submit(_CLOSED_FROM, (self.business_day(at),)), at)

    def _first_open_day(self, closed: Rows, at: int) -> str:
        """The booking day of ``at`` from the closed days on or after its own (``_CLOSED_FROM``)."""
        import datetime as _dt

        shut = {r[0] for r in closed.all()}
        d = _dt.date.fromisoformat(self.business_day(at))
        while d.isoformat() in shut:
            d += _dt.timedelta(days=1)
        return d.isoformat()

    def is_day_closed(self, day: str) -> bool:
        """Whether a business day has been closed (frozen)."""
        with self._tx(write=False) as tx:
            return tx.one("SELECT 1 FROM ledger_days WHERE day = ?", (_day(day),)) is not None

    def closed_days(self, *, limit: int = 100) -> list[tuple[str, int, str, Any]]:
        """Closed days, newest first: (day, closed_at, actor, totals)."""
        with self._tx(write=False) as tx:
            rows = tx.all("SELECT day, closed_at, actor, detail FROM ledger_days ORDER BY day DESC LIMIT ?",
                          (int(limit),))
        return [(r[0], int(r[1]), r[2], loads(r[3])) for r in rows]

    def day_totals(self, day: str) -> dict[str, Any]:
        """What a business day's journal holds: rows and fen per kind, and in total."""
        day = _day(day)
        with self._tx(write=False) as tx:
            rows = tx.all("SELECT kind, COUNT(*), COALESCE(SUM(amount_fen), 0), COALESCE(SUM(meter_fen), 0)"
                          " FROM ledger WHERE day = ? GROUP BY kind ORDER BY kind", (day,))
        kinds = {k: {"rows": int(n), "amount_fen": int(a), "meter_fen": int(m)} for k, n, a, m in rows}
        return {"day": day, "kinds": kinds, "rows": sum(v["rows"] for v in kinds.values()),
                "amount_fen": sum(v["amount_fen"] for v in kinds.values()),
                "meter_fen": sum(v["meter_fen"] for v in kinds.values())}

    def close_day(self, day: str, *, actor: str) -> dict[str, Any]:
        """Freeze a business day: nothing is booked into it afterwards (later movements and
        corrections go to the next open day). Returns the day's totals, also kept with the close.

        Only a day that has begun can be closed; closing a closed day is a Conflict.
        """
        day = _day(day)
        if day > self.business_day():
            raise InvalidInput(f"day {day} has not begun yet (today is {self.business_day()}): it cannot be closed")
        with self._tx() as tx:
            if tx.one("SELECT 1 FROM ledger_days WHERE day = ?", (day,)):
                raise Conflict(f"day {day} is already closed")
            totals = self.day_totals(day)
            tx.execute("INSERT INTO ledger_days (day, closed_at, actor, detail) VALUES (?, ?, ?, ?)",
                       (day, self.now(), actor, dumps(totals)))
            snapshot_day(tx, day, self.now(), self.utc_offset_s)   # the reports read a closed day from these figures
            self.log_action(actor, "ledger.close_day", day, totals)
            return totals

    # ----------------------------------------------------------------- writing the journal
    def _book(
        self,
        tx: Tx,
        customer: str,
        kind: str,
        amount_fen: int,
        *,
        actor: str,
        idem_key: str | None = None,
        detail: Any = None,
        meter: str | None = None,
        channel: str | None = None,
        txn_id: str | None = None,
        payment_id: int | None = None,
        ref: str | None = None,
        meter_fen: int = 0,
        day: str | None = None,
    ) -> LedgerEntry:
        """Append one journal row and move the cached balance with it (inside the caller's
        transaction); ``day``: the booking day the caller already found for this transaction."""
        if kind not in LEDGER_KINDS:
            raise InvalidInput(f"unknown journal kind {kind!r}; known: {', '.join(LEDGER_KINDS)}")
        if not actor:
            raise InvalidInput("every money movement needs an actor (operator name or service)")
        now = self.now()
        if amount_fen:
            bal = tx.one(f"UPDATE accounts SET balance_fen = balance_fen + ?, {OWING_SINCE % '+ ?'}, version = version + 1,"
                         " updated_at = ? WHERE customer = ? RETURNING balance_fen",
                         (amount_fen, amount_fen, now, now, customer))
        else:
            bal = tx.one("SELECT balance_fen FROM accounts WHERE customer = ?", (customer,))
        if bal is None:
            raise NotFound(f"no customer {customer}: add it with `headend customer add {customer}`")
        day = day or self._open_day(tx, now)
        row = tx.one(
            "INSERT INTO ledger (customer, at, kind, amount_fen, balance_after, idem_key, actor, detail, meter, channel,"
            " txn_id, payment_id, ref, day, meter_fen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (customer, now, kind, amount_fen, bal[0], idem_key, actor, dumps(detail), meter, channel, txn_id,
             payment_id, ref, day, meter_fen),
        )
        assert row is not None
        return LedgerEntry(int(row[0]), customer, now, kind, amount_fen, int(bal[0]), idem_key, actor, detail, meter,
                           channel, txn_id, payment_id, ref, day, meter_fen)

    @staticmethod
    def _balances(tx: Tx, customers: Iterable[str]) -> list[Rows]:
        """Send the read of the accounts' balances (locked for the transaction, in customer order)
        for ``_book_many``, so that it can go out with the caller's own queries."""
        names = sorted(set(customers))
        sent = []
        for lo in range(0, len(names), 500):
            among, values = tx.one_of("customer", names[lo:lo + 500])
            sent.append(tx.submit(f"SELECT customer, balance_fen FROM accounts WHERE {among} ORDER BY customer"
                                  + tx.for_update, values))
        return sent

    def _book_many(self, tx: Tx, entries: Sequence[Booking], *, actor: str, day: str,
                   balances: list[Rows] | None = None) -> None:
        """``_book`` for many rows at once, in order, inside the caller's transaction: the accounts'
        balances read once, then every row booked as ``_book`` books it (the same account update,
        the balance_after it would have had booked alone) with one statement per table for the
        whole batch; ``day``: the booking day; ``balances``: the entries' accounts' ``_balances``,
        if the caller sent them already in this transaction."""
        if not actor:
            raise InvalidInput("every money movement needs an actor (operator name or service)")
        for e in entries:
            if e.kind not in LEDGER_KINDS:
                raise InvalidInput(f"unknown journal kind {e.kind!r}; known: {', '.join(LEDGER_KINDS)}")
        now = self.now()
        names = sorted({e.customer for e in entries})
        balance: dict[str, int] = {}
        for rows_of in self._balances(tx, names) if balances is None else balances:
            balance.update((c, int(b)) for c, b in rows_of.all())
        missing = [c for c in names if c not in balance]
        if missing:
            raise NotFound(f"no customer {missing[0]}: add it with `headend customer add {missing[0]}`")
        # each account moved once for the batch, as the rows one by one would have moved it (as
        # _book does): the sum, a version per row, and the owing-since rule of its last row, where
        # ``keep`` says whether the balance stayed below zero before it (an earlier owing_since
        # stands) or not (it owes from now); one statement for the batch. The journal rows in the
        # same pass, each with the balance after it
        moves: dict[str, list[int]] = {}   # customer -> [fen, rows, keep]
        booked = []
        for e in entries:
            before = balance[e.customer]
            balance[e.customer] = before + e.amount_fen
            booked.append((e.customer, now, e.kind, e.amount_fen, before + e.amount_fen, actor, dumps(e.detail),
                           e.meter, e.channel, e.txn_id, e.payment_id, e.ref, day, e.meter_fen))
            if not e.amount_fen:
                continue
            m = moves.get(e.customer)
            if m is None:
                moves[e.customer] = m = [0, 0, 1]
            elif before >= 0:
                m[2] = 0
            m[0] += e.amount_fen
            m[1] += 1
        moved = [(c, *m) for c, m in moves.items()]
        for table, params in tx.tables_of("d", (("customer", "text"), ("fen", "bigint"), ("n", "bigint"),
                                                ("keep", "bigint")), moved, others=3):
            tx.write("UPDATE accounts SET balance_fen = balance_fen + d.fen, owing_since = CASE WHEN balance_fen + d.fen"
                     " < 0 THEN CASE WHEN d.keep = 1 THEN COALESCE(owing_since, ?) ELSE ? END ELSE NULL END,"
                     f" version = version + d.n, updated_at = ? FROM {table} WHERE accounts.customer = d.customer",
                     (now, now, now, *params))
        tx.insert_rows("INSERT INTO ledger (customer, at, kind, amount_fen, balance_after, idem_key, actor, detail, meter,"
                       " channel, txn_id, payment_id, ref, day, meter_fen) VALUES ",
                       "(?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)", booked)

    def credit(
        self,
        customer: str,
        amount_fen: int,
        *,
        actor: str,
        idem_key: str,
        kind: str = "payment",
        detail: Any = None,
    ) -> tuple[LedgerEntry, bool]:
        """Add money to an account exactly once per idem_key; return (ledger entry, newly applied).

        A repeat with the same key returns the first entry and applies nothing; the same key with
        a different customer or amount is a Conflict (a channel reusing keys). Negative amounts
        (refunds, corrections) are allowed; the sub-fen remainder is never touched.
        Payments through channels go through headend.payments, which books them here.
        """
        _fen(amount_fen)
        if not idem_key:
            raise InvalidInput("a credit needs an idempotency key (payment channel + its transaction id)")
        with self._tx() as tx:
            row = tx.one(f"SELECT {_LEDGER_COLS} FROM ledger WHERE idem_key = ?", (idem_key,))
            if row is not None:
                entry = _ledger(row)
                if entry.customer != customer or entry.amount_fen != amount_fen:
                    raise Conflict(
                        f"idempotency key {idem_key!r} was already used for {entry.amount_fen} fen to customer"
                        f" {entry.customer}; a different payment needs a different key"
                    )
                return entry, False
            entry = self._book(tx, customer, kind, amount_fen, actor=actor, idem_key=idem_key, detail=detail)
            self.log_action(actor, f"account.{kind}", customer, {"amount_fen": amount_fen, "idem_key": idem_key})
            return entry, True

    def adjust(
        self,
        customer: str,
        amount_fen: int,
        *,
        actor: str,
        reason: str,
        kind: str = "adjustment",
        idem_key: str | None = None,
        ref: str | None = None,
    ) -> tuple[LedgerEntry, bool]:
        """An operator's correction (kind "adjustment", +/-) or refund (kind "refund": money paid
        back, so the account goes down by amount_fen > 0), with the reason; audited.

        Booked into today's open day (a closed day is never touched). With idem_key a repeat
        returns the first entry; returns (entry, newly applied).
        """
        _fen(amount_fen)
        if kind not in ("adjustment", "refund"):
            raise InvalidInput(f"an operator correction is an adjustment or a refund, not {kind!r}")
        if not reason or not reason.strip():
            raise InvalidInput(f"a{'n' if kind == 'adjustment' else ''} {kind} needs a reason (what it corrects)")
        if amount_fen == 0 or (kind == "refund" and amount_fen < 0):
            raise InvalidInput(f"{kind} amount must be {'more than 0' if kind == 'refund' else 'non-zero'} fen,"
                               f" got {amount_fen}")
        delta = -amount_fen if kind == "refund" else amount_fen
        with self._tx() as tx:
            if idem_key:
                row = tx.one(f"SELECT {_LEDGER_COLS} FROM ledger WHERE idem_key = ?", (idem_key,))
                if row is not None:
                    entry = _ledger(row)
                    if entry.customer != customer or entry.amount_fen != delta or entry.kind != kind:
                        raise Conflict(f"key {idem_key!r} was already used for another {entry.kind} "
                                       f"({entry.amount_fen} fen to {entry.customer})")
                    return entry, False
            if kind == "refund":
                # money paid back out must have come in: a refund above the balance would hand out
                # cash the account never held (a wrong balance is corrected by an adjustment first)
                held = tx.one("SELECT balance_fen FROM accounts WHERE customer = ?" + tx.for_update, (customer,))
                if held is not None and amount_fen > int(held[0]):
                    raise InvalidInput(f"refund of {yuan(amount_fen)} yuan is more than the {yuan(int(held[0]))} yuan"
                                       f" customer {customer} holds: refund at most that (if the balance is"
                                       " wrong, correct it with `headend ledger adjust` first)")
            entry = self._book(tx, customer, kind, delta, actor=actor, idem_key=idem_key, ref=ref,
                               detail={"reason": reason.strip()})
            self.log_action(actor, f"account.{kind}", customer,
                            {"amount_fen": delta, "reason": reason.strip(), "ledger": entry.id})
            return entry, True

    def charge_accounts(
        self,
        batch_key: str,
        charges: Iterable[Sequence[Any]],
        *,
        actor: str,
        kind: str = "charge",
        interval_s: int | None = None,
        read_as: Iterable[Sequence[int]] | None = None,
        fixed_fen: Iterable[int] | None = None,
    ) -> int:
        """Debit many accounts in one transaction, exactly once per batch_key; return accounts charged.
        (See ``charge_and_set_states`` for the whole description.)"""
        return self.charge_and_set_states(batch_key, charges, actor=actor, kind=kind, interval_s=interval_s,
                                          read_as=read_as, fixed_fen=fixed_fen)[0]

    def charge_and_set_states(
        self,
        batch_key: str,
        charges: Iterable[Sequence[Any]],
        *,
        actor: str,
        kind: str = "charge",
        interval_s: int | None = None,
        read_as: Iterable[Sequence[int]] | None = None,
        fixed_fen: Iterable[int] | None = None,
        states: Iterable[Sequence[Any] | None] | None = None,
        keys: Iterable[Any] | None = None,
    ) -> tuple[int, bool]:
        """Debit many accounts in one transaction, exactly once per batch_key; return (accounts
        charged, whether ``states`` were set).

        Each charge is (customer, fen, new_rem, new_ladder_wh[, rated_until]): balance -= fen; rem,
        ladder_wh (and rated_until when given, for every row) are replaced with what the tariff core
        computed from the account's previous values. A batch_key
        already applied returns 0 and changes nothing, so a re-run rating cycle never bills twice.
        Each charge that moves money, rem or ladder_wh gets a journal row (kind,
        -fen, balance_after, and the remainder after it); a charge that changes nothing but
        rated_until (no energy) writes none.  With rated_until and ``interval_s`` (the length of
        the intervals rated) the row also records the end of the last interval it rated, so
        ``remainder_at`` can tell the remainder at that point.  ``read_as``: per charge, the
        account's (balance_fen, rem, ladder_wh, version) as the caller read it (a rating cycle
        has them): the accounts need not be read again when no version has moved since.
        ``fixed_fen``: per charge, the part of fen that is fixed (daily) charges: the journal then
        has a "fixed_charge" row for it beside the rating charge row of the rest.
        ``states`` (with ``read_as``): per charge, the (notice_level, notice_at, supply, supply_at)
        the caller decided on the balance after it, set in the same transaction as the money, so a
        cost-control cycle needs no second pass over its accounts; None for an account whose state
        stays as it was (its state columns are left alone).  They are set only if no account moved since
        ``read_as`` (the usual case); otherwise none is, the charges still land on the balances as
        they are, and the caller decides again (``apply_decisions`` compare-and-sets on versions).
        ``keys`` (with ``read_as``): per charge, the account's key as ``cost_control_meters`` read it
        (``Tx.account_key``): the compare-and-set finds the row by it (and checks the customer).
        """
        rows = [tuple(r) for r in charges]
        widths = {len(r) for r in rows}
        if not widths <= {4} and not widths <= {5}:
            raise InvalidInput(f"charge batch {batch_key}: rows are (customer, fen, rem, ladder_wh[, rated_until]),"
                               " all of one width")
        cols = list(zip(*rows)) if rows else [()] * 5
        if read_as is not None:
            read_as = list(read_as)
            if len(read_as) != len(rows):
                raise InvalidInput(f"charge batch {batch_key}: read_as needs one (balance_fen, rem, ladder_wh,"
                                   f" version) per charge, got {len(read_as)} for {len(rows)}")
        return self.charge_columns(
            batch_key, list(cols[0]), cols[1], cols[2], cols[3], cols[4] if widths == {5} else None, actor=actor,
            kind=kind, interval_s=interval_s, read_as=None if read_as is None else list(zip(*read_as)) if read_as else [()] * 4,
            fixed_fen=fixed_fen, states=states, keys=keys)

    def charge_columns(
        self,
        batch_key: str,
        customers: Sequence[str],
        fen: Ints,
        rem: Ints,
        ladder_wh: Ints,
        rated_until: Ints | None = None,
        *,
        actor: str,
        kind: str = "charge",
        interval_s: int | None = None,
        read_as: Sequence[Ints] | None = None,
        fixed_fen: Ints | None = None,
        states: Iterable[Sequence[Any] | None] | None = None,
        keys: Iterable[Any] | None = None,
    ) -> tuple[int, bool]:
        """``charge_and_set_states`` with the charges as columns (sequences or int arrays, one
        entry per charge: a cycle's arrays as they are) and ``read_as`` as the four columns
        (balance_fen, rem, ladder_wh, version); the same checks, writes and result."""
        import numpy as np      # here, not at the top: the command line starts without it

        now = self.now()
        n = len(customers)
        if len(set(customers)) != n:
            raise InvalidInput(f"charge batch {batch_key}: a customer appears twice; sum its charges first")

        def ints(col: Any, what: str) -> Any:
            arr = np.asarray(col, dtype=np.int64)
            if arr.shape != (n,):
                raise InvalidInput(f"charge batch {batch_key}: {what} needs one number per charge, got {arr.shape}"
                                   f" for {n}")
            return arr

        fen_a, rem_a, lad_a = ints(fen, "fen"), ints(rem, "rem"), ints(ladder_wh, "ladder_wh")
        until = None if rated_until is None else ints(rated_until, "rated_until")
        bad = np.flatnonzero((rem_a < 0) | (rem_a >= SUBFEN) | (lad_a < 0))
        if bad.size:
            raise InvalidInput(f"customer {customers[int(bad[0])]}: remainder must be in [0, {SUBFEN}) and ladder"
                               " energy >= 0")
        fixed = np.zeros(n, dtype=np.int64) if fixed_fen is None else np.asarray(
            fixed_fen if isinstance(fixed_fen, np.ndarray) else list(fixed_fen), dtype=np.int64)
        if fixed.shape != (n,) or ((fixed < 0) | (fixed > fen_a)).any():
            raise InvalidInput(f"charge batch {batch_key}: fixed_fen needs one amount per charge, 0 .. the charge")
        if read_as is not None:
            if len(read_as) != 4:
                raise InvalidInput(f"charge batch {batch_key}: read_as is four columns (balance_fen, rem, ladder_wh,"
                                   " version)")
            read_as = [ints(c, "read_as") for c in read_as]
        decided: list[tuple[Any, ...] | None] | None = None
        if states is not None:
            if read_as is None:
                raise InvalidInput(f"charge batch {batch_key}: states are set only with read_as (what they were"
                                   " decided on)")
            decided = [None if st is None else decision_state(c, *st) for c, st in zip(customers, states)]
            if len(decided) != n:
                raise InvalidInput(f"charge batch {batch_key}: states needs one (notice_level, notice_at, supply,"
                                   " supply_at) per charge")
        key_list: list[Any] | None = None
        if keys is not None:
            key_list = list(keys.tolist() if isinstance(keys, np.ndarray) else keys)
            if read_as is None or len(key_list) != n:
                raise InvalidInput(f"charge batch {batch_key}: keys are given with read_as, one per charge")
        until_l = [None] * n if until is None else until.tolist()
        with self._tx() as tx:
            if tx.one("SELECT 1 FROM ledger_batches WHERE key = ?", (batch_key,)):
                return 0, False
            by_key = key_list is not None and tx.account_key != "customer"
            key_col = tx.account_key if by_key else "customer"
            row_keys = key_list if by_key and key_list is not None else customers
            # the charges go into a table of the transaction's own, and the accounts' UPDATE and the
            # journal's INSERT take them from there: each row's work is the engine's, not a
            # statement's parameters made and bound per row (on SQLite, 100,000 charges in 0.59x the
            # CPU of an UPDATE and a journal row per charge sent from here)
            tx.execute(charges_table("BIGINT" if by_key else "TEXT"))
            tx.execute(f"DELETE FROM {CHARGES}")
            if read_as is not None:
                tx.executemany(f"INSERT INTO {CHARGES} (pos, k, c, fen, rem, lad, until, fixed, v, bal, orem, olad)"
                               " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               zip(range(n), row_keys, customers, fen_a.tolist(), rem_a.tolist(), lad_a.tolist(),
                                   until_l, fixed.tolist(), read_as[3].tolist(), *(c.tolist() for c in read_as[:3])))
            else:
                tx.executemany(f"INSERT INTO {CHARGES} (pos, k, c, fen, rem, lad, until, fixed) VALUES"
                               " (?, ?, ?, ?, ?, ?, ?, ?)",
                               zip(range(n), customers, customers, fen_a.tolist(), rem_a.tolist(), lad_a.tolist(),
                                   until_l, fixed.tolist()))
            n = -1
            if read_as is not None:
                # the caller's reading holds wherever the version has not moved: charge those rows
                # by compare-and-set, with no read of the accounts; if any row moved (a payment
                # raced in), undo and take the general path below
                tx.execute("SAVEPOINT charge_read_as")
                # by the engine's own row key where it has one (SQLite's rowid: 0.75x the time of
                # finding each row through the customer index), checking the customer
                n = tx.execute(f"UPDATE accounts SET {CHARGE_SETS}, updated_at = ? FROM {CHARGES} t"
                               f" WHERE accounts.{key_col} = t.k AND accounts.customer = t.c"
                               " AND accounts.version = t.v", (now, now))
                if n == len(customers) and decided is not None:
                    # only the states that change are written, by a second statement for those
                    # few rows: setting the four state columns on every row would cost SQLite
                    # about twice the UPDATE of the money alone
                    tx.executemany(f"UPDATE accounts SET notice_level = ?, notice_at = ?, supply = ?, supply_at = ?"
                                   f" WHERE {key_col} = ? AND customer = ?",
                                   [(*st, key, c) for c, st, key in
                                    zip(customers, decided, row_keys) if st is not None])
                if n != len(customers):
                    decided = None
                    tx.execute("ROLLBACK TO charge_read_as")
                    n = -1
                tx.execute("RELEASE charge_read_as")
            if n < 0:
                # balance, rem and ladder before the charge, read under the write lock this
                # transaction holds: balance_after follows, and a journal row is written only
                # where money, rem or ladder move
                tx.execute(f"UPDATE {CHARGES} SET bal = a.balance_fen, orem = a.rem, olad = a.ladder_wh FROM accounts a"
                           f" WHERE a.customer = {CHARGES}.c")
                n = tx.execute(f"UPDATE accounts SET {CHARGE_SETS}, updated_at = ? FROM {CHARGES} t"
                               " WHERE accounts.customer = t.c", (now, now))
            if n != len(customers):
                known = {r[0] for r in tx.all("SELECT customer FROM accounts")} if n < len(customers) else set()
                missing = sorted(set(customers) - known)[:5]
                raise NotFound(f"charge batch {batch_key}: unknown customers {missing} (nothing was charged)")
            step = None if until is None or interval_s is None else int(interval_s)
            # a charge's journal row where money, rem or ladder move, in the charges' order, and
            # after them the fixed charges beside those for the same intervals (the remainder is
            # the charge's): each account's rows in that order, each statement taking the charges
            # in the order they are kept (one statement of both would sort them all)
            moved = "(t.fen <> 0 OR t.rem <> t.orem OR t.lad <> t.olad)"
            rated_to = "CAST(NULL AS BIGINT)" if step is None else f"t.until + {step}"
            head = ("INSERT INTO ledger (customer, at, kind, amount_fen, balance_after, idem_key, actor, detail,"
                    " rem_after, rated_to, ref, day) SELECT t.c, ?, ?, ")
            tail = f", NULL, ?, ?, {{}}, {rated_to}, ?, ? FROM {CHARGES} t WHERE {moved}{{}} ORDER BY t.pos"
            booked = (actor, dumps({"batch": batch_key}), f"batch:{batch_key}", self._open_day(tx, now))
            tx.execute(head + "t.fixed - t.fen, t.bal - t.fen + t.fixed" + tail.format("t.rem", ""),
                       (now, kind, *booked))
            if fixed.any():
                tx.execute(head + "-t.fixed, t.bal - t.fen" + tail.format("CAST(NULL AS BIGINT)", " AND t.fixed <> 0"),
                           (now, "fixed_charge", *booked))
            tx.execute(f"DELETE FROM {CHARGES}")
            tx.execute("INSERT INTO ledger_batches (key, at, rows, actor) VALUES (?, ?, ?, ?)",
                       (batch_key, now, n, actor))
            return n, decided is not None

    def remainder_at(self, customer: str, t: int) -> int | None:
        """The account's sub-fen remainder right after rating up to Unix time ``t`` (the end of
        an interval), if a charge's ledger row recorded it; else None."""
        with self._tx(write=False) as tx:
            row = tx.one("SELECT rem_after FROM ledger WHERE customer = ? AND rated_to = ? AND rem_after IS NOT NULL"
                         " ORDER BY id DESC LIMIT 1", (customer, int(t)))
        return None if row is None else int(row[0])

    def charged_between(self, customer: str, since: int, until: int, *, kind: str = "charge") -> int:
        """Fen a customer was charged for [since, until) (kind "charge" counts its fixed charges
        too): charges that recorded the end of the intervals they rated count where that end
        falls (since < end <= until), others where they were booked (since <= at < until)."""
        kinds = (kind, "fixed_charge") if kind == "charge" else (kind, kind)
        with self._tx(write=False) as tx:
            row = tx.one(
                "SELECT COALESCE(SUM(-amount_fen), 0) FROM ledger WHERE customer = ? AND kind IN (?, ?) AND"
                " ((rated_to IS NOT NULL AND rated_to > ? AND rated_to <= ?)"
                " OR (rated_to IS NULL AND at >= ? AND at < ?))",
                (customer, *kinds, int(since), int(until), int(since), int(until)))
        return int(row[0]) if row else 0

    def ledger(self, customer: str, *, limit: int = 100) -> list[LedgerEntry]:
        """An account's money movements, newest first."""
        with self._tx(write=False) as tx:
            rows = tx.all(f"SELECT {_LEDGER_COLS} FROM ledger WHERE customer = ? ORDER BY id DESC LIMIT ?",
                          (customer, int(limit)))
        return [_ledger(r) for r in rows]

    def journal(self, *, day: str | None = None, payment_id: int | None = None, kind: str | None = None,
                limit: int = 1000) -> list[LedgerEntry]:
        """Journal rows in booking order, optionally of one business day, payment or kind."""
        where, params = self._where({"day": None if day is None else _day(day), "payment_id": payment_id,
                                     "kind": kind})
        with self._tx(write=False) as tx:
            rows = tx.all(f"SELECT {_LEDGER_COLS} FROM ledger{where} ORDER BY id LIMIT ?", (*params, int(limit)))
        return [_ledger(r) for r in rows]

    def check_ledger(self) -> list[str]:
        """Prove the journal: every account's balance equals the sum of its rows and its last
        row's balance_after; every meter's money in flight (top-ups sent, not yet confirmed or
        returned) belongs to a recharge the outbox still holds. Returns the problems found
        (empty: all consistent), each naming the account or meter."""
        problems: list[str] = []
        with self._tx(write=False) as tx:
            for customer, cached, summed, last in tx.all(
                "SELECT a.customer, a.balance_fen, COALESCE(s.total, 0),"
                " (SELECT balance_after FROM ledger l WHERE l.customer = a.customer ORDER BY l.id DESC LIMIT 1)"
                " FROM accounts a LEFT JOIN (SELECT customer, SUM(amount_fen) AS total FROM ledger"
                " GROUP BY customer) s ON s.customer = a.customer"
                " WHERE a.balance_fen != COALESCE(s.total, 0) OR a.balance_fen != COALESCE("
                " (SELECT balance_after FROM ledger l WHERE l.customer = a.customer ORDER BY l.id DESC LIMIT 1), 0)"
                " ORDER BY a.customer"
            ):
                problems.append(f"customer {customer}: cached balance {cached} fen, journal sum {summed} fen,"
                                f" last balance_after {last}")
            for meter, sent, settled, pending in tx.all(
                "SELECT l.meter, SUM(CASE WHEN l.kind = 'topup_sent' THEN -l.amount_fen ELSE 0 END),"
                " SUM(CASE WHEN l.kind = 'topup_confirmed' THEN l.meter_fen"
                "          WHEN l.kind = 'topup_returned' THEN l.amount_fen ELSE 0 END),"
                " (SELECT COALESCE(SUM(p.amount_fen), 0) FROM payments p WHERE p.meter = l.meter"
                "  AND p.state = 'sent_to_meter')"
                " FROM ledger l WHERE l.meter IS NOT NULL GROUP BY l.meter ORDER BY l.meter"
            ):
                if int(sent) - int(settled) != int(pending):
                    problems.append(f"meter {meter}: {int(sent)} fen sent, {int(settled)} fen confirmed or returned,"
                                    f" but {int(pending)} fen of payments are still on their way")
        return problems
