"""Store throughput on a real SQLite file: what one fleet read cycle and the outbox cost.

Figures, each against a same-run baseline where one exists:
* readings stored per second in 1,000-reading batches (one fleet cycle = one batch), against a
  bare sqlite3 executemany of the same rows into an equivalent table (the ceiling);
* re-storing an already-stored batch (a re-read: every row ignored);
* commands enqueued (with their audit rows) per second, and claimed + confirmed per second;
* accounts charged per second by charge_accounts (one batch, with ledger rows);
* meters registered per second by add_meters, and the cost-control account queries
  (rating_accounts, cost_control_accounts, cost_control_meters) at 20,000 remote accounts.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Callable

from headend.store import open_store

Report = Callable[..., None]
N_METERS = 1000
CYCLES = 20
RATING_ACCOUNTS = 20_000


def _rows(cycle: int) -> list[tuple[str, str, int, int]]:
    t = 1_764_000_000 + 900 * cycle
    return [(f"{i:012d}", "00010000", 1000 * cycle + i, t) for i in range(1, N_METERS + 1)]


def _bare_sqlite(path: Path) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE r (meter TEXT, di TEXT, read_at INTEGER, value INTEGER, text TEXT, stored_at INTEGER,"
                 " PRIMARY KEY (meter, di, read_at)) WITHOUT ROWID")
    conn.execute("CREATE INDEX r_di_time ON r(di, read_at)")  # the store keeps the same index
    t0 = time.perf_counter()
    for cycle in range(CYCLES):
        rows = [(m, di, t, v, None, 0) for m, di, v, t in _rows(cycle)]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO r VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", rows)
        conn.execute("COMMIT")
    dt = time.perf_counter() - t0
    conn.close()
    return CYCLES * N_METERS / dt


def run(report: Report) -> None:
    """Run the store benchmarks and report each figure."""
    with tempfile.TemporaryDirectory() as tmp:
        base = _bare_sqlite(Path(tmp) / "bare.db")
        store = open_store(Path(tmp) / "store.db")
        for i in range(1, N_METERS + 1):
            store.add_meter(f"{i:012d}", link=f"tcp://127.0.0.1:{9000 + i % 50}", customer=f"{i:012d}",
                            actor="bench", mode="remote")
        t0 = time.perf_counter()
        for cycle in range(CYCLES):
            assert store.add_readings(_rows(cycle)) == N_METERS
        rate = CYCLES * N_METERS / (time.perf_counter() - t0)
        report("store: readings stored/s (1,000 per transaction)", rate, "readings/s", baseline=base)

        t0 = time.perf_counter()
        for cycle in range(CYCLES):
            assert store.add_readings(_rows(cycle)) == 0
        report("store: re-read readings ignored/s", CYCLES * N_METERS / (time.perf_counter() - t0), "readings/s",
               baseline=base)

        meters = [f"{i:012d}" for i in range(1, N_METERS + 1)]
        t0 = time.perf_counter()
        for m in meters:
            store.enqueue(m, "read", {"di": "00010000"}, actor="bench")
        report("store: commands enqueued/s (one transaction each, with audit)",
               N_METERS / (time.perf_counter() - t0), "commands/s")

        t0 = time.perf_counter()
        done = 0
        while True:
            got = store.claim_next(limit=100)
            if not got:
                break
            with store.atomic():
                for cmd in got:
                    store.confirm(cmd.id, {"value": 1})
            done += len(got)
        assert done == N_METERS
        report("store: commands claimed + confirmed/s (100 per claim)", done / (time.perf_counter() - t0),
               "commands/s")

        charges = [(f"{i:012d}", 7, 12345, 1000) for i in range(1, N_METERS + 1)]
        t0 = time.perf_counter()
        assert store.charge_accounts("bench-day-1", charges, actor="bench") == N_METERS
        report("store: accounts charged/s (one batch, with ledger)", N_METERS / (time.perf_counter() - t0),
               "accounts/s")
        store.close()

        # the cost-control account queries at 20,000 remote accounts (once quadratic: 26 s)
        big = open_store(Path(tmp) / "accounts.db")
        ids = [f"{i:012d}" for i in range(1, RATING_ACCOUNTS + 1)]
        t0 = time.perf_counter()
        big.add_meters(({"address": a, "link": "tcp://127.0.0.1:9", "customer": a, "mode": "remote"} for a in ids),
                       actor="bench")
        report(f"store: meters registered/s (add_meters, {RATING_ACCOUNTS:,} in one batch)",
               RATING_ACCOUNTS / (time.perf_counter() - t0), "meters/s")
        for name, query in (("rating_accounts()", big.rating_accounts),
                            ("cost_control_accounts()", big.cost_control_accounts),
                            ("cost_control_meters()", big.cost_control_meters)):
            t0 = time.perf_counter()
            assert len(query()) == RATING_ACCOUNTS
            report(f"store: {name}, {RATING_ACCOUNTS:,} remote accounts", (time.perf_counter() - t0) * 1000, "ms")
        big.close()


if __name__ == "__main__":
    run(lambda name, value, unit, baseline=None: print(f"{name:<60} {value:>12,.0f} {unit}"
                                                       + (f"  ({value / baseline:.2f}x of {baseline:,.0f})"
                                                          if baseline else "")))
