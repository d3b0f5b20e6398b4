"""Tariff core: 1,000,000 accounts x 96 quarter-hours (one day), Beijing ladder + 4-rate TOU.

Also one remote cost-control cycle for 1,000,000 accounts: registers -> interval energy
(with the anomaly checks), rating, the balance update in memory, and the decisions, with each
stage's share; and the whole cycle through the SQLite store (``headend.costctl.cycle``) for
STORE_ACCOUNTS (1,000,000) accounts on daily frozen readings: the day's readings collected
(stored as the read path stores them), then read, rated, debited in one transaction, decided
and recorded, with each stage's share.

Input is int32 Wh (a 15-min reading above 2**31 Wh is not a household), 384 MB for the whole
day.  Every ratio is measured interleaved (A, B, A, B ..., median of the pair ratios, with its
spread; tools/bench/interleave.py): the NumPy version against the plain reference; the kernel
on 1 thread and on all cores against a numba streaming sum over the same array on as many
threads (the read-bandwidth ceiling); the kernel against the NumPy version; the per-interval
kernel (int16 fen per interval), and a bare int32 -> int16 copy into its output (the write floor),
against the totals kernel.  The kernel's inner loop is also read from its machine code
(tools/bench/kernel_asm.py): instructions per reading against the streaming sum's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from numba import get_num_threads, njit, prange, set_num_threads  # pyright: ignore[reportMissingImports]

from headend.commands.collect import batch_size
from headend.costctl.decide import ON, decide
from headend.tariff.kernel import PER_INTERVAL_DTYPE, rate
from headend.tariff.readings import intervals_from_registers
from headend.tariff.model import beijing_tou, meter_time
from headend.tariff.rating import plan, rate_batch
from headend.tariff.reference import SUBFEN, Bill, rate_reference
from tools.bench.tariff_numpy import rate_numpy
from tools.bench.interleave import interleaved, interleaved_values
from tools.bench.kernel_asm import inspect_in_subprocess

ACCOUNTS = 1_000_000
INTERVALS = 96
REF_ACCOUNTS = 2_000
NP_ACCOUNTS = 100_000
STORE_ACCOUNTS = 100_000      # make bench's worst-case day (every account decided); its usual day is the aim's size:
# BENCH_STORE_ACCOUNTS (1,000,000; a quick run: 100000), or python -m tools.bench.bench_tariff --store-accounts N
AIM_STORE_ACCOUNTS = int(os.environ.get("BENCH_STORE_ACCOUNTS", "1000000"))


@njit(parallel=True, cache=True)
def _stream_sum(a, out):
    for i in prange(a.shape[0]):
        s = 0
        for j in range(a.shape[1]):
            s += a[i, j]
        out[i] = s


@njit(parallel=True, cache=True)
def _narrow(a, out):
    for i in prange(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = a[i, j]


def day_batch(accounts: int, seed: int = 1):
    """One day of quarter-hour readings; ladder states spread so ~2% of accounts cross a tier."""
    rng = np.random.default_rng(seed)
    t = beijing_tou()
    day = meter_time(2025, 12, 31)
    starts = day + 900 * np.arange(INTERVALS, dtype=np.int64)
    (piece,) = plan(t, starts, day - 900)
    energy = rng.integers(0, 500, (accounts, INTERVALS), dtype=np.int32)
    ladder = rng.integers(0, 6_000_000, accounts)
    rem = rng.integers(0, SUBFEN, accounts)
    args = (piece.slots, t.price_array(), t.thresholds_array(), t.increments_array(), piece.resets, ladder, rem)
    return energy, args


def run(report) -> None:
    kernel(report)
    cost_control_cycle(report)
    # the figure: a usual day (opening balances 0..500 yuan, a few accounts in a hundred
    # cross a band) at a million accounts, then the worst case (every account decided) at 100,000
    store_cycle(report, AIM_STORE_ACCOUNTS, days=2, opening_yuan=500)
    store_cycle(report)
    write_forms(report)


def kernel(report) -> None:
    """The kernel's figures alone (a minute or two): ``.venv/bin/python -m tools.bench.bench_tariff --kernel``."""
    import os

    load0 = os.getloadavg()[0]
    threads = get_num_threads()
    energy, args = day_batch(ACCOUNTS)
    n = energy.size

    sub = np.ascontiguousarray(energy[:REF_ACCOUNTS])
    sub_args = (args[0], args[1], args[2], args[3], args[4], args[5][:REF_ACCOUNTS], args[6][:REF_ACCOUNTS])
    np_sub = np.ascontiguousarray(energy[:NP_ACCOUNTS])
    np_args = (args[0], args[1], args[2], args[3], args[4], args[5][:NP_ACCOUNTS], args[6][:NP_ACCOUNTS])
    r = interleaved(lambda: rate_numpy(np_sub, *np_args), lambda: rate_reference(sub, *sub_args), rounds=3,
                    work_a=np_sub.size / 1e6, work_b=sub.size / 1e6)
    report(f"tariff: NumPy version ({NP_ACCOUNTS:,} x 96) vs plain-Python reference ({REF_ACCOUNTS:,} x 96), one core",
           r.a, "M readings/s", r.b, pairs=r)

    np_bill = rate_numpy(energy, *args)
    bill = rate(energy, *args)                                # compile / load the cache
    assert np.array_equal(bill.fen, np_bill.fen) and np.array_equal(bill.rem, np_bill.rem)
    ref_bill = rate_reference(sub, *sub_args)
    assert np.array_equal(bill.fen[:REF_ACCOUNTS], ref_bill.fen)
    del np_bill

    out = np.empty(ACCOUNTS, dtype=np.int64)
    _stream_sum(energy, out)
    # outputs allocated once, as a head-end rating batch after batch would: no page faults timed
    bills = Bill(np.empty(ACCOUNTS, dtype=np.int64), np.empty(ACCOUNTS, dtype=np.int64),
                 np.empty(ACCOUNTS, dtype=np.int64), np.empty((ACCOUNTS, INTERVALS), dtype=PER_INTERVAL_DTYPE))
    totals = lambda: rate(energy, *args, out=bills)   # noqa: E731
    for k in sorted({1, threads}):
        set_num_threads(k)
        # the kernel's ceiling: a numba sum streaming the same int32 array on the same threads
        r = interleaved(totals, lambda: _stream_sum(energy, out), rounds=7, work_a=n / 1e6, work_b=n / 1e6)
        report(f"tariff: numba kernel vs streaming read of the same 1M x 96 int32 array, {k} thread(s)",
               r.a, "M readings/s", r.b, pairs=r)
        report(f"  streaming read bandwidth, {k} thread(s) (median of the pairs' reads)", r.b * 4 / 1e3, "GB/s")
    set_num_threads(threads)
    r = interleaved(totals, lambda: rate_numpy(np_sub, *np_args), rounds=3, work_a=n / 1e6, work_b=np_sub.size / 1e6)
    report(f"tariff: numba kernel ({threads} threads, 1M x 96) vs NumPy version ({NP_ACCOUNTS:,} x 96, one core)",
           r.a, "M readings/s", r.b, pairs=r)
    r = interleaved(lambda: rate(energy, *args, per_interval=True, out=bills), totals, rounds=5,
                    work_a=n / 1e6, work_b=n / 1e6)
    report(f"tariff: kernel with per-interval fen (int16) vs totals kernel, 1M x 96, {threads} threads",
           r.a, "M readings/s", r.b, pairs=r)
    # what writing the per-interval fen costs by itself: a plain copy of the batch into the same
    # per-interval array (int32 -> int16), the most the per-interval kernel could do
    r = interleaved(lambda: _narrow(energy, bills.per_interval), totals, rounds=5, work_a=n / 1e6, work_b=n / 1e6)
    report(f"tariff: int32 -> int16 copy into the per-interval array (its write floor) vs totals kernel, {threads} threads",
           r.a, "M readings/s", r.b, pairs=r)
    report("  load average (1 min) of the machine during the kernel's pairs", (load0 + os.getloadavg()[0]) / 2,
           "runnable")
    # let the arrays go before the next bench (not `del`: the closures above still name them)
    energy = bills = sub = np_sub = None
    # why the kernel is short of the bandwidth: it is compute-bound.  Its widest inner loop
    # against the streaming read's, from the compiled code (static, so no interleaving needed)
    loops = inspect_in_subprocess()
    hot = {k: max(v, key=lambda x: x["readings"]) for k, v in loops.items() if v}
    k_loop, s_loop = hot["_rate_rows"], hot["_stream_sum"]
    report(f"tariff: kernel inner loop, instructions per reading ({k_loop['vector']}) vs the streaming read's",
           k_loop["per_reading"], "instructions", s_loop["per_reading"])
    # the per-interval kernel's widest loop (the sub-fen of each interval, stored); its running sum
    # of them reads no energy and is the one loop that does not vectorise
    p_loop = hot["_rate_rows_per_interval"]
    report(f"tariff: per-interval kernel's widest inner loop, instructions per reading ({p_loop['vector']}) vs the "
           "totals kernel's", p_loop["per_reading"], "instructions", k_loop["per_reading"])


