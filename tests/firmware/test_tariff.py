"""meter.tariff: TOU tables, year zones, two sets, ladder split and settlement, validation."""

import json
import re

import pytest
from hypothesis import given, settings, strategies as st

from meter import clock, desktop, powerup, tariffcheck
# the firmware's own values: module-private (const) there, so no interned names on a board
from meter.tariff import _LADDER_ANNUAL as LADDER_ANNUAL, _LADDER_MONTHLY as LADDER_MONTHLY
from meter.tariff import _LADDER_NONE as LADDER_NONE, _SW_DAYS as SW_DAYS, _SW_LADDER as SW_LADDER
from meter.tariff import _SW_PRICES as SW_PRICES, _SW_ZONES as SW_ZONES, Tariff
from meter.wallet import SUBFEN, Wallet

T2025 = clock.from_fields(2025, 1, 1)
YEAR = 365 * clock.DAY

minutes = st.integers(0, 1439)
rates = st.integers(0, 3)
day_tables = st.lists(st.tuples(minutes, rates), min_size=1, max_size=14,
                      unique_by=lambda p: p[0]).map(sorted)
times = st.integers(clock.from_fields(2000, 3, 1), clock.from_fields(2099, 10, 1))


@st.composite
def ladders(draw):
    n = draw(st.integers(0, 6))
    thr = sorted(draw(st.lists(st.integers(1, 5000), min_size=n, max_size=n, unique=True)))
    inc = draw(st.lists(st.integers(0, 9999), min_size=n + 1, max_size=n + 1))
    return thr, inc


def per_wh_cost(tou, thr, inc, start, wh):
    """The definition: each Wh priced at its tier after adding it."""
    cost = 0
    for e in range(start + 1, start + wh + 1):
        tier = next((i for i, t in enumerate(thr) if e <= t), len(thr))
        cost += tou + inc[tier]
    return cost


# --- defaults ---------------------------------------------------------------------------

def test_defaults_are_the_vendor_scheme():
    t = Tariff()
    assert t.current_prices(T2025) == [5000] * 4
    assert t.current_ladder(T2025) == ([2880000, 4800000], [0, 500, 3000])
    assert t.mode == LADDER_ANNUAL and t.settlement == [(1, 1, 0)]
    # 2,880,000th Wh still tier 0, the next one tier 1 (README example)
    assert t.charge(1, T2025, 2879999)[0] == 5000
    assert t.charge(1, T2025, 2880000)[0] == 5500
    assert t.charge(2, T2025, 4799999)[0] == 5500 + 8000


# --- ladder split -----------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(ladders(), st.integers(0, 6000), st.integers(0, 3000), st.integers(0, 99999))
def test_tier_split_matches_per_wh_loop(ladder, start, wh, price):
    thr, inc = ladder
    t = Tariff()
    tariffcheck.set_prices(t, 0, [price] * 4)
    tariffcheck.set_ladder(t, 0, thr, inc)
    cost, end, _ = t.charge(wh, T2025, start)
    assert end == start + wh
    assert cost == per_wh_cost(price, thr, inc, start, wh)


@settings(max_examples=150, deadline=None)
@given(ladders(), st.lists(st.integers(0, 800), max_size=20), st.data())
def test_any_batching_gives_the_same_charge(ladder, readings, data):
    thr, inc = ladder
    t = Tariff()
    tariffcheck.set_ladder(t, 0, thr, inc)
    now = T2025 + 3600
    whole, whole_e, _ = t.charge(sum(readings), now, 0)
    # split the same energy at arbitrary points and charge piece by piece
    pieces, e, total = [], 0, 0
    for r in readings:
        cut = data.draw(st.integers(0, r))
        pieces += [cut, r - cut]
    w_one, w_many = Wallet(hoard=0), Wallet(hoard=0)
    w_one.balance = w_many.balance = 10 ** 9
    for p in pieces:
        c, e, _ = t.charge(p, now, e)
        total += c
        w_many.deduct(c)
    w_one.deduct(whole)
    assert (total, e) == (whole, whole_e)
    assert (w_many.balance, w_many.rem) == (w_one.balance, w_one.rem)
    assert w_one.balance == 10 ** 9 - whole // SUBFEN


