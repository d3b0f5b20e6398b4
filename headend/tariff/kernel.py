"""The tariff core: numba kernel, one account per ``prange`` row, exactly equal to reference.py.

Theory of operation.  The batch is cut at the settlement reset positions into segments that
share one ladder period.  For each account and segment one pass sums the energy ``sw`` and the
TOU cost ``sp = Σ w·price[slot[t]]`` (a loop LLVM vectorises).  If the first and the last Wh of
the segment fall in the same ladder tier -- almost always -- the ladder part is simply
``sw · increment[tier]``.  Only a segment that crosses a threshold is walked again interval by
interval, splitting at the exact Wh (same rule as reference.py).  Sub-fen are summed and cut into
fen once per account: ``floor((rem0 + Σ u) / SUBFEN)`` is what the per-interval carry gives, so
batching never changes a bill (README).  With ``per_interval=True`` a second kernel records the
fen debited at each interval: the step of ``floor((rem0 + Σ u up to t) / SUBFEN)``, which is
exactly what the carry interval by interval gives.  Those are written as int16 (a household's
quarter hour costs well under 327 yuan), a quarter of the bytes of int64; a batch in which some
interval could cost more comes back in int64.  What held that kernel back was its serial loop (a
64-bit division per interval, one after the other): the running sum is now the only serial part.

Speed: the TOU price per interval is a table of int64 holding int32 values and the product is
written ``int64(w) * int64(int32(price))``, so LLVM uses a 32x32->64 SIMD multiply (AVX2, four
int64 lanes) that reads the prices straight from memory.  The loop is then compute-bound, not
memory-bound: about 1.44 instructions per reading (1.69 with an int32 price table, which needs a
widening shuffle per vector) against 0.69 for a plain streaming sum of the same array
(``python -m tools.bench.kernel_asm``): per four readings one widening load of the energy, the
multiply, and three adds/ORs for the cost, the energy and the bad-data check.  That puts it near
half the machine's read bandwidth per thread (tools/bench/bench_tariff.py).

Bad rows: each row also ORs its energies together (one SIMD op per vector).  A negative value,
a bound ``OR · max_price · intervals`` that could pass 2**62 (exact int64 no longer certain), or a
state outside its range marks the row's fen negative; the wrapper then raises naming the account.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from numba import get_num_threads, njit, prange, set_num_threads  # pyright: ignore[reportMissingImports]

from headend.tariff.reference import SUBFEN, Bill, check_inputs

__all__ = ["rate", "segments_of", "prepare", "get_num_threads", "set_num_threads", "PER_INTERVAL_DTYPE"]

_LIMIT = 1 << 62
# fen per interval: int16 holds any interval under 32,766 fen (at 1.2 yuan/kWh, 270 kWh in a quarter
# hour), a quarter of int64's memory traffic; a batch with a larger one comes back as int64
PER_INTERVAL_DTYPE = np.int16


@njit(cache=True, inline="always")
def _tier(e, thr):
    k = 0
    while k < thr.size and e > thr[k]:
        k += 1
    return k


@njit(cache=True)
def _ladder_subfen(e, w, thr, inc):
    cost = 0
    left = w
    k = _tier(e + 1, thr)
    while left > 0:
        n = left
        if k < thr.size and thr[k] - e < n:
            n = thr[k] - e
        cost += n * inc[k]
        e += n
        left -= n
        k += 1
    return cost


_BAD_ENERGY, _TOO_BIG, _BAD_STATE, _TOO_WIDE = -1, -2, -3, -4   # fen[a] flags: fen is never negative otherwise


@njit(parallel=True, cache=True)
def _rate_rows(energy, pt, seg, seg_reset, thr, inc, ladder0, rem0, limit_w, fen, ladder1, rem1):
    nseg = seg.size - 1
    for a in prange(energy.shape[0]):          # row a writes only slot a of each output: no race
        e = ladder0[a]
        acc = rem0[a]
        if e < 0 or acc < 0 or acc >= SUBFEN:
            fen[a] = _BAD_STATE
            continue
        bits = 0
        for s in range(nseg):
            # unsigned bounds: numba then drops its negative-index wraparound, which blocks SIMD
            lo = np.uint64(seg[s])
            hi = np.uint64(seg[s + 1])
            if seg_reset[s]:
                e = 0
            sw = 0
            sp = 0
            sb = 0
            for t in range(lo, hi):
                w = energy[a, t]
                sw += w
                # pt is int64 holding int32 values: sext(trunc) tells LLVM so, and its 32x32->64 SIMD
                # multiply then reads the low halves straight from memory (no widening shuffle)
                sp += np.int64(w) * np.int64(np.int32(pt[t]))
                sb |= w
            bits |= sb
            if sb == 0:
                continue
            k = _tier(e + 1, thr)
            if sb > 0 and k == _tier(e + sw, thr):
                acc += sp + sw * inc[k]
                e += sw
            else:                              # crosses a threshold (or bad data): exact walk
                for t in range(lo, hi):
                    w = np.int64(energy[a, t])
                    if w > 0:
                        acc += w * np.int64(pt[t]) + _ladder_subfen(e, w, thr, inc)
                        e += w
        if bits < 0:
            fen[a] = _BAD_ENERGY
        elif bits > limit_w:
            fen[a] = _TOO_BIG
        else:
            f = acc // SUBFEN
            fen[a] = f
            rem1[a] = acc - f * SUBFEN
            ladder1[a] = e


_ROWS_PER_TASK = 512          # per-interval kernel: rows per prange task, which owns one scratch
_UNDER_2_31 = 1 << 31


@njit(parallel=True, cache=True)
def _rate_rows_per_interval(energy, pt, ptk, seg, seg_reset, thr, inc, ladder0, rem0, limit_w, narrow_w, fen, ladder1,
                            rem1, per):
    # acc = rem0 + the sub-fen so far, never cut: the fen debited up to interval t is acc // SUBFEN
    # (what the per-interval carry gives), so per[t] is the step of that floor.  Within a segment
    # that stays in one ladder tier the price of a Wh is pt[t] + inc[k]; while acc stays under
    # 2**31 (a day of a household is under 2**30) the running sum is kept in 32 bits, and then
    # the floors are 32-bit divisions by a constant and the steps plain differences: both SIMD
    # loops, which leaves the running sum itself as the one serial loop.  ptk[k, t] is that price
    # (int64 holding int32 values), so the multiply reads it from memory as the totals kernel does.
    nseg = seg.size - 1
    n_acc, n_int = energy.shape
    for c in prange((n_acc + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK):
        u = np.empty(n_int, dtype=np.int64)       # sub-fen of each interval of the row
        cum = np.empty(n_int, dtype=np.uint32)    # acc after each interval, then its fen
        for a in range(c * _ROWS_PER_TASK, min(n_acc, (c + 1) * _ROWS_PER_TASK)):
            e = ladder0[a]
            acc = rem0[a]
            if e < 0 or acc < 0 or acc >= SUBFEN:
                fen[a] = _BAD_STATE
                continue
            bits = 0
            done = 0                                # fen debited so far (acc // SUBFEN)
            wide = False
            for s in range(nseg):
                lo = np.uint64(seg[s])
                hi = np.uint64(seg[s + 1])
                if seg_reset[s]:
                    e = 0
                k = _tier(e + 1, thr)
                pk = ptk[k]
                sw = 0
                sb = 0
                su = 0
                for t in range(lo, hi):             # a SIMD loop: each interval's sub-fen in tier k
                    w = energy[a, t]
                    x = np.int64(w) * np.int64(np.int32(pk[t]))
                    u[t] = x
                    sw += w
                    sb |= w
                    su += x
                bits |= sb
                if sb > narrow_w:                   # a step might not fit per's dtype: the caller widens
                    wide = True
                    break
                if sb >= 0 and (sb == 0 or k == _tier(e + sw, thr)):
                    if acc + su < _UNDER_2_31:
                        a32 = np.uint32(acc)
                        for t in range(lo, hi):
                            a32 = np.uint32(a32 + np.uint32(u[t]))
                            cum[t] = a32
                        for t in range(lo, hi):
                            cum[t] = cum[t] // np.uint32(SUBFEN)
                        if hi > lo:
                            per[a, lo] = cum[lo] - done
                        for t in range(lo + np.uint64(1), hi):
                            per[a, t] = cum[t] - cum[t - np.uint64(1)]
                        acc += su
                        done = acc // SUBFEN
                    else:
                        for t in range(lo, hi):
                            acc += u[t]
                            # acc >= 0 here: an unsigned divide by the constant is one multiply and a shift
                            f = np.int64(np.uint64(acc) // np.uint64(SUBFEN))
                            per[a, t] = f - done
                            done = f
                    e += sw
                else:                              # crosses a threshold (or bad data): exact walk
                    for t in range(lo, hi):
                        w = np.int64(energy[a, t])
                        if w > 0:
                            acc += w * np.int64(pt[t]) + _ladder_subfen(e, w, thr, inc)
                            e += w
                        f = acc // SUBFEN
                        per[a, t] = f - done
                        done = f
            if bits < 0:
                fen[a] = _BAD_ENERGY
            elif bits > limit_w:
                fen[a] = _TOO_BIG
            elif wide:
                fen[a] = _TOO_WIDE
            else:
                fen[a] = done
                rem1[a] = acc - done * SUBFEN
                ladder1[a] = e


def segments_of(resets: np.ndarray, n_intervals: int) -> tuple[np.ndarray, np.ndarray]:
    """Segment starts (with ``n_intervals`` appended) and whether each segment resets the ladder."""
    starts = np.unique(np.concatenate(([0], resets, [n_intervals]))).astype(np.int64)
    if starts[-1] != n_intervals:               # n_intervals == 0
        starts = np.array([0, 0], dtype=np.int64)
    reset_flags = np.isin(starts[:-1], resets).astype(np.uint8)
    return starts, reset_flags


def prepare(energy_wh: ArrayLike) -> np.ndarray:
    """The energy array as the kernel wants it: int32 or int64, C order (copied only if needed)."""
    e = np.asarray(energy_wh)
    if e.dtype not in (np.int32, np.int64):
        e = e.astype(np.int64)
    return np.ascontiguousarray(e)


def rate(energy_wh: ArrayLike, slot_of_interval: ArrayLike, prices: ArrayLike,
         thresholds_wh: ArrayLike, increments: ArrayLike, resets: ArrayLike,
         ladder_wh: ArrayLike, rem: ArrayLike, per_interval: bool = False,
         out: Bill | None = None) -> Bill:
    """Rate a batch with the numba kernel; same arguments and result as ``rate_reference``.

    ``energy_wh`` (accounts, intervals) of Wh, int32 (recommended: half the memory traffic) or
    int64; ``slot_of_interval`` (intervals,) TOU slot; ``prices`` per slot (0.0001 yuan/kWh);
    ladder ``thresholds_wh`` ascending and ``increments`` (one more); ``resets`` ascending interval
    indices where the ladder period restarts; ``ladder_wh``/``rem`` per account state.
    ``out``: a Bill of preallocated arrays to fill (saves page faults when rating batch after
    batch): int64 totals and, with ``per_interval``, a per-interval array of PER_INTERVAL_DTYPE
    (int16) or int64.  The per-interval fen come back as int16 unless some interval's fen could
    pass it; then that batch's are int64 (a new array).
    """
    e = prepare(energy_wh)
    slot, prices, thr, inc, resets, ladder_wh, rem = (
        np.ascontiguousarray(a, dtype=np.int64) for a in
        (slot_of_interval, prices, thresholds_wh, increments, resets, ladder_wh, rem))
    check_inputs(e, slot, prices, thr, inc, resets, ladder_wh, rem, state_ranges=False)
    n_acc, n_int = e.shape
    if n_int and int(prices.max()) >= 1 << 31:
        raise ValueError(f"price {int(prices.max())} does not fit the kernel's int32 price table")
    # TOU price per interval, under 2**31: the hot multiply is then 32x32->64
    pt64 = prices[slot] if n_int else np.zeros(0, dtype=np.int64)
    pt = pt64.astype(np.int32)
    max_price = (int(prices.max()) if n_int else 0) + int(inc.max())
    limit_w = (_LIMIT - SUBFEN) // (max(max_price, 1) * max(n_int, 1))
    if out is None:
        out = Bill(np.empty(n_acc, dtype=np.int64), np.empty(n_acc, dtype=np.int64),
                   np.empty(n_acc, dtype=np.int64),
                   np.empty((n_acc, n_int), dtype=PER_INTERVAL_DTYPE) if per_interval else None)
    fen, ladder1, rem1, per = out
    seg, seg_reset = segments_of(resets, n_int)
    if per_interval:
        assert per is not None
        if n_int and max_price >= 1 << 31:
            raise ValueError(f"a price plus a ladder increment of {max_price} does not fit the per-interval kernel's "
                             "int32 price table: rate this tariff's totals only, or lower its prices")
        # the price of a Wh at each interval in each ladder tier, the multiply's operand
        ptk = pt64[None, :] + inc[:, None]
        _rate_rows_per_interval(e, pt, ptk, seg, seg_reset, thr, inc, ladder_wh, rem, limit_w, _narrow_w(per, max_price),
                                fen, ladder1, rem1, per)
        if n_acc and (fen == _TOO_WIDE).any():
            # an interval of some account could cost more fen than the narrow type holds: all in int64
            per = np.empty((n_acc, n_int), dtype=np.int64)
            _rate_rows_per_interval(e, pt, ptk, seg, seg_reset, thr, inc, ladder_wh, rem, limit_w, _narrow_w(per, max_price),
                                    fen, ladder1, rem1, per)
    else:
        _rate_rows(e, pt64, seg, seg_reset, thr, inc, ladder_wh, rem, limit_w, fen, ladder1, rem1)
    if n_acc and fen.min() < 0:
        _raise_bad_row(e, fen, ladder_wh, rem, limit_w)
    return Bill(fen, ladder1, rem1, per if per_interval else None)


def _narrow_w(per: np.ndarray, max_price: int) -> int:
    """The most Wh per interval whose fen surely fit ``per``'s dtype (a step is under 1 + w * price / SUBFEN)."""
    if per.dtype.itemsize >= 8:
        return np.iinfo(np.int64).max
    return (int(np.iinfo(per.dtype).max) - 1) * SUBFEN // max(max_price, 1)


def _raise_bad_row(e: np.ndarray, fen: np.ndarray, ladder_wh: np.ndarray, rem: np.ndarray, limit_w: int) -> None:
    a = int(np.flatnonzero(fen < 0)[0])
    n_bad = int((fen < 0).sum())
    if fen[a] == _BAD_STATE:
        raise ValueError(f"account {a}: ladder_wh {int(ladder_wh[a])} must be >= 0 and rem {int(rem[a])} "
                         f"in 0..{SUBFEN - 1} ({n_bad} accounts affected)")
    if fen[a] == _BAD_ENERGY:
        t = int(np.flatnonzero(e[a] < 0)[0])
        raise ValueError(f"account {a} interval {t}: negative energy {int(e[a, t])} Wh; validate readings "
                         f"with headend.tariff.readings first ({n_bad} accounts affected)")
    raise ValueError(f"account {a}: up to {int(e[a].max())} Wh per interval over {e.shape[1]} intervals is too "
                     f"large for exact int64 sums (limit {limit_w} Wh); split the batch into shorter ones")