def cost_control_cycle(report) -> None:
    """One day's cycle for 1M accounts, stage by stage (registers arrive as a matrix)."""
    rng = np.random.default_rng(9)
    t = beijing_tou()
    day = meter_time(2025, 12, 31)
    starts = day + 900 * np.arange(INTERVALS, dtype=np.int64)
    start_reg = rng.integers(0, 10**8, ACCOUNTS)
    registers = start_reg[:, None] + np.cumsum(rng.integers(0, 500, (ACCOUNTS, INTERVALS)), axis=1)
    meter_ids = np.arange(ACCOUNTS, dtype=np.int64) + 410_000_000_000
    meters = np.broadcast_to(meter_ids[:, None], registers.shape)
    registers[rng.integers(0, ACCOUNTS, 1000), rng.integers(0, INTERVALS, 1000)] = -1    # some gaps
    ladder = rng.integers(0, 6_000_000, ACCOUNTS)
    rem = rng.integers(0, SUBFEN, ACCOUNTS)
    balance = rng.integers(-2_000, 20_000, ACCOUNTS)
    stages = {}

    t0 = time.perf_counter()
    got = intervals_from_registers(registers, meters, start_reg, meter_ids)
    stages["registers -> interval energy + anomaly checks"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    bill = rate_batch(t, got.energy_wh, starts, day - 900, ladder, rem)
    stages["rating (kernel, all threads)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    balance = balance - bill.fen
    stages["balance update (in memory)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    level = np.zeros(ACCOUNTS, dtype=np.int8)
    d = decide(balance, 1000, 500, 0, 0, rng.random(ACCOUNTS) < 0.01, False, level,
               np.full(ACCOUNTS, -1, dtype=np.int64), np.full(ACCOUNTS, ON, dtype=np.int8),
               int(starts[-1]) + 900, (0, 4, (2026, 1, 1)))
    stages["decisions"] = time.perf_counter() - t0
    assert d.action.shape == (ACCOUNTS,) and len(got.problems) > 0
    total = sum(stages.values())
    report("cost-control cycle, 1M accounts x 96 (excl. SQLite write)", total, "s")
    for name, secs in stages.items():
        report(f"  stage: {name} (part of the cycle above)", secs * 1000, "ms")


def _peak_rss_reset() -> bool:
    """Reset this process's peak resident set (Linux); False where it cannot be."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bare_writes(path: Path, n: int, decided: int, round_: int) -> float:
    """The baseline: bare sqlite3 doing a day's collection and cycle writes on ``path`` (a copy
    of the database); accounts per second.

    Per account its day's register reading (in transactions of ``batch_size(n)`` rows, as the read
    cycle commits them), one UPDATE of its money columns and one ledger row; per decided
    account one UPDATE of its notice/supply state, one notification and one audit row: the rows
    a collection and a cycle write, built before the clock starts, so only SQLite's work and
    sqlite3's binding are timed.  Readings go in as the store appends them (multi-row INSERT,
    ``Tx.insert_many``), and so do the ledger rows (the store's own come from its batch's table of
    charges by one INSERT ... SELECT), the rest by executemany.
    """
    import sqlite3

    from headend.store.sqlite import _Tx   # pyright: ignore[reportPrivateUsage]

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")
    t = 1_700_000_000 + round_
    cs = [f"{i + 1:012d}" for i in range(n)]
    at = _D0 + round_ * 86400
    reads = [(c, "00010000", at, v, None, t) for c, v in zip(cs, _registers(n, round_)[:, round_].tolist())]
    some = cs[:decided]
    money = [(123, 4567, 890, t, t, c) for c in cs]
    ledger = [(c, t, "charge", -123, 100, "costctl", '{"batch":"x"}', 4567, t) for c in cs]
    state = [(1, t, "on", None, t, c) for c in some]
    notices = [(c, "notice1", "Your electricity balance is low (1.00 yuan). Please top up.", t, t,
                f"bench:{t}:{c}", '{"reason":"below alarm 1"}') for c in some]
    audit = [(t, "costctl", "costctl.notice1", c,
              '{"balance_fen":100,"notice_level":1,"reason":"below alarm 1","supply":"on"}') for c in some]
    tx = _Tx(conn.cursor())
    t0 = time.perf_counter()
    step = batch_size(n)
    for lo in range(0, n, step):
        conn.execute("BEGIN IMMEDIATE")
        tx.insert_many("INSERT INTO readings (meter, di, read_at, value, text, stored_at) VALUES ",
                       "(?, ?, ?, ?, ?, ?)", reads[lo:lo + step], " ON CONFLICT DO NOTHING")
        conn.execute("COMMIT")
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("UPDATE accounts SET balance_fen = balance_fen - ?, rem = ?, ladder_wh = ?, rated_until = ?,"
                     " version = version + 1, updated_at = ? WHERE customer = ?", money)
    tx.insert_many("INSERT INTO ledger (customer, at, kind, amount_fen, balance_after, idem_key, actor, detail,"
                   " rem_after, rated_to) VALUES ", "(?, ?, ?, ?, ?, NULL, ?, ?, ?, ?)", ledger)
    conn.executemany("UPDATE accounts SET notice_level = ?, notice_at = ?, supply = ?, supply_at = ?,"
                     " updated_at = ? WHERE customer = ?", state)
    conn.executemany("INSERT INTO notifications (customer, channel, kind, message, status, attempts, created_at,"
                     " updated_at, idem_key, detail) VALUES (?, 'sms', ?, ?, 'queued', 0, ?, ?, ?, ?)", notices)
    conn.executemany("INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)", audit)
    conn.execute("COMMIT")
    rate = n / (time.perf_counter() - t0)
    conn.close()
    return rate


class _BareWrites:
    """Runs ``bare_writes`` in a child process each time (its rows never sit in this process's
    memory); as many decided accounts as the last cycle decided."""

    def __init__(self, path: Path, n: int) -> None:
        self.path, self.n, self.decided, self.round = path, n, n, 0

    def __call__(self) -> float:
        import subprocess
        import sys

        self.round += 1
        got = subprocess.run([sys.executable, "-m", "tools.bench.bench_tariff", "--bare-writes", str(self.path),
                              "--store-accounts", str(self.n), "--decided", str(self.decided),
                              "--round", str(self.round)], check=True, capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[2])
        return float(got.stdout.split()[-1])


_D0 = 1748793600                 # 2025-06-02 00:00 China time


def _registers(n: int, days: int) -> np.ndarray:
    """Every meter's forward-energy register (Wh) at the start of day 0 .. ``days``: multiples
    of 10 Wh (the meter's 0.01 kWh), 0 .. 20 kWh a day; a day's column is the same whatever ``days``."""
    daily = np.stack([np.random.default_rng([6, day]).integers(0, 10**6 if day == 0 else 2_000, n) * 10
                      for day in range(days + 1)], axis=1)
    return daily.cumsum(axis=1)


def collect_day(store, registers: np.ndarray, day: int) -> None:
    """A day's collection of every meter's frozen register reading (``registers``: Wh, meter
    ``i + 1`` at ``i``), from the decoded values on:
    each value as the frame decoder gives it (Decimal kWh), made a store row by the read path's
    ``ReadItem.row`` and stored ``batch_size`` rows a transaction by ``Store.add_readings``,
    as ``read_cycle`` does.  The network reads themselves are the read path's (bench_town)."""
    from decimal import Decimal

    from headend.commands.meter_client import read_item

    item = read_item(0x00010000)
    at = _D0 + day * 86400
    col = registers
    step = batch_size(col.size)
    for lo in range(0, col.size, step):
        store.add_readings([item.row(f"{lo + k + 1:012d}", Decimal(v).scaleb(-3), at)
                            for k, v in enumerate(col[lo:lo + step].tolist())])


def build_store_db(path: Path, n: int, days: int, opening_yuan: int = 10) -> None:
    """The benchmark database: ``n`` remote accounts (tariff, limits, opening balances) and the
    day-0 frozen reading of every meter (each later day's is collected in the timed cycle),
    built with the store's bulk methods, plus a copy of it (``bare.db`` beside it) for the
    bare-sqlite3 baseline."""
    import sqlite3

    from headend.store import open_store

    rng = np.random.default_rng(5)
    store = open_store(path, clock=lambda: _D0)
    ids = [f"{i + 1:012d}" for i in range(n)]
    store.add_meters(({"address": a, "link": "tcp://127.0.0.1:9", "customer": a, "mode": "remote"}
                      for a in ids), actor="bench")
    store.update_accounts(ids, actor="bench", tariff="beijing-tou", alarm1_fen=1000, alarm2_fen=500)
    # opening balances 0 .. opening_yuan (10: all at or below alarm 1), and 0..20 kWh a day.  The balances are
    # set straight in the file (a million payments one by one would take longer than the
    # benchmark): what is measured is the cycle, which reads balances, not the payments' ledger
    opening = rng.integers(0, opening_yuan * 100, n).tolist()
    store.add_readings((a, "00010000", r, _D0) for a, r in zip(ids, _registers(n, 0)[:, 0].tolist()))
    store.close()
    copy = sqlite3.connect(path)
    with copy:
        copy.executemany("UPDATE accounts SET balance_fen = ? WHERE customer = ?", zip(opening, ids))
    copy.execute("VACUUM INTO ?", (str(path.parent / "bare.db"),))
    copy.close()


def store_cycle(report, n: int | None = None, days: int = 3, opening_yuan: int = 10) -> None:
    """A day's collection (``collect_day``) and run_cycle on a real SQLite file, ``n`` accounts:
    the store's queries and transactions included.

    The database (``build_store_db``) is built in a child process, so that this process holds
    nothing but what the cycle itself needs (its peak memory is then the cycle's).
    One day per round: every meter's frozen reading of the day is collected, then one cycle
    rates that day for every account (with opening balances up to 10 yuan, the default, every
    account gets a notice the first day: a decision written for each, the worst case; later
    days fewer cross a band and the accounts at the trip level are tripped; with 500 yuan, a
    few in a hundred a day), interleaved with the baseline: bare sqlite3 writing the same rows
    (``_BareWrites``) on a copy of the database.  Reported: accounts/s of collection + cycle
    against that baseline's (median of the pairs, with spread), CPU per account, each stage of
    the last day (wall and CPU), and the peak resident memory during collection and cycle.
    """
    import subprocess
    import sys
    import tempfile

    from headend.costctl.cycle import run_cycle
    from headend.store import open_store
    from headend.tariff.catalog import load_catalog

    n = n or STORE_ACCOUNTS
    # each row names its run: make bench has a day at two sizes (bench-results.json keys by name)
    tag = f"{n:,} accounts, 0..{opening_yuan} yuan: "
    d0 = _D0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tools.bench.bench_tariff", "--build-db", str(Path(tmp) / "bench.db"),
                        "--store-accounts", str(n), "--days", str(days), "--opening-yuan", str(opening_yuan)],
                       check=True,
                       cwd=Path(__file__).resolve().parents[2])
        store = open_store(Path(tmp) / "bench.db", clock=lambda: d0)
        bare = _BareWrites(Path(tmp) / "bare.db", n)
        report(f"  {tag}(building the {n:,}-account database: meters, accounts, their {n:,} day-0 readings)",
               time.perf_counter() - t0, "s")
        catalog = load_catalog()
        energy, args = day_batch(16)
        rate(energy, *args)                     # the kernel loaded from numba's cache before timing
        days_run = iter(range(1, days + 1))
        last: dict = {}

        def cycle() -> float:
            day = next(days_run)
            at = d0 + day * 86400 + 9 * 3600
            regs = _registers(n, day)[:, day].copy()     # the day's register values, as the meters hold them
            _peak_rss_reset()
            t0, c0 = time.perf_counter(), time.process_time()
            collect_day(store, regs, day)
            t1, c1 = time.perf_counter(), time.process_time()
            rep = run_cycle(store, catalog, at)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            rep.stages = {"collection (the day's readings stored)": t1 - t0, **rep.stages}
            rep.stages_cpu = {"collection (the day's readings stored)": c1 - c0, **rep.stages_cpu}
            assert rep.rated == n and not rep.problems and not rep.conflicts, (rep.rated, rep.problems[:3])
            last.update(rep=rep, wall=wall, cpu=cpu, day=day, peak=_peak_rss_mb())
            bare.decided = sum(rep.actions.values())
            last.setdefault("walls", []).append(wall)
            last.setdefault("cpus", []).append(cpu)
            # the money transaction's end: everything but the decisions' audit rows written after it
            after = [k for k in rep.stages if "after the commit" in k]
            last.setdefault("to_commit", []).append(wall - sum(rep.stages[k] for k in after))
            last.setdefault("cpu_to_commit", []).append(cpu - sum(rep.stages_cpu[k] for k in after))
            last.setdefault("peaks", []).append(last["peak"])
            return n / wall

        r = interleaved_values(cycle, bare, rounds=days)
        report(f"cost-control day on SQLite, {n:,} accounts (opening balances 0..{opening_yuan} yuan): collection counted"
               " from each meter's decoded daily frozen reading on (ReadItem.row, Store.add_readings"
               f" {batch_size(n):,} a transaction as read_cycle stores them; the {n:,} network reads and their"
               " frames' decoding are not in it: bench_headend gives their CPU per read) + the cycle (read, rate,"
               " debit, decide, record, the decisions' audit rows after the commit), vs bare sqlite3 writing the"
               " same rows, readings and journal rows in multi-row INSERTs, the money by executemany (same database,"
               " copied)", r.a, "accounts/s", r.b, pairs=r)
        report(f"  {tag}collection + cycle time, {n:,} accounts (median of {days} days)",
               float(np.median(last["walls"])), "s")
        report(f"  {tag}of which up to the cycle's commit (the decisions' audit rows after it left out; median)",
               float(np.median(last["to_commit"])), "s")
        report(f"  {tag}CPU per account, collection + cycle (this process, all threads; median)",
               float(np.median(last["cpus"])) / n * 1e6, "us")
        report(f"  {tag}CPU per account up to the cycle's commit (median)",
               float(np.median(last["cpu_to_commit"])) / n * 1e6, "us")
        report(f"  {tag}peak resident memory during collection + cycle (whole process, highest of {days})",
               max(last["peaks"]), "MB")
        rep = last["rep"]
        report(f"  {tag}accounts with a decision written on day {last['day']} (notice, trip, hold ...)",
               sum(rep.actions.values()), "accounts")
        for name, secs in rep.stages.items():
            report(f"  {tag}day {last['day']} stage: {name} (wall; CPU {rep.stages_cpu.get(name, 0.0) * 1e6 / n:.1f} us"
                   " per account)", secs * 1000, "ms")
        store.close()


