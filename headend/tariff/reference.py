"""The definition of a correct bill: plain Python integers, slow on purpose.

Arithmetic per ``headend/tariff/README.md``: each interval's energy is priced at the TOU price of
its slot plus the ladder increment of each Wh's tier (split at the exact Wh that crosses a
threshold), and the sub-fen cost goes through the carried remainder interval by interval.
The numba kernel and the NumPy version must return exactly what this returns.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["SUBFEN", "Bill", "check_inputs", "ladder_subfen", "rate_reference"]

SUBFEN = 100_000                 # sub-fen per fen: w [Wh] * p [1e-4 yuan/kWh] is in 1e-5 fen


class Bill(NamedTuple):
    """Result of rating one batch: per account fen debited, new ladder Wh and remainder."""

    fen: np.ndarray              # (accounts,) int64 fen charged for energy in this batch
    ladder_wh: np.ndarray        # (accounts,) int64 ladder energy of the current period after the batch
    rem: np.ndarray              # (accounts,) int64 carried sub-fen remainder, 0 <= rem < SUBFEN
    per_interval: np.ndarray | None = None   # (accounts, intervals) fen debited at each interval (int64;
    #                                          the kernel gives int16 when every interval fits, kernel.rate)


def check_inputs(energy_wh: np.ndarray, slot_of_interval: np.ndarray, prices: np.ndarray,
                 thresholds_wh: np.ndarray, increments: np.ndarray, resets: np.ndarray,
                 ladder_wh: np.ndarray, rem: np.ndarray, state_ranges: bool = True) -> None:
    """Raise ValueError naming the first argument whose shape or range the core cannot rate.

    ``state_ranges=False`` skips the per-account range check (the kernel does it in its own pass).
    """
    if energy_wh.ndim != 2:
        raise ValueError(f"energy_wh must be (accounts, intervals), got shape {energy_wh.shape}")
    n_acc, n_int = energy_wh.shape
    if slot_of_interval.shape != (n_int,):
        raise ValueError(f"slot_of_interval must have one slot per interval ({n_int}), got shape {slot_of_interval.shape}")
    if prices.ndim != 1 or prices.size == 0:
        raise ValueError("prices must be a 1-d table with one price per TOU slot")
    if n_int and not 0 <= slot_of_interval.min() <= slot_of_interval.max() < prices.size:
        raise ValueError(f"slot_of_interval holds slots outside the price table 0..{prices.size - 1}")
    if thresholds_wh.ndim != 1 or increments.shape != (thresholds_wh.size + 1,):
        raise ValueError(f"need one increment per tier: {thresholds_wh.size} thresholds need "
                         f"{thresholds_wh.size + 1} increments, got {increments.size}")
    if thresholds_wh.size and (thresholds_wh[0] <= 0 or np.any(np.diff(thresholds_wh) <= 0)):
        raise ValueError(f"ladder thresholds must be > 0 and strictly ascending, got {thresholds_wh.tolist()}")
    if resets.ndim != 1 or (resets.size and (resets[0] < 0 or resets[-1] >= n_int or np.any(np.diff(resets) <= 0))):
        raise ValueError(f"settlement reset positions must be ascending interval indices in 0..{n_int - 1}, "
                         f"got {resets.tolist()}")
    if ladder_wh.shape != (n_acc,) or rem.shape != (n_acc,):
        raise ValueError(f"ladder_wh and rem need one value per account ({n_acc})")
    if state_ranges and n_acc and (ladder_wh.min() < 0 or rem.min() < 0 or rem.max() >= SUBFEN):
        raise ValueError(f"ladder_wh must be >= 0 and rem in 0..{SUBFEN - 1}")


def ladder_subfen(ladder_wh: int, w: int, thresholds: list[int], increments: list[int]) -> int:
    """Ladder part of the cost of ``w`` Wh added to a period that already holds ``ladder_wh``.

    The Wh that brings the period to ``e`` is priced at tier ``first i with e <= thresholds[i]``.
    """
    cost = 0
    e = ladder_wh
    left = w
    tier = 0
    while tier < len(thresholds) and e + 1 > thresholds[tier]:
        tier += 1
    while left > 0:
        room = thresholds[tier] - e if tier < len(thresholds) else left   # Wh still in this tier
        n = min(left, room)
        cost += n * increments[tier]
        e += n
        left -= n
        tier += 1
    return cost


def rate_reference(energy_wh: ArrayLike, slot_of_interval: ArrayLike, prices: ArrayLike,
                   thresholds_wh: ArrayLike, increments: ArrayLike, resets: ArrayLike,
                   ladder_wh: ArrayLike, rem: ArrayLike, per_interval: bool = True) -> Bill:
    """Rate a batch exactly (see module doc); always returns per-interval fen too."""
    energy_wh, slot_of_interval, prices, thresholds_wh, increments, resets, ladder_wh, rem = (
        np.asarray(a, dtype=np.int64) for a in
        (energy_wh, slot_of_interval, prices, thresholds_wh, increments, resets, ladder_wh, rem))
    check_inputs(energy_wh, slot_of_interval, prices, thresholds_wh, increments, resets, ladder_wh, rem)
    n_acc, n_int = energy_wh.shape
    thr = [int(x) for x in thresholds_wh]
    inc = [int(x) for x in increments]
    price = [int(prices[s]) for s in slot_of_interval]
    reset_at = {int(r) for r in resets}
    fen_out = np.zeros(n_acc, dtype=np.int64)
    ladder_out = np.zeros(n_acc, dtype=np.int64)
    rem_out = np.zeros(n_acc, dtype=np.int64)
    per = np.zeros((n_acc, n_int), dtype=np.int64)
    for a in range(n_acc):
        e = int(ladder_wh[a])
        r = int(rem[a])
        fen = 0
        for t in range(n_int):
            if t in reset_at:
                e = 0
            w = int(energy_wh[a, t])
            if w < 0:
                raise ValueError(f"account {a} interval {t}: negative energy {w} Wh "
                                 "(validate readings with headend.tariff.readings first)")
            total = r + w * price[t] + ladder_subfen(e, w, thr, inc)
            f, r = divmod(total, SUBFEN)
            fen += f
            per[a, t] = f
            e += w
        fen_out[a], ladder_out[a], rem_out[a] = fen, e, r
    return Bill(fen_out, ladder_out, rem_out, per)
