"""The head-end store: accounts, meters, the command outbox, readings, events, audit, notices.

Rules that make "nothing half-done" true:

* Every public method is one transaction. Callers that need several changes to land together
  wrap them in ``with store.atomic():`` (nested calls join the outer transaction).
* An operator action and its audit row are written in the same transaction (enqueue, meter add,
  limit changes, credits): either both exist or neither.
* A command's status only moves along COMMAND_TRANSITIONS, by compare-and-set on its current
  status: two workers cannot both send it, and a command is always queued, sent, confirmed or
  failed - never lost. `requeue_stale` puts commands a crashed worker left "sent" back in line.
* Money changes go with a ledger row (balance_after) and an idempotency key, so a retried
  payment or a re-run rating cycle never counts twice.

Only portable SQL lives here (see backend.py); SQLite specifics are in sqlite.py.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from headend.store.backend import Backend, Tx
from headend.store.models import (
    SUPPLY_STATES,
    COMMAND_STATUSES,
    COMMAND_TRANSITIONS,
    MODES,
    NOTIFICATION_STATUSES,
    RESTORE_POLICIES,
    SUBFEN,
    Account,
    AuditEntry,
    Command,
    Conflict,
    Event,
    InvalidInput,
    LedgerEntry,
    Meter,
    NotFound,
    Notification,
    Reading,
    StoreError,
    TransitionError,
    check_address,
    check_customer,
    check_di,
    dumps,
    loads,
)

__all__ = ["Store", "METER_FILTER_FIELDS"]

_ACCOUNT_COLS = (
    "customer, name, phone, balance_fen, rem, ladder_wh, alarm1_fen, alarm2_fen, overdraft_fen,"
    " close_ok_fen, protected, restore_policy, tariff, version, created_at, updated_at,"
    " rated_until, notice_level, notice_at, supply, supply_at"
)
_METER_COLS = (
    "address, link, customer, mode, krn, purchase_count, protected, meter_number, balance_fen, relay,"
    " last_seen, created_at, updated_at"
)
_COMMAND_COLS = (
    "id, meter, kind, params, status, attempts, last_error, reply, created_at, updated_at, idem_key, actor, not_before"
)
_NOTICE_COLS = (
    "id, customer, channel, kind, message, status, attempts, last_error, created_at, updated_at, idem_key, detail"
)
_LEDGER_COLS = "id, customer, at, kind, amount_fen, balance_after, idem_key, actor, detail"

# Fields a meter selection (`--where`) may name, and their column types.
METER_FILTER_FIELDS: dict[str, type] = {
    "address": str,
    "link": str,
    "customer": str,
    "mode": str,
    "krn": int,
    "protected": bool,
    "relay": str,
    "purchase_count": int,
}
_FILTER_OPS = ("=", "!=", "like")
_LIMIT_FIELDS = ("alarm1_fen", "alarm2_fen", "overdraft_fen", "close_ok_fen")
_KEEP: Any = object()  # "leave this column as it is" (None means: set it to NULL)


def _account(row: Sequence[Any]) -> Account:
    r = list(row)
    r[10] = bool(r[10])
    return Account(*r)


def _meter(row: Sequence[Any]) -> Meter:
    r = list(row)
    r[6] = bool(r[6])
    return Meter(*r)


def _command(row: Sequence[Any]) -> Command:
    r = list(row)
    r[3] = loads(r[3])
    r[7] = loads(r[7])
    return Command(*r)


def _notice(row: Sequence[Any]) -> Notification:
    r = list(row)
    r[11] = loads(r[11])
    return Notification(*r)


def _ledger(row: Sequence[Any]) -> LedgerEntry:
    r = list(row)
    r[8] = loads(r[8])
    return LedgerEntry(*r)


def _nonneg(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(f"{name} must be a whole number >= 0 (fen), got {value!r}")
    return value


def _account_changes(changes: dict[str, Any], allowed: set[str], of: str) -> dict[str, Any]:
    """Account changes as they are written: allowed fields only, None left out, limits >= 0,
    a known restore policy, protected as 0/1."""
    bad = set(changes) - allowed
    if bad:
        raise InvalidInput(f"cannot change {', '.join(sorted(bad))} of {of}; allowed: {', '.join(sorted(allowed))}")
    out = {k: v for k, v in changes.items() if v is not None}
    for f in _LIMIT_FIELDS:
        if f in out:
            _nonneg(f, out[f])
    if "restore_policy" in out and out["restore_policy"] not in RESTORE_POLICIES:
        raise InvalidInput(f"restore policy must be one of {', '.join(RESTORE_POLICIES)}")
    if "protected" in out:
        out["protected"] = int(bool(out["protected"]))
    return out


class Store:
    """The head-end's persistent state. Open with `headend.store.open_store(path)`."""

    def __init__(self, backend: Backend, clock: Callable[[], float] = time.time) -> None:
        self._db = backend
        self._clock = clock

    # ----------------------------------------------------------------- lifecycle
    def __repr__(self) -> str:
        return f"<Store {self._db.name}:{self._db.location}>"

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def location(self) -> str:
        """Where the data lives (file path for SQLite)."""
        return self._db.location

    def now(self) -> int:
        """The store's clock, integer Unix seconds (injectable for tests)."""
        return int(self._clock())

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def migrate(self) -> int:
        """Apply pending schema migrations (idempotent); return the schema version."""
        return self._db.migrate()

    def schema_version(self) -> int:
        """The schema version of the open database."""
        return self._db.schema_version()

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Group several store calls into one transaction: all land, or none does."""
        with self._tx():
            yield

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[Tx]:
        with self._db.transaction(write) as tx:
            yield tx

    # ----------------------------------------------------------------- audit
    def log_action(self, actor: str, action: str, target: str | None = None, detail: Any = None) -> AuditEntry:
        """Append an audit row (who, when, what, on what). Use inside `atomic()` with the change itself."""
        if not actor:
            raise InvalidInput("every audited action needs an actor (operator name or service)")
        at = self.now()
        with self._tx() as tx:
            row = tx.one(
                "INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?) RETURNING id",
                (at, actor, action, target, dumps(detail)),
            )
        assert row is not None
        return AuditEntry(int(row[0]), at, actor, action, target, detail)

    def log_actions(self, rows: Iterable[tuple[str, str, str | None, Any]]) -> int:
        """Append many audit rows (actor, action, target, detail) in one transaction; return how many."""
        at = self.now()
        data = []
        for actor, action, target, detail in rows:
            if not actor:
                raise InvalidInput("every audited action needs an actor (operator name or service)")
            data.append((at, actor, action, target, dumps(detail)))
        with self._tx() as tx:
            tx.executemany("INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)", data)
        return len(data)

    def audit_entries(
        self, *, actor: str | None = None, target: str | None = None, action: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """Newest audit rows first, optionally filtered by actor, target or action."""
        where, params = self._where({"actor": actor, "target": target, "action": action})
        with self._tx(write=False) as tx:
            rows = tx.all(
                f"SELECT id, at, actor, action, target, detail FROM audit{where} ORDER BY id DESC LIMIT ?",
                (*params, int(limit)),
            )
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], loads(r[5])) for r in rows]

    @staticmethod
    def _where(filters: dict[str, Any]) -> tuple[str, list[Any]]:
        parts, params = [], []
        for col, val in filters.items():
            if val is not None:
                parts.append(f"{col} = ?")
                params.append(val)
        return (" WHERE " + " AND ".join(parts) if parts else ""), params

    # ----------------------------------------------------------------- accounts
    def add_account(
        self,
        customer: str,
        *,
        actor: str,
        name: str = "",
        phone: str = "",
        alarm1_fen: int = 0,
        alarm2_fen: int = 0,
        overdraft_fen: int = 0,
        close_ok_fen: int = 0,
        protected: bool = False,
        restore_policy: str = "close_permitted",
        tariff: str | None = None,
    ) -> Account:
        """Create a customer account with zero balance; Conflict if the number is taken."""
        customer = check_customer(customer)
        for f, v in zip(_LIMIT_FIELDS, (alarm1_fen, alarm2_fen, overdraft_fen, close_ok_fen)):
            _nonneg(f, v)
        if restore_policy not in RESTORE_POLICIES:
            raise InvalidInput(f"restore policy must be one of {', '.join(RESTORE_POLICIES)}, got {restore_policy!r}")
        now = self.now()
        with self._tx() as tx:
            if tx.one("SELECT 1 FROM accounts WHERE customer = ?", (customer,)):
                raise Conflict(f"customer {customer} already exists")
            tx.execute(
                "INSERT INTO accounts (customer, name, phone, balance_fen, rem, ladder_wh, alarm1_fen, alarm2_fen,"
                " overdraft_fen, close_ok_fen, protected, restore_policy, tariff, version, created_at, updated_at)"
                " VALUES (?, ?, ?, 0, 0, 0, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
                (customer, name, phone, alarm1_fen, alarm2_fen, overdraft_fen, close_ok_fen, int(bool(protected)),
                 restore_policy, tariff, now, now),
            )
            self.log_action(actor, "customer.add", customer, {"name": name, "protected": bool(protected),
                                                              "restore_policy": restore_policy})
            return self.get_account(customer)

    def get_account(self, customer: str) -> Account:
        """The account of a customer number; NotFound if there is none."""
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE customer = ?", (customer,))
        if row is None:
            raise NotFound(f"no customer {customer}: add it with `headend customer add {customer}`")
        return _account(row)

    def list_accounts(self, *, limit: int | None = None) -> list[Account]:
        """Every account, ordered by customer number."""
        sql = f"SELECT {_ACCOUNT_COLS} FROM accounts ORDER BY customer"
        params: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (int(limit),)
        with self._tx(write=False) as tx:
            return [_account(r) for r in tx.all(sql, params)]

    def update_account(self, customer: str, *, actor: str, **changes: Any) -> Account:
        """Change an account's name, phone, limits, protected flag, restore policy or tariff (audited).

        Money fields (balance, rem, ladder) are not changed here: use credit/charge_accounts.
        """
        allowed = {"name", "phone", "protected", "restore_policy", "tariff", *_LIMIT_FIELDS}
        changes = _account_changes(changes, allowed, "an account")
        with self._tx() as tx:
            before = self.get_account(customer)
            if changes:
                sets = ", ".join(f"{k} = ?" for k in changes)
                tx.execute(f"UPDATE accounts SET {sets}, updated_at = ? WHERE customer = ?",
                           (*changes.values(), self.now(), customer))
                self.log_action(actor, "customer.update", customer,
                                {k: [getattr(before, k), v] for k, v in changes.items()})
            return self.get_account(customer)

    def update_accounts(self, customers: Iterable[str], *, actor: str, **changes: Any) -> int:
        """Give many accounts the same limits / flags / tariff in one transaction (one audit row
        each); return how many changed. Unknown customers are an error and nothing changes."""
        allowed = {"protected", "restore_policy", "tariff", *_LIMIT_FIELDS}
        changes = _account_changes(changes, allowed, "many accounts at once")
        custs = list(customers)
        if not changes or not custs:
            return 0
        sets = ", ".join(f"{k} = ?" for k in changes)
        vals = tuple(changes.values())
        now = self.now()
        with self._tx() as tx:
            n = tx.executemany(f"UPDATE accounts SET {sets}, updated_at = ? WHERE customer = ?",
                               ((*vals, now, c) for c in custs))
            if n != len(custs):
                raise NotFound(f"{len(custs) - n} of {len(custs)} customers do not exist (nothing was changed)")
            self.log_actions((actor, "customer.update", c, changes) for c in custs)
        return n

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
        ``remainder_at`` can tell the remainder at that point.
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
        with self._tx() as tx:
            if tx.one("SELECT 1 FROM ledger_batches WHERE key = ?", (batch_key,)):
                return 0
            before: list[tuple[int, int, int] | None] = []
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
            if with_until:
                n = tx.executemany(
                    "UPDATE accounts SET balance_fen = balance_fen - ?, rem = ?, ladder_wh = ?, rated_until = ?,"
                    " version = version + 1, updated_at = ? WHERE customer = ?",
                    ((int(r[1]), int(r[2]), int(r[3]), int(r[4]), now, r[0]) for r in rows),
                )
            else:
                n = tx.executemany(
                    "UPDATE accounts SET balance_fen = balance_fen - ?, rem = ?, ladder_wh = ?, version = version + 1,"
                    " updated_at = ? WHERE customer = ?",
                    ((int(r[1]), int(r[2]), int(r[3]), now, r[0]) for r in rows),
                )
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
                     if old is not None and (r[1] or (int(r[2]), int(r[3])) != old[1:])),
                )
            tx.execute("INSERT INTO ledger_batches (key, at, rows, actor) VALUES (?, ?, ?, ?)",
                       (batch_key, now, len(rows), actor))
            return n

    def set_account_state(
        self,
        customer: str,
        *,
        expected_version: int | None = None,
        rated_until: Any = _KEEP,
        notice_level: int | None = None,
        notice_at: Any = _KEEP,
        supply: str | None = None,
        supply_at: Any = _KEEP,
    ) -> Account:
        """Record cost control's state for an account (notice level, supply decision, rating position).

        Arguments left out are kept; notice_at / supply_at / rated_until accept None to clear.
        With expected_version the change applies only if no money moved since the caller read the
        account (compare-and-set), else Conflict: re-read and decide again.
        """
        sets: list[str] = []
        params: list[Any] = []
        if notice_level is not None:
            if notice_level not in (0, 1, 2, 3):
                raise InvalidInput(f"notice level is 0..3 (none, alarm 1, alarm 2, cut notice), got {notice_level!r}")
            sets.append("notice_level = ?")
            params.append(notice_level)
        if supply is not None:
            if supply not in SUPPLY_STATES:
                raise InvalidInput(f"supply is one of {', '.join(SUPPLY_STATES)}, got {supply!r}")
            sets.append("supply = ?")
            params.append(supply)
        for col, val in (("rated_until", rated_until), ("notice_at", notice_at), ("supply_at", supply_at)):
            if val is not _KEEP:
                sets.append(f"{col} = ?")
                params.append(None if val is None else int(val))
        if not sets:
            return self.get_account(customer)
        sql = f"UPDATE accounts SET {', '.join(sets)}, updated_at = ? WHERE customer = ?"
        params += [self.now(), customer]
        if expected_version is not None:
            sql += " AND version = ?"
            params.append(int(expected_version))
        with self._tx() as tx:
            if tx.execute(sql, params) != 1:
                acct = self.get_account(customer)  # NotFound if missing
                raise Conflict(f"customer {customer}: account changed (version {acct.version}, expected"
                               f" {expected_version}); read it again before deciding")
            return self.get_account(customer)

    # Accounts are picked with IN (subquery) rather than a correlated EXISTS: the engine then
    # builds the set of remote customers once instead of probing meters per account (with the
    # meters_mode index the probe scanned every remote meter: quadratic).
    _REMOTE = "customer IN (SELECT customer FROM meters WHERE mode = 'remote')"

    def rating_accounts(self) -> list[tuple[str, int, int, int, int | None, int, str | None]]:
        """Accounts with a remote-cost-control meter, by customer number, as rows for a rating batch:
        (customer, balance_fen, rem, ladder_wh, rated_until, version, tariff)."""
        with self._tx(write=False) as tx:
            return tx.all(  # type: ignore[return-value]
                "SELECT customer, balance_fen, rem, ladder_wh, rated_until, version, tariff FROM accounts"
                f" WHERE {self._REMOTE} ORDER BY customer"
            )

    def cost_control_accounts(self) -> list[tuple[Any, ...]]:
        """Accounts with a remote-cost-control meter, by customer number, as rows for the decision step:
        (customer, balance_fen, alarm1_fen, alarm2_fen, overdraft_fen, close_ok_fen, protected (0/1),
        restore_policy, notice_level, notice_at, supply, supply_at, version)."""
        with self._tx(write=False) as tx:
            return tx.all(
                "SELECT customer, balance_fen, alarm1_fen, alarm2_fen, overdraft_fen, close_ok_fen, protected,"
                " restore_policy, notice_level, notice_at, supply, supply_at, version FROM accounts"
                f" WHERE {self._REMOTE} ORDER BY customer"
            )

    def cost_control_meters(self) -> list[tuple[Any, ...]]:
        """Every remote-cost-control meter with its account, by customer then address: the whole
        input of a cost-control cycle in one query.

        Rows: (customer, address, balance_fen, rem, ladder_wh, rated_until, version, tariff,
        alarm1_fen, alarm2_fen, overdraft_fen, close_ok_fen, protected (0/1: the account's or
        the meter's flag), restore_policy, notice_level, notice_at, supply, supply_at, the
        address as a number).
        """
        with self._tx(write=False) as tx:
            return tx.all(
                "SELECT a.customer, m.address, a.balance_fen, a.rem, a.ladder_wh, a.rated_until, a.version, a.tariff,"
                " a.alarm1_fen, a.alarm2_fen, a.overdraft_fen, a.close_ok_fen,"
                " CASE WHEN a.protected = 1 OR m.protected = 1 THEN 1 ELSE 0 END, a.restore_policy,"
                " a.notice_level, a.notice_at, a.supply, a.supply_at, CAST(m.address AS BIGINT)"
                " FROM meters m JOIN accounts a ON a.customer = m.customer WHERE m.mode = 'remote'"
                " ORDER BY a.customer, m.address"
            )

    def apply_decisions(
        self,
        states: Iterable[Sequence[Any]],
        *,
        notices: Iterable[Sequence[Any]] = (),
        commands: Iterable[Sequence[Any]] = (),
        audit: Iterable[tuple[str, str, str | None, Any]] = (),
        actor: str,
    ) -> set[str]:
        """Record a cost-control cycle's decisions in one transaction; return the customers skipped.

        ``states``: (customer, expected_version, notice_level, notice_at, supply, supply_at); a row
        applies only if the account's version is still ``expected_version`` (no money moved since
        the cycle read it); otherwise the customer is returned and its notices, commands and audit
        rows (matched by customer / audit target) are left out too, to be decided next cycle.
        ``notices``: (customer, kind, message, idem_key, detail), queued once per idem_key.
        ``commands``: (customer, meter, kind, params, idem_key), queued once per idem_key, each
        with its ``command.KIND`` audit row as ``enqueue`` writes it.
        ``audit``: (actor, action, target, detail) rows.
        """
        now = self.now()
        rows = []
        for customer, version, level, notice_at, supply, supply_at in states:
            if level not in (0, 1, 2, 3) or supply not in SUPPLY_STATES:
                raise InvalidInput(f"customer {customer}: notice level is 0..3 and supply one of"
                                   f" {', '.join(SUPPLY_STATES)}, got {level!r} / {supply!r}")
            rows.append((int(level), None if notice_at is None else int(notice_at), supply,
                         None if supply_at is None else int(supply_at), now, customer, int(version)))
        with self._tx() as tx:
            # the write lock is held from here: versions read now cannot move before the update
            if len(rows) > 5000:
                current = dict(tx.all("SELECT customer, version FROM accounts"))
            else:
                current = {}
                wanted = [r[5] for r in rows]
                for lo in range(0, len(wanted), 500):
                    chunk = wanted[lo:lo + 500]
                    current.update(tx.all(f"SELECT customer, version FROM accounts WHERE customer IN"
                                          f" ({', '.join('?' for _ in chunk)})", chunk))
            stale = {r[5] for r in rows if current.get(r[5]) != r[6]}
            missing = [r[5] for r in rows if r[5] not in current]
            if missing:
                raise NotFound(f"{len(missing)} customer(s) in the decisions do not exist, e.g. {missing[0]}"
                               " (nothing was recorded)")
            tx.executemany(
                "UPDATE accounts SET notice_level = ?, notice_at = ?, supply = ?, supply_at = ?, updated_at = ?"
                " WHERE customer = ?",
                (r[:6] for r in rows if r[5] not in stale),
            )
            tx.executemany(
                "INSERT INTO notifications (customer, channel, kind, message, status, attempts, created_at,"
                " updated_at, idem_key, detail) VALUES (?, 'sms', ?, ?, 'queued', 0, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                ((c, kind, msg, now, now, key, dumps(detail)) for c, kind, msg, key, detail in notices
                 if c not in stale),
            )
            cmds = [(meter, kind, dumps(params), key) for c, meter, kind, params, key in commands if c not in stale]
            known = self._existing(tx, "commands", "idem_key", [c[3] for c in cmds])
            cmds = [c for c in cmds if c[3] not in known]      # queued by an earlier run: nothing to do
            tx.executemany(
                "INSERT INTO commands (meter, kind, params, status, attempts, created_at, updated_at, idem_key,"
                " actor, not_before) VALUES (?, ?, ?, 'queued', 0, ?, ?, ?, ?, 0)",
                ((m, k, p, now, now, key, actor) for m, k, p, key in cmds),
            )
            ids: dict[str, int] = {}
            keys = [c[3] for c in cmds]
            for lo in range(0, len(keys), 500):
                chunk = keys[lo:lo + 500]
                ids.update((k, i) for i, k in tx.all(
                    f"SELECT id, idem_key FROM commands WHERE idem_key IN ({', '.join('?' for _ in chunk)})", chunk))
            self.log_actions([(actor, f"command.{k}", m, {"command": ids[key], "params": loads(p)})
                              for m, k, p, key in cmds]
                             + [a for a in audit if a[2] not in stale])
        return stale

    def set_account_states(self, rows: Iterable[Sequence[Any]]) -> int:
        """Record cost control's decisions for many accounts in one transaction; return rows changed.

        Each row is (customer, notice_level, notice_at, supply, supply_at) and replaces all four
        fields (None clears a time). Unknown customers are an error and nothing is changed.
        """
        data = []
        now = self.now()
        for r in rows:
            customer, level, notice_at, supply, supply_at = r
            if level not in (0, 1, 2, 3) or supply not in SUPPLY_STATES:
                raise InvalidInput(f"customer {customer}: notice level is 0..3 and supply one of"
                                   f" {', '.join(SUPPLY_STATES)}, got {level!r} / {supply!r}")
            data.append((int(level), None if notice_at is None else int(notice_at), supply,
                         None if supply_at is None else int(supply_at), now, customer))
        with self._tx() as tx:
            n = tx.executemany(
                "UPDATE accounts SET notice_level = ?, notice_at = ?, supply = ?, supply_at = ?, updated_at = ?"
                " WHERE customer = ?",
                data,
            )
            if n != len(data):
                raise NotFound(f"{len(data) - n} of {len(data)} customers in the batch do not exist (nothing changed)")
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

    # ----------------------------------------------------------------- meters
    def add_meter(
        self,
        address: str,
        *,
        link: str,
        customer: str,
        actor: str,
        mode: str = "local",
        krn: int = 0,
        protected: bool = False,
        meter_number: str | None = None,
        purchase_count: int = 0,
    ) -> Meter:
        """Register a meter (and its customer's account if new); Conflict if the address is taken."""
        return self.add_meters([{"address": address, "link": link, "customer": customer, "mode": mode, "krn": krn,
                                 "protected": protected, "meter_number": meter_number,
                                 "purchase_count": purchase_count}], actor=actor, _single=True)[0]

    @staticmethod
    def _meter_row(address: str, link: str, customer: str, mode: str = "local", krn: int = 0,
                   protected: bool = False, meter_number: str | None = None, purchase_count: int = 0
                   ) -> tuple[str, str, str, str, int, int, int, str]:
        address = check_address(address)
        customer = check_customer(customer)
        if mode not in MODES:
            raise InvalidInput(f"mode must be 'local' or 'remote' (who holds the balance), got {mode!r}")
        if not isinstance(krn, int) or not 0 <= krn <= 255:
            raise InvalidInput(f"key revision (KRN) must be 0..255, got {krn!r}")
        if not link or "://" not in link:
            raise InvalidInput(
                f"bad link {link!r}: give a URL such as tcp://10.0.0.5:8899 or serial:///dev/ttyUSB0?baud=2400"
            )
        number = check_address(meter_number) if meter_number else address
        return (address, link, customer, mode, krn, _nonneg("purchase count", purchase_count), int(bool(protected)),
                number)

    def add_meters(self, rows: Iterable[Mapping[str, Any]], *, actor: str, _single: bool = False) -> list[Meter]:
        """Register many meters in one transaction, all or none (fleet import).

        Each row holds add_meter's arguments: address, link, customer, and optionally mode, krn,
        protected, meter_number, purchase_count. An error names the row (counting from 1).
        Customers not known yet get an account, as with add_meter; every meter and new account
        has its audit row.  Written with bulk statements: a million meters take seconds.
        """
        allowed = {"address", "link", "customer", "mode", "krn", "protected", "meter_number", "purchase_count"}

        def where(i: int) -> str:
            return "" if _single else f"meter row {i}: "

        data = []
        seen: dict[str, int] = {}
        for i, row in enumerate(rows, 1):
            extra = set(row) - allowed
            missing = {"address", "link", "customer"} - set(row)
            if extra or missing:
                raise InvalidInput(f"meter row {i}: " + (f"unknown fields {sorted(extra)}" if extra else
                                                         f"missing {sorted(missing)}"))
            try:
                r = self._meter_row(**row)
            except StoreError as exc:
                raise type(exc)(f"{where(i)}{exc}") from None
            if r[0] in seen:
                raise Conflict(f"meter row {i}: meter {r[0]} is also in row {seen[r[0]]}")
            seen[r[0]] = i
            data.append(r)
        if not actor:
            raise InvalidInput("every audited action needs an actor (operator name or service)")
        now = self.now()
        with self._tx() as tx:
            taken = self._existing(tx, "meters", "address", [r[0] for r in data])
            for i, r in enumerate(data, 1):
                if r[0] in taken:
                    raise Conflict(f"{where(i)}meter {r[0]} is already registered (see `headend meter show {r[0]}`)")
            known = self._existing(tx, "accounts", "customer", list({r[2]: None for r in data}))
            new_customers = [c for c in dict.fromkeys(r[2] for r in data) if c not in known]
            tx.executemany(
                "INSERT INTO accounts (customer, name, phone, balance_fen, rem, ladder_wh, alarm1_fen, alarm2_fen,"
                " overdraft_fen, close_ok_fen, protected, restore_policy, tariff, version, created_at, updated_at)"
                " VALUES (?, '', '', 0, 0, 0, 0, 0, 0, 0, 0, 'close_permitted', NULL, 0, ?, ?)",
                ((c, now, now) for c in new_customers),
            )
            self.log_actions((actor, "customer.add", c, {"name": "", "protected": False,
                                                         "restore_policy": "close_permitted"})
                             for c in new_customers)
            tx.executemany(
                f"INSERT INTO meters ({_METER_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, ?, ?)",
                ((*r, now, now) for r in data),
            )
            self.log_actions((actor, "meter.add", r[0], {"link": r[1], "customer": r[2], "mode": r[3], "krn": r[4],
                                                         "protected": bool(r[6])}) for r in data)
        return [Meter(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], None, None, None, now, now) for r in data]

    @staticmethod
    def _existing(tx: Tx, table: str, column: str, values: list[str]) -> set[str]:
        out: set[str] = set()
        for lo in range(0, len(values), 500):  # stay under every engine's parameter limit
            chunk = values[lo:lo + 500]
            out.update(r[0] for r in tx.all(f"SELECT {column} FROM {table} WHERE {column} IN"
                                            f" ({', '.join('?' for _ in chunk)})", chunk))
        return out

    def get_meter(self, address: str) -> Meter:
        """The meter with this address; NotFound (with what to do) if not registered."""
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {_METER_COLS} FROM meters WHERE address = ?", (address,))
        if row is None:
            raise NotFound(f"meter {address} is not registered: add it with `headend meter add {address} ...`")
        return _meter(row)

    def find_meters(self, filters: Iterable[tuple[str, str, Any]] = (), *, limit: int | None = None) -> list[Meter]:
        """Meters matching every (field, op, value) filter, by address; op is '=', '!=' or 'like'.

        Fields are METER_FILTER_FIELDS; 'like' takes SQL LIKE patterns (% and _).
        """
        parts, params = [], []
        for fld, op, val in filters:
            if fld not in METER_FILTER_FIELDS:
                raise InvalidInput(f"cannot select meters by {fld!r}; use one of {', '.join(METER_FILTER_FIELDS)}")
            if op not in _FILTER_OPS:
                raise InvalidInput(f"unknown comparison {op!r}; use = or !=")
            if isinstance(val, bool):
                val = int(val)
            parts.append(f"{fld} {op.upper()} ?")
            params.append(val)
        sql = f"SELECT {_METER_COLS} FROM meters"
        if parts:
            sql += " WHERE " + " AND ".join(parts)
        sql += " ORDER BY address"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._tx(write=False) as tx:
            return [_meter(r) for r in tx.all(sql, params)]

    def meters_of_customer(self, customer: str) -> list[Meter]:
        """Every meter registered to a customer."""
        return self.find_meters([("customer", "=", customer)])

    def update_meter(self, address: str, *, actor: str, **changes: Any) -> Meter:
        """Change a meter's link, customer, mode, KRN, protected flag or meter number (audited)."""
        allowed = {"link", "customer", "mode", "krn", "protected", "meter_number"}
        bad = set(changes) - allowed
        if bad:
            raise InvalidInput(f"cannot change {', '.join(sorted(bad))} of a meter; allowed: {', '.join(sorted(allowed))}")
        changes = {k: v for k, v in changes.items() if v is not None}
        if "mode" in changes and changes["mode"] not in MODES:
            raise InvalidInput(f"mode must be 'local' or 'remote', got {changes['mode']!r}")
        if "krn" in changes and not (isinstance(changes["krn"], int) and 0 <= changes["krn"] <= 255):
            raise InvalidInput(f"key revision (KRN) must be 0..255, got {changes['krn']!r}")
        if "customer" in changes:
            changes["customer"] = check_customer(changes["customer"])
        if "meter_number" in changes:
            changes["meter_number"] = check_address(changes["meter_number"])
        if "protected" in changes:
            changes["protected"] = int(bool(changes["protected"]))
        with self._tx() as tx:
            before = self.get_meter(address)
            if "customer" in changes and not tx.one("SELECT 1 FROM accounts WHERE customer = ?", (changes["customer"],)):
                self.add_account(changes["customer"], actor=actor)
            if changes:
                sets = ", ".join(f"{k} = ?" for k in changes)
                tx.execute(f"UPDATE meters SET {sets}, updated_at = ? WHERE address = ?",
                           (*changes.values(), self.now(), address))
                self.log_action(actor, "meter.update", address,
                                {k: [getattr(before, k), v] for k, v in changes.items()})
            return self.get_meter(address)

    def set_purchase_count(self, address: str, new: int, *, expected: int | None = None) -> Meter:
        """Record the purchase count the meter confirmed; with expected, only if it still holds (CAS)."""
        _nonneg("purchase count", new)
        with self._tx() as tx:
            if expected is None:
                n = tx.execute("UPDATE meters SET purchase_count = ?, updated_at = ? WHERE address = ?",
                               (new, self.now(), address))
            else:
                n = tx.execute(
                    "UPDATE meters SET purchase_count = ?, updated_at = ? WHERE address = ? AND purchase_count = ?",
                    (new, self.now(), address, expected),
                )
            if n != 1:
                m = self.get_meter(address)  # raises NotFound
                raise Conflict(f"meter {address}: purchase count is {m.purchase_count}, expected {expected}")
            return self.get_meter(address)

    def record_meter_state(
        self,
        address: str,
        *,
        balance_fen: int | None = None,
        relay: str | None = None,
        purchase_count: int | None = None,
        seen_at: int | None = None,
    ) -> None:
        """Remember what a meter last reported (balance, relay state, purchase count, when seen)."""
        sets: list[str] = ["last_seen = ?"]
        params: list[Any] = [seen_at if seen_at is not None else self.now()]
        for col, val in (("balance_fen", balance_fen), ("relay", relay), ("purchase_count", purchase_count)):
            if val is not None:
                sets.append(f"{col} = ?")
                params.append(val)
        with self._tx() as tx:
            if tx.execute(f"UPDATE meters SET {', '.join(sets)} WHERE address = ?", (*params, address)) != 1:
                raise NotFound(f"meter {address} is not registered")

    # ----------------------------------------------------------------- commands (outbox)
    def enqueue(
        self,
        meter: str,
        kind: str,
        params: Any = None,
        *,
        actor: str,
        idem_key: str | None = None,
        not_before: int = 0,
    ) -> Command:
        """Put a command in the outbox (status queued) with its audit row, atomically.

        With idem_key, a second enqueue with the same key returns the first command unchanged
        (whatever its status) and writes nothing: a retried request cannot queue twice.
        params must be JSON-serialisable.
        """
        if not kind:
            raise InvalidInput("a command needs a kind (read, recharge, trip, ...)")
        try:
            params_json = dumps(params)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"{kind} parameters must be JSON data (numbers, text, lists, dicts): {exc}") from None
        params = loads(params_json)  # hand back exactly what a later read returns (tuples become lists)
        with self._tx() as tx:
            if idem_key is not None:
                row = tx.one(f"SELECT {_COMMAND_COLS} FROM commands WHERE idem_key = ?", (idem_key,))
                if row is not None:
                    cmd = _command(row)
                    if cmd.meter != meter or cmd.kind != kind:
                        raise Conflict(f"idempotency key {idem_key!r} belongs to command {cmd.id} "
                                       f"({cmd.kind} on {cmd.meter})")
                    return cmd
            if not tx.one("SELECT 1 FROM meters WHERE address = ?", (meter,)):
                raise NotFound(f"meter {meter} is not registered: add it with `headend meter add {meter} ...`")
            now = self.now()
            row = tx.one(
                "INSERT INTO commands (meter, kind, params, status, attempts, created_at, updated_at, idem_key,"
                " actor, not_before) VALUES (?, ?, ?, 'queued', 0, ?, ?, ?, ?, ?) RETURNING id",
                (meter, kind, params_json, now, now, idem_key, actor, int(not_before)),
            )
            assert row is not None
            self.log_action(actor, f"command.{kind}", meter, {"command": row[0], "params": params})
            return Command(int(row[0]), meter, kind, params, "queued", 0, None, None, now, now, idem_key, actor,
                           int(not_before))

    def enqueue_many(
        self, meters: Iterable[str], kind: str, params: Any = None, *, actor: str, idem_prefix: str | None = None
    ) -> list[Command]:
        """Queue the same command for many meters in one transaction (all or none), each audited.

        With idem_prefix, each command's key is f"{idem_prefix}:{address}".
        """
        with self._tx():
            return [
                self.enqueue(m, kind, params, actor=actor,
                             idem_key=None if idem_prefix is None else f"{idem_prefix}:{m}")
                for m in meters
            ]

    def get_command(self, command_id: int) -> Command:
        """One outbox entry by id; NotFound if there is none."""
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {_COMMAND_COLS} FROM commands WHERE id = ?", (int(command_id),))
        if row is None:
            raise NotFound(f"no command {command_id} in the outbox")
        return _command(row)

    def get_commands(self, command_ids: Iterable[int]) -> list[Command]:
        """Several outbox entries by id, in id order (ids that do not exist are left out)."""
        ids = sorted({int(i) for i in command_ids})
        out: list[Command] = []
        with self._tx(write=False) as tx:
            for lo in range(0, len(ids), 500):  # stay under every engine's parameter limit
                chunk = ids[lo:lo + 500]
                marks = ", ".join("?" for _ in chunk)
                out += [_command(r) for r in tx.all(f"SELECT {_COMMAND_COLS} FROM commands WHERE id IN ({marks})"
                                                    " ORDER BY id", chunk)]
        return out

    def list_commands(
        self,
        *,
        status: str | None = None,
        meter: str | None = None,
        kind: str | None = None,
        limit: int = 100,
    ) -> list[Command]:
        """Outbox entries, newest first, optionally filtered."""
        if status is not None and status not in COMMAND_STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(COMMAND_STATUSES)}, got {status!r}")
        where, params = self._where({"status": status, "meter": meter, "kind": kind})
        with self._tx(write=False) as tx:
            rows = tx.all(f"SELECT {_COMMAND_COLS} FROM commands{where} ORDER BY id DESC LIMIT ?",
                          (*params, int(limit)))
        return [_command(r) for r in rows]

    def count_commands(self) -> dict[str, int]:
        """Number of outbox entries per status (every status present, 0 if none)."""
        with self._tx(write=False) as tx:
            rows = tx.all("SELECT status, COUNT(*) FROM commands GROUP BY status")
        out: dict[str, int] = dict.fromkeys(COMMAND_STATUSES, 0)
        out.update({s: int(n) for s, n in rows})
        return out

    def transition(
        self,
        command_id: int,
        to: str,
        *,
        expected: str | Sequence[str],
        reply: Any = None,
        error: str | None = None,
        not_before: int | None = None,
    ) -> Command:
        """Move a command to status `to` only if its status is still `expected` (compare-and-set).

        Moving to "sent" counts an attempt. reply / error / not_before are stored when given.
        Raises TransitionError if the move is not allowed or the status changed meanwhile.
        """
        exp = (expected,) if isinstance(expected, str) else tuple(expected)
        for e in exp:
            if to not in COMMAND_TRANSITIONS.get(e, ()):
                raise TransitionError(f"a command cannot go from {e} to {to}")
        sets = ["status = ?", "updated_at = ?"]
        params: list[Any] = [to, self.now()]
        if to == "sent":
            sets.append("attempts = attempts + 1")
        if reply is not None:
            sets.append("reply = ?")
            params.append(dumps(reply))
        if error is not None:
            sets.append("last_error = ?")
            params.append(error)
        if not_before is not None:
            sets.append("not_before = ?")
            params.append(int(not_before))
        marks = ", ".join("?" for _ in exp)
        with self._tx() as tx:
            n = tx.execute(f"UPDATE commands SET {', '.join(sets)} WHERE id = ? AND status IN ({marks})",
                           (*params, int(command_id), *exp))
            cmd = self.get_command(command_id)  # NotFound if it never existed
            if n != 1:
                raise TransitionError(
                    f"command {command_id} is {cmd.status}, not {' or '.join(exp)}: someone else moved it first"
                )
            return cmd

    def mark_sent(self, command_id: int) -> Command:
        """queued -> sent, or sent -> sent for a resend; counts an attempt."""
        return self.transition(command_id, "sent", expected=("queued", "sent"))

    def confirm(self, command_id: int, reply: Any = None) -> Command:
        """sent -> confirmed, storing the meter's reply."""
        return self.transition(command_id, "confirmed", expected="sent", reply=reply)

    def fail(self, command_id: int, error: str, reply: Any = None) -> Command:
        """queued/sent -> failed, with the reason (and the meter's refusal, if any)."""
        return self.transition(command_id, "failed", expected=("queued", "sent"), error=error, reply=reply)

    def retry_later(self, command_id: int, error: str, not_before: int) -> Command:
        """sent -> queued again, not to be sent before not_before (Unix s); keeps attempts."""
        return self.transition(command_id, "queued", expected="sent", error=error, not_before=not_before)

    def claim_next(self, *, limit: int = 1, link: str | None = None, now: int | None = None) -> list[Command]:
        """Atomically take up to `limit` due queued commands and mark them sent (oldest first).

        At most one command per meter is in flight: a meter with a command "sent" is skipped, and
        only each meter's oldest queued command is eligible, so a meter's commands run in order.
        Restrict to meters on one link with `link`.
        """
        now = self.now() if now is None else now
        sql = (
            "SELECT c.id FROM commands c JOIN meters m ON m.address = c.meter"
            " WHERE c.status = 'queued' AND c.not_before <= ?"
            " AND c.id = (SELECT MIN(q.id) FROM commands q WHERE q.meter = c.meter AND q.status = 'queued')"
            " AND NOT EXISTS (SELECT 1 FROM commands s WHERE s.meter = c.meter AND s.status = 'sent')"
        )
        params: list[Any] = [now]
        if link is not None:
            sql += " AND m.link = ?"
            params.append(link)
        sql += " ORDER BY c.id LIMIT ?"
        params.append(int(limit))
        with self._tx() as tx:
            ids = [r[0] for r in tx.all(sql, params)]
            out = []
            for cid in ids:
                if tx.execute("UPDATE commands SET status = 'sent', attempts = attempts + 1, updated_at = ?"
                              " WHERE id = ? AND status = 'queued'", (self.now(), cid)) == 1:
                    out.append(self.get_command(cid))
            return out

    def requeue_stale(self, older_than_s: int, *, now: int | None = None) -> int:
        """Put commands left "sent" for longer than older_than_s (a crashed worker) back to queued."""
        now = self.now() if now is None else now
        with self._tx() as tx:
            return tx.execute(
                "UPDATE commands SET status = 'queued', updated_at = ?,"
                " last_error = 'requeued: no outcome recorded by the worker that sent it' "
                " WHERE status = 'sent' AND updated_at <= ?",
                (now, now - int(older_than_s)),
            )

    def wait_final(self, command_id: int, timeout: float, poll: float = 0.05) -> Command:
        """Poll until a command is confirmed or failed, or timeout seconds pass; return its last state."""
        deadline = time.monotonic() + timeout
        while True:
            cmd = self.get_command(command_id)
            if cmd.status in ("confirmed", "failed") or time.monotonic() >= deadline:
                return cmd
            time.sleep(poll)

    # ----------------------------------------------------------------- readings
    def add_readings(self, readings: Iterable[Reading | Sequence[Any]]) -> int:
        """Store many readings in one transaction; return how many were new.

        Each item is a Reading or a tuple (meter, di, value, read_at[, text]). A reading already
        stored for the same (meter, di, read_at) is kept as it was: re-reading stores once.
        """
        now = self.now()
        dis: dict[str, str] = {}  # the few DIs of a batch, checked and normalised once each

        def rows() -> Iterator[tuple[Any, ...]]:
            for r in readings:
                if isinstance(r, Reading):
                    row = (r.meter, r.di, r.read_at, r.value, r.text, now)
                else:
                    try:
                        row = (r[0], r[1], r[3], r[2], r[4] if len(r) > 4 else None, now)
                    except (IndexError, TypeError):
                        raise InvalidInput(f"a reading is (meter, di, value, read_at[, text]), got {r!r}") from None
                if type(row[2]) is not int or not (row[3] is None or type(row[3]) is int):
                    # money and energy are integers: a float or text here is a decoding bug upstream
                    raise InvalidInput(f"reading {r!r}: read_at must be int seconds and value an int or None")
                di = dis.get(row[1])
                if di is None:
                    di = dis[row[1]] = check_di(row[1])
                if di is not row[1]:
                    row = (row[0], di, *row[2:])
                yield row

        with self._tx() as tx:
            return tx.executemany(
                "INSERT INTO readings (meter, di, read_at, value, text, stored_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                rows(),
            )

    def readings(
        self,
        meter: str,
        di: str | None = None,
        *,
        since: int | None = None,
        until: int | None = None,
        limit: int | None = None,
    ) -> list[Reading]:
        """A meter's readings in time order (since <= read_at < until), optionally one DI only."""
        parts: list[str] = ["meter = ?"]
        params: list[Any] = [meter]
        if di is not None:
            parts.append("di = ?")
            params.append(check_di(di))
        if since is not None:
            parts.append("read_at >= ?")
            params.append(int(since))
        if until is not None:
            parts.append("read_at < ?")
            params.append(int(until))
        sql = f"SELECT meter, di, value, read_at, text FROM readings WHERE {' AND '.join(parts)} ORDER BY read_at, di"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._tx(write=False) as tx:
            return [Reading(*r) for r in tx.all(sql, params)]

    def latest_reading(self, meter: str, di: str) -> Reading | None:
        """The newest reading of one DI at one meter, or None."""
        with self._tx(write=False) as tx:
            r = tx.one("SELECT meter, di, value, read_at, text FROM readings WHERE meter = ? AND di = ?"
                       " ORDER BY read_at DESC LIMIT 1", (meter, check_di(di)))
        return None if r is None else Reading(*r)

    def readings_for_di(self, di: str, *, since: int, until: int) -> list[tuple[str, int | None, int]]:
        """(meter, value, read_at) of one DI for every meter in [since, until), by meter then time."""
        with self._tx(write=False) as tx:
            return tx.all(
                "SELECT meter, value, read_at FROM readings WHERE di = ? AND read_at >= ? AND read_at < ?"
                " ORDER BY meter, read_at",
                (check_di(di), int(since), int(until)),
            )  # type: ignore[return-value]

    def readings_between(self, di: str, *, since: int, until: int) -> list[tuple[int, int, int]]:
        """(meter address as a number, value, read_at) of one DI for every meter in [since, until),
        values that are numbers only, in no particular order: the bulk input of a rating cycle."""
        with self._tx(write=False) as tx:
            return tx.all(  # type: ignore[return-value]
                "SELECT CAST(meter AS BIGINT), value, read_at FROM readings WHERE di = ? AND read_at >= ?"
                " AND read_at < ? AND value IS NOT NULL",
                (check_di(di), int(since), int(until)),
            )

    # ----------------------------------------------------------------- events
    def add_event(
        self,
        meter: str,
        kind: str,
        detail: Any = None,
        *,
        at: int | None = None,
        source: str = "headend",
        dedup: str | None = None,
    ) -> Event | None:
        """Record an event at a meter; with dedup (e.g. the meter's own record number) store it once.

        Returns the event, or None when one with the same (meter, dedup) was already stored.
        """
        at = self.now() if at is None else int(at)
        with self._tx() as tx:
            row = tx.one(
                "INSERT INTO events (meter, at, kind, detail, source, dedup) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING RETURNING id",
                (meter, at, kind, dumps(detail), source, dedup),
            )
        return None if row is None else Event(int(row[0]), meter, at, kind, detail, source)

    def events(self, meter: str, *, limit: int = 100, kind: str | None = None) -> list[Event]:
        """A meter's events, newest first."""
        where, params = self._where({"meter": meter, "kind": kind})
        with self._tx(write=False) as tx:
            rows = tx.all(f"SELECT id, meter, at, kind, detail, source FROM events{where}"
                          " ORDER BY at DESC, id DESC LIMIT ?", (*params, int(limit)))
        return [Event(r[0], r[1], r[2], r[3], loads(r[4]), r[5]) for r in rows]

    # ----------------------------------------------------------------- notifications
    def notify(
        self,
        customer: str,
        kind: str,
        message: str,
        *,
        channel: str = "sms",
        idem_key: str | None = None,
        detail: Any = None,
    ) -> Notification:
        """Queue a notice for a customer; with idem_key a repeat returns the first notice unchanged."""
        with self._tx() as tx:
            if idem_key is not None:
                row = tx.one(f"SELECT {_NOTICE_COLS} FROM notifications WHERE idem_key = ?", (idem_key,))
                if row is not None:
                    return _notice(row)
            now = self.now()
            row = tx.one(
                "INSERT INTO notifications (customer, channel, kind, message, status, attempts, created_at,"
                " updated_at, idem_key, detail) VALUES (?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?) RETURNING id",
                (customer, channel, kind, message, now, now, idem_key, dumps(detail)),
            )
            assert row is not None
            return Notification(int(row[0]), customer, channel, kind, message, "queued", 0, None, now, now,
                                idem_key, detail)

    def list_notifications(
        self, *, status: str | None = None, customer: str | None = None, channel: str | None = None, limit: int = 100
    ) -> list[Notification]:
        """Notices, oldest first (the order a sender should work them), optionally filtered."""
        where, params = self._where({"status": status, "customer": customer, "channel": channel})
        with self._tx(write=False) as tx:
            rows = tx.all(f"SELECT {_NOTICE_COLS} FROM notifications{where} ORDER BY id LIMIT ?",
                          (*params, int(limit)))
        return [_notice(r) for r in rows]

    def mark_notification(self, notice_id: int, status: str, *, error: str | None = None) -> Notification:
        """queued -> sent or failed (compare-and-set; counts an attempt); "queued" re-queues a failure."""
        if status not in NOTIFICATION_STATUSES:
            raise InvalidInput(f"notice status must be one of {', '.join(NOTIFICATION_STATUSES)}")
        expected = "failed" if status == "queued" else "queued"
        with self._tx() as tx:
            n = tx.execute(
                "UPDATE notifications SET status = ?, attempts = attempts + 1, last_error = ?, updated_at = ?"
                " WHERE id = ? AND status = ?",
                (status, error, self.now(), int(notice_id), expected),
            )
            row = tx.one(f"SELECT {_NOTICE_COLS} FROM notifications WHERE id = ?", (int(notice_id),))
            if row is None:
                raise NotFound(f"no notice {notice_id}")
            if n != 1:
                raise TransitionError(f"notice {notice_id} is {row[5]}, not {expected}")
            return _notice(row)
