import numpy as np
import pytest

from headend.tariff.model import (FLAT, PEAK, SHARP, VALLEY, DayTable, Ladder, Tariff, TariffBook, TariffError,
                                  beijing, beijing_tou, civil, meter_time, zhejiang)


def test_meter_time_matches_the_firmware_clock():
    from meter import clock
    for fields in ((2000, 1, 1), (2024, 2, 29, 23, 59), (2026, 11, 27, 17, 15, 7), (2099, 12, 31, 1)):
        assert meter_time(*fields) == clock.from_fields(*fields)
        y, mo, d, h, minute, wd = (int(v[0]) for v in civil(np.array([meter_time(*fields)])))
        cy, cmo, cd, ch, cmi, _cs, cwd = clock.to_fields(meter_time(*fields))
        assert (y, mo, d, h, minute, wd) == (cy, cmo, cd, ch, ch * 60 + cmi, cwd)


def tier_prices(t: Tariff, slot: int) -> list[int]:
    return [t.prices[slot] + inc for inc in t.ladder.increments]


def test_beijing_fixture_prices_and_thresholds():
    t = beijing()
    assert tier_prices(t, FLAT) == [4883, 5383, 7883]
    assert t.ladder.thresholds_wh == (2_880_000, 4_800_000)
    assert t.ladder.tier(2_880_000) == 0 and t.ladder.tier(2_880_001) == 1
    assert t.ladder.tier(4_800_000) == 1 and t.ladder.tier(4_800_001) == 2


def test_zhejiang_fixture_matches_the_provincial_table():
    t = zhejiang()
    assert tier_prices(t, FLAT) == [5380, 5880, 8380]
    assert tier_prices(t, PEAK) == [5680, 6180, 8680]
    assert tier_prices(t, VALLEY) == [2880, 3380, 5880]
    assert t.ladder.thresholds_wh == (2_760_000, 4_800_000)
    day = meter_time(2025, 6, 3)
    assert t.slot_at(day + 7 * 3600 + 59 * 60) == VALLEY
    assert t.slot_at(day + 8 * 3600) == PEAK
    assert t.slot_at(day + 21 * 3600 + 59 * 60) == PEAK
    assert t.slot_at(day + 22 * 3600) == VALLEY
    assert zhejiang(tou=False).slot_at(day + 9 * 3600) == FLAT


def test_day_table_wraps_midnight_and_vectorised_slots_agree():
    table = DayTable(((420, FLAT), (600, PEAK), (1380, VALLEY)))
    assert table.slot_at(0) == VALLEY        # before the first switch point: last slot holds
    assert table.slot_at(419) == VALLEY and table.slot_at(420) == FLAT and table.slot_at(1439) == VALLEY
    ms = table.minute_slots()
    assert [table.slot_at(m) for m in range(1440)] == ms.tolist()
    t = beijing_tou()
    starts = meter_time(2025, 3, 1) + np.arange(0, 3 * 86400, 900)
    assert t.slots(starts).tolist() == [t.slot_at(int(s)) for s in starts]
    assert {SHARP, PEAK, FLAT, VALLEY} == set(t.slots(starts).tolist())


def test_seasons_weekend_and_holidays_pick_the_day_table():
    summer = DayTable(((0, PEAK),))
    winter = DayTable(((0, VALLEY),))
    weekend = DayTable(((0, FLAT),))
    holiday = DayTable(((0, SHARP),))
    t = Tariff("s", 1, 0, (4, 3, 2, 1), day_tables=(winter, summer, weekend, holiday),
               zones=((4, 1, 1), (10, 1, 0)), weekend_days=(0, 6), weekend_table=2,
               holidays=(((2025, 10, 1), 3),))
    assert t.slot_at(meter_time(2025, 1, 15)) == VALLEY      # Wed, before the first zone: last zone (winter)
    assert t.slot_at(meter_time(2025, 4, 1)) == PEAK         # Tue, summer starts
    assert t.slot_at(meter_time(2025, 9, 30, 23)) == PEAK
    assert t.slot_at(meter_time(2025, 10, 2)) == VALLEY      # Thu, winter again
    assert t.slot_at(meter_time(2025, 6, 7)) == FLAT         # Saturday
    assert t.slot_at(meter_time(2025, 6, 8)) == FLAT         # Sunday
    assert t.slot_at(meter_time(2025, 10, 1)) == SHARP       # holiday beats zone