def test_no_ladder_when_settlement_invalid():
    t = Tariff()
    tariffcheck.set_settlement(t, [(99, 99, 99)])
    assert t.mode == LADDER_NONE
    assert t.charge(10, T2025, 5000000) == (50000, 5000010, 2)
    assert t.settle(T2025 + YEAR, T2025, 123) == 123


def test_trailing_zero_thresholds_are_unused():
    t = Tariff()
    tariffcheck.set_ladder(t, 0, [240000, 400000, 0, 0, 0, 0], [0, 500, 3000, 0, 0, 0, 0])
    assert t.thresholds[0] == [240000, 400000]
    assert t.charge(3, T2025, 399999) == (5500 + 2 * 8000, 400002, 2)
    tariffcheck.set_ladder(t, 0, [0] * 6, [7] + [0] * 6)
    assert t.thresholds[0] == [] and t.charge(3, T2025, 0)[0] == 3 * 5007


def test_increments_written_before_thresholds_are_kept():
    # the wire writes the two blocks one after the other, in either order
    t = Tariff()
    incs = [0, 100, 200, 300, 400, 500, 600]
    tariffcheck.set_ladder(t, 0, [2880000, 4800000, 0, 0, 0, 0], incs)
    tariffcheck.set_ladder(t, 0, [10, 20, 30, 40, 50, 60], list(t.increments[0]))
    assert t.increments[0] == incs
    assert t.charge(70, T2025, 0)[0] == sum(10 * (5000 + i) for i in incs)


# --- TOU --------------------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(day_tables, times)
def test_rate_at_follows_the_day_table(points, t):
    tar = Tariff()
    tariffcheck.set_day_table(tar, 0, 0, points)
    by_minute = [None] * 1440
    for i, (m, r) in enumerate(points):
        end = points[i + 1][0] if i + 1 < len(points) else 1440
        for k in range(m, end):
            by_minute[k] = r
    for k in range(points[0][0]):  # before the first point: the segment crossing midnight
        by_minute[k] = points[-1][1]
    assert tar.rate_at(t) == by_minute[t % clock.DAY // 60]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 12), st.integers(1, 28), st.integers(0, 7)),
                min_size=1, max_size=14, unique_by=lambda z: (z[0], z[1])).map(sorted), times)
