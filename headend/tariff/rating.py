"""Rate a batch of interval energy under a (versioned) tariff: the time rules around the core.

The core (kernel.py, reference.py) knows only arrays.  This module turns interval start times
into what it needs, per README rules: the TOU slot of each interval (day table in force at the
interval's start), the ladder reset positions (an interval whose start is at or after a
settlement point belongs to the new period), tariff version changes (an interval is rated by
the version in force at its start; the batch is cut there and state carried across), and the
fixed daily charges (see README).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from numpy.typing import ArrayLike

from headend.tariff.kernel import rate
from headend.tariff.model import DAY, Tariff, TariffBook
from headend.tariff.reference import Bill

__all__ = ["Piece", "RatedBatch", "plan", "rate_batch"]

Engine = Callable[..., Bill]


@dataclass(frozen=True)
class Piece:
    """Intervals ``lo:hi`` of a batch rated under one tariff version."""

    tariff: Tariff
    lo: int
    hi: int
    slots: np.ndarray            # (hi-lo,) TOU slot per interval
    resets: np.ndarray           # ladder reset positions, relative to lo
    days_due: int                # fixed daily charges falling due in this piece


@dataclass(frozen=True)
class RatedBatch:
    """Energy charges, fixed charges and new state for every account of a batch."""

    energy_fen: np.ndarray       # (accounts,) fen for energy
    fixed_fen: int               # fen of fixed daily charges, the same for every account
    ladder_wh: np.ndarray
    rem: np.ndarray
    per_interval: np.ndarray | None = None

    @property
    def fen(self) -> np.ndarray:
        """Total fen to debit per account."""
        return self.energy_fen + self.fixed_fen


def plan(book: TariffBook | Tariff, starts: ArrayLike, prev_start: int | None) -> list[Piece]:
    """Cut a batch by tariff version and compute slots, ladder resets and fixed days per piece.

    ``starts``: strictly increasing meter times of the intervals' starts.  ``prev_start``: start
    of the last interval already rated for these accounts (None only for an account's first
    batch: then the given ladder state belongs to the period of ``starts[0]`` and the first day's
    fixed charge is due).
    """
    if isinstance(book, Tariff):
        book = TariffBook((book,))
    starts = np.asarray(starts, dtype=np.int64)
    if starts.ndim != 1:
        raise ValueError("starts must be a 1-d array of interval start times")
    if starts.size > 1 and np.any(np.diff(starts) <= 0):
        i = int(np.flatnonzero(np.diff(starts) <= 0)[0]) + 1
        raise ValueError(f"interval {i} starts at {int(starts[i])}, not after interval {i - 1} "
                         f"({int(starts[i - 1])}); interval starts must strictly increase")
    if prev_start is not None and starts.size and prev_start >= starts[0]:
        raise ValueError(f"the batch starts at {int(starts[0])}, not after the last rated interval "
                         f"({prev_start}): it would bill that energy twice")
    if not starts.size:
        return []
    version = book.version_index(starts)
    cuts = np.flatnonzero(np.diff(version)) + 1
    bounds = [0, *cuts.tolist(), starts.size]
    # previous start of every interval (the first one's is prev_start, if any)
    before = np.concatenate(([starts[0] if prev_start is None else prev_start], starts[:-1]))
    pieces = []
    for lo, hi in zip(bounds, bounds[1:]):
        tariff = book.versions[int(version[lo])]
        s, b = starts[lo:hi], before[lo:hi]
        if tariff.ladder is not None:
            resets = np.flatnonzero(tariff.ladder.period_ids(s) != tariff.ladder.period_ids(b))
        else:
            resets = np.zeros(0, dtype=np.int64)
        due = (s // DAY) != (b // DAY)
        if lo == 0 and prev_start is None:
            due[0] = True
        pieces.append(Piece(tariff, lo, hi, tariff.slots(s), resets.astype(np.int64), int(due.sum())))
    return pieces


def rate_batch(book: TariffBook | Tariff, energy_wh: ArrayLike, starts: ArrayLike, prev_start: int | None,
               ladder_wh: ArrayLike, rem: ArrayLike, engine: Engine = rate,
               per_interval: bool = False) -> RatedBatch:
    """Rate ``energy_wh`` (accounts, intervals) whose intervals start at ``starts``.

    ``engine`` is the core to use (kernel ``rate`` by default; ``rate_reference`` gives the
    definition).  Returns fen per account and the new ladder/remainder state.
    """
    e = np.asarray(energy_wh)
    if e.ndim != 2 or e.shape[1] != np.asarray(starts).size:
        raise ValueError(f"energy_wh must be (accounts, {np.asarray(starts).size} intervals), got {e.shape}")
    ladder = np.asarray(ladder_wh, dtype=np.int64)
    r = np.asarray(rem, dtype=np.int64)
    fen = np.zeros(e.shape[0], dtype=np.int64)
    fixed = 0
    per = [] if per_interval else None
    for p in plan(book, starts, prev_start):
        t = p.tariff
        kwargs = {"per_interval": True} if per_interval else {}
        bill = engine(e[:, p.lo:p.hi], p.slots, t.price_array(), t.thresholds_array(), t.increments_array(),
                      p.resets, ladder, r, **kwargs)
        fen += bill.fen
        ladder, r = bill.ladder_wh, bill.rem
        fixed += p.days_due * t.daily_fen
        if per is not None:
            per.append(bill.per_interval)
    per_arr = None
    if per is not None:
        per_arr = np.concatenate(per, axis=1) if per else np.zeros((e.shape[0], 0), dtype=np.int64)
    return RatedBatch(fen, fixed, ladder, r, per_arr)
