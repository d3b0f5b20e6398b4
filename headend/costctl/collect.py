"""The cost-control cycle's collect -> interval energy -> rating stage for one partition of accounts.

`rate_partition` is the stage's one implementation: the cycle calls it on the whole fleet in
process (``headend.costctl.cycle``), and each Dask worker calls it on its own partition after
reading that partition's readings from the store itself (``headend.costctl.distributed``).  What
a partition needs is small arrays (`PartitionInput`, about 40 bytes an account: meter numbers,
rated_until, tariff index, ladder, remainder); what comes back is per-account results
(`PartitionResult`: fen, remainder, ladder, rated-until, fixed charge) and the anomalies found,
by the partition's account index (the head-end names the customers).

Collect (see ``headend.costctl.cycle`` for the grid): per account, the grid readings since its
base, up to the last complete interval (a reading within ``snap_s`` of a boundary counts as that
boundary's, the closest one wins).  The usual account (one meter, every grid reading there,
registers not going backwards) is handled as whole arrays; only the others go through the
per-account anomaly path (``headend.tariff.readings`` rules), rated up to their last good
reading so that a trailing gap is rated next cycle and nothing is billed twice or dropped.
Accounts are rated in batches that share tariff, base and length (normally one batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from headend.costctl.rerate import ENERGY_DI, to_meter_time
from headend.tariff.model import TariffBook
from headend.tariff.rating import Engine, rate_batch
from headend.tariff.readings import MISSING, intervals_from_registers

__all__ = ["OFF_GRID", "ANOMALY", "PartitionInput", "PartitionResult", "rate_partition", "read_readings",
           "reading_window"]

OFF_GRID, ANOMALY = 0, 1       # the kinds of problem, in the order a cycle reports them


@dataclass
class PartitionInput:
    """The accounts of one partition as small arrays: each meter's number and account, and per
    account its rated_until (-1: never rated), tariff (an index into the tariffs rated with it;
    -1: not rated), ladder and remainder."""

    meter_int: np.ndarray          # (meters,) addresses as numbers, each account's together
    acct_of_row: np.ndarray        # (meters,) the partition's index of each meter's account
    rated_until: np.ndarray        # (accounts,)
    tariff: np.ndarray             # (accounts,)
    ladder: np.ndarray             # (accounts,)
    rem: np.ndarray                # (accounts,)

    @property
    def accounts(self) -> int:
        return int(self.rated_until.size)

    def take(self, accounts: np.ndarray) -> "PartitionInput":
        """The partition of ``accounts`` (indices into this one, ascending), its meters with them,
        in compact types (what travels to a worker)."""
        mine = np.zeros(self.accounts, dtype=bool)
        mine[accounts] = True
        rows = np.flatnonzero(mine[self.acct_of_row])
        renum = np.cumsum(mine) - 1
        return PartitionInput(self.meter_int[rows], renum[self.acct_of_row[rows]].astype(np.int32),
                              self.rated_until[accounts], self.tariff[accounts].astype(np.int16),
                              self.ladder[accounts], _narrow(self.rem[accounts]))

    def meter_span(self) -> tuple[int, int]:
        """The addresses (as numbers) of this partition's readings: lo <= meter < hi."""
        if not self.meter_int.size:
            return 0, 0
        return int(self.meter_int.min()), int(self.meter_int.max()) + 1


