import datetime

from hypothesis import given, strategies as st

from meter import clock

EPOCH = datetime.datetime(2024, 1, 1)  # the meter epoch (times before it are negative)


@given(st.datetimes(min_value=datetime.datetime(2000, 1, 1), max_value=datetime.datetime(2099, 12, 31, 23, 59, 59)))
def test_round_trip_matches_calendar(dt):
    t = clock.from_fields(dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)
    assert t == (dt.replace(microsecond=0) - EPOCH) // datetime.timedelta(seconds=1)
    y, mo, d, h, mi, s, wd = clock.to_fields(t)
    assert (y, mo, d, h, mi, s) == (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)
    assert wd == (dt.weekday() + 1) % 7  # DL/T 645: 0 = Sunday


def test_valid_date_rejects_impossible_days():
    assert clock.valid_date(2024, 2, 29)
    assert not clock.valid_date(2025, 2, 29)
    assert not clock.valid_date(2025, 4, 31)
    assert not clock.valid_date(2025, 13, 1)
    assert not clock.valid_date(2023, 12, 31)  # before the meter epoch