def test_year_zones_select_the_day_table(zones, t):
    tar = Tariff()
    for k in range(8):
        tariffcheck.set_day_table(tar, 0, k, [(0, k % 4)])
    tariffcheck.set_zones(tar, 0, zones)
    _, mo, d = clock.civil_from_days(t // clock.DAY)
    started = [z for z in zones if (z[0], z[1]) <= (mo, d)]
    expected = (started[-1] if started else zones[-1])[2]
    assert tar.table_at(t) == expected
    assert tar.rate_at(t) == expected % 4


def test_zhejiang_tou_plus_ladder():
    # spec section 7 table: increments +0.05 / +0.30 on both flat and TOU prices
    t = Tariff()
    tariffcheck.set_prices(t, 0, [5680, 5680, 5380, 2880])
    tariffcheck.set_day_table(t, 0, 0, [(0, 3), (480, 1), (1320, 3)])  # valley 22-08, peak 08-22
    tariffcheck.set_ladder(t, 0, [2760000, 4800000], [0, 500, 3000])
    peak = clock.from_fields(2025, 6, 1, 9, 0)
    valley = clock.from_fields(2025, 6, 1, 23, 0)
    assert t.charge(1000, peak, 0) == (5680000, 1000, 1)
    assert t.charge(1000, valley, 2760000)[0] == 1000 * 3380
    assert t.charge(1000, peak, 5000000)[0] == 1000 * 8680


def test_backup_sets_take_over_at_switch_times_and_roll_keeps_prices():
    t = Tariff()
    tariffcheck.set_prices(t, 1, [9000, 8000, 7000, 6000])
    tariffcheck.set_day_table(t, 1, 3, [(0, 0), (720, 1)])
    tariffcheck.set_zones(t, 1, [(1, 1, 3)])
    tariffcheck.set_ladder(t, 1, [1000], [0, 100])
    sw = clock.from_fields(2025, 7, 1)
    for kind in (SW_ZONES, SW_DAYS, SW_PRICES, SW_LADDER):
        tariffcheck.set_switch(t, kind, sw)
    noon = sw + 13 * 3600
    assert t.charge(10, sw - 1, 0) == (50000, 10, 2)
    assert t.charge(10, sw, 0) == (90000, 10, 0)
    assert t.charge(10, noon, 995) == (5 * 8000 + 5 * 8100, 1005, 1)
    before = [t.charge(500, x, 800) for x in (sw - 1, sw, noon)]
    assert not t.roll(sw - 1)
    assert t.roll(sw) and t.switch == [None] * 4
    assert [t.charge(500, x, 800) for x in (sw, noon)] == before[1:]
    assert t.current_prices(sw - 1) == [9000, 8000, 7000, 6000]  # set 0 now holds the new prices


def test_holiday_beats_weekend_beats_zone():
    t = Tariff()
    tariffcheck.set_day_table(t, 0, 1, [(0, 3)])
    tariffcheck.set_day_table(t, 0, 2, [(0, 0)])
    tariffcheck.set_zones(t, 0, [(1, 1, 0), (7, 1, 1)])
    tariffcheck.set_weekend(t, 0b1000001, 2)  # Sunday and Saturday rest
    tariffcheck.set_holidays(t, [(2025, 10, 1, 1), (2025, 1, 4, 1)])
    at = {(2025, 1, 3): 0, (2025, 1, 4): 1, (2025, 1, 5): 2, (2025, 7, 2): 1, (2025, 10, 1): 1,
          (2025, 10, 4): 2, (2026, 1, 4): 2, (2026, 1, 5): 0}
    for (y, mo, d), table in at.items():
        assert t.table_at(clock.from_fields(y, mo, d, 12)) == table, (y, mo, d)
    assert tariffcheck.holiday_list(t) == [(2025, 1, 4, 1), (2025, 10, 1, 1)]
    assert desktop.tariff_dump(powerup.tariff_from(json.loads(json.dumps(desktop.tariff_dump(t))))) == desktop.tariff_dump(t)


def test_records_with_unpacked_tables_still_load():
    # the record layout before day tables and zones were packed
    t = Tariff()
    tariffcheck.set_day_table(t, 1, 4, [(0, 3), (480, 1)])
    tariffcheck.set_zones(t, 0, [(1, 1, 0), (6, 15, 4)])
    old = json.loads(json.dumps(desktop.tariff_dump(t)))
    old["d"] = [[[list(p) for p in t.day_table(s, k)] for k in range(8)] for s in range(2)]
    old["z"] = [[list(z) for z in zs] for zs in t.zones]
    assert old["d"][1][4] == [[0, 3], [480, 1]] and old["z"][0][1] == [6, 15, 4]
    assert desktop.tariff_dump(powerup.tariff_from(old)) == desktop.tariff_dump(t)


def test_full_tables_stay_small():
    # 16 tables x 14 points: the power-safe record must stay a few KB (it is written per reading)
    t = Tariff()
    for s in range(2):
        for k in range(8):
            tariffcheck.set_day_table(t, s, k, [(i * 100 + k, (i + k) % 4) for i in range(14)])
        tariffcheck.set_zones(t, s, [(m, 1 + s, m % 8) for m in range(1, 13)])
    assert t.day_table(1, 7)[13] == (1307, (13 + 7) % 4)
    assert t.zones[1][11] == (12, 2, 4)
    assert len(json.dumps(desktop.tariff_dump(t))) < 2500
    assert desktop.tariff_dump(powerup.tariff_from(json.loads(json.dumps(desktop.tariff_dump(t))))) == desktop.tariff_dump(t)


def test_records_without_weekend_or_holidays_still_load():
    obj = desktop.tariff_dump(Tariff())
    old = {k: v for k, v in obj.items() if k not in ("we", "ho")}
    assert desktop.tariff_dump(powerup.tariff_from(old)) == obj


# --- settlement -------------------------------------------------------------------------

settlements = st.one_of(
    st.tuples(st.integers(1, 12), st.integers(1, 28), st.integers(0, 23)),
    st.tuples(st.sampled_from([0, 99]), st.integers(1, 28), st.integers(0, 23)))


@settings(max_examples=60, deadline=None)
@given(st.lists(settlements, min_size=1, max_size=4), times, st.integers(1, 45 * 24))
def test_settle_resets_iff_a_settlement_point_is_in_the_interval(points, t, hours):
    # annual or monthly decided by the first point; in monthly mode every point's month is ignored
    tar = Tariff()
    tariffcheck.set_settlement(tar, points)
    annual = 1 <= points[0][0] <= 12
    assert tar.mode == (LADDER_ANNUAL if annual else LADDER_MONTHLY)
    last = t - hours * 3600 - t % 3600 + 1800  # half past: points are on the hour
    crossed = False
    for h in range(last // 3600 + 1, t // 3600 + 1):
        _, mo, d, hh, _, _, _ = clock.to_fields(h * 3600)
        for p in points:
            if (annual and p == (mo, d, hh)) or (not annual and (p[1], p[2]) == (d, hh)):
                crossed = True
    assert tar.settle(t, last, 777) == (0 if crossed else 777)


def test_settlement_point_belongs_to_the_new_period():
    tar = Tariff()
    ny = clock.from_fields(2026, 1, 1)
    assert tar.settle(ny, ny - 900, 5) == 0
    assert tar.settle(ny + 900, ny, 5) == 5
    assert tar.settle(ny - 1, ny - 900, 5) == 5
    tariffcheck.set_settlement(tar, [(0, 15, 6)])
    assert tar.mode == LADDER_MONTHLY
    mid = clock.from_fields(2025, 3, 15, 6)
    assert tar.settle(mid, mid - 1, 5) == 0 and tar.settle(mid - 1, mid - 2, 5) == 5
    assert tar.last_settlement(clock.from_fields(2025, 1, 10)) == clock.from_fields(2024, 12, 15, 6)


# --- validation -------------------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda t: tariffcheck.set_ladder(t, 0, [3000, 2000], [0, 1, 2]), "unsorted thresholds"),
    (lambda t: tariffcheck.set_ladder(t, 0, [1, 2, 3, 4, 5, 6, 7], [0] * 8), "over 6 thresholds"),
    (lambda t: tariffcheck.set_ladder(t, 0, [1, 2], [0, 1]), "need thresholds+1 increments"),
    (lambda t: tariffcheck.set_ladder(t, 0, [1, 2], [0] * 8), "need thresholds+1 increments"),
    (lambda t: tariffcheck.set_ladder(t, 0, [-1], [0, 1]), "bad threshold"),
    (lambda t: tariffcheck.set_day_table(t, 0, 0, [(m * 60, 1) for m in range(15)]), "over 14 points"),
    (lambda t: tariffcheck.set_day_table(t, 0, 0, [(0, 4)]), "bad rate index"),
    (lambda t: tariffcheck.set_day_table(t, 0, 0, [(600, 1), (300, 2)]), "unsorted points"),
    (lambda t: tariffcheck.set_day_table(t, 0, 0, [(1440, 1)]), "bad minute"),
    (lambda t: tariffcheck.set_day_table(t, 0, 8, [(0, 1)]), "bad day table"),
    (lambda t: tariffcheck.set_day_table(t, 2, 0, [(0, 1)]), "set_no must be 0 or 1"),
    (lambda t: tariffcheck.set_day_table(t, 0, 0, []), "empty day table"),
    (lambda t: tariffcheck.set_zones(t, 0, [(13, 1, 0)]), "bad zone month"),
    (lambda t: tariffcheck.set_zones(t, 0, [(5, 1, 0), (2, 1, 1)]), "unsorted zones"),
    (lambda t: tariffcheck.set_zones(t, 0, [(m, 1, 0) for m in range(1, 13)] + [(12, d, 0) for d in (5, 9, 20)]),
     "over 14 zones"),
    (lambda t: tariffcheck.set_prices(t, 0, [1, 2, 3]), "need 4 prices"),
    (lambda t: tariffcheck.set_prices(t, 0, [1, 2, 3, -4]), "bad price"),
    (lambda t: tariffcheck.set_settlement(t, [(1, 1, 0)] * 5), "over 4 settlement points"),
    (lambda t: tariffcheck.set_switch(t, 4, 0), "bad switch kind"),
    (lambda t: tariffcheck.set_weekend(t, 0x80, 0), "bad weekend mask"),
    (lambda t: tariffcheck.set_weekend(t, 1, 8), "bad day table"),
    (lambda t: tariffcheck.set_holidays(t, [(2025, 2, 29, 0)]), "bad holiday date"),
    (lambda t: tariffcheck.set_holidays(t, [(2025, 2, 1, 0), (2025, 2, 1, 1)]), "holiday listed twice"),
    (lambda t: tariffcheck.set_holidays(t, [(2025, 1, 1, 0)] * 255), "over 254 holidays"),
])
def test_bad_writes_raise_and_change_nothing(call, message):
    t = Tariff()
    before = snapshot(t)
    with pytest.raises(ValueError, match=re.escape(message)):
        call(t)
    assert snapshot(t) == before


