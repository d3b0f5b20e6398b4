"""Store throughput on a real SQLite file: what one fleet read cycle and the outbox cost.

Ratios are interleaved (A, B, A, B ..., median of the pair ratios with its spread;
tools/bench/interleave.py) against bare sqlite3 doing the same writes on an equivalent table
in the same run:
* readings stored per second in 1,000-reading batches (one fleet cycle = one batch);
* re-storing an already-stored batch (a re-read: every row ignored);
* accounts charged per second by charge_accounts (one batch, with ledger rows) against a bare
  UPDATE + ledger INSERT per account.
Absolute figures: commands enqueued (with their audit rows) and claimed + confirmed per second;
meters registered per second by add_meters, and the cost-control account queries
(rating_accounts, cost_control_accounts, cost_control_meters) at 20,000 remote accounts.
Storing a read cycle's readings with 20,000 meters against 1,000 (a store each, as many readings
of history per meter, rows in the order a fleet of 20-meter buses answers): the CPU per reading
of add_readings in read_cycle's batches with the WAL checkpoint threshold read_cycle sets
(wal_pages), and the same with SQLite's default of 1,000 pages, what read_cycle left before; and the two against each other at 20,000 meters (four
stores, one cycle each per round, the order rotating; at 1,000 meters the two are the same).
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Callable

from headend.commands.collect import batch_size, wal_pages
from headend.store import open_store
from tools.bench.interleave import interleaved, paired

Report = Callable[..., None]
N_METERS = 1000
CYCLES = 4
RATING_ACCOUNTS = 20_000
WIDE = (1000, 20_000)   # the fleets of the storing-at-scale figure, the first the baseline
HISTORY = 24            # readings per meter stored before it is measured


def _rows(cycle: int) -> list[tuple[str, str, int, int]]:
    t = 1_764_000_000 + 900 * cycle
    return [(f"{i:012d}", "00010000", 1000 * cycle + i, t) for i in range(1, N_METERS + 1)]


class _Bare:
    """Bare sqlite3 on its own file: the same rows into tables shaped like the store's."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("CREATE TABLE r (meter TEXT, di TEXT, read_at INTEGER, value INTEGER, text TEXT,"
                          " stored_at INTEGER, PRIMARY KEY (meter, di, read_at)) WITHOUT ROWID")
        self.conn.execute("CREATE INDEX r_di_time ON r(di, read_at)")  # the store keeps the same index
        self.conn.execute("CREATE TABLE a (customer TEXT PRIMARY KEY, balance_fen INTEGER, rem INTEGER,"
                          " ladder_wh INTEGER, version INTEGER, updated_at INTEGER)")
        self.conn.execute("CREATE TABLE l (id INTEGER PRIMARY KEY AUTOINCREMENT, customer TEXT, at INTEGER,"
                          " kind TEXT, amount_fen INTEGER, balance_after INTEGER, idem_key TEXT UNIQUE, actor TEXT,"
                          " detail TEXT, rem_after INTEGER, rated_to INTEGER)")
        self.conn.execute("CREATE INDEX l_customer ON l(customer, id)")
        self.conn.executemany("INSERT INTO a VALUES (?, 0, 0, 0, 0, 0)", [(f"{i:012d}",) for i in range(1, N_METERS + 1)])

    def readings(self, cycles: range) -> None:
        for cycle in cycles:
            rows = [(m, di, t, v, None, 0) for m, di, v, t in _rows(cycle)]
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany("INSERT INTO r VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", rows)
            self.conn.execute("COMMIT")

    def charges(self, charges: list[tuple[str, int, int, int]]) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        c.executemany("UPDATE a SET balance_fen = balance_fen - ?, rem = ?, ladder_wh = ?, version = version + 1,"
                      " updated_at = 1 WHERE customer = ?", [(f, r, lw, cu) for cu, f, r, lw in charges])
        c.executemany("INSERT INTO l (customer, at, kind, amount_fen, balance_after, actor, detail, rem_after)"
                      " VALUES (?, 1, 'charge', ?, 0, 'bench', '{}', ?)", [(cu, -f, r) for cu, f, r, _ in charges])
        c.execute("COMMIT")