@dataclass
class PartitionResult:
    """What the stage gives for a partition: the rated accounts (the partition's indices, ascending)
    with their charge and new state, and the problems and audit rows found on the way, by account
    (the customer is put in front by the head-end)."""

    idx: np.ndarray
    fen: np.ndarray
    rem: np.ndarray
    ladder: np.ndarray
    until: np.ndarray
    fixed: np.ndarray
    problems: list[tuple[int, int, str]] = field(default_factory=list)   # (kind, account, text)
    audit: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)  # (account, action, detail)

    def compact(self) -> "PartitionResult":
        """The same results in the narrowest types that hold them (what travels back from a worker)."""
        return PartitionResult(self.idx.astype(np.int32), _narrow(self.fen), _narrow(self.rem), _narrow(self.ladder),
                               self.until, _narrow(self.fixed), self.problems, self.audit)

    @staticmethod
    def join(parts: Sequence[tuple[np.ndarray, "PartitionResult"]]) -> "PartitionResult":
        """Partitions' results as one, ``accounts`` mapping each partition's indices to the fleet's:
        sorted by account, problems by kind then account, as the stage gives them for the whole."""
        idx = np.concatenate([acc[p.idx] for acc, p in parts]) if parts else np.zeros(0, dtype=np.int64)
        order = np.argsort(idx, kind="stable")

        def cat(name: str) -> np.ndarray:
            if not parts:
                return np.zeros(0, dtype=np.int64)
            return np.concatenate([getattr(p, name).astype(np.int64) for _, p in parts])[order]

        problems = sorted(((k, int(acc[i]), t) for acc, p in parts for k, i, t in p.problems), key=lambda x: x[:2])
        audit = sorted(((int(acc[i]), a, d) for acc, p in parts for i, a, d in p.audit), key=lambda x: x[0])
        return PartitionResult(idx[order], cat("fen"), cat("rem"), cat("ladder"), cat("until"), cat("fixed"),
                               problems, audit)


def _narrow(a: np.ndarray) -> np.ndarray:
    i32 = np.iinfo(np.int32)
    return a.astype(np.int32) if a.size and i32.min <= a.min() and a.max() <= i32.max else a


def reading_window(rated_until: np.ndarray, last_end: int, interval_s: int, snap_s: int) -> tuple[int, int]:
    """The read_at span [since, until) of the readings a partition's accounts need."""
    base = np.where(rated_until >= 0, rated_until + interval_s, -1)
    known = base[base >= 0]
    since = 0 if known.size < base.size else int(known.min(initial=last_end))
    return max(since - snap_s, 0), last_end + snap_s + 1


def read_readings(store: Any, since: int, until: int, meters: tuple[int, int] | None = None) -> np.ndarray:
    """The energy register's readings in [since, until) (of the meters lo <= address < hi, if
    given) as an (n, 3) int64 array of (meter, value, read_at)."""
    return np.stack(store.readings_between_columns(ENERGY_DI, since=since, until=until, meters=meters), axis=1)


