"""Whole-array NumPy version of the tariff core: the benchmark baseline for the numba kernel
(kept beside the benchmarks, not in the head-end; tests hold it equal to reference.py).

Same segment idea as the kernel: per segment, row sums give the TOU cost and the energy; rows
whose first and last Wh share a ladder tier are done.  Rows that cross a threshold use the
closed form "Wh of interval t above threshold i" = max(0, C_t - max(C_{t-1}, thr_i)) with C the
running ladder energy, so the result stays exact without a Python loop over rows.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from headend.tariff.kernel import segments_of
from headend.tariff.reference import SUBFEN, Bill, check_inputs

__all__ = ["rate_numpy"]


def rate_numpy(energy_wh: ArrayLike, slot_of_interval: ArrayLike, prices: ArrayLike,
               thresholds_wh: ArrayLike, increments: ArrayLike, resets: ArrayLike,
               ladder_wh: ArrayLike, rem: ArrayLike, per_interval: bool = False) -> Bill:
    """Rate a batch with NumPy array operations; same arguments and result as ``rate_reference``."""
    if per_interval:
        raise ValueError("rate_numpy gives per-account totals only; use kernel.rate(per_interval=True)")
    e_in = np.asarray(energy_wh)
    slot, prices, thr, inc, resets, ladder, rem = (
        np.asarray(a, dtype=np.int64) for a in
        (slot_of_interval, prices, thresholds_wh, increments, resets, ladder_wh, rem))
    check_inputs(e_in, slot, prices, thr, inc, resets, ladder, rem)
    if e_in.size and e_in.min() < 0:
        a, t = (int(x[0]) for x in np.nonzero(e_in < 0))
        raise ValueError(f"account {a} interval {t}: negative energy {int(e_in[a, t])} Wh")
    n_int = e_in.shape[1]
    pt = prices[slot] if n_int else np.zeros(0, dtype=np.int64)
    seg, seg_reset = segments_of(resets, n_int)
    acc = rem.copy()
    e = ladder.copy()
    for s in range(seg.size - 1):
        lo, hi = int(seg[s]), int(seg[s + 1])
        if seg_reset[s]:
            e[:] = 0
        block = e_in[:, lo:hi]
        sw = block.sum(axis=1, dtype=np.int64)
        sp = block @ pt[lo:hi]
        k0 = np.searchsorted(thr, e + 1, side="left")
        k1 = np.searchsorted(thr, e + sw, side="left")
        acc += sp + sw * inc[k0]
        cross = np.flatnonzero(k0 != k1)
        if cross.size:
            b = block[cross].astype(np.int64)
            c = e[cross, None] + np.cumsum(b, axis=1)
            prev = c - b
            fix = -sw[cross] * inc[k0[cross]] + sw[cross] * inc[0]
            for i in range(thr.size):
                above = np.maximum(0, c - np.maximum(prev, thr[i])).sum(axis=1)
                fix += above * (inc[i + 1] - inc[i])
            acc[cross] += fix
        e += sw
    fen, rem1 = np.divmod(acc, SUBFEN)
    return Bill(fen, e, rem1, None)
