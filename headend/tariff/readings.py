"""From meter register readings to interval energy, with every anomaly reported.

A reading is the meter's cumulative forward-active register (Wh) at the end of an interval.
Interval energy is the difference to the previous *good* reading of the same meter.  Rules (so
that nothing is billed twice and nothing is dropped silently):

* **duplicate** (same account, interval, meter and value): used once, reported.
* **conflict** (same account and interval, different values): none of them is used, reported;
  the interval is then treated like a gap.
* **gap** (no usable reading): the energy of the missing intervals is billed with the next good
  reading's interval; at the end of the batch it stays in the register and the next batch bills
  it (``last_register`` is the last good reading).  Reported once per run of missing intervals.
* **backwards** (register below the previous good reading of the same meter): the reading is not
  used, the interval gets 0, and the base stays at the previous good reading, so the energy is
  billed once the register passes it again.  Reported.
* **meter replaced** (the meter id changes): with a :class:`Replacement` record (old meter's final
  register, new meter's initial register) the interval is billed ``(old_final - previous) +
  (reading - new_initial)``; without one the interval gets 0 and is reported so the operator can
  add the record and re-rate.  The new meter's register is the base from then on.
* **out of batch**: a reading for an unknown account row or interval is reported, not used.
* **implausible**: a step of 2**31 Wh or more in one interval is reported and not used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike
from numba import njit, prange  # pyright: ignore[reportMissingImports]

__all__ = ["Problem", "Replacement", "Assembled", "assemble", "intervals_from_registers", "MISSING"]

MISSING = -1                    # register value marking "no reading" in the matrix form
_INT32 = 1 << 31


@njit(parallel=True, cache=True)
def _clean_rows(regs, mtrs, start_reg, start_meter, energy, clean):
    # One pass: rows with every reading present, one meter and a non-decreasing register are
    # finished here; any anomaly leaves clean[a] = 0 for the exact walk in Python.
    for a in prange(regs.shape[0]):
        base = start_reg[a]
        m0 = start_meter[a]
        ok = 1
        for t in range(regs.shape[1]):
            r = regs[a, t]
            if r == MISSING or mtrs[a, t] != m0 or r < base or r - base >= _INT32:
                ok = 0
                break
            energy[a, t] = r - base
            base = r
        clean[a] = ok


@dataclass(frozen=True)
class Problem:
    """One anomaly: its kind, the account row and interval it concerns, and what was done."""

    kind: str                   # duplicate | conflict | gap | backwards | meter_replaced | out_of_batch | implausible
    account: int
    interval: int
    detail: str


@dataclass(frozen=True)
class Replacement:
    """A meter exchange recorded by the field crew, effective in ``interval`` of the batch."""

    account: int
    interval: int
    old_final_wh: int
    new_initial_wh: int


@dataclass
class Assembled:
    """Interval energy ready for the tariff core, the state for the next batch, and the anomalies."""

    energy_wh: np.ndarray        # (accounts, intervals) int32
    last_register: np.ndarray    # (accounts,) int64 register of the last good reading
    last_meter: np.ndarray       # (accounts,) int64 meter id of that reading
    problems: list[Problem] = field(default_factory=list)


def assemble(account: ArrayLike, interval: ArrayLike, register_wh: ArrayLike, meter: ArrayLike,
             start_register: ArrayLike, start_meter: ArrayLike, n_intervals: int,
             replacements: tuple[Replacement, ...] = ()) -> Assembled:
    """Interval energy from readings given as records (account row, interval, register, meter id)."""
    account, interval, register_wh, meter = (np.asarray(a, dtype=np.int64).ravel()
                                             for a in (account, interval, register_wh, meter))
    if not account.size == interval.size == register_wh.size == meter.size:
        raise ValueError("account, interval, register_wh and meter must have one value per reading")
    start_register = np.asarray(start_register, dtype=np.int64)
    n_acc = start_register.size
    problems: list[Problem] = []
    inside = (account >= 0) & (account < n_acc) & (interval >= 0) & (interval < n_intervals)
    for i in np.flatnonzero(~inside):
        problems.append(Problem("out_of_batch", int(account[i]), int(interval[i]),
                                f"reading {int(register_wh[i])} Wh is outside the batch "
                                f"({n_acc} accounts x {n_intervals} intervals): not used"))
    acc, itv, reg, mtr = account[inside], interval[inside], register_wh[inside], meter[inside]
    key = acc * max(n_intervals, 1) + itv
    order = np.lexsort((reg, mtr, key))
    key, acc, itv, reg, mtr = key[order], acc[order], itv[order], reg[order], mtr[order]
    same_key = np.r_[False, key[1:] == key[:-1]]
    same_all = same_key & np.r_[False, (reg[1:] == reg[:-1]) & (mtr[1:] == mtr[:-1])]
    for i in np.flatnonzero(same_all):
        problems.append(Problem("duplicate", int(acc[i]), int(itv[i]),
                                f"reading {int(reg[i])} Wh received again: used once"))
    keep = ~same_all
    key, acc, itv, reg, mtr = key[keep], acc[keep], itv[keep], reg[keep], mtr[keep]
    clash = np.r_[False, key[1:] == key[:-1]]
    bad_keys = np.unique(key[clash])
    conflicted = np.isin(key, bad_keys)
    for k in bad_keys:
        sel = key == k
        problems.append(Problem("conflict", int(acc[sel][0]), int(itv[sel][0]),
                                f"different readings {sorted(set(reg[sel].tolist()))} Wh for one interval: "
                                "none used, treated as a gap"))
    regs = np.full((n_acc, n_intervals), MISSING, dtype=np.int64)
    mtrs = np.zeros((n_acc, n_intervals), dtype=np.int64)
    ok = ~conflicted
    regs[acc[ok], itv[ok]] = reg[ok]
    mtrs[acc[ok], itv[ok]] = mtr[ok]
    out = intervals_from_registers(regs, mtrs, start_register, start_meter, replacements)
    out.problems[:0] = problems
    return out


def intervals_from_registers(registers: ArrayLike, meters: ArrayLike, start_register: ArrayLike,
                             start_meter: ArrayLike, replacements: tuple[Replacement, ...] = ()) -> Assembled:
    """Interval energy from a (accounts, intervals) matrix of registers (``MISSING`` = no reading).

    Rows without anomalies are done by a parallel numba pass; only rows with an anomaly are
    walked one reading at a time (the rules are in the module docstring).
    """
    regs = np.asarray(registers, dtype=np.int64)
    mtrs = np.asarray(meters, dtype=np.int64)
    start_register = np.asarray(start_register, dtype=np.int64)
    start_meter = np.asarray(start_meter, dtype=np.int64)
    n_acc, n_int = regs.shape
    if mtrs.shape != regs.shape or start_register.shape != (n_acc,) or start_meter.shape != (n_acc,):
        raise ValueError("registers and meters must be (accounts, intervals); start_register and start_meter "
                         "one value per account")
    if n_acc and start_register.min() < 0:
        a = int(np.flatnonzero(start_register < 0)[0])
        raise ValueError(f"account {a}: start_register {int(start_register[a])} must be a real reading (>= 0)")
    energy = np.zeros((n_acc, n_int), dtype=np.int32)
    clean = np.zeros(n_acc, dtype=np.uint8)
    _clean_rows(regs, mtrs, start_register, start_meter, energy, clean)
    for r in replacements:
        if 0 <= r.account < n_acc:
            clean[r.account] = 0
    bad_rows = np.flatnonzero(clean == 0)
    energy[bad_rows] = 0                # the few rows with an anomaly are walked below
    last_register = regs[:, -1].copy() if n_int else start_register.copy()
    last_meter = mtrs[:, -1].copy() if n_int else start_meter.copy()
    problems: list[Problem] = []
    by_cell = {}
    for r in replacements:
        if not (0 <= r.account < n_acc and 0 <= r.interval < n_int):
            raise ValueError(f"replacement for account {r.account} interval {r.interval} is outside the batch")
        by_cell[(r.account, r.interval)] = r
    for a in bad_rows.tolist():
        base, base_meter = int(start_register[a]), int(start_meter[a])
        gap_from = None
        for t in range(n_int):
            reading, m = int(regs[a, t]), int(mtrs[a, t])
            rep = by_cell.get((a, t))
            if reading == MISSING:
                if gap_from is None:
                    gap_from = t
                if rep is not None:
                    problems.append(Problem("meter_replaced", a, t, "replacement record for an interval without "
                                            "a reading of the new meter: applied with its first reading"))
                    del by_cell[(a, t)]
                    by_cell[(a, t + 1)] = rep
                continue
            if gap_from is not None:
                problems.append(Problem("gap", a, gap_from, f"intervals {gap_from}..{t - 1} have no reading: "
                                        f"their energy is billed with interval {t}"))
                gap_from = None
            if m != base_meter or rep is not None:
                if rep is None:
                    problems.append(Problem("meter_replaced", a, t, f"meter {base_meter} -> {m} without a "
                                            "replacement record: this interval is not billed; add the old "
                                            "final and new initial readings and re-rate"))
                elif rep.old_final_wh < base or reading < rep.new_initial_wh:
                    problems.append(Problem("backwards", a, t, f"replacement record (old final {rep.old_final_wh}, "
                                            f"new initial {rep.new_initial_wh}) disagrees with the readings "
                                            f"({base} before, {reading} after): interval not billed"))
                elif rep.old_final_wh - base + reading - rep.new_initial_wh >= _INT32:
                    problems.append(Problem("implausible", a, t, "replacement record implies over 2**31 Wh "
                                            "in one interval: not billed; check the record"))
                else:
                    energy[a, t] = rep.old_final_wh - base + reading - rep.new_initial_wh
                    problems.append(Problem("meter_replaced", a, t, f"meter {base_meter} -> {m}: billed "
                                            f"{rep.old_final_wh - base} Wh on the old and "
                                            f"{reading - rep.new_initial_wh} Wh on the new meter"))
                base, base_meter = reading, m
                continue
            if reading < base:
                problems.append(Problem("backwards", a, t, f"register {reading} Wh is below the previous good "
                                        f"reading {base} Wh: not used, base kept"))
                continue
            if reading - base >= _INT32:
                problems.append(Problem("implausible", a, t, f"{reading - base} Wh in one interval "
                                        f"(register {base} -> {reading}): not used, base kept; check the meter"))
                continue
            energy[a, t] = reading - base
            base = reading
        if gap_from is not None:
            problems.append(Problem("gap", a, gap_from, f"intervals {gap_from}..{n_int - 1} have no reading: "
                                    "their energy stays in the register for the next batch"))
        last_register[a], last_meter[a] = base, base_meter
    return Assembled(energy, last_register, last_meter, problems)
