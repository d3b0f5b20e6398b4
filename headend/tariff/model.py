"""Tariff model: TOU day tables, day-table selection, ladder, fixed charges, versions.

Units follow ``headend/tariff/README.md``: prices in 0.0001 yuan/kWh, energy in Wh, money in
fen.  Times are meter time (integer seconds since 2024-01-01 00:00 local, as the meters count),
so the head-end and the meter compare the same integers.

Every constructor validates and raises :class:`TariffError` naming the bad field and the fix;
a tariff that exists is a tariff that can be rated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

__all__ = [
    "SHARP", "PEAK", "FLAT", "VALLEY", "SLOT_NAMES", "TariffError", "DayTable", "Ladder", "Tariff",
    "TariffBook", "beijing", "beijing_tou", "zhejiang", "hhmm", "civil", "meter_time", "DAY",
]

SHARP, PEAK, FLAT, VALLEY = 0, 1, 2, 3
SLOT_NAMES = ("sharp", "peak", "flat", "valley")
DAY = 86400
MAX_SWITCH_POINTS = 14      # DL/T 698: 14 switch points per day table
MAX_DAY_TABLES = 8
MAX_ZONES = 14              # seasonal zones per year
MAX_HOLIDAYS = 254
MAX_THRESHOLDS = 6          # 6 thresholds, 7 increments (Wisdom Money.c)
MAX_SETTLEMENTS = 4
MAX_PRICE = 1_000_000       # 100 yuan/kWh: far above any tariff, keeps int64 sums exact (see kernel)

_EPOCH = np.datetime64("2024-01-01T00:00:00", "s")  # the meters' epoch (firmware/meter/clock.py)


class TariffError(ValueError):
    """A tariff definition that cannot be rated; the message names the field and the fix."""


def hhmm(text: str) -> int:
    """Minute of day for "HH:MM" (24:00 is accepted as the end of the day)."""
    h, _, m = text.partition(":")
    minute = int(h) * 60 + int(m or 0)
    if not 0 <= minute <= 1440:
        raise TariffError(f"time {text!r} is outside 00:00..24:00")
    return minute


def meter_time(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    """Meter time (s since 2024-01-01 local) for a civil date and time."""
    days = (np.datetime64(f"{y:04d}-{mo:02d}-{d:02d}", "D") - _EPOCH.astype("datetime64[D]")).astype(int)
    return int(days) * DAY + h * 3600 + mi * 60 + s


def civil(times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised (year, month, day, hour, minute_of_day, weekday 0=Sunday) of meter times."""
    t = np.asarray(times, dtype=np.int64)
    dt = _EPOCH + t.astype("timedelta64[s]")
    days = t // DAY
    y = dt.astype("datetime64[Y]").astype(np.int64) + 1970
    mo = dt.astype("datetime64[M]").astype(np.int64) % 12 + 1
    d = (dt.astype("datetime64[D]") - dt.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1
    sec = t - days * DAY
    return y, mo, d, sec // 3600, sec // 60, (days + 1) % 7  # 2024-01-01 was a Monday


def _check_date(what: str, mo: int, d: int, max_day: int = 31) -> None:
    if not (1 <= mo <= 12 and 1 <= d <= max_day):
        raise TariffError(f"{what}: month {mo} / day {d} is not a valid date (month 1..12, day 1..{max_day})")


@dataclass(frozen=True)
class DayTable:
    """One day's TOU schedule: switch points ``(minute_of_day, slot)``, strictly increasing.

    A slot holds from its switch point until the next one; before the first switch point of the
    day the last point's slot still holds (periods may cross midnight, as on real meters).
    """

    points: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        pts = tuple((int(m), int(s)) for m, s in self.points)
        object.__setattr__(self, "points", pts)
        if not 1 <= len(pts) <= MAX_SWITCH_POINTS:
            raise TariffError(f"day table has {len(pts)} switch points; give 1..{MAX_SWITCH_POINTS}")
        for i, (m, s) in enumerate(pts):
            if not 0 <= m < 1440:
                raise TariffError(f"day table switch point {i} at minute {m} is outside 0..1439")
            if s not in (SHARP, PEAK, FLAT, VALLEY):
                raise TariffError(f"day table switch point {i} has slot {s}; use 0 sharp, 1 peak, 2 flat, 3 valley")
            if i and m <= pts[i - 1][0]:
                raise TariffError(
                    f"day table switch points must be strictly increasing: point {i} at minute {m} "
                    f"is not after point {i - 1} at minute {pts[i - 1][0]} (overlapping periods?)")

    @classmethod
    def from_periods(cls, periods: Iterable[tuple[str | int, str | int, int]]) -> "DayTable":
        """Build from ``(start, end, slot)`` periods ("HH:MM" or minutes); they must tile the day exactly."""
        spans = []
        for start, end, slot in periods:
            a = hhmm(start) if isinstance(start, str) else int(start)
            b = hhmm(end) if isinstance(end, str) else int(end)
            a %= 1440
            b %= 1440
            if a == b:
                raise TariffError(f"period {start}-{end} is empty (a whole-day period is 00:00-24:00 of one slot: use one switch point)")
            spans.append((a, b, slot))
        covered = np.zeros(1440, dtype=np.int8)
        for a, b, _slot in spans:
            minutes = np.r_[a:b] if a < b else np.r_[a:1440, 0:b]
            if covered[minutes].any():
                m = int(minutes[covered[minutes] > 0][0])
                raise TariffError(f"period starting {a // 60:02d}:{a % 60:02d} overlaps another period at {m // 60:02d}:{m % 60:02d}")
            covered[minutes] = 1
        if not covered.all():
            m = int(np.flatnonzero(covered == 0)[0])
            raise TariffError(f"periods leave {m // 60:02d}:{m % 60:02d} uncovered; they must tile the whole day")
        return cls(tuple(sorted((a, s) for a, _b, s in spans)))

    def minute_slots(self) -> np.ndarray:
        """Slot of each of the 1440 minutes of the day (int8)."""
        out = np.full(1440, self.points[-1][1], dtype=np.int8)
        for i, (m, s) in enumerate(self.points):
            end = self.points[i + 1][0] if i + 1 < len(self.points) else 1440
            out[m:end] = s
        return out

    def slot_at(self, minute: int) -> int:
        """TOU slot in force at a minute of the day."""
        slot = self.points[-1][1]
        for m, s in self.points:
            if m <= minute:
                slot = s
        return slot


@dataclass(frozen=True)
class Ladder:
    """Ladder (阶梯): thresholds in Wh (ascending), one increment per tier, settlement points.

    ``settlements``: annual points ``(month, day, hour)`` or monthly points ``(0, day, hour)``;
    all annual or all monthly, at most 4, days 1..28 as on the meter.
    """

    thresholds_wh: tuple[int, ...]
    increments: tuple[int, ...]
    settlements: tuple[tuple[int, int, int], ...] = ((1, 1, 0),)

    def __post_init__(self) -> None:
        thr = tuple(int(x) for x in self.thresholds_wh)
        inc = tuple(int(x) for x in self.increments)
        st = tuple(tuple(int(v) for v in p) for p in self.settlements)
        object.__setattr__(self, "thresholds_wh", thr)
        object.__setattr__(self, "increments", inc)
        object.__setattr__(self, "settlements", st)
        if len(thr) > MAX_THRESHOLDS:
            raise TariffError(f"ladder has {len(thr)} thresholds; at most {MAX_THRESHOLDS}")
        for i, x in enumerate(thr):
            if x <= 0:
                raise TariffError(f"ladder threshold {i} is {x} Wh; thresholds must be > 0")
            if i and x <= thr[i - 1]:
                raise TariffError(f"ladder thresholds must be strictly ascending: threshold {i} ({x} Wh) "
                                  f"is not above threshold {i - 1} ({thr[i - 1]} Wh)")
        if len(inc) != len(thr) + 1:
            raise TariffError(f"ladder needs one increment per tier: {len(thr)} thresholds need "
                              f"{len(thr) + 1} increments, got {len(inc)}")
        for i, x in enumerate(inc):
            if not 0 <= x < MAX_PRICE:
                raise TariffError(f"ladder increment {i} = {x} is outside 0..{MAX_PRICE - 1} (0.0001 yuan/kWh)")
        if not 1 <= len(st) <= MAX_SETTLEMENTS:
            raise TariffError(f"ladder has {len(st)} settlement points; give 1..{MAX_SETTLEMENTS}")
        if len({p[0] == 0 for p in st}) != 1:
            raise TariffError("ladder settlement points mix annual (month 1..12) and monthly (month 0); use one kind")
        for i, p in enumerate(st):
            if len(p) != 3:
                raise TariffError(f"settlement point {i} must be (month or 0, day, hour)")
            mo, d, h = p
            if not (0 <= mo <= 12 and 1 <= d <= 28 and 0 <= h <= 23):
                raise TariffError(f"settlement point {i} {p}: need month 0..12 (0 = monthly), day 1..28, hour 0..23")
        if len(set(st)) != len(st):
            raise TariffError(f"ladder settlement points repeat: {st}")

    @property
    def monthly(self) -> bool:
        return self.settlements[0][0] == 0

    def tier(self, e_wh: int) -> int:
        """Tier of the Wh that brings the period's ladder energy to ``e_wh`` (README rule)."""
        for i, x in enumerate(self.thresholds_wh):
            if e_wh <= x:
                return i
        return len(self.thresholds_wh)

    def period_ids(self, times: np.ndarray) -> np.ndarray:
        """Settlement points passed since year 0: equal ids = same ladder period."""
        y, mo, d, h, _minute, _wd = civil(times)
        pts = sorted(self.settlements)
        if self.monthly:
            base = (y * 12 + mo - 1) * len(pts)
            key = d * 24 + h
            for _m, pd, ph in pts:
                base = base + (key >= pd * 24 + ph)
        else:
            base = y * len(pts)
            key = (mo * 32 + d) * 24 + h
            for pm, pd, ph in pts:
                base = base + (key >= (pm * 32 + pd) * 24 + ph)
        return base


@dataclass(frozen=True)
class Tariff:
    """One version of a tariff: TOU prices and tables, day-table selection, ladder, fixed charge."""

    name: str
    version: int
    effective: int                                   # meter time from which this version applies
    prices: tuple[int, int, int, int]                # sharp, peak, flat, valley: 0.0001 yuan/kWh
    day_tables: tuple[DayTable, ...] = (DayTable(((0, FLAT),)),)
    zones: tuple[tuple[int, int, int], ...] = ((1, 1, 0),)    # (month, day, day table) season starts
    weekend_days: tuple[int, ...] = ()              # weekdays 0=Sunday..6=Saturday
    weekend_table: int | None = None
    holidays: tuple[tuple[tuple[int, int, int], int], ...] = ()   # ((y, m, d), day table)
    ladder: Ladder | None = None
    daily_fen: int = 0                               # fixed charge, whole fen per day (head-end only)

    def __post_init__(self) -> None:
        if len(self.prices) != 4:
            raise TariffError(f"{self.name}: give 4 prices (sharp, peak, flat, valley), got {len(self.prices)}")
        prices = tuple(int(p) for p in self.prices)
        object.__setattr__(self, "prices", prices)
        for i, p in enumerate(prices):
            if not 0 <= p < MAX_PRICE:
                raise TariffError(f"{self.name}: {SLOT_NAMES[i]} price {p} is outside 0..{MAX_PRICE - 1} (0.0001 yuan/kWh)")
        if not 1 <= len(self.day_tables) <= MAX_DAY_TABLES:
            raise TariffError(f"{self.name}: {len(self.day_tables)} day tables; give 1..{MAX_DAY_TABLES}")
        n = len(self.day_tables)
        zones = tuple(tuple(int(v) for v in z) for z in self.zones)
        object.__setattr__(self, "zones", zones)
        if not 1 <= len(zones) <= MAX_ZONES:
            raise TariffError(f"{self.name}: {len(zones)} seasonal zones; give 1..{MAX_ZONES}")
        for i, (mo, d, k) in enumerate(zones):
            _check_date(f"{self.name}: zone {i}", mo, d, 29 if mo == 2 else 31)
            if not 0 <= k < n:
                raise TariffError(f"{self.name}: zone {i} uses day table {k}; only 0..{n - 1} exist")
            if i and (mo, d) <= zones[i - 1][:2]:
                raise TariffError(f"{self.name}: zones must be in date order without repeats: zone {i} "
                                  f"({mo:02d}-{d:02d}) is not after zone {i - 1}")
        if any(not 0 <= w <= 6 for w in self.weekend_days):
            raise TariffError(f"{self.name}: weekend days must be weekdays 0 (Sunday)..6 (Saturday)")
        if self.weekend_days and self.weekend_table is None:
            raise TariffError(f"{self.name}: weekend days given without a weekend day table")
        if self.weekend_table is not None and not 0 <= self.weekend_table < n:
            raise TariffError(f"{self.name}: weekend table {self.weekend_table}; only 0..{n - 1} exist")
        if len(self.holidays) > MAX_HOLIDAYS:
            raise TariffError(f"{self.name}: {len(self.holidays)} holidays; at most {MAX_HOLIDAYS}")
        seen = set()
        for (y, mo, d), k in self.holidays:
            _check_date(f"{self.name}: holiday {y}-{mo}-{d}", mo, d)
            if (y, mo, d) in seen:
                raise TariffError(f"{self.name}: holiday {y:04d}-{mo:02d}-{d:02d} is listed twice")
            seen.add((y, mo, d))
            if not 0 <= k < n:
                raise TariffError(f"{self.name}: holiday {y:04d}-{mo:02d}-{d:02d} uses day table {k}; only 0..{n - 1} exist")
        if self.ladder is not None:
            for i, inc in enumerate(self.ladder.increments):
                if max(prices) + inc >= MAX_PRICE:
                    raise TariffError(f"{self.name}: price + ladder increment {i} reaches {MAX_PRICE} (100 yuan/kWh)")
        if self.daily_fen < 0:
            raise TariffError(f"{self.name}: daily fixed charge {self.daily_fen} fen is negative")

    # -- per-interval views used by the rating core --------------------------------------------

    def price_array(self) -> np.ndarray:
        return np.array(self.prices, dtype=np.int64)

    def thresholds_array(self) -> np.ndarray:
        return np.array(self.ladder.thresholds_wh if self.ladder else (), dtype=np.int64)

    def increments_array(self) -> np.ndarray:
        return np.array(self.ladder.increments if self.ladder else (0,), dtype=np.int64)

    def day_table_index(self, y: int, mo: int, d: int, weekday: int) -> int:
        """Day table for a date: holiday first, then weekend, then the seasonal zone."""
        for date, k in self.holidays:
            if date == (y, mo, d):
                return k
        if weekday in self.weekend_days and self.weekend_table is not None:
            return self.weekend_table
        k = self.zones[-1][2]           # before the first zone start the last zone (from last year) holds
        for zm, zd, zk in self.zones:
            if (zm, zd) <= (mo, d):
                k = zk
        return k

    def slot_at(self, t: int) -> int:
        """TOU slot in force at meter time ``t``."""
        y, mo, d, _h, minute, wd = (int(v[0]) for v in civil(np.array([t])))
        return self.day_tables[self.day_table_index(y, mo, d, wd)].slot_at(minute)

    def slots(self, starts: np.ndarray) -> np.ndarray:
        """TOU slot of each interval, decided by its start time (README rule), int8."""
        starts = np.asarray(starts, dtype=np.int64)
        y, mo, d, _h, minute, wd = civil(starts)
        days = starts // DAY
        tables = [t.minute_slots() for t in self.day_tables]
        out = np.empty(starts.shape, dtype=np.int8)
        for day in np.unique(days):
            sel = days == day
            i = int(np.flatnonzero(sel)[0])
            k = self.day_table_index(int(y[i]), int(mo[i]), int(d[i]), int(wd[i]))
            out[sel] = tables[k][minute[sel]]
        return out


@dataclass(frozen=True)
class TariffBook:
    """All versions of one tariff, each in force from its ``effective`` time until the next."""

    versions: tuple[Tariff, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        vs = tuple(sorted(self.versions, key=lambda v: v.effective))
        object.__setattr__(self, "versions", vs)
        if not vs:
            raise TariffError("a tariff book needs at least one version")
        for a, b in zip(vs, vs[1:]):
            if a.effective == b.effective:
                raise TariffError(f"versions {a.version} and {b.version} take effect at the same time {a.effective}; "
                                  "give each version its own effective time")
            if b.version <= a.version:
                raise TariffError(f"version {b.version} takes effect after version {a.version}; "
                                  "version numbers must increase with the effective time")

    def in_force(self, t: int) -> Tariff:
        """The version in force at meter time ``t``."""
        current = None
        for v in self.versions:
            if v.effective <= t:
                current = v
        if current is None:
            raise TariffError(f"no tariff version in force at meter time {t}; the first takes effect at "
                              f"{self.versions[0].effective}")
        return current

    def version_index(self, starts: np.ndarray) -> np.ndarray:
        """Index into ``versions`` of the version in force at each start time."""
        eff = np.array([v.effective for v in self.versions], dtype=np.int64)
        idx = np.searchsorted(eff, np.asarray(starts, dtype=np.int64), side="right") - 1
        if idx.size and idx.min() < 0:
            raise TariffError(f"no tariff version in force at meter time {int(np.asarray(starts)[idx < 0][0])}; "
                              f"the first takes effect at {eff[0]}")
        return idx


# -- real fixtures (spec prepaid-meter.md §7) -----------------------------------------------------

_LADDER_INCREMENTS = (0, 500, 3000)   # +0.05 and +0.30 yuan/kWh, NDRC 2012 national rule


def beijing(effective: int = 0, version: int = 1, daily_fen: int = 0) -> Tariff:
    """Beijing residential: annual ladder 2880/4800 kWh, 0.4883/0.5383/0.7883 yuan/kWh, no TOU split."""
    return Tariff(
        name="beijing-residential", version=version, effective=effective,
        prices=(4883, 4883, 4883, 4883),
        ladder=Ladder((2_880_000, 4_800_000), _LADDER_INCREMENTS, ((1, 1, 0),)),
        daily_fen=daily_fen,
    )


def zhejiang(effective: int = 0, version: int = 1, tou: bool = True) -> Tariff:
    """Zhejiang residential, annual ladder 2760/4800 kWh; TOU peak 08:00-22:00, valley 22:00-08:00.

    Flat 0.538 and TOU peak 0.568 / valley 0.288 yuan/kWh plus +0.05 / +0.30 per tier
    (flat tiers 0.538/0.588/0.838, peak 0.568/0.618/0.868, valley 0.288/0.338/0.588).
    """
    table = DayTable.from_periods([("08:00", "22:00", PEAK), ("22:00", "08:00", VALLEY)])
    flat_table = DayTable(((0, FLAT),))
    return Tariff(
        name="zhejiang-residential-tou" if tou else "zhejiang-residential", version=version, effective=effective,
        prices=(5680, 5680, 5380, 2880),
        day_tables=(table if tou else flat_table,),
        ladder=Ladder((2_760_000, 4_800_000), _LADDER_INCREMENTS, ((1, 1, 0),)),
    )


def beijing_tou(effective: int = 0) -> Tariff:
    """A Beijing-ladder tariff with a 4-rate TOU day (for tests that need every slot)."""
    table = DayTable.from_periods([
        ("00:00", "07:00", VALLEY), ("07:00", "10:00", FLAT), ("10:00", "11:00", PEAK),
        ("11:00", "13:00", SHARP), ("13:00", "17:00", FLAT), ("17:00", "19:00", PEAK),
        ("19:00", "21:00", SHARP), ("21:00", "23:00", FLAT), ("23:00", "24:00", VALLEY),
    ])
    return Tariff(
        name="beijing-tou", version=1, effective=effective, prices=(8883, 6883, 4883, 2883),
        day_tables=(table,), ladder=Ladder((2_880_000, 4_800_000), _LADDER_INCREMENTS, ((1, 1, 0),)),
    )