@pytest.mark.parametrize("make, words", [
    (lambda: DayTable(((600, PEAK), (600, FLAT))), "strictly increasing"),
    (lambda: DayTable(((600, PEAK), (300, FLAT))), "strictly increasing"),
    (lambda: DayTable(tuple((i, FLAT) for i in range(15))), "switch points"),
    (lambda: DayTable(((0, 4),)), "slot 4"),
    (lambda: DayTable.from_periods([("08:00", "12:00", PEAK), ("11:00", "08:00", VALLEY)]), "overlaps"),
    (lambda: DayTable.from_periods([("08:00", "12:00", PEAK), ("13:00", "08:00", VALLEY)]), "12:00 uncovered"),
    (lambda: Ladder((4_800_000, 2_880_000), (0, 500, 3000)), "strictly ascending"),
    (lambda: Ladder((2_880_000, 2_880_000), (0, 500, 3000)), "strictly ascending"),
    (lambda: Ladder((2_880_000,), (0, 500, 3000)), "one increment per tier"),
    (lambda: Ladder((0,), (0, 500)), "must be > 0"),
    (lambda: Ladder((1, 2, 3, 4, 5, 6, 7), tuple(range(8))), "at most 6"),
    (lambda: Ladder((1,), (0, 5), ((1, 1, 0), (0, 15, 0))), "mix annual"),
    (lambda: Ladder((1,), (0, 5), ((2, 30, 0),)), "day 1..28"),
    (lambda: Ladder((1,), (0, -5)), "increment 1"),
    (lambda: Tariff("x", 1, 0, (1, 2, 3)), "4 prices"),
    (lambda: Tariff("x", 1, 0, (1, 2, 3, -1)), "valley price"),
    (lambda: Tariff("x", 1, 0, (1, 2, 3, 4), zones=((6, 1, 0), (3, 1, 0))), "date order"),
    (lambda: Tariff("x", 1, 0, (1, 2, 3, 4), zones=((2, 30, 0),)), "not a valid date"),
    (lambda: Tariff("x", 1, 0, (1, 2, 3, 4), zones=((1, 1, 1),)), "day table 1"),
    (lambda: Tariff("x", 1, 0, (1, 2, 3, 4), weekend_days=(0,)), "weekend day table"),
    (lambda: Tariff("x", 1, 0, (1, 2, 3, 4), holidays=(((2025, 1, 1), 0), ((2025, 1, 1), 0))), "listed twice"),
    (lambda: Tariff("x", 1, 0, (1, 2, 3, 4), daily_fen=-1), "negative"),
    (lambda: TariffBook((beijing(0, 1), beijing(0, 2))), "same time"),
    (lambda: TariffBook((beijing(0, 2), beijing(100, 1))), "must increase"),
    (lambda: TariffBook(()), "at least one"),
])
def test_bad_tariffs_are_refused_with_a_clear_message(make, words):
    with pytest.raises(TariffError, match=words):
        make()


def test_versions_take_effect_at_their_effective_time():
    switch = meter_time(2025, 7, 1)
    book = TariffBook((beijing(0, 1), zhejiang(switch, 2)))
    assert book.in_force(switch - 1).version == 1
    assert book.in_force(switch).version == 2
    assert book.version_index(np.array([switch - 900, switch, switch + 900])).tolist() == [0, 1, 1]
    late = TariffBook((beijing(switch, 1),))
    with pytest.raises(TariffError, match="no tariff version in force"):
        late.in_force(switch - 1)


def test_settlement_period_ids_change_exactly_at_the_settlement_point():
    annual = Ladder((1,), (0, 1), ((1, 1, 0),))
    t = np.array([meter_time(2025, 12, 31, 23, 45), meter_time(2026, 1, 1, 0, 0), meter_time(2026, 6, 1)])
    ids = annual.period_ids(t)
    assert ids[0] != ids[1] and ids[1] == ids[2]
    monthly = Ladder((1,), (0, 1), ((0, 15, 8),))
    t = np.array([meter_time(2025, 3, 15, 7, 59), meter_time(2025, 3, 15, 8), meter_time(2025, 4, 15, 7),
                  meter_time(2025, 4, 15, 8)])
    ids = monthly.period_ids(t)
    assert ids[0] != ids[1] and ids[1] == ids[2] and ids[2] != ids[3]