def write_forms(report, n: int | None = None) -> None:
    """The forms a cycle's money update could take in SQLite, on the benchmark database of ``n``
    accounts (``build_store_db``), each interleaved with the form the cycle uses
    (``Store.charge_and_set_states`` with ``keys``): one UPDATE of the accounts rows by their
    rowids from the batch's charges (customer order, compare-and-set on the version), setting the
    money columns only (the four state columns are set only for the few accounts whose state
    changed: a separate statement, not timed here).  Against it: the same columns in a narrow
    table keyed by INTEGER PRIMARY KEY updated in key order, and a delta row per account appended
    to a table with no index (to be applied later).  Each run is rolled back, so every one starts
    from the same file."""
    import sqlite3
    import subprocess
    import sys
    import tempfile

    from headend.store.ledger import CHARGE_SETS, CHARGES, charges_table

    n = n or STORE_ACCOUNTS
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        subprocess.run([sys.executable, "-m", "tools.bench.bench_tariff", "--build-db", str(db),
                        "--store-accounts", str(n), "--days", "1"], check=True, cwd=Path(__file__).resolve().parents[2])
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA cache_size = -65536")
        conn.execute("CREATE TABLE bench_money (id INTEGER PRIMARY KEY, balance_fen INTEGER NOT NULL, rem INTEGER NOT"
                     " NULL, ladder_wh INTEGER NOT NULL, rated_until INTEGER, version INTEGER NOT NULL,"
                     " owing_since INTEGER, updated_at INTEGER)")
        conn.execute("INSERT INTO bench_money SELECT rowid, balance_fen, rem, ladder_wh, rated_until, version,"
                     " owing_since, updated_at FROM accounts")
        conn.execute("CREATE TABLE bench_deltas (id INTEGER PRIMARY KEY, account INTEGER NOT NULL, fen INTEGER NOT NULL,"
                     " rem INTEGER NOT NULL, ladder_wh INTEGER NOT NULL, rated_until INTEGER)")
        keys = conn.execute("SELECT rowid, customer, version FROM accounts ORDER BY customer").fetchall()
        t = _D0 + 86400
        # the day's charges as charge_and_set_states keeps them for its statements (the same for
        # every form, so made once, not timed)
        conn.execute(charges_table("BIGINT"))
        conn.executemany(f"INSERT INTO {CHARGES} (pos, k, c, fen, rem, lad, until, fixed, v) VALUES"
                         " (?, ?, ?, 123, 4567, 890, ?, 0, ?)", [(i, r, c, t, v) for i, (r, c, v) in enumerate(keys)])
        sets = CHARGE_SETS + ", updated_at = ?"   # as charge_and_set_states writes it
        cycle_form = (f"UPDATE accounts SET {sets} FROM {CHARGES} t WHERE accounts.rowid = t.k"
                      " AND accounts.customer = t.c AND accounts.version = t.v", [(t, t)])
        forms = {
            "a narrow money table keyed by INTEGER PRIMARY KEY, key order":
                (f"UPDATE bench_money SET {sets} FROM {CHARGES} t WHERE bench_money.id = t.k"
                 " AND bench_money.version = t.v", [(t, t)]),
            "a delta row per account appended (no index), applied later":
                ("INSERT INTO bench_deltas (account, fen, rem, ladder_wh, rated_until) SELECT k, fen, rem, lad, until"
                 f" FROM {CHARGES} ORDER BY pos", [()]),
        }

        def write(sql: str, rows: list) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, rows)
            conn.execute("ROLLBACK")

        for name, (sql, rows) in forms.items():
            r = interleaved(lambda sql=sql, rows=rows: write(sql, rows), lambda: write(*cycle_form), rounds=5,
                            work_a=n, work_b=n)
            report(f"cycle money update, {n:,} accounts on SQLite: {name}, vs the cycle's UPDATE of the money columns"
                   " of each accounts row by rowid (one UPDATE ... FROM the batch's charges, customer order)", r.a,
                   "accounts/s", r.b, pairs=r)
        journal_forms(report, conn, n)
        conn.close()