def snapshot(t):
    # the attributes themselves, not their JSON form
    return json.loads(json.dumps([t.prices, t.days, t.zones, t.thresholds, t.increments,
                                  t.switch, t.settlement, t.mode, t.weekend, t.weekend_table, t.holidays]))


def test_every_change_shows_in_the_dump_and_marks_the_tariff_for_the_next_record():
    t = Tariff()
    changes = [lambda: tariffcheck.set_prices(t, 0, [1, 2, 3, 4]), lambda: tariffcheck.set_day_table(t, 1, 7, [(5, 0)]),
               lambda: tariffcheck.set_zones(t, 0, [(3, 1, 2)]), lambda: tariffcheck.set_ladder(t, 1, [9], [1, 2]),
               lambda: tariffcheck.set_switch(t, SW_DAYS, 100), lambda: tariffcheck.set_settlement(t, [(0, 3, 4)]),
               lambda: tariffcheck.set_weekend(t, 3, 4), lambda: tariffcheck.set_holidays(t, [(2030, 5, 1, 6)]),
               lambda: t.roll(100)]
    seen = [json.dumps(desktop.tariff_dump(t))]
    for change in changes:
        t.dirty = False
        change()
        assert t.dirty  # the next record packs the tariff anew, not a copy of the last one's
        seen.append(json.dumps(desktop.tariff_dump(t)))
    assert len(set(seen)) == len(seen)


