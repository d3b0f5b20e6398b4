"""The ledger: every money movement of an account, with the balance after it."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from headend.store.accounts import Accounts
from headend.store.models import SUBFEN, Conflict, InvalidInput, LedgerEntry, NotFound, dumps, loads

_LEDGER_COLS = "id, customer, at, kind, amount_fen, balance_after, idem_key, actor, detail"


def _ledger(row: Sequence[Any]) -> LedgerEntry:
    r = list(row)
    r[8] = loads(r[8])
    return LedgerEntry(*r)


class Ledger(Accounts):
    """Credits and charges, each with its ledger row, exactly once per key."""

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
        """
        if not isinstance(amount_fen, int) or isinstance(amount_fen, bool):
            raise InvalidInput(f"amount must be whole fen (int), got {amount_fen!r}")
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
            now = self.now()
            n = tx.execute(
                "UPDATE accounts SET balance_fen = balance_fen + ?, version = version + 1, updated_at = ?"
                " WHERE customer = ?",
                (amount_fen, now, customer),
            )
            if n != 1:
                raise NotFound(f"no customer {customer}: add it with `headend customer add {customer}`")
            bal = tx.one("SELECT balance_fen FROM accounts WHERE customer = ?", (customer,))
            assert bal is not None
            row = tx.one(
                "INSERT INTO ledger (customer, at, kind, amount_fen, balance_after, idem_key, actor, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (customer, now, kind, amount_fen, bal[0], idem_key, actor, dumps(detail)),
            )
            assert row is not None
            self.log_action(actor, f"account.{kind}", customer, {"amount_fen": amount_fen, "idem_key": idem_key})
            return LedgerEntry(int(row[0]), customer, now, kind, amount_fen, int(bal[0]), idem_key, actor, detail), True

    def charge_accounts(
        self,
        batch_key: str,
        charges: Iterable[Sequence[Any]],
        *,
        actor: str,
        kind: str = "charge",
        ledger: bool = True,
        interval_s: int | None = None,
        read_as: Iterable[Sequence[int]] | None = None,
    ) -> int:
        """Debit many accounts in one transaction, exactly once per batch_key; return accounts charged.

        Each charge is (customer, fen, new_rem, new_ladder_wh[, rated_until]): balance -= fen; rem,
        ladder_wh (and rated_until when given, for every row) are replaced with what the tariff core
        computed from the account's previous values. A batch_key
        already applied returns 0 and changes nothing, so a re-run rating cycle never bills twice.
        With ledger=True each charge that moves money, rem or ladder_wh gets a ledger row (kind,
        -fen, balance_after, and the remainder after it); a charge that changes nothing but
        rated_until (no energy) writes none.  With rated_until and ``interval_s`` (the length of
        the intervals rated) the row also records the end of the last interval it rated, so
        ``remainder_at`` can tell the remainder at that point.  ``read_as``: per charge, the
        account's (balance_fen, rem, ladder_wh, version) as the caller read it (a rating cycle
        has them): the accounts need not be read again when no version has moved since.
        """
        rows = [tuple(r) for r in charges]
        now = self.now()
        if len({r[0] for r in rows}) != len(rows):
            raise InvalidInput(f"charge batch {batch_key}: a customer appears twice; sum its charges first")
        widths = {len(r) for r in rows}
        if not widths <= {4} and not widths <= {5}:
            raise InvalidInput(f"charge batch {batch_key}: rows are (customer, fen, rem, ladder_wh[, rated_until]),"
                               " all of one width")
        with_until = widths == {5}
        for r in rows:
            c, rem, ladder = r[0], r[2], r[3]
            if not (0 <= rem < SUBFEN) or ladder < 0:
                raise InvalidInput(f"customer {c}: remainder must be in [0, {SUBFEN}) and ladder energy >= 0")
        if read_as is not None:
            read_as = list(read_as)
            if len(read_as) != len(rows):
                raise InvalidInput(f"charge batch {batch_key}: read_as needs one (balance_fen, rem, ladder_wh,"
                                   f" version) per charge, got {len(read_as)} for {len(rows)}")
        sets = "balance_fen = balance_fen - ?, rem = ?, ladder_wh = ?, " + ("rated_until = ?, " if with_until else "")
        update = f"UPDATE accounts SET {sets}version = version + 1, updated_at = ? WHERE customer = ?"

        def params(r: tuple) -> tuple:
            return (int(r[1]), int(r[2]), int(r[3]), int(r[4]), now, r[0]) if with_until else \
                (int(r[1]), int(r[2]), int(r[3]), now, r[0])

        with self._tx() as tx:
            if tx.one("SELECT 1 FROM ledger_batches WHERE key = ?", (batch_key,)):
                return 0
            before: list[Any] = []
            n = -1
            if read_as is not None:
                # the caller's reading holds wherever the version has not moved: charge those rows
                # by compare-and-set and take balance_after from it, with no read of the accounts;
                # if any row moved (a payment raced in), undo and take the general path below
                tx.execute("SAVEPOINT charge_read_as")
                n = tx.executemany(update + " AND version = ?", (params(r) + (int(k[3]),)
                                                                for r, k in zip(rows, read_as)))
                if n == len(rows):
                    before = read_as           # (balance, rem, ladder, version): the ledger uses the first three
                else:
                    tx.execute("ROLLBACK TO charge_read_as")
                    n = -1
                tx.execute("RELEASE charge_read_as")
            if n < 0:
                if ledger:
                    # balance, rem and ladder before the charge, read under the write lock this
                    # transaction holds: balance_after follows, and a ledger row is written only
                    # where money, rem or ladder move
                    sql = "SELECT customer, balance_fen, rem, ladder_wh FROM accounts"
                    if len(rows) > 20_000:   # one pass over the table beats a lookup per row
                        old_state = {c: (b, rm, lw) for c, b, rm, lw in tx.all(sql)}
                    else:
                        old_state = {}
                        for lo in range(0, len(rows), 500):
                            chunk = [r[0] for r in rows[lo:lo + 500]]
                            old_state.update((c, (b, rm, lw)) for c, b, rm, lw in tx.all(
                                f"{sql} WHERE customer IN ({', '.join('?' for _ in chunk)})", chunk))
                    before = [old_state.get(r[0]) for r in rows]
                n = tx.executemany(update, (params(r) for r in rows))
            if n != len(rows):
                known = {r[0] for r in tx.all("SELECT customer FROM accounts")} if n < len(rows) else set()
                missing = sorted({r[0] for r in rows} - known)[:5]
                raise NotFound(f"charge batch {batch_key}: unknown customers {missing} (nothing was charged)")
            if ledger:
                batch = dumps({"batch": batch_key})
                step = None if not with_until or interval_s is None else int(interval_s)
                tx.executemany(
                    "INSERT INTO ledger (customer, at, kind, amount_fen, balance_after, idem_key, actor, detail,"
                    " rem_after, rated_to) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?, ?)",
                    ((r[0], now, kind, -int(r[1]), old[0] - int(r[1]), actor, batch, int(r[2]),
                      None if step is None else int(r[4]) + step)
                     for r, old in zip(rows, before)
                     if old is not None and (r[1] or (int(r[2]), int(r[3])) != tuple(old[1:3]))),
                )
            tx.execute("INSERT INTO ledger_batches (key, at, rows, actor) VALUES (?, ?, ?, ?)",
                       (batch_key, now, len(rows), actor))
            return n

    def remainder_at(self, customer: str, t: int) -> int | None:
        """The account's sub-fen remainder right after rating up to Unix time ``t`` (the end of
        an interval), if a charge's ledger row recorded it; else None."""
        with self._tx(write=False) as tx:
            row = tx.one("SELECT rem_after FROM ledger WHERE customer = ? AND rated_to = ? AND rem_after IS NOT NULL"
                         " ORDER BY id DESC LIMIT 1", (customer, int(t)))
        return None if row is None else int(row[0])

    def charged_between(self, customer: str, since: int, until: int, *, kind: str = "charge") -> int:
        """Fen a customer was charged for [since, until): charges that recorded the end of the
        intervals they rated count where that end falls (since < end <= until), others where
        they were booked (since <= at < until)."""
        with self._tx(write=False) as tx:
            row = tx.one(
                "SELECT COALESCE(SUM(-amount_fen), 0) FROM ledger WHERE customer = ? AND kind = ? AND"
                " ((rated_to IS NOT NULL AND rated_to > ? AND rated_to <= ?)"
                " OR (rated_to IS NULL AND at >= ? AND at < ?))",
                (customer, kind, int(since), int(until), int(since), int(until)))
        return int(row[0]) if row else 0

    def ledger(self, customer: str, *, limit: int = 100) -> list[LedgerEntry]:
        """An account's money movements, newest first."""
        with self._tx(write=False) as tx:
            rows = tx.all(f"SELECT {_LEDGER_COLS} FROM ledger WHERE customer = ? ORDER BY id DESC LIMIT ?",
                          (customer, int(limit)))
        return [_ledger(r) for r in rows]
