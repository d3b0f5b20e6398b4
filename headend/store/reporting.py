"""Read-only aggregations for the reports (headend/reports): grouped in the database, never row by row.

Each method returns plain tuples; ``headend.reports`` turns them into figures (the formulas live
there and in its README). ``days`` are business days (``YYYY-MM-DD``, the ledger's ``day``), both
ends inclusive; ``where`` filters accounts by district / segment (exact match, None = all).
"""

from __future__ import annotations

import datetime as _dt
from collections import defaultdict
from typing import Any

from headend.store.base import StoreBase

_CHARGE_KINDS = ("charge", "fixed_charge", "rerate")
_PAID_KINDS = ("payment", "reversal")
# the commands that cut and that restore supply (a restore is either kind of close)
CUT_KINDS = ("trip",)
RESTORE_KINDS = ("close_permitted", "close_direct")
_RK = ", ".join(f"'{k}'" for k in RESTORE_KINDS)


def _payment_filters(district: str | None, segment: str | None,
                     channel: str | None) -> tuple[str, list[Any], str, list[Any], str]:
    """The WHERE tails and parameters for payments ``p`` and for a closed day's kept counts
    ``k`` (same district, segment and channel), and the join to accounts the district or
    segment filter needs."""
    f, params = _accounts_filter(district, segment)
    kf, kparams = _accounts_filter(district, segment, "k")
    if channel is not None:
        f += " AND p.channel = ?"
        kf += " AND k.channel = ?"
        params.append(channel)
        kparams.append(channel)
    join = " JOIN accounts a ON a.customer = p.customer" if district is not None or segment is not None else ""
    return f, params, kf, kparams, join


def _accounts_filter(district: str | None, segment: str | None, alias: str = "a") -> tuple[str, list[Any]]:
    sql, params = "", []
    if district is not None:
        sql += f" AND {alias}.district = ?"
        params.append(district)
    if segment is not None:
        sql += f" AND {alias}.segment = ?"
        params.append(segment)
    return sql, params


_CK = ", ".join(f"'{k}'" for k in _CHARGE_KINDS)
_PK = ", ".join(f"'{k}'" for k in _PAID_KINDS)
# per journal row: fen charged, fen paid (net of reversals), and the part of a charge the balance
# before it covered ("paid in advance"; balance before = balance_after - amount_fen)
_FLOW_SUMS = (
    f"COALESCE(SUM(CASE WHEN l.kind IN ({_CK}) THEN -l.amount_fen ELSE 0 END), 0),"
    f" COALESCE(SUM(CASE WHEN l.kind IN ({_PK}) THEN l.amount_fen ELSE 0 END), 0),"
    f" COALESCE(SUM(CASE WHEN l.kind IN ({_CK}) AND l.amount_fen < 0 THEN"
    "   CASE WHEN l.balance_after - l.amount_fen <= 0 THEN 0"
    "        WHEN l.balance_after >= 0 THEN -l.amount_fen"
    "        ELSE l.balance_after - l.amount_fen END ELSE 0 END), 0)"
)


# Every change of a balance also keeps when it last went below zero (the arrears' age): set when
# the new balance (the old one moved as %s says: "+ ?", a parameter, or "- t.fen", a column; SET
# expressions see the old row) is below zero and was not already, cleared when it is not.  Its
# parameter: the time.
OWING_SINCE = "owing_since = CASE WHEN balance_fen %s < 0 THEN COALESCE(owing_since, ?) ELSE NULL END"


# The accounts report's states (headend/reports/README.md), over a row with mode (local/remote),
# bal, alarm1, alarm2, supply and relay_open: counted in the database, a million accounts a report.
ACCOUNT_STATE = (
    "CASE WHEN (t.mode = 'remote' AND t.supply <> 'on') OR (t.mode = 'local' AND t.relay_open = 1) THEN 'cut'"
    " WHEN t.bal <= 0 OR (t.alarm2 > 0 AND t.bal <= t.alarm2) THEN 'alarm2'"
    " WHEN t.alarm1 > 0 AND t.bal <= t.alarm1 THEN 'alarm1' ELSE 'credit' END")