def test_padded_day_table_from_the_wire_is_accepted():
    t = Tariff()
    tariffcheck.set_day_table(t, 0, 1, [(0, 3), (480, 1), (1320, 3)] + [(1320, 3)] * 11)
    assert t.days[0][1] == [(0, 3), (480, 1), (1320, 3)]


def test_dump_load_round_trip_through_json():
    t = Tariff()
    tariffcheck.set_prices(t, 1, [1, 2, 3, 4])
    tariffcheck.set_day_table(t, 0, 5, [(0, 1), (90, 0)])
    tariffcheck.set_zones(t, 1, [(2, 3, 5), (9, 1, 0)])
    tariffcheck.set_ladder(t, 0, [10, 20, 30], [1, 2, 3, 4])
    tariffcheck.set_ladder(t, 1, [40, 50, 0, 0, 0, 0], [5, 6, 7, 8, 9, 10, 11])  # as the wire writes it
    tariffcheck.set_switch(t, SW_PRICES, 12345)
    tariffcheck.set_switch(t, SW_LADDER, 5 * 10 ** 7)
    tariffcheck.set_settlement(t, [(0, 2, 3), (0, 17, 0)])
    again = powerup.tariff_from(json.loads(json.dumps(desktop.tariff_dump(t))))
    assert desktop.tariff_dump(again) == desktop.tariff_dump(t)
    for x in range(0, 10 ** 8, 7919 * 3600):
        assert again.charge(25, x, 15) == t.charge(25, x, 15)
        assert again.charge(25, x, 45) == t.charge(25, x, 45)


# --- agreement with the head-end's tariff core (headend/tariff/README.md: "to the fen") ---