def journal_forms(report, conn, n: int) -> None:
    """What each index and check of the journal costs a cycle: its ``n`` charge rows appended in
    multi-row INSERTs (as the store appended them before they came from the batch's table of
    charges in one INSERT ... SELECT: the same rows, foreign keys checked as the store has them)
    to a copy of the ledger table with every index it has, interleaved with the
    same rows appended to a copy without one of them.  Each copy holds a day of such rows first,
    so no index is empty; each run is rolled back."""
    import re

    from headend.store.backend import values_statements

    ddl = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'ledger'").fetchone()[0]
    indexes = {"customer": "(customer, id)", "day": "(day)",
               "payment": "(payment_id) WHERE payment_id IS NOT NULL"}
    no_unique = ddl.replace("idem_key TEXT UNIQUE", "idem_key TEXT")
    copies = {
        "every index and check the store has (foreign key, idem_key UNIQUE, customer, day, payment)": (ddl, indexes),
        "no UNIQUE on idem_key (a unique index on the non-NULL keys instead: a charge has none)":
            (no_unique, {**indexes, "idem": "(idem_key) WHERE idem_key IS NOT NULL"}),
        "no index on day": (ddl, {k: v for k, v in indexes.items() if k != "day"}),
        "no index on (customer, id)": (ddl, {k: v for k, v in indexes.items() if k != "customer"}),
        "no foreign key to accounts": (re.sub(r" REFERENCES accounts\(customer\)", "", ddl), indexes),
    }
    cols = "customer, at, kind, amount_fen, balance_after, idem_key, actor, detail, rem_after, rated_to, ref, day"
    key = f"costctl:{_D0 + 86400}:0123456789abcdef"
    customers = [r[0] for r in conn.execute("SELECT customer FROM accounts ORDER BY customer")]

    def rows(day: int) -> list[tuple]:
        # a charge row as charge_and_set_states writes it (its values)
        return [(c, _D0 + day * 86400, "charge", -123, 4567, "costctl", f'{{"batch": "{key}"}}', 890,
                 _D0 + day * 86400, f"batch:{key}", f"2025-06-0{2 + day}") for c in customers]

    def insert(k: int, day_rows: list[tuple], end: str) -> None:
        conn.execute("BEGIN IMMEDIATE")
        for stmt, params in values_statements(f"INSERT INTO bench_journal{k} ({cols}) VALUES ",
                                              "(?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?)", day_rows, "", 999):
            conn.execute(stmt, params)
        conn.execute(end)

    conn.execute("PRAGMA foreign_keys = ON")
    for k, (sql, idx) in enumerate(copies.values()):
        conn.execute(sql.replace("CREATE TABLE ledger", f"CREATE TABLE bench_journal{k}", 1))
        for name, on in idx.items():
            unique = "UNIQUE " if name == "idem" else ""
            conn.execute(f"CREATE {unique}INDEX bench_journal{k}_{name} ON bench_journal{k}{on}")
        insert(k, rows(0), "COMMIT")
    day1 = rows(1)

    def append(k: int) -> None:
        insert(k, day1, "ROLLBACK")

    names = list(copies)
    for k, name in enumerate(names[1:], start=1):
        r = interleaved(lambda k=k: append(k), lambda: append(0), rounds=5, work_a=n, work_b=n)
        report(f"cycle journal rows, {n:,} charges appended on SQLite in 32-row INSERTs: {name},"
               f" vs {names[0]}", r.a, "rows/s", r.b, pairs=r)


