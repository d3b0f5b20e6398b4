"""The numba kernel and the NumPy version against the reference, which defines a correct bill."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from headend.tariff.kernel import rate
from headend.tariff.reference import SUBFEN, Bill, ladder_subfen, rate_reference
from tools.bench.tariff_numpy import rate_numpy

BEIJING = dict(prices=[4883] * 4, thr=[2_880_000, 4_800_000], inc=[0, 500, 3000])


def call(engine, e, slot, prices, thr, inc, resets, ladder, rem, **kw):
    return engine(np.asarray(e), np.asarray(slot), np.asarray(prices), np.asarray(thr, dtype=np.int64),
                  np.asarray(inc), np.asarray(resets, dtype=np.int64), np.asarray(ladder), np.asarray(rem), **kw)


def assert_same(ref, got, with_per=False):
    assert np.array_equal(ref.fen, got.fen)
    assert np.array_equal(ref.ladder_wh, got.ladder_wh)
    assert np.array_equal(ref.rem, got.rem)
    if with_per:
        assert np.array_equal(ref.per_interval, got.per_interval)


@st.composite
def batches(draw):
    n_acc = draw(st.integers(0, 6))
    n_int = draw(st.sampled_from([0, 1, 2, 3, 7, 24, 96]))
    n_thr = draw(st.integers(0, 6))
    # small thresholds so that random energy really crosses them, often mid-interval
    gaps = draw(st.lists(st.integers(1, 3000), min_size=n_thr, max_size=n_thr))
    thr = np.cumsum(gaps).astype(np.int64)
    inc = draw(st.lists(st.integers(0, 30000), min_size=n_thr + 1, max_size=n_thr + 1))
    prices = draw(st.lists(st.integers(0, 99999), min_size=4, max_size=4))
    slot = draw(hnp.arrays(np.int64, n_int, elements=st.integers(0, 3)))
    dtype = draw(st.sampled_from([np.int32, np.int64]))
    e = draw(hnp.arrays(dtype, (n_acc, n_int), elements=st.integers(0, 2000)))
    resets = sorted(draw(st.sets(st.integers(0, max(n_int - 1, 0)), max_size=3))) if n_int else []
    top = int(thr[-1]) + 2000 if n_thr else 5000
    ladder = draw(hnp.arrays(np.int64, n_acc, elements=st.integers(0, top)))
    rem = draw(hnp.arrays(np.int64, n_acc, elements=st.integers(0, SUBFEN - 1)))
    return e, slot, prices, thr, inc, resets, ladder, rem


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_kernel_and_numpy_equal_the_reference(batch):
    ref = call(rate_reference, *batch)
    assert_same(ref, call(rate, *batch))
    assert_same(ref, call(rate, *batch, per_interval=True), with_per=True)
    assert_same(ref, call(rate_numpy, *batch))
    assert np.array_equal(ref.per_interval.sum(axis=1), ref.fen)


@settings(max_examples=60, deadline=None)
@given(batches(), st.data())
def test_splitting_a_batch_never_changes_the_bill(batch, data):
    """README: fen debited = floor((rem0 + sum w*p) / SUBFEN) however the readings are batched."""
    e, slot, prices, thr, inc, resets, ladder, rem = batch
    n_int = e.shape[1]
    cut = data.draw(st.integers(0, n_int))
    whole = call(rate, *batch)
    first = call(rate, e[:, :cut], slot[:cut], prices, thr, inc, [r for r in resets if r < cut], ladder, rem)
    second = call(rate, e[:, cut:], slot[cut:], prices, thr, inc, [r - cut for r in resets if r >= cut],
                  first.ladder_wh, first.rem)
    assert np.array_equal(first.fen + second.fen, whole.fen)
    assert np.array_equal(second.rem, whole.rem) and np.array_equal(second.ladder_wh, whole.ladder_wh)


def test_tier_crossing_mid_interval_is_split_at_the_exact_wh():
    # 10 Wh left in tier 0, 30 Wh arrive: 10 at 0.4883 and 20 at 0.5383 yuan/kWh
    b = call(rate, [[30]], [2], **BEIJING, resets=[], ladder=[2_879_990], rem=[0])
    assert b.fen.tolist() == [1] and b.rem.tolist() == [10 * 4883 + 20 * 5383 - SUBFEN]
    assert b.ladder_wh.tolist() == [2_880_020]
    # the 2,880,000th Wh is still tier 0, the 2,880,001st is tier 1
    assert ladder_subfen(2_879_999, 1, [2_880_000], [0, 500]) == 0
    assert ladder_subfen(2_880_000, 1, [2_880_000], [0, 500]) == 500
    # one interval spanning all three tiers
    assert ladder_subfen(2_879_000, 2_000_000, [2_880_000, 4_800_000], [0, 500, 3000]) == \
        1000 * 0 + 1_920_000 * 500 + 79_000 * 3000


def test_settlement_inside_the_batch_resets_the_ladder():
    e = np.full((1, 4), 1000, dtype=np.int32)
    kw = dict(prices=[0] * 4, thr=[1500], inc=[0, 100])
    no_reset = call(rate, e, [0] * 4, **kw, resets=[], ladder=[0], rem=[0])
    reset = call(rate, e, [0] * 4, **kw, resets=[2], ladder=[0], rem=[0])
    # without reset 2500 Wh above 1500; with a reset before interval 2: 500 + 500 above
    assert (no_reset.fen * SUBFEN + no_reset.rem).tolist() == [2500 * 100]
    assert (reset.fen * SUBFEN + reset.rem).tolist() == [1000 * 100]
    assert reset.ladder_wh.tolist() == [2000]


def test_a_month_of_quarter_hours_for_many_accounts():
    rng = np.random.default_rng(7)
    n_int = 31 * 96
    e = rng.integers(0, 900, (40, n_int), dtype=np.int32)
    slot = rng.integers(0, 4, n_int)
    args = (e, slot, [8883, 6883, 4883, 2883], [2_880_000, 4_800_000], [0, 500, 3000], [n_int // 2],
            rng.integers(2_700_000, 4_900_000, 40), rng.integers(0, SUBFEN, 40))
    ref = call(rate_reference, *args)
    assert_same(ref, call(rate, *args, per_interval=True), with_per=True)
    assert_same(ref, call(rate, *args))
    assert_same(ref, call(rate_numpy, *args))
    out = Bill(*(np.full(40, -7, np.int64) for _ in range(3)), np.zeros((40, n_int), np.int64))
    for per_interval in (False, True):           # preallocated outputs are filled, not replaced
        got = call(rate, *args, per_interval=per_interval, out=out)
        assert got.fen is out.fen and got.rem is out.rem
        assert_same(ref, got, with_per=per_interval)


@st.composite
def per_interval_batches(draw):
    """Batches for the per-interval kernel's three ways: the running sub-fen under 2**31 (32-bit
    sum), over it (64-bit), and an interval whose fen could pass int16 (the batch in int64)."""
    n_acc = draw(st.integers(1, 5))
    n_int = draw(st.sampled_from([1, 5, 96, 200]))
    big = draw(st.sampled_from([2_000, 300_000, 40_000_000]))
    e = draw(hnp.arrays(np.int32, (n_acc, n_int), elements=st.integers(0, big)))
    thr = np.cumsum(draw(st.lists(st.integers(1, 10**8), min_size=0, max_size=3))).astype(np.int64)
    inc = draw(st.lists(st.integers(0, 30000), min_size=thr.size + 1, max_size=thr.size + 1))
    prices = draw(st.lists(st.integers(0, 99999), min_size=4, max_size=4))
    slot = draw(hnp.arrays(np.int64, n_int, elements=st.integers(0, 3)))
    resets = sorted(draw(st.sets(st.integers(0, n_int - 1), max_size=2)))
    ladder = draw(hnp.arrays(np.int64, n_acc, elements=st.integers(0, int(thr[-1]) + 10 if thr.size else 10)))
    rem = draw(hnp.arrays(np.int64, n_acc, elements=st.integers(0, SUBFEN - 1)))
    return e, slot, prices, thr, inc, resets, ladder, rem


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(per_interval_batches())
def test_per_interval_fen_equal_the_reference_small_or_large(batch):
    ref = call(rate_reference, *batch)
    got = call(rate, *batch, per_interval=True)
    assert_same(ref, got, with_per=True)
    # int16 when every interval surely fits it (the kernel bounds the Wh by their bitwise OR), int64
    # when one might not
    e, price = batch[0], max(batch[2]) + max(batch[4])
    fits = 1 + int(np.bitwise_or.reduce(e.ravel())) * price // SUBFEN < np.iinfo(np.int16).max
    surely_not = 1 + int(e.max()) * price // SUBFEN > np.iinfo(np.int16).max
    if fits:
        assert got.per_interval.dtype == np.int16
    elif surely_not:
        assert got.per_interval.dtype == np.int64


def test_per_interval_fen_in_each_of_the_kernels_ways():
    prices, thr, inc = [8883, 6883, 4883, 2883], [2_880_000, 4_800_000], [0, 500, 3000]
    slot = np.arange(96) % 4
    household = np.full((2, 96), 400, dtype=np.int32)          # a day: under 2**31 sub-fen
    mill = np.full((2, 96), 200_000, dtype=np.int32)           # over 2**31 sub-fen, each interval fits int16
    furnace = np.full((2, 96), 400_000, dtype=np.int32)        # 4,753 yuan a quarter hour: past int16
    for e, dtype in ((household, np.int16), (mill, np.int16), (furnace, np.int64)):
        args = (e, slot, prices, thr, inc, [], [0, 2_879_990], [0, SUBFEN - 1])
        got = call(rate, *args, per_interval=True)
        assert_same(call(rate_reference, *args), got, with_per=True)
        assert got.per_interval.dtype == dtype
    # a preallocated int16 array is filled when it can be, and replaced by int64 when it cannot
    out = Bill(*(np.zeros(2, np.int64) for _ in range(3)), np.zeros((2, 96), np.int16))
    assert call(rate, household, slot, prices, thr, inc, [], [0, 0], [0, 0], per_interval=True,
                out=out).per_interval is out.per_interval
    got = call(rate, furnace, slot, prices, thr, inc, [], [0, 0], [0, 0], per_interval=True, out=out)
    assert got.per_interval.dtype == np.int64
    assert_same(call(rate_reference, furnace, slot, prices, thr, inc, [], [0, 0], [0, 0]), got, with_per=True)



def test_a_price_and_increment_past_int32_are_exact_or_refused_per_interval():
    # the per-interval kernel prices a Wh at price + increment in 32 bits: a sum past 2**31 must
    # not wrap into a wrong bill
    e = np.full((1, 4), 3, dtype=np.int32)
    args = (e, [0, 1, 0, 1], [2_000_000_000, 5_000], [], [300_000_000], [], [0], [0])
    ref = call(rate_reference, *args)
    try:
        got = call(rate, *args, per_interval=True)
    except ValueError as exc:
        assert "int32" in str(exc) and "increment" in str(exc)
    else:
        assert_same(ref, got, with_per=True)

def test_empty_batches():
    for shape in ((0, 0), (0, 96), (3, 0)):
        e = np.zeros(shape, dtype=np.int32)
        b = call(rate, e, np.zeros(shape[1], np.int64), **BEIJING, resets=[], ladder=[5] * shape[0],
                 rem=[7] * shape[0])
        assert b.fen.tolist() == [0] * shape[0] and b.rem.tolist() == [7] * shape[0]
        assert b.ladder_wh.tolist() == [5] * shape[0]


def test_negative_energy_is_refused_with_account_and_interval():
    e = np.zeros((3, 5), dtype=np.int32)
    e[2, 3] = -4
    for engine in (rate, rate_numpy, rate_reference):
        with pytest.raises(ValueError, match="account 2 interval 3"):
            call(engine, e, [0] * 5, **BEIJING, resets=[], ladder=[0] * 3, rem=[0] * 3)


def test_a_batch_that_could_overflow_int64_is_refused():
    e = np.full((1, 4000), 2_000_000_000, dtype=np.int64)
    with pytest.raises(ValueError, match="split the batch"):
        call(rate, e, [0] * 4000, [999_999] * 4, [], [0], [], [0], [0])


@pytest.mark.parametrize("bad, words", [
    (dict(slot=[4, 0]), "outside the price table"),
    (dict(slot=[0]), "one slot per interval"),
    (dict(thr=[5, 3], inc=[0, 1, 2]), "strictly ascending"),
    (dict(inc=[0]), "one increment per tier"),
    (dict(resets=[2]), "reset positions"),
    (dict(rem=[SUBFEN]), "rem"),
    (dict(ladder=[-1]), "ladder_wh"),
])
def test_bad_core_arguments_are_named(bad, words):
    args = dict(e=np.ones((1, 2), np.int32), slot=[0, 1], prices=[1, 2, 3, 4], thr=[10], inc=[0, 1],
                resets=[], ladder=[0], rem=[0])
    args.update(bad)
    for engine in (rate, rate_reference, rate_numpy):
        with pytest.raises(ValueError, match=words):
            call(engine, *args.values())