def run(report: Report) -> None:
    """Run the store benchmarks and report each figure."""
    with tempfile.TemporaryDirectory() as tmp:
        bare = _Bare(Path(tmp) / "bare.db")
        store = open_store(Path(tmp) / "store.db")
        for i in range(1, N_METERS + 1):
            store.add_meter(f"{i:012d}", link=f"tcp://127.0.0.1:{9000 + i % 50}", customer=f"{i:012d}",
                            actor="bench", mode="remote")
        # each side stores new cycles of readings in turn, then both re-store what they hold
        new = iter(range(10**6))

        def store_new() -> None:
            for _ in range(CYCLES):
                assert store.add_readings(_rows(next(new))) == N_METERS

        bare_new = iter(range(10**6))

        def bare_store_new() -> None:
            k = next(bare_new)
            bare.readings(range(k * CYCLES, (k + 1) * CYCLES))

        r = interleaved(store_new, bare_store_new, rounds=5, work_a=CYCLES * N_METERS, work_b=CYCLES * N_METERS)
        report("store: readings stored/s (1,000 per transaction) vs bare sqlite3 executemany, same rows", r.a,
               "readings/s", r.b, pairs=r)
        r = interleaved(lambda: [store.add_readings(_rows(c)) for c in range(CYCLES)],
                        lambda: bare.readings(range(CYCLES)), rounds=5,
                        work_a=CYCLES * N_METERS, work_b=CYCLES * N_METERS)
        report("store: re-read readings ignored/s vs bare sqlite3 ON CONFLICT DO NOTHING, same rows", r.a,
               "readings/s", r.b, pairs=r)

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
        batch = iter(range(10**6))
        r = interleaved(lambda: store.charge_accounts(f"bench-day-{next(batch)}", charges, actor="bench"),
                        lambda: bare.charges(charges), rounds=7, work_a=N_METERS, work_b=N_METERS)
        report("store: accounts charged/s (one batch, with ledger) vs bare sqlite3 UPDATE + ledger INSERT",
               r.a, "accounts/s", r.b, pairs=r)
        store.close()
        bare.conn.close()

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


        _wide(report, Path(tmp))


def _wide(report: Report, tmp: Path) -> None:
    """CPU per reading storing a cycle's readings at WIDE[1] meters against WIDE[0], with the WAL
    threshold of read_cycle (wal_pages) and with SQLite's default (before)."""
    sides, stores = {}, {}
    for scaled in (True, False):
        for n in WIDE:
            store, at = open_store(tmp / f"wide-{n}-{scaled}.db"), [1_764_000_000]
            store.checkpoint_every(wal_pages(n) if scaled else 1000)

            def cycle(store=store, at=at, n=n) -> float:  # CPU us per reading, checkpoints in commits included
                at[0] += 900
                # in the order replies arrive from buses of 20: every bus's first meter, then the second ...
                rows = [(f"{b + k + 1:012d}", "00010000", 1000 + b + k, at[0]) for k in range(20) for b in range(0, n, 20)]
                size, t = batch_size(n), time.thread_time()
                for k in range(0, n, size):
                    store.add_readings(rows[k:k + size])
                return (time.thread_time() - t) / n * 1e6

            for _ in range(HISTORY):
                cycle()
            sides[(scaled, n)], stores[(scaled, n)] = cycle, store
    keys = list(stores)
    values: dict[tuple[bool, int], list[float]] = {key: [] for key in keys}
    for r in range(11):   # every side once a round, the order rotating
        for k in range(len(keys)):
            key = keys[(r + k) % len(keys)]
            values[key].append(sides[key]())
    small, wide = WIDE
    for scaled, how in ((True, "WAL checkpoint threshold a cycle's readings in pages, as read_cycle sets"),
                        (False, "SQLite's default threshold of 1,000 pages, as before")):
        r = paired(values[(scaled, wide)], values[(scaled, small)])
        report(f"store: CPU per reading storing a cycle (add_readings in read_cycle's batches; {how}) with "
               f"{wide:,} meters vs {small:,}, {HISTORY} readings of history a meter", r.a, "us", r.b, pairs=r)
    r = paired(values[(True, wide)], values[(False, wide)])
    report(f"store: CPU per reading storing a {wide:,}-meter cycle, read_cycle's WAL threshold vs SQLite's default",
           r.a, "us", r.b, pairs=r)
    for store in stores.values():
        store.close()


if __name__ == "__main__":
    from tools.bench.run import reporter

    run(reporter([]))
