"""The interleaved ratio pairs adjacent runs, so a machine that slows down mid-run still
gives the true ratio of A to B."""

import pytest

from tools.bench.interleave import interleaved_values


def test_median_ratio_of_adjacent_pairs_survives_a_drifting_machine():
    # The machine gets slower every call; B always does half of A's rate at the same moment.
    speed = iter(range(100, 0, -1))
    seen = []

    def a():
        s = next(speed)
        seen.append(("a", s))
        return 2.0 * s

    def b():
        s = next(speed)
        seen.append(("b", s))
        return 1.0 * s

    r = interleaved_values(a, b, rounds=6)
    # Adjacent calls differ by one step of drift, so each pair is within 2x * (s / (s-1)).
    assert 1.9 < r.ratio < 2.1
    assert r.low <= r.ratio <= r.high
    assert [k for k, _ in seen] == ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b", "b", "a"]


def test_rounds_must_be_positive():
    with pytest.raises(ValueError, match="rounds"):
        interleaved_values(lambda: 1.0, lambda: 1.0, rounds=0)


def test_report_row_keeps_the_interleaved_ratio_and_its_spread():
    from tools.bench.interleave import Interleaved
    from tools.bench.run import reporter

    rows, lines = [], []
    report = reporter(rows, lines.append)
    pairs = Interleaved(a=50.0, b=100.0, ratio=0.48, low=0.41, high=0.55, rounds=7)
    report("kernel vs read bandwidth, same array", 50.0, "M readings/s", baseline=100.0, pairs=pairs)
    report("plain figure", 3.0, "s")
    assert rows[0] == {"name": "kernel vs read bandwidth, same array", "value": 50.0, "unit": "M readings/s",
                       "baseline": 100.0, "ratio": 0.48, "ratio_low": 0.41, "ratio_high": 0.55, "pairs": 7}
    assert "0.48x (median of 7 interleaved pairs, spread 0.41-0.55)" in lines[0]
    assert rows[1] == {"name": "plain figure", "value": 3.0, "unit": "s"}


def test_async_variant_alternates_and_pairs_the_same_way():
    import asyncio

    from tools.bench.interleave import interleaved_values_async

    seen = []
    speed = iter(range(100, 0, -1))

    async def a():
        seen.append("a")
        return 3.0 * next(speed)

    async def b():
        seen.append("b")
        return 1.0 * next(speed)

    r = asyncio.run(interleaved_values_async(a, b, rounds=4))
    assert seen == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert 2.9 < r.ratio < 3.1 and r.rounds == 4 and r.low <= r.ratio <= r.high


def test_group_rotates_the_order_and_pairs_each_side_with_the_first_of_its_round():
    from tools.bench.interleave import interleaved_group

    seen = []
    speed = iter(range(100, 0, -1))  # the machine slows down at every call

    def side(name, cost):
        def measure():
            seen.append(name)
            return cost * next(speed)
        return measure

    got = interleaved_group([side("a", 1.0), side("b", 2.0), side("c", 4.0)], rounds=3)
    assert seen == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert [g.rounds for g in got] == [3, 3, 3]
    assert got[0].ratio == got[0].low == got[0].high == 1.0
    # within a round the drift is at most two steps, so each side keeps its ratio to the first
    assert 1.9 < got[1].low <= got[1].ratio <= got[1].high < 2.1
    assert 3.8 < got[2].low <= got[2].ratio <= got[2].high < 4.2
    assert got[2].b == got[0].a


def test_group_needs_sides_and_rounds():
    from tools.bench.interleave import interleaved_group

    with pytest.raises(ValueError, match="rounds"):
        interleaved_group([lambda: 1.0], rounds=0)
    with pytest.raises(ValueError, match="side"):
        interleaved_group([], rounds=3)


def test_paired_sums_up_values_the_caller_took_in_the_same_rounds():
    from tools.bench.interleave import paired

    r = paired([2.0, 4.0, 9.0], [1.0, 2.0, 3.0])
    assert (r.a, r.b, r.ratio, r.low, r.high, r.rounds) == (4.0, 2.0, 2.0, 2.0, 3.0, 3)
    with pytest.raises(ValueError, match="as many values"):
        paired([1.0], [])