def _meter_tariff_from(ht):
    t = Tariff()
    tariffcheck.set_prices(t, 0, list(ht.prices))
    for k, table in enumerate(ht.day_tables):
        tariffcheck.set_day_table(t, 0, k, list(table.points))
    tariffcheck.set_zones(t, 0, list(ht.zones))
    if ht.weekend_table is not None:
        tariffcheck.set_weekend(t, sum(1 << d for d in ht.weekend_days), ht.weekend_table)
    tariffcheck.set_holidays(t, [(y, mo, d, k) for (y, mo, d), k in ht.holidays])
    if ht.ladder is None:
        tariffcheck.set_settlement(t, [(99, 99, 99)])
    else:
        tariffcheck.set_ladder(t, 0, list(ht.ladder.thresholds_wh), list(ht.ladder.increments))
        tariffcheck.set_settlement(t, list(ht.ladder.settlements))
    return t


@st.composite
def headend_tariffs(draw):
    from headend.tariff import model as hm

    base = draw(st.sampled_from([hm.beijing_tou(), hm.zhejiang(), hm.zhejiang(tou=False), hm.beijing()]))
    if draw(st.booleans()):
        return base
    # weekend and holiday day tables on top of the fixture's own
    tables = base.day_tables + (hm.DayTable(((0, 3),)), hm.DayTable(((0, 0), (720, 1))))
    weekend = tuple(draw(st.sets(st.integers(0, 6), max_size=3)))
    holidays = draw(st.lists(st.tuples(st.tuples(st.integers(2025, 2027), st.integers(1, 12), st.integers(1, 28)),
                                       st.sampled_from([0, len(tables) - 1])),
                             min_size=1, max_size=20, unique_by=lambda h: h[0]))
    # same TOU, another ladder: monthly or annual, up to 4 settlement points, small thresholds
    monthly = draw(st.booleans())
    pts = draw(st.lists(st.tuples(st.just(0) if monthly else st.integers(1, 12), st.integers(1, 28),
                                  st.integers(0, 23)), min_size=1, max_size=4, unique=True))
    n = draw(st.integers(0, 6))
    thr = sorted(draw(st.lists(st.integers(1, 400000), min_size=n, max_size=n, unique=True)))
    inc = draw(st.lists(st.integers(0, 5000), min_size=n + 1, max_size=n + 1))
    return hm.Tariff(name="x", version=1, effective=0, prices=base.prices, day_tables=tables,
                     zones=base.zones, weekend_days=weekend, weekend_table=len(tables) - 2 if weekend else None,
                     holidays=tuple(holidays), ladder=hm.Ladder(tuple(thr), tuple(inc), tuple(pts)))


@settings(max_examples=60, deadline=None)
@given(headend_tariffs(), st.lists(st.tuples(st.sampled_from([900, 3600, 6 * 3600, 9 * 86400 + 1800]),
                                             st.integers(0, 60000)), min_size=1, max_size=80),
       st.integers(0, 5000000), st.integers(0, SUBFEN - 1), st.integers(T2025, T2025 + 2 * YEAR), st.data())
def test_meter_and_headend_agree_to_the_fen(ht, readings, ladder0, rem0, t0, data):
    import dataclasses

    import numpy as np

    from headend.tariff.rating import rate_batch
    from headend.tariff.reference import rate_reference

    starts, t = [], t0
    for gap, _ in readings:
        t += gap
        starts.append(t)
    energy = [wh for _, wh in readings]
    if ht.holidays:  # make some of the reading days holidays, so they are really exercised
        days = sorted({clock.civil_from_days(x // clock.DAY) for x in starts})
        picked = data.draw(st.lists(st.sampled_from(days), max_size=6, unique=True))
        ht = dataclasses.replace(ht, holidays=tuple((d, len(ht.day_tables) - 1) for d in picked))
    bill = rate_batch(ht, np.array([energy]), np.array(starts), t0, np.array([ladder0]), np.array([rem0]),
                      engine=rate_reference)

    tar = _meter_tariff_from(ht)
    w = Wallet(hoard=0)
    w.balance, w.rem = 10 ** 10, rem0
    lw, last = ladder0, t0
    for t, wh in zip(starts, energy):
        lw = tar.settle(t, last, lw)
        cost, lw, rate = tar.charge(wh, t, lw)
        assert rate == ht.slot_at(t)
        w.deduct(cost)
        last = t
    assert 10 ** 10 - w.balance == int(bill.energy_fen[0])
    assert (w.rem, lw) == (int(bill.rem[0]), int(bill.ladder_wh[0]))