def rate_partition(part: PartitionInput, cols: np.ndarray, tariffs: Sequence[TariffBook], last_end: int,
                   interval_s: int, utc_offset_s: int, snap_s: int, engine: Engine,
                   stage: Callable[[str], None] = lambda name: None) -> PartitionResult:
    """Collect each account's interval energy from ``cols`` (readings as `read_readings` gives
    them; others' meters are left out) and rate it with ``engine``; see the module doc."""
    n = part.accounts
    rated_until = np.asarray(part.rated_until, dtype=np.int64)
    meter_int = np.asarray(part.meter_int, dtype=np.int64)
    acct_of_row = np.asarray(part.acct_of_row, dtype=np.int64)
    t_index = np.asarray(part.tariff, dtype=np.int64)
    meters_of = np.bincount(acct_of_row, minlength=n)
    phase = (-utc_offset_s) % interval_s
    base = np.where(rated_until >= 0, rated_until + interval_s, -1)
    problems: list[tuple[int, int, str]] = []
    audit: list[tuple[int, str, dict[str, Any]]] = []

    r_meter, r_val, r_at = cols[:, 0], cols[:, 1], cols[:, 2]
    row_of = np.argsort(meter_int, kind="stable")
    pos = np.searchsorted(meter_int[row_of], r_meter)
    pos = np.minimum(pos, max(meter_int.size - 1, 0))
    ok = meter_int[row_of][pos] == r_meter if r_meter.size and meter_int.size else np.zeros(r_meter.size, dtype=bool)
    r_row = row_of[pos[ok]]
    r_meter, r_val, r_at = r_meter[ok], r_val[ok], r_at[ok]
    # each array let go as soon as it is done with: a million accounts' readings are many of them
    del cols, pos, ok, row_of
    r_acc = acct_of_row[r_row]
    off = (r_at - phase) % interval_s
    dist = np.minimum(off, interval_s - off)
    far = np.flatnonzero(dist > snap_s)
    for k in far[np.lexsort((r_meter[far], r_at[far], r_acc[far]))].tolist():
        problems.append((OFF_GRID, int(r_acc[k]), f"reading at {int(r_at[k])} from {int(r_meter[k]):012d} is off"
                                                   f" the {interval_s} s grid: not used"))
    g = np.where(off <= snap_s, r_at - off, r_at + dist)
    b = base[r_acc]
    keep = (dist <= snap_s) & ((b < 0) | (g >= b)) & (g <= last_end)
    r_acc, r_row, r_val, g, dist, r_at = r_acc[keep], r_row[keep], r_val[keep], g[keep], dist[keep], r_at[keep]
    del r_meter, off, b, keep
    # one reading per (account, grid time): the closest wins, then the first meter / earliest read
    order = np.lexsort((r_at, r_row, dist, g, r_acc))
    del dist, r_at
    r_acc, r_row, r_val, g = r_acc[order], r_row[order], r_val[order], g[order]
    del order
    first = np.ones(r_acc.size, dtype=bool)
    first[1:] = (r_acc[1:] != r_acc[:-1]) | (g[1:] != g[:-1])
    r_acc, r_row, r_val, g = r_acc[first], r_row[first], r_val[first], g[first]
    del first
    count = np.bincount(r_acc, minlength=n)
    start = np.zeros(n, dtype=np.int64)
    start[1:] = np.cumsum(count)[:-1]

    tariff_ok = t_index >= 0
    has = count > 0
    first_g = np.where(has, g[np.minimum(start, max(g.size - 1, 0))] if g.size else 0, 0)
    base_t = np.where(base >= 0, base, first_g)
    n_int = np.where(has, (last_end - base_t) // interval_s, 0)
    # the usual account, as whole arrays: one meter, the base and every grid reading up to
    # last_end there, registers not going backwards and no interval of 2**31 Wh or more
    fast = tariff_ok & has & (first_g == base_t) & (count == n_int + 1) & (n_int > 0) & (meters_of == 1)
    if r_val.size:
        step = np.diff(r_val, prepend=r_val[0])
        same = np.ones(r_val.size, dtype=bool)
        same[1:] = r_acc[1:] == r_acc[:-1]
        bad = same & ((step < 0) | (step >= 1 << 31))
        fast &= np.bincount(r_acc[bad], minlength=n) == 0
        del step, same, bad

    groups: dict[tuple, list[tuple[np.ndarray, np.ndarray]]] = {}
    fi = np.flatnonzero(fast)
    if fi.size:
        keys = np.stack([t_index[fi], base_t[fi], n_int[fi], (rated_until[fi] < 0).astype(np.int64)], axis=1)
        if (keys == keys[0]).all():     # the usual fleet: one batch (np.unique by rows sorts them all)
            uniq, inv = keys[:1], np.zeros(fi.size, dtype=np.int64)
        else:
            uniq, inv = np.unique(keys, axis=0, return_inverse=True)
        for k, (ti, bt, cut, first_batch) in enumerate(uniq):
            members = fi[inv.ravel() == k]
            regs = r_val[start[members, None] + np.arange(int(cut) + 1)]
            energy = np.diff(regs, axis=1).astype(np.int32)
            groups.setdefault((int(ti), int(bt), int(cut), bool(first_batch)), []).append((members, energy))
    # the others one by one, their registers on the interval grid, then the readings rules for all
    # of the same length in one call (a call per account paid the parallel pass's start each time)
    careful: dict[int, list[tuple[int, int, np.ndarray, np.ndarray, tuple[int, int]]]] = {}
    for i in np.flatnonzero(tariff_ok & ~fast & (has | (base >= 0))).tolist():
        lo, hi = int(start[i]), int(start[i] + count[i])
        got = _on_grid(i, [(int(g[k]), int(r_val[k]), int(meter_int[r_row[k]])) for k in range(lo, hi)],
                       int(base[i]) if base[i] >= 0 else None, last_end, interval_s, problems)
        if got is not None:
            careful.setdefault(got[1].size, []).append((i, *got))
    for rows in careful.values():
        got = intervals_from_registers(np.stack([r[2] for r in rows]), np.stack([r[3] for r in rows]),
                                       [r[4][0] for r in rows], [r[4][1] for r in rows])
        for p in got.problems:
            i, first_t = rows[p.account][:2]
            interval_start = first_t + p.interval * interval_s
            problems.append((ANOMALY, i, f"{p.kind} in the interval starting {interval_start}: {p.detail}"))
            audit.append((i, f"reading.{p.kind}", {"interval_start": interval_start, "detail": p.detail}))
        for k, (i, first_t, regs, _, _) in enumerate(rows):
            good = np.flatnonzero(regs != MISSING)
            cut = int(good[-1]) + 1 if good.size else 0
            if cut:
                # interval k starts at first_t + k * interval_s: the base reading ends the last rated interval
                key = (int(t_index[i]), first_t, cut, bool(rated_until[i] < 0))
                groups.setdefault(key, []).append((np.array([i]), got.energy_wh[k][None, :cut]))
    audit.sort(key=lambda a: a[0])     # stable: each account's in the order found
    # the readings' arrays are done with: free them before rating
    del r_val, r_acc, r_row, g, count, start
    stage("readings -> interval energy")

    c_idx, c_fen, c_rem, c_lad, c_until, c_fixed = [], [], [], [], [], []
    ladder, rem = np.asarray(part.ladder, dtype=np.int64), np.asarray(part.rem, dtype=np.int64)
    for key in list(groups):
        (ti, bt, cut, first_batch), parts = key, groups.pop(key)
        members = np.concatenate([p[0] for p in parts])
        energy = np.concatenate([p[1] for p in parts]).astype(np.int32)
        starts_unix = bt + interval_s * np.arange(cut, dtype=np.int64)
        prev = None if first_batch else bt - interval_s
        bill = rate_batch(tariffs[ti], energy, to_meter_time(starts_unix, utc_offset_s),
                          None if prev is None else int(to_meter_time(prev, utc_offset_s)),
                          ladder[members], rem[members], engine=engine)
        c_idx.append(members)
        c_fen.append(bill.fen)
        c_fixed.append(np.full(members.size, bill.fixed_fen, dtype=np.int64))
        c_rem.append(bill.rem)
        c_lad.append(bill.ladder_wh)
        c_until.append(np.full(members.size, starts_unix[-1], dtype=np.int64))
        del parts, energy, bill
    problems.sort(key=lambda p: p[:2])      # stable: each account's in the order found
    if not c_idx:
        z = np.zeros(0, dtype=np.int64)
        out = PartitionResult(z, z, z, z, z, z, problems, audit)
    else:
        idx = np.concatenate(c_idx)
        order = np.argsort(idx, kind="stable")
        fen, rem_, lad, until, fixed = (np.concatenate(x)[order].astype(np.int64)
                                        for x in (c_fen, c_rem, c_lad, c_until, c_fixed))
        out = PartitionResult(idx[order], fen, rem_, lad, until, fixed, problems, audit)
    stage("rating")
    return out


def _on_grid(i: int, reads: list[tuple[int, int, int]], base_t: int | None, last_end: int, interval_s: int,
             problems: list) -> tuple[int, np.ndarray, np.ndarray, tuple[int, int]] | None:
    """One account with an anomaly (or several meters): its registers and meters on the grid of
    intervals after its base (``MISSING`` where none), and the base reading (register, meter).

    ``reads``: (grid time, register, meter) sorted by time, one per grid time.  Returns the
    base time, registers, meters and base reading, or None when nothing can be rated yet.
    """
    if base_t is None:
        if not reads:
            return None
        base_t = reads[0][0]
    base = [r for r in reads if r[0] == base_t]
    if not base:
        problems.append((ANOMALY, i, f"no reading at {base_t}, the base of the next interval: rating waits for it"))
        return None
    n = (last_end - base_t) // interval_s
    if n <= 0:
        return None
    regs = np.full(n, MISSING, dtype=np.int64)
    mtrs = np.zeros(n, dtype=np.int64)
    for t, v, m in reads:
        k = (t - base_t) // interval_s - 1
        if 0 <= k < n:
            regs[k], mtrs[k] = v, m
    return base_t, regs, mtrs, (base[-1][1], base[-1][2])