if __name__ == "__main__":  # the full-size cost-control cycle: python -m tools.bench.bench_tariff --store-accounts N
    import argparse

    from tools.bench.run import reporter

    ap = argparse.ArgumentParser(description="Cost-control cycle on SQLite only (the rest: make bench)")
    ap.add_argument("--store-accounts", type=int, default=1_000_000, help="accounts (default 1,000,000)")
    ap.add_argument("--days", type=int, default=3, help="cycles, each interleaved with the baseline")
    ap.add_argument("--opening-yuan", type=int, default=10,
                    help="opening balances 0 .. this (default 10: every account below alarm 1 on day 1, a notice for"
                         " each, the worst case; 500: a few in a hundred accounts cross a band a day)")
    ap.add_argument("--kernel", action="store_true",
                    help="the tariff kernel's figures alone (a minute or two; see kernel)")
    ap.add_argument("--write-forms", action="store_true",
                    help="compare the forms of the money update, and what each journal index costs, on SQLite"
                         " instead (see write_forms, journal_forms)")
    ap.add_argument("--build-db", metavar="PATH", help=argparse.SUPPRESS)   # the child that builds the database
    ap.add_argument("--bare-writes", metavar="PATH", help=argparse.SUPPRESS)   # the baseline's child
    ap.add_argument("--decided", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.bare_writes:
        print(bare_writes(Path(opts.bare_writes), opts.store_accounts, opts.decided, opts.round))
    elif opts.kernel:
        kernel(reporter([]))
    elif opts.write_forms:
        write_forms(reporter([]), opts.store_accounts)
    elif opts.build_db:
        build_store_db(Path(opts.build_db), opts.store_accounts, opts.days, opts.opening_yuan)
    else:
        store_cycle(reporter([]), opts.store_accounts, opts.days, opts.opening_yuan)
