"""Cost control's state per account: rating position, notice level, supply decision."""

from __future__ import annotations

from itertools import islice
from typing import Any, Iterable, Sequence

from headend.store.accounts import Accounts
from headend.store.models import SUPPLY_STATES, Account, Conflict, InvalidInput, NotFound, decision_state, dumps, loads

_KEEP: Any = object()  # "leave this column as it is" (None means: set it to NULL)


class CostControlState(Accounts):
    """What the remote cost-control loop reads and records, in bulk."""

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

        Rows: (customer, balance_fen, rem, ladder_wh, rated_until, version, tariff, alarm1_fen,
        alarm2_fen, overdraft_fen, close_ok_fen, protected (0/1: the account's or the meter's
        flag), direct (0/1: restore policy 'direct'), notice_level, notice_at, supply, supply_at,
        the address as a number, the account's key (``Tx.account_key``: what
        ``charge_and_set_states`` takes as ``keys``)).
        """
        with self._tx(write=False) as tx:
            return tx.all(self._cc_meters(tx))

    @staticmethod
    def _cc_meters(tx: Any) -> str:
        # numbers where the cycle wants numbers, and no column it does not use: a million rows
        # are made into Python values column by column
        return ("SELECT a.customer, a.balance_fen, a.rem, a.ladder_wh, a.rated_until, a.version, a.tariff,"
                " a.alarm1_fen, a.alarm2_fen, a.overdraft_fen, a.close_ok_fen,"
                " CASE WHEN a.protected = 1 OR m.protected = 1 THEN 1 ELSE 0 END,"
                " CASE WHEN a.restore_policy = 'direct' THEN 1 ELSE 0 END,"
                f" a.notice_level, a.notice_at, a.supply, a.supply_at, CAST(m.address AS BIGINT), a.{tx.account_key}"
                " FROM meters m JOIN accounts a ON a.customer = m.customer WHERE m.mode = 'remote'"
                " ORDER BY a.customer, m.address")

    def cost_control_columns(self) -> list[Any]:
        """The rows of :meth:`cost_control_meters` as columns, same order (``Tx.columns``): the
        numbers as int64 arrays (NULL as -1), the customer, tariff, supply (and a text key) as
        lists of str.  A cycle over a million accounts needs no Python value per number.

        Read as two plain scans, the accounts and the remote meters, joined and ordered here by
        customer then address, rather than as the join query: that one looked each meter's account
        up through the customer index and sorted the joined rows, all of their columns, before the
        first came out (at 200,000 accounts on SQLite the two scans take 0.76x its CPU, 7 interleaved
        pairs, spread 0.72-0.81)."""
        import numpy as np     # here, not at the top: the command line starts without it

        with self._tx(write=False) as tx:
            key = tx.account_key
            acc = tx.columns("SELECT customer, balance_fen, rem, ladder_wh, rated_until, version, tariff, alarm1_fen,"
                             " alarm2_fen, overdraft_fen, close_ok_fen, protected,"
                             " CASE WHEN restore_policy = 'direct' THEN 1 ELSE 0 END, notice_level, notice_at, supply,"
                             f" supply_at, {key} FROM accounts", "tiiiiitiiiiiiiiti" + ("i" if key == "rowid" else "t"))
            # mode || '': a scan of the table, not of the mode index and a lookup per meter (a
            # fleet's meters are nearly all of one mode)
            m_cust, m_addr, m_prot = tx.columns("SELECT customer, CAST(address AS BIGINT), protected FROM meters"
                                                " WHERE mode || '' = 'remote'", "tii")
        customers: list[str] = acc[0]
        if m_cust == customers and all(a < b for a, b in zip(customers, islice(customers, 1, None))):
            # the usual fleet: one meter an account, both stored in customer order: as read, with
            # no arrays of the customers (two of a million 12-character texts are ~100 MB)
            out: list[Any] = acc
            rows: Any = slice(None)
        else:
            out, rows = self._cost_control_join(acc, m_cust, m_addr)
        out[11] = np.maximum(out[11], m_prot[rows])          # the account's flag or the meter's
        out.insert(17, m_addr[rows])
        return out

    @staticmethod
    def _cost_control_join(acc: list[Any], m_cust: list[str], m_addr: Any) -> tuple[list[Any], Any]:
        """The accounts' columns ``acc`` for each remote meter, ordered by customer then address, and
        the meters' positions in that order; a meter without its account is left out, as a join
        would."""
        import numpy as np

        customers = np.array(acc[0], dtype="U12") if acc[0] else np.zeros(0, dtype="U12")
        meters = np.array(m_cust, dtype="U12") if m_cust else np.zeros(0, dtype="U12")
        if not customers.size:
            return [c[:0] if isinstance(c, np.ndarray) else [] for c in acc], np.zeros(0, dtype=np.int64)
        by_customer = np.argsort(customers, kind="stable")
        of = by_customer[np.minimum(np.searchsorted(customers, meters, sorter=by_customer), customers.size - 1)]
        rows = np.flatnonzero(customers[of] == meters)
        rows = rows[np.lexsort((m_addr[rows], meters[rows]))]       # by customer, then address
        of = of[rows]
        pick = of.tolist()
        out: list[Any] = []
        for k, col in enumerate(acc):
            out.append(col[of] if isinstance(col, np.ndarray) else [col[i] for i in pick])
            acc[k] = None       # each column let go once taken: a million accounts' columns are not held twice
        return out, rows

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
            rows.append((*decision_state(customer, level, notice_at, supply, supply_at), now, customer, int(version)))
        update = ("UPDATE accounts SET notice_level = ?, notice_at = ?, supply = ?, supply_at = ?, updated_at = ?"
                  " WHERE customer = ?")
        with self._tx() as tx:
            # the write lock is held from here: versions read now cannot move before the update.
            # Usually no version has moved: then one compare-and-set per row settles it without
            # reading the accounts; if any has (or a customer is unknown), undo and look.
            tx.execute("SAVEPOINT decisions")
            if tx.executemany(update + " AND version = ?", rows) == len(rows):
                stale: set[str] = set()
            else:
                tx.execute("ROLLBACK TO decisions")
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
                tx.executemany(update, (r[:6] for r in rows if r[5] not in stale))
            tx.execute("RELEASE decisions")
            tx.insert_many(
                "INSERT INTO notifications (customer, channel, kind, message, status, attempts, created_at,"
                " updated_at, idem_key, detail) VALUES ", "(?, 'sms', ?, ?, 'queued', 0, ?, ?, ?, ?)",
                ((c, kind, msg, now, now, key, dumps(detail)) for c, kind, msg, key, detail in notices if c not in stale),
                " ON CONFLICT DO NOTHING")
            cmds = [(meter, kind, dumps(params), key) for c, meter, kind, params, key in commands if c not in stale]
            known = self._existing(tx, "commands", "idem_key", [c[3] for c in cmds])
            cmds = [c for c in cmds if c[3] not in known]      # queued by an earlier run: nothing to do
            # many rows a statement, each giving back its id (no second look-up by key)
            ids: dict[str, int] = {k: i for i, k in tx.insert_rows(
                "INSERT INTO commands (meter, kind, params, status, attempts, created_at, updated_at, idem_key,"
                " actor, not_before) VALUES ", "(?, ?, ?, 'queued', 0, ?, ?, ?, ?, 0)",
                [(m, k, p, now, now, key, actor) for m, k, p, key in cmds], " RETURNING id, idem_key")}
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
