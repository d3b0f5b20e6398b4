"""Re-rating history after a tariff correction (``headend rate``).

For every remote-cost-control account, the stored forward-active register readings are turned
into intervals (one between each pair of consecutive readings, starting at the earlier one, with
the anomaly rules of ``headend.tariff.readings``) and rated with the account's tariff book from
the catalog.  The window ``[since, until)`` takes the intervals that *start* in it, plus the fixed
daily charges falling due in it.  To know the ladder energy at ``since`` the readings are rated
from one ladder period earlier (366 days for an annual ladder, 31 for a monthly one), so tier
crossings inside the window are exact.  The sub-fen remainder at the window's first interval is
the account's own, from the ledger row of the charge that rated up to that point (cost-control
cycles record it); only where the ledger does not hold it (older charges, a window starting
inside a batch) is it carried from the first reading, starting at 0, and then the result can
differ from the live account by under one fen (the row's problems say so).

``charged_fen`` is what the ledger already took for the window (``Store.charged_between``: a
cycle's charge counts in the window its last rated interval ends in, other charges where they
were booked; plus earlier ``rerate`` corrections of exactly this window); ``difference = rated -
charged`` is what the customer still owes (negative: is owed).  ``apply`` books each difference once (kind
``rerate``, idempotency key per account, window and amount), so a repeated run changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from headend.store import Store
from headend.tariff.model import DAY, TariffBook
from headend.tariff.rating import rate_batch
from headend.tariff.readings import intervals_from_registers

__all__ = ["ENERGY_DI", "CHINA_UTC_OFFSET", "RerateRow", "rerate", "apply_rerate", "to_meter_time"]

ENERGY_DI = "00010000"              # forward active energy, total (Wh in the store)
CHINA_UTC_OFFSET = 8 * 3600         # tariffs are in local time; the store keeps Unix seconds
_UNIX_2024 = 1_704_067_200  # 2024-01-01 00:00 UTC: the meters' epoch (firmware/meter/clock.py)


def to_meter_time(unix: np.ndarray | int, utc_offset_s: int = CHINA_UTC_OFFSET) -> np.ndarray:
    """Unix seconds -> meter time (local seconds since 2024-01-01)."""
    return np.asarray(unix, dtype=np.int64) - _UNIX_2024 + utc_offset_s


@dataclass
class RerateRow:
    """One account's re-rating result for the window."""

    customer: str
    tariff: str | None
    rated_fen: int = 0
    charged_fen: int = 0
    intervals: int = 0
    problems: list[str] = field(default_factory=list)
    skipped: str | None = None       # why the account could not be rated (then no difference)

    @property
    def difference_fen(self) -> int:
        return 0 if self.skipped else self.rated_fen - self.charged_fen

    def to_dict(self) -> dict:
        return {"customer": self.customer, "tariff": self.tariff, "rated_fen": self.rated_fen,
                "charged_fen": self.charged_fen, "difference_fen": self.difference_fen,
                "intervals": self.intervals, "problems": self.problems, "skipped": self.skipped}


def _lookback_s(book: TariffBook) -> int:
    days = 0
    for v in book.versions:
        if v.ladder is not None:
            days = max(days, 31 if v.ladder.monthly else 366)
    return days * DAY