# One row per account now, for the states above (the ``t`` they read) and the arrears' age: a local
# account's balance is the account plus its meters' last seen wallets, and it is cut when one of its
# meters' relays was last seen open; ``own`` is the account's own balance.  Ends in a WHERE to which
# ``_accounts_filter`` appends.
_ACCOUNTS_NOW = (
    "SELECT a.district AS district, a.protected AS protected, a.alarm1_fen AS alarm1,"
    " a.alarm2_fen AS alarm2, a.supply AS supply, CASE WHEN lm.customer IS NULL THEN 'remote'"
    " ELSE 'local' END AS mode, a.balance_fen + COALESCE(lm.fen, 0) AS bal,"
    " COALESCE(lm.relay_open, 0) AS relay_open, a.balance_fen AS own, a.owing_since AS owing_since"
    " FROM accounts a LEFT JOIN (SELECT customer, SUM(COALESCE(balance_fen, 0)) AS fen,"
    "  MAX(CASE WHEN relay = 'open' THEN 1 ELSE 0 END) AS relay_open FROM meters WHERE mode = 'local'"
    "  GROUP BY customer) lm ON lm.customer = a.customer WHERE 1 = 1")


def snapshot_day(tx: Any, day: str, now: int, utc_offset_s: int) -> int:
    """Keep a closed day's figures per district and segment: charged, paid, paid in advance and
    the arrears at its end (sum of max(0, -balance) and how many accounts owe), so reports over
    closed days read one row per day instead of the journal.  Called inside the close's
    transaction; a closed day is frozen, so the figures never go stale.  Returns rows kept."""
    tx.execute("DELETE FROM day_figures WHERE day = ?", (day,))
    flows = {(d, s): (c, p, a) for d, s, c, p, a in tx.all(
        f"SELECT a.district, a.segment, {_FLOW_SUMS} FROM ledger l JOIN accounts a ON a.customer = l.customer"
        " WHERE l.day = ? GROUP BY a.district, a.segment", (day,))}
    # each account's balance at the end of the day: today's balance less what was booked after it
    owed = {(d, s): (o, n) for d, s, o, n in tx.all(
        "SELECT district, segment, SUM(CASE WHEN b < 0 THEN -b ELSE 0 END), SUM(CASE WHEN b < 0 THEN 1 ELSE 0 END)"
        " FROM (SELECT a.district AS district, a.segment AS segment, a.balance_fen - COALESCE(x.later, 0) AS b"
        "  FROM accounts a LEFT JOIN (SELECT customer, SUM(amount_fen) AS later FROM ledger WHERE day > ?"
        "  GROUP BY customer) x ON x.customer = a.customer) t GROUP BY district, segment", (day,))}
    rows = [(day, d, s, *flows.get((d, s), (0, 0, 0)), *owed.get((d, s), (0, 0)), now)
            for d, s in set(flows) | set(owed)]
    tx.executemany("INSERT INTO day_figures (day, district, segment, due_fen, paid_fen, advance_fen, arrears_fen,"
                   " arrears_accounts, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    snapshot_payments(tx, day, now, utc_offset_s)
    return len(rows)


# A payment's day, channel, times paid and accepted, amount, fee and customer never change; its
# state may (a reversal), and so may its confirmation on the meter, once, from none to a time.
# A closed day keeps what cannot change; what still can is looked at again when read.
_LOCAL_HOUR = "((p.paid_at + ?) / 3600) % 24"
_REVERSED = "CASE WHEN p.state = 'reversed' THEN 1 ELSE 0 END"


def snapshot_payments(tx: Any, day: str, now: int, utc_offset_s: int) -> None:
    """Keep a closed day's payments for the channels and speed reports: counts and fen per
    channel, local hour paid, district and segment over every payment whatever its state; the
    confirmed ones' seconds from acceptance to the meter (seconds, how many); and the ids of those
    that may still be confirmed (sent to a meter, not yet confirmed).  Called in the close's
    transaction."""
    for table in ("day_payments", "day_latencies", "day_unconfirmed", "day_payments_kept"):
        tx.execute(f"DELETE FROM {table} WHERE day = ?", (day,))
    tx.execute("INSERT INTO day_payments (day, channel, hour, district, segment, count, amount_fen, fee_fen)"
               f" SELECT p.day, p.channel, {_LOCAL_HOUR}, a.district, a.segment, COUNT(*), SUM(p.amount_fen),"
               "  SUM(p.fee_fen) FROM payments p JOIN accounts a ON a.customer = p.customer WHERE p.day = ?"
               # by position: an expression with a parameter is not matched to its twin by every engine
               " GROUP BY 1, 2, 3, 4, 5",
               (utc_offset_s, day))
    tx.execute("INSERT INTO day_latencies (day, channel, district, segment, seconds, count)"
               " SELECT p.day, p.channel, a.district, a.segment, p.confirmed_at - p.accepted_at, COUNT(*)"
               " FROM payments p JOIN accounts a ON a.customer = p.customer"
               " WHERE p.day = ? AND p.confirmed_at IS NOT NULL"
               " GROUP BY p.day, p.channel, a.district, a.segment, p.confirmed_at - p.accepted_at", (day,))
    tx.execute("INSERT INTO day_unconfirmed (day, payment_id) SELECT day, id FROM payments"
               " WHERE day = ? AND confirmed_at IS NULL AND meter IS NOT NULL", (day,))
    tx.execute("INSERT INTO day_payments_kept (day, utc_offset_s, at) VALUES (?, ?, ?)", (day, utc_offset_s, now))


def _day_runs(first: str, last: str, skip: set[str]) -> list[tuple[str, str]]:
    """The runs of consecutive days in [first, last] that are not in ``skip``, as (first, last)."""
    runs: list[tuple[str, str]] = []
    d, end = _dt.date.fromisoformat(first), _dt.date.fromisoformat(last)
    start: str | None = None
    prev = ""
    while d <= end:
        day = d.isoformat()
        if day in skip:
            if start is not None:
                runs.append((start, prev))
                start = None
        elif start is None:
            start = day
        prev = day
        d += _dt.timedelta(days=1)
    if start is not None:
        runs.append((start, prev))
    return runs


class ReportQueries(StoreBase):
    def day_figures(self, first: str, last: str, *, district: str | None = None, segment: str | None = None,
                    group: str | None = None) -> list[tuple[Any, ...]]:
        """(day, group value or '', charged, paid, paid in advance, arrears at the day's end) of the
        closed days in [first, last] that have kept figures (see ``snapshot_day``)."""
        where, params = "", []
        if district is not None:
            where += " AND district = ?"
            params.append(district)
        if segment is not None:
            where += " AND segment = ?"
            params.append(segment)
        gcol = group if group in ("district", "segment") else "''"
        with self._tx(write=False) as tx:
            return tx.all(f"SELECT day, {gcol}, SUM(due_fen), SUM(paid_fen), SUM(advance_fen), SUM(arrears_fen)"
                          f" FROM day_figures WHERE day >= ? AND day <= ?{where} GROUP BY day, {gcol}",
                          (first, last, *params))

    def first_journal_day(self) -> str | None:
        """The earliest business day with a journal row (None for an empty journal)."""
        with self._tx(write=False) as tx:
            row = tx.one("SELECT MIN(day) FROM ledger")
        return row[0] if row else None

    def days_with_figures(self, first: str, last: str) -> set[str]:
        """The days in [first, last] whose figures were kept at their close."""
        with self._tx(write=False) as tx:
            return {r[0] for r in tx.all("SELECT DISTINCT day FROM day_figures WHERE day >= ? AND day <= ?",
                                         (first, last))}

    def known_values(self, column: str) -> set[str]:
        """Distinct districts or segments of the accounts, or channel ids (for checking filters)."""
        table, col = {"district": ("accounts", "district"), "segment": ("accounts", "segment"),
                      "channel": ("channels", "id")}[column]
        with self._tx(write=False) as tx:
            return {r[0] for r in tx.all(f"SELECT DISTINCT {col} FROM {table}")}

    def ledger_flows_by_day(self, first: str, last: str, *, district: str | None = None,
                            segment: str | None = None, group: str | None = None) -> list[tuple[Any, ...]]:
        """(day, group value or '', charged fen (positive), paid fen net of reversals, paid in
        advance fen) per business day in [first, last]; "paid in advance" is the part of each
        charge the account's balance covered before it (min(charge, max(0, balance before)))."""
        f, params = _accounts_filter(district, segment)
        gcol = f"a.{group}" if group in ("district", "segment") else "''"
        # the accounts only when a filter or grouping needs them: a year of journal groups faster alone
        join = " JOIN accounts a ON a.customer = l.customer" if f or gcol != "''" else ""
        sql = (f"SELECT l.day, {gcol}, {_FLOW_SUMS} FROM ledger l{join}"
               f" WHERE l.day >= ? AND l.day <= ?{f} GROUP BY l.day, {gcol}")
        with self._tx(write=False) as tx:
            return tx.all(sql, (first, last, *params))

    def balances_in_order(self, last: str, *, district: str | None = None,
                          segment: str | None = None, group: str | None = None) -> list[tuple[Any, ...]]:
        """(customer, group value or '', day, balance_after) of every journal row booked up to
        ``last``, by customer and then booking order (the ledger's (customer, id) index)."""
        f, params = _accounts_filter(district, segment)
        if f or group in ("district", "segment"):
            gcol = f"a.{group}" if group in ("district", "segment") else "''"
            sql = (f"SELECT l.customer, {gcol}, l.day, l.balance_after FROM ledger l"
                   f" JOIN accounts a ON a.customer = l.customer WHERE l.day <= ?{f} ORDER BY l.customer, l.id")
        else:
            sql = "SELECT customer, '', day, balance_after FROM ledger WHERE day <= ? ORDER BY customer, id"
        with self._tx(write=False) as tx:
            return tx.all(sql, (last, *params))

    def _kept_payment_days(self, tx: Any, first: str, last: str, utc_offset_s: int) -> set[str]:
        """The days in [first, last] whose payments were kept at their close in this local time."""
        return {r[0] for r in tx.all("SELECT day FROM day_payments_kept WHERE day >= ? AND day <= ?"
                                     " AND utc_offset_s = ?", (first, last, utc_offset_s))}

    def payments_by_day(self, first: str, last: str, *, channel: str | None = None, district: str | None = None,
                        segment: str | None = None, utc_offset_s: int = 0) -> list[tuple[Any, ...]]:
        """(day, channel id, channel kind, local hour paid, state is reversed (0/1), count, fen, fee
        fen), one row per group holding payments.  Days kept at their close (``snapshot_payments``)
        are read from those counts, the payments reversed since moved to the reversed rows; the
        other days are summed from the payments."""
        f, params, kf, kparams, join = _payment_filters(district, segment, channel)
        group = f"p.day, p.channel, c.kind, {_LOCAL_HOUR}, {_REVERSED}"
        scan = (f"SELECT {group}, COUNT(*), SUM(p.amount_fen), SUM(p.fee_fen)"
                f" FROM payments p JOIN channels c ON c.id = p.channel{join}"
                f" WHERE p.day >= ? AND p.day <= ?{f} GROUP BY 1, 2, 3, 4, 5")
        kept_in = "IN (SELECT day FROM day_payments_kept WHERE day >= ? AND day <= ? AND utc_offset_s = ?)"
        with self._tx(write=False) as tx:
            kept = self._kept_payment_days(tx, first, last, utc_offset_s)
            rows: list[tuple[Any, ...]] = []
            for lo, hi in _day_runs(first, last, kept):
                rows += tx.all(scan, (utc_offset_s, lo, hi, *params))
            if not kept:
                return rows
            span = (min(kept), max(kept), utc_offset_s)
            net: dict[tuple[Any, ...], list[int]] = {}
            for day, ch, kind, hour, count, fen, fee in tx.all(
                    "SELECT k.day, k.channel, c.kind, k.hour, SUM(k.count), SUM(k.amount_fen), SUM(k.fee_fen)"
                    f" FROM day_payments k JOIN channels c ON c.id = k.channel WHERE k.day {kept_in}{kf}"
                    " GROUP BY k.day, k.channel, c.kind, k.hour", (*span, *kparams)):
                net[(day, ch, kind, hour, 0)] = [count, fen, fee]
            # a payment of a kept day reversed since its close (the partial index holds only those)
            reversed_ = tx.all(f"SELECT {group}, COUNT(*), SUM(p.amount_fen), SUM(p.fee_fen)"
                               f" FROM payments p JOIN channels c ON c.id = p.channel{join}"
                               f" WHERE p.state = 'reversed' AND p.day {kept_in}{f} GROUP BY {group}",
                               (utc_offset_s, *span, *params, utc_offset_s))
            for day, ch, kind, hour, _rev, count, fen, fee in reversed_:
                left = net.setdefault((day, ch, kind, hour, 0), [0, 0, 0])
                left[0] -= count
                left[1] -= fen
                left[2] -= fee
            rows += [(*k, *v) for k, v in net.items() if v[0]]
            rows += reversed_
            return rows

    def payment_latencies(self, first: str, last: str, *, channel: str | None = None, district: str | None = None,
                          segment: str | None = None) -> list[tuple[Any, ...]]:
        """(channel id, seconds from acceptance to confirmation on the meter, how many payments) over
        the payments of the days confirmed on their meter and not reversed.  Days kept at their
        close are read from their latencies, less those reversed since and plus those confirmed
        since; the other days are counted from the payments."""
        f, params, kf, kparams, join = _payment_filters(district, segment, channel)
        secs = "p.confirmed_at - p.accepted_at"
        kept_in = "IN (SELECT day FROM day_payments_kept WHERE day >= ? AND day <= ?)"
        hist: dict[tuple[str, int], int] = defaultdict(int)
        with self._tx(write=False) as tx:
            kept = {r[0] for r in tx.all("SELECT day FROM day_payments_kept WHERE day >= ? AND day <= ?",
                                         (first, last))}
            for lo, hi in _day_runs(first, last, kept):
                for ch, sec, n in tx.all(f"SELECT p.channel, {secs}, COUNT(*) FROM payments p{join}"
                                         " WHERE p.day >= ? AND p.day <= ? AND p.confirmed_at IS NOT NULL"
                                         f" AND p.state <> 'reversed'{f} GROUP BY p.channel, {secs}",
                                         (lo, hi, *params)):
                    hist[(ch, sec)] += n
            if kept:
                span = (min(kept), max(kept))
                for ch, sec, n in tx.all("SELECT k.channel, k.seconds, SUM(k.count) FROM day_latencies k"
                                         f" WHERE k.day {kept_in}{kf} GROUP BY k.channel, k.seconds",
                                         (*span, *kparams)):
                    hist[(ch, sec)] += n
                # confirmed by the close, reversed since
                for ch, sec, n in tx.all(
                        f"SELECT p.channel, {secs}, COUNT(*) FROM payments p{join}"
                        f" WHERE p.state = 'reversed' AND p.day {kept_in} AND p.confirmed_at IS NOT NULL"
                        " AND NOT EXISTS (SELECT 1 FROM day_unconfirmed u WHERE u.day = p.day AND u.payment_id = p.id)"
                        f"{f} GROUP BY p.channel, {secs}", (*span, *params)):
                    hist[(ch, sec)] -= n
                # still on the way at the close, confirmed since
                for ch, sec, n in tx.all(
                        f"SELECT p.channel, {secs}, COUNT(*) FROM day_unconfirmed u"
                        f" JOIN payments p ON p.id = u.payment_id{join}"
                        f" WHERE u.day {kept_in} AND p.confirmed_at IS NOT NULL AND p.state <> 'reversed'{f}"
                        f" GROUP BY p.channel, {secs}", (*span, *params)):
                    hist[(ch, sec)] += n
        return [(ch, sec, n) for (ch, sec), n in hist.items() if n]

    def payment_to_restore(self, since: int, until: int, *, channel: str | None = None,
                           district: str | None = None, segment: str | None = None) -> list[tuple[Any, ...]]:
        """(channel id, seconds from a payment to the first confirmed close command of one of the
        customer's meters created at or after it) for payments accepted in [since, until) that
        were followed by one (the customer was cut when paying)."""
        f, params = _accounts_filter(district, segment)
        if channel is not None:
            f += " AND p.channel = ?"
            params.append(channel)
        # from the confirmed closes (a few per cut customer) to the payments before each, not from
        # every payment of the range to the commands
        sql = ("SELECT p.channel, MIN(k.updated_at) - p.accepted_at FROM commands k"
               " JOIN meters m ON m.address = k.meter"
               " JOIN payments p ON p.customer = m.customer AND p.accepted_at <= k.created_at"
               " JOIN accounts a ON a.customer = p.customer"
               f" WHERE k.kind IN ({_RK}) AND k.status = 'confirmed'"
               f" AND p.accepted_at >= ? AND p.accepted_at < ? AND p.state <> 'reversed'{f}"
               " GROUP BY p.id, p.channel, p.accepted_at")
        with self._tx(write=False) as tx:
            return tx.all(sql, (since, until, *params))

    def account_states(self, *, district: str | None = None, segment: str | None = None) -> list[tuple[Any, ...]]:
        """(district, state, accounts, protected accounts) per district and state now, the states
        as headend/reports/README.md defines them (``ACCOUNT_STATE``)."""
        f, params = _accounts_filter(district, segment)
        sql = (f"SELECT t.district, {ACCOUNT_STATE}, COUNT(*), SUM(t.protected) FROM ({_ACCOUNTS_NOW}{f}) t"
               f" GROUP BY t.district, {ACCOUNT_STATE}")
        with self._tx(write=False) as tx:
            return tx.all(sql, params)

    def account_states_and_ageing(self, now: int, *, district: str | None = None,
                                  segment: str | None = None) -> list[tuple[Any, ...]]:
        """(district, state, whole days owing or None, accounts, protected accounts, fen owed) now,
        in one pass over the accounts: the states as ``account_states`` counts them, and for the
        accounts whose own balance is below zero the days since it went below zero
        (``accounts.owing_since``, kept with every change of a balance) and what they owe; None
        days and 0 fen for the others."""
        f, params = _accounts_filter(district, segment)
        # the days and the state are columns of the inner query, so the GROUP BY names them once
        # (a million accounts a report: one scan and one sort, not one per figure)
        sql = ("SELECT s.district, s.state, s.days, COUNT(*), SUM(s.protected), -SUM(s.owed) FROM ("
               f" SELECT t.district AS district, {ACCOUNT_STATE} AS state,"
               " CASE WHEN t.own < 0 THEN (? - COALESCE(t.owing_since, ?)) / 86400 END AS days,"
               " t.protected AS protected, CASE WHEN t.own < 0 THEN t.own ELSE 0 END AS owed"
               f" FROM ({_ACCOUNTS_NOW}{f}) t) s GROUP BY s.district, s.state, s.days")
        with self._tx(write=False) as tx:
            return tx.all(sql, (now, now, *params))

    def commands_by_day(self, since: int, until: int) -> list[tuple[Any, ...]]:
        """(created_at, kind, status, attempts) of every command created in [since, until)."""
        with self._tx(write=False) as tx:
            return tx.all("SELECT created_at, kind, status, attempts FROM commands WHERE created_at >= ?"
                          " AND created_at < ?", (since, until))

    def notices_by_kind(self, since: int, until: int) -> list[tuple[Any, ...]]:
        """(kind, status, count) of customer notices created in [since, until)."""
        with self._tx(write=False) as tx:
            return tx.all("SELECT kind, status, COUNT(*) FROM notifications WHERE created_at >= ?"
                          " AND created_at < ? GROUP BY kind, status", (since, until))

    def meters_not_read(self, before: int) -> list[tuple[Any, ...]]:
        """(address, customer, last_seen or None) of meters not heard from since ``before``."""
        with self._tx(write=False) as tx:
            return tx.all("SELECT address, customer, last_seen FROM meters WHERE last_seen IS NULL OR last_seen < ?"
                          " ORDER BY address", (before,))
