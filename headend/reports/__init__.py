"""The reports a power-supply company runs on: collection rate, channels, speed, accounts, operations.

Each report is a plain function of an open ``Store`` and a ``Query`` returning a ``Report`` (columns,
rows as dicts, totals, notes): the CLI (``headend report``), the HTTP API and the console render the
same data. Every figure is defined once in ``headend/reports/README.md``; money stays in integer fen
(rates are ratios of fen, computed at the end).

    from headend.reports import Query, run_report
    r = run_report(store, "collection", Query(first="2026-11-01", last="2026-11-30", by="week"))
    r.rows[0]["rate"]
"""

from __future__ import annotations

import datetime as _dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from headend.store import Store
from headend.store.models import business_day
from headend.store.reporting import CUT_KINDS, RESTORE_KINDS

__all__ = ["REPORTS", "Query", "Report", "ReportError", "run_report", "period_of"]

PERIODS = ("day", "week", "month")
AGEING = ((0, 30, "0-30"), (31, 60, "31-60"), (61, 90, "61-90"), (91, None, ">90"))
STATES = ("credit", "alarm1", "alarm2", "cut")


class ReportError(ValueError):
    """A report asked for with bad options (unknown name, district or channel; --from after --to)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Query:
    first: str                      # first business day, YYYY-MM-DD (inclusive)
    last: str                       # last business day (inclusive)
    by: str = "day"                 # day | week | month
    district: str | None = None
    segment: str | None = None
    channel: str | None = None
    group: str | None = None        # collection only: split rows by "district" or "segment"
    stale_days: int = 3             # operations: meters not read for this many days


@dataclass
class Report:
    name: str
    title: str
    columns: list[str]
    rows: list[dict[str, Any]]
    totals: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sections: dict[str, "Report"] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "columns": self.columns, "rows": self.rows,
                "totals": self.totals, "notes": self.notes,
                "sections": {k: v.to_dict() for k, v in self.sections.items()}}


def _day(text: str, what: str) -> _dt.date:
    try:
        return _dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        raise ReportError(f"{what} must be a day written YYYY-MM-DD, got {text!r}", what) from None


def period_of(day: str, by: str) -> str:
    """The period a business day falls in: the day itself, the Monday of its ISO week, or YYYY-MM."""
    if by == "day":
        return day
    if by == "month":
        return day[:7]
    d = _dt.date.fromisoformat(day)
    return (d - _dt.timedelta(days=d.weekday())).isoformat()


def _periods(q: Query) -> list[str]:
    first, last = _day(q.first, "from"), _day(q.last, "to")
    out: list[str] = []
    d = first
    while d <= last:
        p = period_of(d.isoformat(), q.by)
        if not out or out[-1] != p:
            out.append(p)
        d += _dt.timedelta(days=1)
    return out


def _period_start(period: str, q: Query) -> str:
    """The first day of a period within the query (a week or month may start before --from)."""
    start = period if q.by != "month" else period + "-01"
    return max(start, q.first)


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def _day_start(store: Store, day: str) -> int:
    d = _dt.date.fromisoformat(day)
    return int(_dt.datetime(d.year, d.month, d.day, tzinfo=_dt.timezone.utc).timestamp()) - store.utc_offset_s


def check_query(store: Store, q: Query) -> None:
    """Refuse options that cannot be answered (ReportError names the option)."""
    if q.by not in PERIODS:
        raise ReportError(f"--by must be one of {', '.join(PERIODS)}, got {q.by!r}", "by")
    first, last = _day(q.first, "from"), _day(q.last, "to")
    if first > last:
        raise ReportError(f"--from {q.first} is after --to {q.last}", "from")
    if (last - first).days > 3660:
        raise ReportError("a report spans at most ten years: narrow --from/--to", "from")
    if q.group not in (None, "district", "segment"):
        raise ReportError(f"--group must be district or segment, got {q.group!r}", "group")
    for name, value in (("district", q.district), ("segment", q.segment), ("channel", q.channel)):
        if value is not None and value not in store.known_values(name):
            known = sorted(v for v in store.known_values(name) if v)
            raise ReportError(f"unknown {name} {value!r}; known: {', '.join(known) or 'none yet'}", name)


# ---------------------------------------------------------------- collection


def collection(store: Store, q: Query) -> Report:
    """Fees due vs collected per period, arrears separately, and the collection rate."""
    periods = _periods(q)
    pindex = {p: i for i, p in enumerate(periods)}
    groups: dict[str, int] = {}
    n = len(periods)
    due: dict[str, np.ndarray] = {}
    paid: dict[str, np.ndarray] = {}
    adv: dict[str, np.ndarray] = {}

    def arrays(g: str) -> None:
        if g not in groups:
            groups[g] = len(groups)
            due[g], paid[g], adv[g] = (np.zeros(n, dtype=np.int64) for _ in range(3))

    # Closed days were summed up at their close (store.snapshot_day); only the days after the
    # last closed one are read from the journal.
    first_d, last_d = _day(q.first, "from"), _day(q.last, "to")
    before = (first_d - _dt.timedelta(days=1)).isoformat()
    kept = store.days_with_figures(before, q.last)
    live_from = first_d
    while live_from <= last_d and live_from.isoformat() in kept:
        live_from += _dt.timedelta(days=1)
    figures = store.day_figures(before, q.last, district=q.district, segment=q.segment, group=q.group)
    flows = [(d, g, c, p, a) for d, g, c, p, a, _ in figures if q.first <= d < live_from.isoformat()]
    if live_from <= last_d:
        flows += store.ledger_flows_by_day(live_from.isoformat(), q.last, district=q.district,
                                          segment=q.segment, group=q.group)
    for day, g, charged, paid_fen, advance in flows:
        arrays(g)
        i = pindex[period_of(day, q.by)]
        due[g][i] += int(charged)
        paid[g][i] += int(paid_fen)
        adv[g][i] += int(advance)

    # Arrears at the start of each period: sum over accounts of max(0, -balance) as the journal stood
    # at the end of the day before it.  From the kept figures where that day was closed; else from
    # the journal: each account's balance changes only on days its journal moved, so a day's
    # closing balance holds until its next such day: spread it over the periods in between (a
    # difference array per group), then add up.
    starts = [_period_start(p, q) for p in periods]
    eve = [(_dt.date.fromisoformat(s) - _dt.timedelta(days=1)).isoformat() for s in starts]
    # before the first journal row nobody owed anything: no figures needed for those days
    start_of_books = store.first_journal_day() or "9999-12-31"
    if all(e in kept or e < start_of_books for e in eve):
        owed = {(d, g): int(o) for d, g, *_, o in figures}
        for _d, g, *_ in figures:
            arrays(g)
        gnames = sorted(groups)
        arrears = {g: np.array([owed.get((e, g), 0) for e in eve], dtype=np.int64) for g in gnames}
    else:
        rows = store.balances_in_order(q.last, district=q.district, segment=q.segment, group=q.group)
        for g in {r[1] for r in rows}:
            arrays(g)
        gnames = sorted(groups)
        arrears = dict(zip(gnames, _arrears_at_period_starts(rows, gnames, q, pindex, n)))

    out: list[dict[str, Any]] = []
    tot = defaultdict(int)
    for g in sorted(groups):
        prev_rate: float | None = None
        for i, p in enumerate(periods):
            d, c, a, pre = int(due[g][i]), int(paid[g][i]), int(arrears[g][i]), int(adv[g][i])
            to_arrears = min(max(c, 0), a)
            to_current = min(max(c - to_arrears, 0), d)
            rate = _rate(to_arrears + to_current, a + d)
            row = {"period": p, "due_fen": d, "arrears_start_fen": a, "collected_fen": c,
                   "collected_current_fen": to_current, "collected_arrears_fen": to_arrears,
                   "prepaid_share": _rate(pre, d), "rate": rate, "current_rate": _rate(to_current, d),
                   "rate_change": None if rate is None or prev_rate is None else round(rate - prev_rate, 4)}
            if q.group:
                row = {q.group: g, **row}
            out.append(row)
            prev_rate = rate
            for k in ("due_fen", "collected_fen", "collected_current_fen", "collected_arrears_fen"):
                tot[k] += row[k]
            tot["_advance"] += pre
        tot["arrears_start_fen"] += int(arrears[g][0]) if n else 0
    totals: dict[str, Any] = {k: v for k, v in tot.items() if not k.startswith("_")}
    if out:
        totals["rate"] = _rate(totals["collected_current_fen"] + totals["collected_arrears_fen"],
                               totals["arrears_start_fen"] + totals["due_fen"])
        totals["prepaid_share"] = _rate(tot["_advance"], totals["due_fen"])
    cols = ([q.group] if q.group else []) + ["period", "due_fen", "arrears_start_fen", "collected_fen",
                                            "collected_current_fen", "collected_arrears_fen", "rate",
                                            "current_rate", "prepaid_share", "rate_change"]
    notes = ["due: energy, fixed and re-rating charges booked in the period (remote cost control);",
             "collected: payments less reversals; they pay arrears first, then the period's charges"]
    return Report("collection", "Collection rate", cols, out, totals, notes)


def _arrears_at_period_starts(rows: list[tuple[Any, ...]], gnames: list[str], q: Query,
                              pindex: dict[str, int], n: int) -> np.ndarray:
    """Arrears at the start of each period, per group: the sum over accounts of max(0, -balance)
    as the journal stood at the end of the day before the period.

    ``rows`` are (customer, group, day, balance after) of every journal row, by customer and
    booking order.  A row's balance holds from the first period starting after its day until the
    first period starting after the day of the account's next row (rows within one period
    cancel out), so each is spread over those periods with a difference array, vectorised: a
    year of a million accounts is tens of millions of rows."""
    out = np.zeros((len(gnames), n + 1), dtype=np.int64)
    if not rows or n == 0:
        return out[:, :n]
    cust, grp, day, bal = zip(*rows)
    days = sorted(set(day))
    dmap = {d: i for i, d in enumerate(days)}
    # the period a balance of each distinct day starts to count in (0 for days before the range)
    first_from = np.array([0 if d < q.first else pindex[period_of(d, q.by)] + 1 for d in days], dtype=np.int64)
    before = np.array([d < q.first for d in days])
    di = np.fromiter((dmap[d] for d in day), dtype=np.int64, count=len(rows))
    gmap = {g: i for i, g in enumerate(gnames)}
    gi = np.fromiter((gmap[g] for g in grp), dtype=np.int64, count=len(rows))
    owed = np.maximum(0, -np.fromiter(bal, dtype=np.int64, count=len(rows)))
    start = first_from[di]
    same_next = np.zeros(len(rows), dtype=bool)
    same_next[:-1] = np.fromiter((a == b for a, b in zip(cust, cust[1:])), dtype=bool, count=len(rows) - 1)
    nxt = np.roll(di, -1)
    end = np.where(same_next, first_from[nxt], n)
    keep = (owed > 0) & ~(same_next & before[nxt]) & (start < end)
    np.add.at(out, (gi[keep], start[keep]), owed[keep])
    np.add.at(out, (gi[keep], np.minimum(end[keep], n)), -owed[keep])
    return np.cumsum(out, axis=1)[:, :n]


# ---------------------------------------------------------------- channels


def channels(store: Store, q: Query) -> Report:
    """Payments by channel kind and channel: count, amount, fees, share, average ticket, peak hour."""
    rows = store.payments_by_day(q.first, q.last, channel=q.channel, district=q.district, segment=q.segment,
                                 utc_offset_s=store.utc_offset_s)
    per: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    hours: dict[tuple[str, str], np.ndarray] = defaultdict(lambda: np.zeros(24, dtype=np.int64))
    period_total: dict[str, int] = defaultdict(int)
    for day, ch, kind, hour, reversed_, count, fen, fee in rows:
        p = period_of(day, q.by)
        k = (p, kind, ch)
        if reversed_:
            per[k]["reversed_count"] += int(count)
            per[k]["reversed_fen"] += int(fen)
            continue
        per[k]["count"] += int(count)
        per[k]["amount_fen"] += int(fen)
        per[k]["fee_fen"] += int(fee or 0)
        hours[(kind, ch)][int(hour)] += int(count)
        period_total[p] += int(fen)
    out = []
    for (p, kind, ch), v in sorted(per.items()):
        out.append({"period": p, "kind": kind, "channel": ch, "count": v["count"], "amount_fen": v["amount_fen"],
                    "fee_fen": v["fee_fen"], "share": _rate(v["amount_fen"], period_total[p]),
                    "avg_ticket_fen": v["amount_fen"] // v["count"] if v["count"] else None,
                    "reversed_count": v["reversed_count"], "reversed_fen": v["reversed_fen"]})
    total_fen = sum(period_total.values())
    summary = []
    for (kind, ch), h in sorted(hours.items()):
        cnt = sum(r["count"] for r in out if r["channel"] == ch)
        fen = sum(r["amount_fen"] for r in out if r["channel"] == ch)
        summary.append({"kind": kind, "channel": ch, "count": cnt, "amount_fen": fen,
                        "fee_fen": sum(r["fee_fen"] for r in out if r["channel"] == ch),
                        "share": _rate(fen, total_fen), "avg_ticket_fen": fen // cnt if cnt else None,
                        "peak_hour": int(np.argmax(h)) if h.any() else None})
    totals = {"count": sum(r["count"] for r in out), "amount_fen": total_fen,
              "fee_fen": sum(r["fee_fen"] for r in out)}
    rep = Report("channels", "Payments by channel", ["period", "kind", "channel", "count", "amount_fen", "fee_fen",
                                                    "share", "avg_ticket_fen", "reversed_count", "reversed_fen"],
                 out, totals, ["share: of the period's payments (reversed payments not counted)",
                               "peak hour: local hour with the most payments over the whole range"])
    rep.sections["by_channel"] = Report("by_channel", "Whole range by channel",
                                        ["kind", "channel", "count", "amount_fen", "fee_fen", "share",
                                         "avg_ticket_fen", "peak_hour"], summary, totals)
    return rep


# ---------------------------------------------------------------- speed


def _pcts(hist: dict[int, int]) -> dict[str, Any]:
    """p50/p95/p99 of the values a histogram ({value: how many}) holds, as np.percentile(...,
    method="higher") gives them over the values written out: a latency that was really seen,
    never an interpolation."""
    n = sum(hist.values())
    if not n:
        return {"n": 0, "p50_s": None, "p95_s": None, "p99_s": None}
    values = np.array(sorted(hist), dtype=np.int64)
    upto = np.cumsum([hist[v] for v in values.tolist()])
    # the position np.percentile takes for 'higher': ceil((n - 1) * q / 100), counted from 0
    pos = np.ceil((n - 1) * (np.array([50, 95, 99], dtype=np.float64) / 100)).astype(np.int64)
    p50, p95, p99 = (int(values[np.searchsorted(upto, k, side="right")]) for k in pos.tolist())
    return {"n": n, "p50_s": p50, "p95_s": p95, "p99_s": p99}


def speed(store: Store, q: Query) -> Report:
    """Payment to money on the meter, and payment to restore for cut customers, per channel."""
    lat: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for ch, s, count in store.payment_latencies(q.first, q.last, channel=q.channel, district=q.district,
                                                segment=q.segment):
        lat[ch][max(0, int(s))] += int(count)
    since = _day_start(store, q.first)
    until = _day_start(store, (_day(q.last, "to") + _dt.timedelta(days=1)).isoformat())
    rest: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for ch, s in store.payment_to_restore(since, until, channel=q.channel, district=q.district,
                                          segment=q.segment):
        rest[ch][max(0, int(s))] += 1
    out = []
    for ch in sorted(set(lat) | set(rest)):
        out.append({"channel": ch, "measure": "payment_to_meter", **_pcts(lat[ch])})
        if rest[ch]:
            out.append({"channel": ch, "measure": "payment_to_restore", **_pcts(rest[ch])})

    def merged(per: dict[str, dict[int, int]]) -> dict[int, int]:
        m: dict[int, int] = defaultdict(int)
        for h in per.values():
            for v, c in h.items():
                m[v] += c
        return m
    totals = {"payment_to_meter": _pcts(merged(lat)), "payment_to_restore": _pcts(merged(rest))}
    return Report("speed", "Speed of money", ["channel", "measure", "n", "p50_s", "p95_s", "p99_s"], out, totals,
                  ["payment_to_meter: acceptance to the meter's confirmation (local cost control)",
                   "payment_to_restore: acceptance to the first confirmed close of the customer's meter after it",
                   "statement day to reconciled: not measured until channel statements are reconciled"])


# ---------------------------------------------------------------- accounts


def accounts(store: Store, q: Query) -> Report:
    """Customers in credit / alarm 1 / alarm 2 / cut / protected by district; arrears ageing."""
    per: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    age: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    rows = store.account_states_and_ageing(store.now(), district=q.district, segment=q.segment)
    for district, state, days, count, protected, owed in rows:
        per[district][state] += int(count)
        per[district]["protected"] += int(protected)
        per[district]["accounts"] += int(count)
        if days is None:
            continue
        days = max(0, int(days))
        for lo, hi, label in AGEING:
            if days >= lo and (hi is None or days <= hi):
                age[district or "-"][label] += int(owed)
                age[district or "-"][label + "_n"] += int(count)
    out = [{"district": d or "-", "accounts": v["accounts"], **{s: v[s] for s in STATES},
            "protected": v["protected"]} for d, v in sorted(per.items())]
    totals = {k: sum(r[k] for r in out) for k in ("accounts", *STATES, "protected")}
    arows = [{"district": d, **{lab: v[lab] for _, _, lab in AGEING},
              **{f"{lab} accounts": v[lab + "_n"] for _, _, lab in AGEING}} for d, v in sorted(age.items())]
    rep = Report("accounts", "Accounts by state", ["district", "accounts", *STATES, "protected"], out, totals,
                 ["state now; ageing: fen owed by remote accounts below zero, by days since the balance went"
                  " below zero"])
    rep.sections["ageing"] = Report("ageing", "Arrears ageing (fen)",
                                    ["district", *[lab for _, _, lab in AGEING],
                                     *[f"{lab} accounts" for _, _, lab in AGEING]], arows,
                                    {lab: sum(r[lab] for r in arows) for _, _, lab in AGEING})
    return rep


# ---------------------------------------------------------------- operations


def operations(store: Store, q: Query) -> Report:
    """Cuts and restores per period, commands by outcome and retries, notices, meters not read."""
    since = _day_start(store, q.first)
    until = _day_start(store, (_day(q.last, "to") + _dt.timedelta(days=1)).isoformat())
    per: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    outcome: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for at, kind, status, attempts in store.commands_by_day(since, until):
        p = period_of(business_day(int(at), store.utc_offset_s), q.by)
        if status == "confirmed" and kind in CUT_KINDS:
            per[p]["cuts"] += 1
        if status == "confirmed" and kind in RESTORE_KINDS:
            per[p]["restores"] += 1
        per[p]["commands"] += 1
        o = outcome[(kind, status)]
        o["count"] += 1
        o["retries"] += max(0, int(attempts) - 1)
    out = [{"period": p, "cuts": v["cuts"], "restores": v["restores"], "commands": v["commands"]}
           for p, v in sorted(per.items())]
    rep = Report("operations", "Operations", ["period", "cuts", "restores", "commands"], out,
                 {k: sum(r[k] for r in out) for k in ("cuts", "restores", "commands")})
    rep.sections["commands"] = Report(
        "commands", "Commands by outcome", ["kind", "status", "count", "retries"],
        [{"kind": k, "status": s, "count": v["count"], "retries": v["retries"]} for (k, s), v in sorted(outcome.items())])
    rep.sections["notices"] = Report(
        "notices", "Notices by kind and delivery state", ["kind", "status", "count"],
        [{"kind": k, "status": s, "count": int(c)} for k, s, c in sorted(store.notices_by_kind(since, until))])
    stale_before = store.now() - q.stale_days * 86400
    rep.sections["not_read"] = Report(
        "not_read", f"Meters not read for {q.stale_days} days", ["meter", "customer", "last_seen"],
        [{"meter": a, "customer": c, "last_seen": s} for a, c, s in store.meters_not_read(stale_before)])
    return rep


REPORTS: dict[str, Callable[[Store, Query], Report]] = {
    "collection": collection, "channels": channels, "speed": speed, "accounts": accounts, "operations": operations,
}


def run_report(store: Store, name: str, q: Query) -> Report:
    """Run one report by name (see REPORTS) after checking its options."""
    if name not in REPORTS:
        raise ReportError(f"unknown report {name!r}; one of {', '.join(REPORTS)}", "name")
    check_query(store, q)
    return REPORTS[name](store, q)
