"""The remote cost-control decision: balances + limits + flags + time rules -> what to do, and why.

Pure and whole-array (one call decides a million accounts).  Per account, after this cycle's
debit, with ``R`` the balance (fen), limits as on the meter (spec prepaid-meter.md §3):

* **band**: 3 if ``R <= -overdraft`` (the trip level), 2 if ``alarm2 > 0 and R <= alarm2``,
  1 if ``alarm1 > 0 and R <= alarm1``, else 0.
* **notices** go up one band at a time as the balance falls: band above the last notice level ->
  alarm-1 notice, alarm-2 notice, or *cut notice* (band 3).  A balance that recovers lowers the
  level silently, so the next fall notifies again.
* **trip** needs band 3, a cut notice sent at least ``notice_period_s`` ago, and none of: the
  customer is protected (power hold, vulnerable customer), trips are disabled, it is night, or it
  is a no-trip day (holiday or configured weekday).  Each blocked trip is decided as ``HOLD``
  with the reason, so the record says why the supply stayed on.
* **restore** after a cut: when ``R > close_ok`` -> close permitted (the customer presses the
  button) or direct close where the operator chose it for that account.

Supply state codes follow the store: 0 on, 1 cut, 2 close permitted (treated as on for trips).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["Rules", "Decisions", "decide", "ACTIONS", "REASONS", "SUPPLY", "describe",
           "NONE", "NOTICE1", "NOTICE2", "CUT_NOTICE", "TRIP", "HOLD", "CLOSE_PERMIT", "DIRECT_CLOSE",
           "ON", "CUT", "CLOSE_PERMITTED"]

# actions
NONE, NOTICE1, NOTICE2, CUT_NOTICE, TRIP, HOLD, CLOSE_PERMIT, DIRECT_CLOSE = range(8)
ACTIONS = ("none", "alarm1_notice", "alarm2_notice", "cut_notice", "trip", "hold", "close_permitted",
           "direct_close")
# supply states (same order as headend.store.models.SUPPLY_STATES)
ON, CUT, CLOSE_PERMITTED = 0, 1, 2
SUPPLY = ("on", "cut", "close_permitted")

# reasons
(R_OK, R_ALARM1, R_ALARM2, R_TRIP_LEVEL, R_TRIPPED, R_PROTECTED, R_DISABLED, R_NOTICE_PERIOD, R_NIGHT,
 R_NO_TRIP_DAY, R_PAID, R_STILL_LOW, R_RECOVERED) = range(13)
REASONS = (
    "balance healthy",
    "balance at or below alarm amount 1",
    "balance at or below alarm amount 2",
    "balance at or below minus the overdraft limit: cut notice, trip after the notice period",
    "balance at or below minus the overdraft limit after the notice period: trip",
    "trip due but the customer is protected: never tripped",
    "trip due but trips are disabled",
    "trip due but the notice period has not passed",
    "trip due but it is night: no trips",
    "trip due but it is a holiday or no-trip day",
    "payment lifted the balance above the close-permitted amount",
    "supply cut: balance not above the close-permitted amount yet",
    "balance recovered: notice level lowered",
)


@dataclass(frozen=True)
class Rules:
    """When a due trip may be carried out (the ``[costctl]`` config section)."""

    trips: bool = True                       # False: never trip (notices only)
    notice_period_s: int = 86400             # cut notice at least this long before a trip
    night_start_min: int = 20 * 60           # no trips from 20:00 ...
    night_end_min: int = 8 * 60              # ... until 08:00 (start == end: no night rule)
    no_trip_weekdays: tuple[int, ...] = ()   # 0=Sunday..6=Saturday
    holidays: tuple[tuple[int, int, int], ...] = ()   # (year, month, day)

    def __post_init__(self) -> None:
        if self.notice_period_s < 0:
            raise ValueError(f"notice_period_s must be >= 0, got {self.notice_period_s}")
        for name in ("night_start_min", "night_end_min"):
            if not 0 <= getattr(self, name) < 1440:
                raise ValueError(f"{name} must be a minute of the day 0..1439, got {getattr(self, name)}")
        if any(not 0 <= d <= 6 for d in self.no_trip_weekdays):
            raise ValueError("no_trip_weekdays are 0 (Sunday)..6 (Saturday)")

    def quiet(self, minute_of_day: int, weekday: int, date: tuple[int, int, int]) -> int:
        """Reason code why no trip may happen now, or R_OK."""
        a, b = self.night_start_min, self.night_end_min
        night = (a <= minute_of_day < b) if a < b else (a != b and (minute_of_day >= a or minute_of_day < b))
        if night:
            return R_NIGHT
        if weekday in self.no_trip_weekdays or tuple(date) in {tuple(h) for h in self.holidays}:
            return R_NO_TRIP_DAY
        return R_OK


class Decisions(NamedTuple):
    """Per account: the action, its reason, and the cost-control state to store."""

    action: np.ndarray           # int8 ACTIONS code
    reason: np.ndarray           # int8 REASONS code
    notice_level: np.ndarray     # int8 new notice level 0..3
    notice_at: np.ndarray        # int64 time of the last notice (-1 none)
    supply: np.ndarray           # int8 new supply state


def decide(balance_fen: ArrayLike, alarm1_fen: ArrayLike, alarm2_fen: ArrayLike, overdraft_fen: ArrayLike,
           close_ok_fen: ArrayLike, protected: ArrayLike, direct_close: ArrayLike, notice_level: ArrayLike,
           notice_at: ArrayLike, supply: ArrayLike, now: int, local: tuple[int, int, tuple[int, int, int]],
           rules: Rules = Rules()) -> Decisions:
    """Decide every account at once (see module doc).

    ``now`` and ``notice_at`` are in one time unit of seconds (-1: no notice yet); ``local`` is
    (minute of day, weekday 0=Sunday, (y, m, d)) of now in local time, for the night/holiday rules.
    """
    r = np.asarray(balance_fen, dtype=np.int64)
    n = r.shape[0]
    a1, a2, od, cp = (np.broadcast_to(np.asarray(x, dtype=np.int64), (n,))
                      for x in (alarm1_fen, alarm2_fen, overdraft_fen, close_ok_fen))
    prot = np.broadcast_to(np.asarray(protected, dtype=bool), (n,))
    direct = np.broadcast_to(np.asarray(direct_close, dtype=bool), (n,))
    level = np.asarray(notice_level, dtype=np.int8)
    at = np.asarray(notice_at, dtype=np.int64)
    sup = np.asarray(supply, dtype=np.int8)
    if min(od.min(initial=0), a1.min(initial=0), a2.min(initial=0), cp.min(initial=0)) < 0:
        raise ValueError("limits are fen >= 0 (the overdraft limit is how far below zero a balance may go)")
    if level.shape != (n,) or at.shape != (n,) or sup.shape != (n,):
        raise ValueError(f"notice_level, notice_at and supply need one value per account ({n})")

    band = np.where(r <= -od, 3, np.where((a2 > 0) & (r <= a2), 2, np.where((a1 > 0) & (r <= a1), 1, 0)))
    band = band.astype(np.int8)
    cut = sup == CUT
    action = np.full(n, NONE, dtype=np.int8)
    reason = np.full(n, R_OK, dtype=np.int8)
    new_level = level.copy()
    new_at = at.copy()
    new_sup = sup.copy()

    # falling: one notice for the band reached (also while cut: the customer must still be told)
    up = band > level
    notice = np.array([NONE, NOTICE1, NOTICE2, CUT_NOTICE], dtype=np.int8)[band]
    why = np.array([R_OK, R_ALARM1, R_ALARM2, R_TRIP_LEVEL], dtype=np.int8)[band]
    action[up] = notice[up]
    reason[up] = why[up]
    new_level[up] = band[up]
    new_at[up] = now
    down = band < level
    new_level[down] = band[down]
    reason[down & ~cut] = R_RECOVERED

    # trip: band 3, cut notice already standing (not sent just now), supply not yet cut
    due = (band == 3) & ~up & ~cut
    quiet = R_DISABLED if not rules.trips else rules.quiet(*local)
    blocked = np.full(n, R_OK, dtype=np.int8)
    if quiet != R_OK:
        blocked[:] = quiet
    blocked[(now - at) < rules.notice_period_s] = R_NOTICE_PERIOD
    blocked[prot] = R_PROTECTED
    go = due & (blocked == R_OK)
    hold = due & ~go
    action[go] = TRIP
    reason[go] = R_TRIPPED
    new_sup[go] = CUT
    action[hold] = HOLD
    reason[hold] = blocked[hold]

    # restore after payment
    paid = cut & (r > cp)
    action[paid & direct] = DIRECT_CLOSE
    action[paid & ~direct] = CLOSE_PERMIT
    reason[paid] = R_PAID
    new_sup[paid & direct] = ON
    new_sup[paid & ~direct] = CLOSE_PERMITTED
    still = cut & ~paid & ~up
    reason[still] = R_STILL_LOW
    return Decisions(action, reason, new_level, new_at, new_sup)


def describe(d: Decisions, i: int) -> str:
    """One account's decision as text, for the record."""
    return f"{ACTIONS[d.action[i]]}: {REASONS[d.reason[i]]}"