def rerate(store: Store, catalog: Mapping[str, TariffBook], since: int, until: int,
           utc_offset_s: int = CHINA_UTC_OFFSET) -> list[RerateRow]:
    """Rate every remote account's intervals starting in ``[since, until)`` (Unix s); see module doc."""
    if until <= since:
        raise ValueError(f"the window must end after it starts (from {since}, to {until})")
    rows = []
    for customer, _bal, _rem, _lad, _until, _ver, tariff in store.rating_accounts():
        row = RerateRow(customer, tariff)
        rows.append(row)
        row.charged_fen = store.charged_between(customer, since, until) - sum(
            e.amount_fen for e in store.ledger(customer, limit=1_000_000)
            if e.kind == "rerate" and isinstance(e.detail, dict)
            and e.detail.get("from") == since and e.detail.get("to") == until)
        if tariff is None or tariff not in catalog:
            row.skipped = (f"tariff {tariff!r} is not in the catalog; set it with `headend customer` "
                           "or add it to the tariff file") if tariff else "the account has no tariff"
            continue
        book = catalog[tariff]
        start = since - _lookback_s(book)
        reads = []
        for m in store.meters_of_customer(customer):
            if m.mode != "remote":
                continue
            got = store.readings(m.address, ENERGY_DI, since=start, until=until)
            nxt = store.readings(m.address, ENERGY_DI, since=until, limit=1)
            reads += [(r.read_at, r.value, int(m.address)) for r in got + nxt if r.value is not None]
        reads.sort()
        if len(reads) < 2:
            row.skipped = "fewer than two energy readings: nothing to rate"
            continue
        at = np.array([r[0] for r in reads], dtype=np.int64)
        if np.any(np.diff(at) == 0):
            i = int(np.flatnonzero(np.diff(at) == 0)[0])
            row.problems.append(f"two readings at {int(at[i])} (meters {reads[i][2]} and {reads[i + 1][2]}): "
                                "the later meter's is used")
            keep = np.r_[np.diff(at) != 0, True]
            reads = [r for r, k in zip(reads, keep) if k]
            at = at[keep]
        regs = np.array([[r[1] for r in reads[1:]]], dtype=np.int64)
        mtrs = np.array([[r[2] for r in reads[1:]]], dtype=np.int64)
        got_e = intervals_from_registers(regs, mtrs, [reads[0][1]], [reads[0][2]])
        for p in got_e.problems:
            row.problems.append(f"{p.kind} at {int(at[p.interval + 1])}: {p.detail}")
        starts_unix = at[:-1]
        starts = to_meter_time(starts_unix, utc_offset_s)
        window = (starts_unix >= since) & (starts_unix < until)
        row.intervals = int(window.sum())
        rem0 = store.remainder_at(customer, int(starts_unix[window][0])) if row.intervals else None
        try:
            if rem0 is None:
                bill = rate_batch(book, got_e.energy_wh, starts, None, [0], [0], per_interval=True)
                assert bill.per_interval is not None
                energy_fen = int(bill.per_interval[0][window].sum())
                if row.intervals:
                    row.problems.append(f"the ledger holds no remainder at {int(starts_unix[window][0])}: "
                                        "carried from 0 at the first reading (may differ by under 1 fen)")
            else:
                # the ladder energy at the window from the lookback, the remainder from the ledger
                before = starts_unix < since
                k = int(before.sum())
                ladder = [0]
                if k:
                    ladder = rate_batch(book, got_e.energy_wh[:, :k], starts[:k], None, [0], [0]).ladder_wh
                inside = slice(k, k + row.intervals)
                bill = rate_batch(book, got_e.energy_wh[:, inside], starts[inside], int(starts[k - 1]) if k else None,
                                  ladder, [rem0])
                energy_fen = int(bill.energy_fen[0])
        except ValueError as exc:
            row.skipped = str(exc)
            continue
        due = np.r_[True, (starts[1:] // DAY) != (starts[:-1] // DAY)] & window
        fixed = sum(book.in_force(int(s)).daily_fen for s in starts[due])
        row.rated_fen = energy_fen + fixed
    return rows


def apply_rerate(store: Store, rows: list[RerateRow], since: int, until: int, *, actor: str) -> int:
    """Book every non-zero difference once; returns how many accounts were newly corrected."""
    applied = 0
    for row in rows:
        diff = row.difference_fen
        if diff == 0:
            continue
        _entry, new = store.credit(row.customer, -diff, actor=actor, kind="rerate",
                                   idem_key=f"rerate:{row.customer}:{since}:{until}:{diff}",
                                   detail={"from": since, "to": until, "rated_fen": row.rated_fen,
                                           "charged_fen": row.charged_fen, "tariff": row.tariff})
        applied += int(new)
    return applied
