"""What the operator console's dashboard counts: one query each, so it stays fast on a large fleet."""

from __future__ import annotations

from typing import Any

from headend.store.accounts import _ACCOUNT_COLS, _account
from headend.store.base import StoreBase
from headend.store.models import Account
from headend.store.reporting import ACCOUNT_STATE, CUT_KINDS, RESTORE_KINDS

__all__ = ["ConsoleQueries", "METER_STATES"]

METER_STATES = ("credit", "warning", "cut", "not_reached")

# A meter's state is the accounts report's state of an account (ACCOUNT_STATE) taken per meter,
# with the meter's own wallet and relay; "not_reached" first when the head-end has not heard
# from it since the cut-off.  Alarm 1 and alarm 2 are both "warning" on the dashboard.
_STATE_SQL = (
    f"SELECT CASE WHEN t.last_seen IS NULL OR t.last_seen < ? THEN 'not_reached' ELSE {ACCOUNT_STATE} END AS state,"
    " COUNT(*) FROM (SELECT m.last_seen AS last_seen, m.mode AS mode, a.supply AS supply, a.alarm1_fen AS alarm1,"
    " a.alarm2_fen AS alarm2, CASE WHEN m.relay = 'open' THEN 1 ELSE 0 END AS relay_open,"
    " a.balance_fen + CASE WHEN m.mode = 'local' THEN COALESCE(m.balance_fen, 0) ELSE 0 END AS bal"
    " FROM meters m JOIN accounts a ON a.customer = m.customer) t GROUP BY state"
)
_SHOWN = {"alarm1": "warning", "alarm2": "warning"}


class ConsoleQueries(StoreBase):
    """Counts for the console's dashboard."""

    def meter_states(self, *, seen_since: int) -> dict[str, int]:
        """How many meters are in credit, warning (at or below an alarm amount, or empty), cut, or
        not reached (not heard from since ``seen_since``)."""
        out: dict[str, int] = dict.fromkeys(METER_STATES, 0)
        with self._tx(write=False) as tx:
            for state, n in tx.all(_STATE_SQL, (int(seen_since),)):
                out[_SHOWN.get(str(state), str(state))] += int(n)
        return out

    def collections_by_channel(self, day: str) -> list[tuple[str, str, int, int]]:
        """(channel id, channel kind, payments, fen) of the payments booked on business ``day`` that stand."""
        with self._tx(write=False) as tx:
            return tx.all(  # type: ignore[return-value]
                "SELECT p.channel, c.kind, COUNT(*), SUM(p.amount_fen) FROM payments p JOIN channels c"
                " ON c.id = p.channel WHERE p.day = ? AND p.state != 'reversed' GROUP BY p.channel ORDER BY p.channel",
                (day,))

    def relay_outcomes_since(self, since: int) -> dict[str, int]:
        """Confirmed cuts (trip) and restores (close permitted or direct) of commands finished since ``since``."""
        with self._tx(write=False) as tx:
            kinds = CUT_KINDS + RESTORE_KINDS
            rows = tx.all("SELECT kind, COUNT(*) FROM commands WHERE status = 'confirmed' AND updated_at >= ?"
                          f" AND kind IN ({', '.join('?' * len(kinds))}) GROUP BY kind", (int(since), *kinds))
        got = {k: int(n) for k, n in rows}
        return {"cuts": sum(got.get(k, 0) for k in CUT_KINDS),
                "restores": sum(got.get(k, 0) for k in RESTORE_KINDS)}

    def commands_in_flight(self) -> dict[str, int]:
        """Commands not final yet (queued, sent, unresolved), by status."""
        with self._tx(write=False) as tx:
            rows = tx.all("SELECT status, COUNT(*) FROM commands WHERE status IN ('queued', 'sent', 'unresolved')"
                          " GROUP BY status")
        return {s: int(n) for s, n in rows}

    def failed_notice_count(self) -> int:
        """Customer notices whose sending failed for good."""
        with self._tx(write=False) as tx:
            row: Any = tx.one("SELECT COUNT(*) FROM notifications WHERE status = 'failed'")
        return int(row[0]) if row else 0

    def find_accounts_by_name(self, text: str, *, limit: int = 50) -> list[Account]:
        """Accounts whose name contains ``text`` (by customer number): the part of ``find_accounts``
        a search with letters in it can mean, in one scan of the names instead of three scans."""
        t = str(text).strip()
        if not t:
            return []
        like = "%" + t.replace("%", "").replace("_", "") + "%"
        with self._tx(write=False) as tx:
            rows = tx.all(f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE name LIKE ? ORDER BY +customer LIMIT ?",
                          (like, int(limit)))
        return [_account(r) for r in rows]
