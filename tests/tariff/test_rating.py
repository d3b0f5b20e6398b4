import numpy as np
import pytest

from headend.tariff.kernel import rate
from headend.tariff.model import DAY, TariffBook, beijing, beijing_tou, meter_time, zhejiang
from headend.tariff.rating import plan, rate_batch
from headend.tariff.reference import SUBFEN, rate_reference


def quarter_hours(start: int, n: int) -> np.ndarray:
    return start + 900 * np.arange(n, dtype=np.int64)


def test_new_year_settlement_inside_a_batch_resets_at_the_first_interval_of_the_year():
    starts = quarter_hours(meter_time(2025, 12, 31, 23), 8)
    (piece,) = plan(beijing(), starts, prev_start=int(starts[0]) - 900)
    assert piece.resets.tolist() == [4]          # 00:00 on 1 January starts the new period
    assert piece.days_due == 1
    e = np.full((1, 8), 10, dtype=np.int32)
    got = rate_batch(beijing(), e, starts, int(starts[0]) - 900, [4_800_000], [0])
    # 40 Wh in tier 3 (+0.30) before the new year, 40 Wh in tier 1 after
    assert (got.energy_fen * SUBFEN + got.rem).tolist() == [40 * 7883 + 40 * 4883]
    assert got.ladder_wh.tolist() == [40]


def test_a_settlement_point_between_batches_resets_at_the_first_interval():
    prev = meter_time(2025, 12, 31, 23, 45)
    (piece,) = plan(beijing(), quarter_hours(meter_time(2026, 1, 1, 0, 0), 4), prev_start=prev)
    assert piece.resets.tolist() == [0]
    (piece,) = plan(beijing(), quarter_hours(meter_time(2026, 1, 1, 0, 15), 4), prev_start=meter_time(2026, 1, 1))
    assert piece.resets.tolist() == []


def test_fixed_daily_charge_is_due_once_per_day_across_batches():
    t = beijing(daily_fen=30)
    day0 = meter_time(2025, 5, 1)
    starts = quarter_hours(day0, 3 * 96)
    whole = rate_batch(t, np.zeros((2, starts.size), np.int32), starts, day0 - 900, [0, 0], [0, 0])
    assert whole.fixed_fen == 90 and whole.fen.tolist() == [90, 90]
    split = [rate_batch(t, np.zeros((1, starts[i:i + 50].size), np.int32), starts[i:i + 50], int(starts[i]) - 900,
                        [0], [0]).fixed_fen for i in range(0, starts.size, 50)]
    assert sum(split) == 90
    first = rate_batch(t, np.zeros((1, 2), np.int32), starts[5:7], None, [0], [0])
    assert first.fixed_fen == 30


def test_a_tariff_version_change_cuts_the_batch_and_carries_the_ladder():
    switch = meter_time(2025, 7, 1)
    book = TariffBook((beijing(0, 1), zhejiang(switch, 2)))
    starts = quarter_hours(switch - 4 * 900, 8)
    pieces = plan(book, starts, None)
    assert [(p.tariff.version, p.lo, p.hi) for p in pieces] == [(1, 0, 4), (2, 4, 8)]
    e = np.full((1, 8), 100, dtype=np.int32)
    got = rate_batch(book, e, starts, None, [2_760_000 - 100], [0])
    # 400 Wh Beijing tier 0; then Zhejiang (valley at 00:00) already above 2760 kWh: tier 1 at 0.338
    assert (got.energy_fen * SUBFEN + got.rem).tolist() == [400 * 4883 + 400 * 3380]


def test_kernel_reference_and_per_interval_agree_through_rate_batch():
    rng = np.random.default_rng(3)
    starts = quarter_hours(meter_time(2025, 12, 30), 3 * 96)
    e = rng.integers(0, 2000, (20, starts.size), dtype=np.int32)
    lad = rng.integers(2_000_000, 5_000_000, 20)
    rem = rng.integers(0, SUBFEN, 20)
    prev = int(starts[0]) - 900
    a = rate_batch(beijing_tou(), e, starts, prev, lad, rem)
    b = rate_batch(beijing_tou(), e, starts, prev, lad, rem, engine=rate_reference, per_interval=True)
    c = rate_batch(beijing_tou(), e, starts, prev, lad, rem, engine=rate, per_interval=True)
    assert np.array_equal(a.fen, b.fen) and np.array_equal(a.rem, b.rem) and np.array_equal(a.ladder_wh, b.ladder_wh)
    assert np.array_equal(b.per_interval, c.per_interval)
    assert np.array_equal(b.per_interval.sum(axis=1) + b.fixed_fen, b.fen)


def test_overlapping_or_unsorted_batches_are_refused():
    starts = quarter_hours(meter_time(2025, 1, 2), 4)
    with pytest.raises(ValueError, match="bill that energy twice"):
        plan(beijing(), starts, prev_start=int(starts[1]))
    with pytest.raises(ValueError, match="strictly increase"):
        plan(beijing(), starts[[0, 2, 1, 3]], None)
    with pytest.raises(ValueError, match="4 intervals"):
        rate_batch(beijing(), np.zeros((1, 3), np.int32), starts, None, [0], [0])
    assert plan(beijing(), starts[:0], None) == []
    assert DAY == 86400
