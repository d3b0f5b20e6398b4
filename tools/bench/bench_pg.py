"""Past one machine: PostgreSQL against SQLite, and Dask rating against the in-process kernel, in one run.

* **Payments/s.**  Signed ``POST /v1/payments`` to remote accounts through real `headend serve --api`
  processes: on PostgreSQL with one serve and with two serves (the requests shared between them)
  against one serve on an SQLite file (WAL, synchronous=NORMAL: the store's setting), windows
  interleaved (tools/bench/interleave.py), after a history of 4,000 payments on each engine and
  ``ANALYZE`` on PostgreSQL (a server in service has its planner statistics from autovacuum).  The PostgreSQL server is a throwaway one on this
  machine (tools/pg_server.py: shared_buffers 256 MB, the rest PostgreSQL's defaults, as a
  dedicated server starts), over its Unix socket, with ``fsync = on``, twice: with
  ``synchronous_commit = off`` (as durable as SQLite's WAL with synchronous=NORMAL: an OS crash
  may lose the last commits, never corrupt), then with PostgreSQL's default ``on``, as a head-end's
  server keeps it for money (every commit waits for its WAL on disk: the disk's flushes per second,
  also reported, are then one connection's ceiling).  Each serve holds one connection and runs its
  requests on its event loop (the requests of one loop turn share a transaction: the API's group
  commit); the second serve is a second connection.  Beside each ratio: the CPU per payment of
  what serves it in the same windows (the serve processes, on PostgreSQL with the server's
  processes), and the machine's load average during the windows.  Aim: PostgreSQL >= 0.5x SQLite.
* **A cost-control cycle.**  One day rated, debited and decided for N remote accounts on PostgreSQL
  against the same on SQLite, interleaved (a day each).  Both databases hold the same rows: the
  SQLite one is built with the store's bulk methods, then copied into PostgreSQL with COPY (the
  copy is the benchmark's set-up, not what is measured).  `make bench` runs N = 1,000,000 (about
  5 minutes, 1 GB; ``BENCH_PG_ACCOUNTS=20000`` or ``--cycle-accounts 20000`` for a quick run).
* **The cycle's stage on Dask.**  The cost-control cycle's readings -> interval energy -> rating
  stage (``headend.costctl.collect.rate_partition``) for N accounts of one SQLite file (WAL): on a
  LocalCluster of 2 worker processes (the kernel on one thread in each), each worker opening the
  store and reading its own partition's readings (``DaskRating.rate_cycle``), against the same
  stage in this process (the kernel on this machine's threads), interleaved, 5 pairs.  The
  figure is accounts per CPU-second of every process involved (this one, where the LocalCluster's
  scheduler runs, and the workers; this one alone in process): throughput per core; the wall
  second ratio of the same pairs beside it.  The accounts are read by the head-end either way and
  are not timed.  Beside it, what a partition's per-account inputs cost sent as arrays against
  read by the worker from the store.  Daily intervals at N (`make bench`: 1,000,000, about 2 GB;
  ``BENCH_DASK_CYCLE_ACCOUNTS``), 96 a day at ``BENCH_DASK_CYCLE_96_ACCOUNTS`` (100,000: the
  store takes its 97 readings an account at about 100,000 a second); daily at
  ``BENCH_DASK_CYCLE_PG_ACCOUNTS`` (1,000,000) on PostgreSQL, the workers connecting to the
  server as the head-end does, the server's processes' CPU counted on both sides; then four whole
  cycles of the N accounts on SQLite (rate, debit, decide, act), two on the cluster and two in
  process.  Aim: >= 0.6.
* **Rating on Dask.**  N accounts x 96 intervals rated by a LocalCluster of 2 worker processes,
  the kernel on one thread in each, against the in-process kernel on this machine's 2 threads,
  interleaved; both use the 2 cores, so the ratio is per core.  Twice: with the rows built on the
  workers (``DaskRating.place``, each worker generating its partition as it would load it from the
  readings' store: the cost of the scheduling and of bringing 12 bytes per account back) at N, and
  with the rows sent from this process in each call (384 bytes per account over a socket: the
  cost a cluster pays for moving readings, and why the cost-control cycle has its workers read
  their readings from the store instead: the dask-cycle part) at N/10.  `make bench` rates
  N = 10,000,000 accounts (about 8 GB at the peak; ``BENCH_PG_RATING_ACCOUNTS=1000000`` for a quick
  run).  Aim: >= 0.6.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CYCLE_ACCOUNTS = int(os.environ.get("BENCH_PG_ACCOUNTS", "1000000"))
RATING_ACCOUNTS = int(os.environ.get("BENCH_PG_RATING_ACCOUNTS", "10000000"))
DASK_CYCLE_ACCOUNTS = int(os.environ.get("BENCH_DASK_CYCLE_ACCOUNTS", "1000000"))
DASK_CYCLE_96_ACCOUNTS = int(os.environ.get("BENCH_DASK_CYCLE_96_ACCOUNTS", "100000"))
DASK_CYCLE_PG_ACCOUNTS = int(os.environ.get("BENCH_DASK_CYCLE_PG_ACCOUNTS", "1000000"))
# the payments' server: PostgreSQL's durable defaults (what a head-end's server keeps for money)
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
ASYNC_COMMIT = {**DURABLE, "synchronous_commit": "off"}
PAY_ACCOUNTS = 2_000
HISTORY = 4_000  # payments taken before the windows (on each engine)
CONNECTIONS = 32
WINDOW_S = 1.0
ROUNDS = 9  # windows of each side: one-second windows on a shared machine vary widely
_D0 = 1748793600  # 2025-06-02 00:00 China time


# ----------------------------------------------------------------------------- payments/s
class _Head:
    """A database with remote accounts and one API channel, and ``serves`` serve processes on it."""

    def __init__(self, tmp: Path, db: str, serves: int, tag: str) -> None:
        from headend.keys import KeyStore
        from headend.payments import issue_credentials
        from headend.store import open_store
        from tools.bench.bench_payments import CHANNEL, PASSPHRASE, _spawn

        master = os.urandom(32)
        key_file = tmp / f"{tag}.key"
        KeyStore.create(key_file, PASSPHRASE, master=master, scrypt_n=2**12)
        env = dict(os.environ, PREPAID645_DB=db, PREPAID645_KEY_FILE=str(key_file),
                   PREPAID645_KEY_PASSPHRASE=PASSPHRASE, USER="bench")
        env.pop("PREPAID645_CONFIG", None)
        self.db = db
        self.remote = [f"{900_001 + i:012d}" for i in range(PAY_ACCOUNTS)]
        with open_store(db) as s:
            with s.atomic():
                for c in self.remote:
                    s.add_account(c, actor="bench")
            self.key_id, secret, sealed = issue_credentials(KeyStore.in_memory(master), CHANNEL)
            s.add_channel(CHANNEL, "online_banking", actor="bench", key_id=self.key_id, secret=sealed)
        self.secret = secret.encode()
        self.procs, self.ports = [], []
        for _ in range(serves):
            seen: list[str] = []
            self.procs.append(_spawn([sys.executable, "-m", "headend.cli.main", "serve", "--api", "tcp://127.0.0.1:0",
                                      "--no-costctl"], env, "headend serve: working", seen))
            url = next(x for x in seen if "payments API on" in x).split("payments API on ")[1].split()[0]
            self.ports.append(int(url.rsplit(":", 1)[1]))

    def payment(self, port: int, txn: str, i: int) -> bytes:
        import json

        from headend.api.signing import sign_headers
        from tools.bench.bench_payments import CHANNEL, _request

        body = json.dumps({"channel_id": CHANNEL, "txn_id": txn, "customer_no": self.remote[i % PAY_ACCOUNTS],
                           "amount_fen": 100 + i % 900,
                           "paid_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, separators=(",", ":")).encode()
        headers = sign_headers(self.key_id, self.secret, "POST", "/v1/payments", body)
        return _request("POST", "/v1/payments", f"127.0.0.1:{port}", body, headers)

    def close(self) -> None:
        from tools.proc import terminate

        terminate(*self.procs, grace_s=60)


def _fsyncs_per_s(folder: Path, n: int = 200) -> float:
    """8 KB writes each flushed to disk (fdatasync) per second in ``folder``: with synchronous_commit
    on, one connection's commits per second cannot pass this (each waits for one such flush)."""
    path = folder / "fsync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            os.write(fd, b"\0" * 8192)
            os.fdatasync(fd)
        return n / (time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()


def _server_cpu(pids: list[int]) -> float:
    from tools.proc import cpu_seconds

    return sum(cpu_seconds(p) for p in pids)


def _payments(report: Any, pg: Any, tmp: Path, settings: dict[str, str]) -> None:
    import psycopg

    from tools.bench.bench_payments import _Conn, _drive
    from tools.bench.interleave import interleaved_values, paired
    from tools.proc import descendants

    loop = asyncio.new_event_loop()
    lite = _Head(tmp, str(tmp / "pay.db"), 1, "lite")
    post = _Head(tmp, pg.create_db(), 2, "pg")
    try:
        async def conns(port: int, n: int) -> list[_Conn]:
            return list(await asyncio.gather(*(_Conn.open("127.0.0.1", port) for _ in range(n))))

        counter = iter(range(10**9))
        size = {"lite": 400, "one": 400, "two": 400}
        # CPU per payment of what serves it, in the same windows: the serve processes, and on
        # PostgreSQL the server's processes too (its backends do the statements' work)
        master = int((pg.data / "postmaster.pid").read_text().split()[0])
        cpu_us: dict[str, list[float]] = {k: [] for k in size}

        def window(kind: str) -> float:
            # fresh connections each window (an idle keep-alive connection is closed by the server)
            head = lite if kind == "lite" else post
            ports = [post.ports[0]] * (CONNECTIONS // 2) + [post.ports[1]] * (CONNECTIONS // 2) if kind == "two" else None
            cs = loop.run_until_complete(conns(head.ports[0], CONNECTIONS)) if ports is None else \
                loop.run_until_complete(conns(post.ports[0], CONNECTIONS // 2)) + \
                loop.run_until_complete(conns(post.ports[1], CONNECTIONS // 2))
            reqs = [head.payment(head.ports[0] if ports is None else ports[i % CONNECTIONS], f"T{next(counter)}", i)
                    for i in range(size[kind])]
            serving = [p.pid for p in head.procs] + ([master, *descendants(master)] if head is post else [])
            cpu0 = _server_cpu(serving)
            if ports is not None:  # each connection sends what was signed for its serve's host:port
                by_conn: list[list[bytes]] = [reqs[k::CONNECTIONS] for k in range(CONNECTIONS)]
                async def all_conns() -> None:
                    await asyncio.gather(*(_drive([cs[k]], by_conn[k], {201}) for k in range(CONNECTIONS)))

                t0 = time.perf_counter()
                loop.run_until_complete(all_conns())
                rate = len(reqs) / (time.perf_counter() - t0)
            else:
                rate = loop.run_until_complete(_drive(cs, reqs, {201}))
            cpu_us[kind].append((_server_cpu(serving) - cpu0) * 1e6 / len(reqs))
            size[kind] = max(200, int(rate * WINDOW_S))
            for c in cs:
                c.close()
            return rate

        for kind in size:
            window(kind)
        # a head-end in service: a history of payments on both engines, and PostgreSQL's planner
        # statistics taken of it (autovacuum takes them within a minute of a table's growth; a
        # fresh server would plan the first minute's queries on a table it believes empty)
        for head in (lite, post):
            cs = loop.run_until_complete(conns(head.ports[0], CONNECTIONS))
            loop.run_until_complete(_drive(cs, [head.payment(head.ports[0], f"H{next(counter)}", i)
                                                for i in range(HISTORY)], {201}))
            for c in cs:
                c.close()
        with psycopg.connect(post.db, autocommit=True) as analyze:
            analyze.execute("ANALYZE")
        server = ", ".join(f"{k} {v}" for k, v in settings.items())
        for kind, what in (("one", "one serve"), ("two", "two serves")):
            load0 = os.getloadavg()[0]
            cpu_us[kind].clear()
            cpu_us["lite"].clear()
            r = interleaved_values(lambda kind=kind: window(kind), lambda: window("lite"), rounds=ROUNDS)
            report(f"payments/s on PostgreSQL ({server}), {what} vs SQLite (WAL, synchronous=NORMAL), one serve,"
                   " same machine", r.a, "payments/s", baseline=r.b, pairs=r)
            c = paired(cpu_us[kind], cpu_us["lite"])
            report(f"  CPU per payment on PostgreSQL ({server}), {what}: serve processes + PostgreSQL server processes,"
                   " vs the SQLite serve's, same windows", c.a, "us", baseline=c.b, pairs=c)
            report(f"load average (1 min) of the machine during those windows ({server}, {what})",
                   (load0 + os.getloadavg()[0]) / 2, "runnable")
    finally:
        loop.close()
        lite.close()
        post.close()


# ----------------------------------------------------------------------------- a cost-control cycle
def _build(db: str, n: int, days: int, interval_s: int = 86400) -> None:
    from headend.store import open_store

    rng = np.random.default_rng(5)
    ids = [f"{i + 1:012d}" for i in range(n)]
    steps = days * 86400 // interval_s
    with open_store(db, clock=lambda: _D0) as store:
        store.add_meters(({"address": a, "link": "tcp://127.0.0.1:9", "customer": a, "mode": "remote"} for a in ids),
                         actor="bench")
        store.update_accounts(ids, actor="bench", tariff="beijing-tou", alarm1_fen=1000, alarm2_fen=500)
        daily = rng.integers(0, 20_000 * interval_s // 86400, (n, steps + 1))
        daily[:, 0] = rng.integers(0, 10**7, n)
        regs = daily.cumsum(axis=1).tolist()
        store.add_readings((a, "00010000", regs[i][d], _D0 + d * interval_s) for i, a in enumerate(ids)
                           for d in range(steps + 1))
        with store._tx() as tx:  # opening balances (a bench fleet: no journal behind them)
            tx.executemany("UPDATE accounts SET balance_fen = ? WHERE customer = ?",
                           zip(rng.integers(0, 100_000, n).tolist(), ids))


def _copy_into_postgres(lite: str, url: str) -> None:
    """Every row of the SQLite benchmark database into the (migrated, empty) PostgreSQL one, by
    COPY: the same data on both sides, in a fraction of the time row-by-row inserts take."""
    import sqlite3

    import psycopg

    from headend.store import open_store

    with open_store(url) as target:
        theirs = target._db.table_columns()
        target._db.close()
    src = sqlite3.connect(lite)
    try:
        with psycopg.connect(url) as pg:
            for table, cols in theirs.items():
                if table in ("schema_version", "serve_leases"):
                    continue
                names = ", ".join(cols)
                with pg.cursor() as cur, cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                    for row in src.execute(f"SELECT {names} FROM {table}"):
                        copy.write_row(row)
            pg.execute("ANALYZE")
    finally:
        src.close()
    with open_store(url) as target:
        target._db.reset_identities()


def _cycle(report: Any, pg: Any, tmp: Path, n: int = CYCLE_ACCOUNTS, days: int = 3) -> None:
    from headend.costctl.cycle import run_cycle
    from tools.bench.bench_tariff import _peak_rss_mb, _peak_rss_reset
    from headend.store import open_store
    from headend.tariff.catalog import load_catalog
    from tools.bench.interleave import interleaved

    lite_db, pg_db = str(tmp / "cycle.db"), pg.create_db()
    t0 = time.perf_counter()
    _build(lite_db, n, days)
    _copy_into_postgres(lite_db, pg_db)
    report(f"  (building the {n:,}-account databases: meters, accounts, {(days + 1) * n:,} readings each)",
           time.perf_counter() - t0, "s")
    catalog = load_catalog()
    # the first cycle in a process loads the kernel and warms what it imports: a small fleet pays
    # for that here, not the first engine measured
    _build(str(tmp / "warm.db"), 100, 1)
    with open_store(str(tmp / "warm.db"), clock=lambda: _D0) as warm:
        run_cycle(warm, catalog, _D0 + 86400 + 9 * 3600)
    stores = {k: open_store(db, clock=lambda: _D0) for k, db in (("lite", lite_db), ("pg", pg_db))}
    next_day = {"lite": iter(range(1, days + 1)), "pg": iter(range(1, days + 1))}
    walls: dict[str, list[float]] = {"lite": [], "pg": []}
    peaks: dict[str, list[float]] = {"lite": [], "pg": []}
    can_reset = _peak_rss_reset()

    def cycle(kind: str) -> None:
        at = _D0 + next(next_day[kind]) * 86400 + 9 * 3600
        s = stores[kind]
        s._clock = lambda: at
        _peak_rss_reset()
        t = time.perf_counter()
        rep = run_cycle(s, catalog, at)
        walls[kind].append(time.perf_counter() - t)
        peaks[kind].append(_peak_rss_mb())
        assert rep.rated == n, rep

    try:
        r = interleaved(lambda: cycle("pg"), lambda: cycle("lite"), rounds=days, work_a=n, work_b=n, warmup=False)
    finally:
        for s in stores.values():
            s.close()
    report(f"cost-control cycle, {n:,} accounts x 1 day: PostgreSQL vs SQLite", r.a, "accounts/s", baseline=r.b,
           pairs=r)
    report(f"  cycle time on PostgreSQL, {n:,} accounts (median of {days} days)", float(np.median(walls["pg"])), "s")
    report(f"  cycle time on SQLite, {n:,} accounts (median of {days} days)", float(np.median(walls["lite"])), "s")
    if can_reset:  # the head-end process's own peak during one cycle (the server's memory is its own)
        for kind, engine in (("pg", "PostgreSQL"), ("lite", "SQLite")):
            report(f"  peak memory of the head-end process during a cycle on {engine}, {n:,} accounts (largest of"
                   f" {days} days)", max(peaks[kind]), "MB")


# ----------------------------------------------------------------------------- the cycle's stage on Dask
def _stage_pairs(report: Any, engine: Any, db: str, n: int, interval_s: int, at: int, rounds: int,
                 server: Any = None) -> None:
    """The cycle's readings -> interval energy -> rating stage for the accounts of ``db``, on the
    cluster (each worker reading its partition from the store) against in process, interleaved:
    accounts per CPU-second of every process involved, and per wall second.  ``server``: the
    PostgreSQL server of ``db`` (its processes' CPU counted on both sides)."""
    from headend.costctl.collect import PartitionInput, rate_partition, read_readings, reading_window
    from headend.costctl.cycle import _Accounts
    from headend.store import open_store
    from headend.tariff.catalog import load_catalog
    from headend.tariff.kernel import get_num_threads, rate
    from tools.bench.interleave import interleaved_values, paired
    from tools.proc import cpu_seconds, descendants

    me = os.getpid()
    catalog = load_catalog()
    phase = (-8 * 3600) % interval_s
    last_end = (at - phase) // interval_s * interval_s + phase
    store = open_store(db, migrate=False)
    acc = _Accounts(store.cost_control_columns())      # read by the head-end either way: not timed
    names = sorted({t for t in acc.tariff if t is not None})
    t_index = np.array([names.index(t) for t in acc.tariff], dtype=np.int64)
    fleet = PartitionInput(acc.meter_int, acc.acct_of_row, acc.rated_until, t_index, acc.ladder, acc.rem)
    tariffs = [catalog[t] for t in names]
    walls: dict[str, list[float]] = {"dask": [], "here": []}
    fen: dict[str, int] = {}

    def side(kind: str) -> float:
        # CPU of every process the side uses: this one (the scheduler runs in it), and on the
        # cluster side the worker processes too (descendants: the LocalCluster's workers)
        pids = [me, *sorted(descendants(me))] if kind == "dask" else [me]
        if server is not None:
            master = int((server.data / "postmaster.pid").read_text().split()[0])
            pids += [master, *sorted(descendants(master))]
        c0 = sum(cpu_seconds(p) for p in pids)
        t0 = time.perf_counter()
        if kind == "dask":
            got = engine.rate_cycle(store.address, fleet, tariffs, last_end=last_end, interval_s=interval_s,
                                    utc_offset_s=8 * 3600, snap_s=0)
        else:
            cols = read_readings(store, *reading_window(fleet.rated_until, last_end, interval_s, 0))
            got = rate_partition(fleet, cols, tariffs, last_end, interval_s, 8 * 3600, 0, rate)
            del cols
        wall = time.perf_counter() - t0
        cpu = sum(cpu_seconds(p) for p in pids) - c0
        assert got.idx.size == n, (kind, got.idx.size, got.problems[:3])
        fen.setdefault(kind, int(got.fen.sum()))
        walls[kind].append(n / wall)
        return n / cpu

    side("dask"), side("here")    # warm: the kernel loaded and the pages cached on both sides
    assert fen["dask"] == fen["here"], fen
    load0 = os.getloadavg()[0]
    walls["dask"].clear(), walls["here"].clear()
    r = interleaved_values(lambda: side("dask"), lambda: side("here"), rounds=rounds)
    load = (load0 + os.getloadavg()[0]) / 2
    store.close()
    per = f"{86400 // interval_s} interval{'s' if interval_s < 86400 else ''} a day ({interval_s} s)"
    engine_name = "SQLite file (WAL)" if server is None else "PostgreSQL (its server's processes counted on both sides)"
    what = (f"cost-control cycle's readings -> interval energy -> rating stage, {n:,} accounts x 1 day, {per}, "
            f"{engine_name}: Dask LocalCluster of 2 worker processes x 1 kernel thread, each opening the store and reading"
            f" its partition's readings, vs in-process ({get_num_threads()} kernel threads), same database")
    report(f"{what}; per CPU-second of all processes (head-end + scheduler + workers vs head-end)", r.a,
           "accounts/CPU-s", baseline=r.b, pairs=r)
    w = paired(walls["dask"], walls["here"])
    tag = f"{n:,} accounts, {per}, {'SQLite' if server is None else 'PostgreSQL'}"
    report(f"  the same stage, same pairs, per wall second ({tag})", w.a, "accounts/s",
           baseline=w.b, pairs=w)
    report(f"  load average (1 min) of the machine during those pairs ({tag})", load, "runnable")


def _inputs_pairs(report: Any, db: str, rounds: int = 5) -> None:
    """A partition's per-account inputs (meter, rated_until, ladder, remainder, tariff) for half the
    accounts of ``db``: sent by the head-end as arrays (cut out, pickled and unpickled, as Dask
    moves them) against read by the worker from the store (the query a worker would run, its rows
    made into the same arrays), interleaved, CPU per account."""
    import pickle

    from headend.costctl.collect import PartitionInput
    from headend.costctl.cycle import _Accounts
    from headend.store import open_store
    from tools.bench.interleave import interleaved_values

    store = open_store(db, migrate=False)
    acc = _Accounts(store.cost_control_columns())
    fleet = PartitionInput(acc.meter_int, acc.acct_of_row, acc.rated_until, np.zeros(acc.n, dtype=np.int64),
                           acc.ladder, acc.rem)
    half = np.arange(acc.n // 2)
    lo, hi = fleet.take(half).meter_span()

    def sent() -> float:
        c = time.process_time()
        pickle.loads(pickle.dumps(fleet.take(half), protocol=5))
        return half.size / (time.process_time() - c)

    def read() -> float:
        c = time.process_time()
        with store._tx(write=False) as tx:
            rows = tx.all("SELECT CAST(m.address AS BIGINT), a.rated_until, a.ladder_wh, a.rem, a.tariff FROM meters m"
                          " JOIN accounts a ON a.customer = m.customer WHERE m.mode = 'remote' AND m.address >= ?"
                          " AND m.address < ? ORDER BY a.customer, m.address", (f"{lo:012d}", f"{hi:012d}"))
        cols = list(zip(*rows))
        del rows
        [np.array([-1 if v is None else v for v in col], dtype=np.int64) for col in cols[:4]]
        return half.size / (time.process_time() - c)

    load0 = os.getloadavg()[0]
    r = interleaved_values(sent, read, rounds=rounds)
    load = (load0 + os.getloadavg()[0]) / 2
    store.close()
    report(f"  a partition's per-account inputs ({half.size:,} accounts: meter, rated_until, ladder, remainder, tariff):"
           f" sent by the head-end as arrays (cut, pickled, unpickled) vs read by the worker from the SQLite file"
           f" (load average {load:.1f})", r.a, "accounts/CPU-s", baseline=r.b, pairs=r)


def _cycle_dask(report: Any, tmp: Path, n: int, n96: int, pg: Any = None, n_pg: int = 0) -> None:
    """The cycle's stage on a LocalCluster of 2 worker processes against in process (module doc),
    at ``n`` accounts with daily intervals and ``n96`` accounts with 96 a day, and ``n_pg`` daily
    on the PostgreSQL server ``pg``; then whole cycles."""
    from distributed import LocalCluster

    from headend.costctl.cycle import run_cycle
    from headend.costctl.distributed import DaskRating
    from headend.store import open_store
    from headend.tariff.catalog import load_catalog
    from headend.tariff.kernel import rate
    from tools.bench.interleave import paired

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=50)
    engine = DaskRating(cluster.scheduler_address, kernel_threads=1)
    try:
        db = str(tmp / "dcycle.db")
        t0 = time.perf_counter()
        days = 5                # a day for the stage pairs, then four whole cycles
        _build(db, n, days)
        report(f"  (building the {n:,}-account SQLite database: {(days + 1) * n:,} readings)",
               time.perf_counter() - t0, "s")
        # ten minutes past midnight: the day just ended is the last complete interval either way
        _stage_pairs(report, engine, db, n, 86400, _D0 + 86400 + 600, rounds=5)
        _inputs_pairs(report, db)
        if n96:
            db96 = str(tmp / "dcycle96.db")
            t0 = time.perf_counter()
            _build(db96, n96, 1, interval_s=900)
            report(f"  (building the {n96:,}-account SQLite database: {97 * n96:,} readings, 96 a day)",
                   time.perf_counter() - t0, "s")
            _stage_pairs(report, engine, db96, n96, 900, _D0 + 86400 + 600, rounds=5)
        if pg is not None and n_pg:
            lite, url = str(tmp / "dcycle-pg.db"), pg.create_db()
            t0 = time.perf_counter()
            _build(lite, n_pg, 1)
            _copy_into_postgres(lite, url)
            report(f"  (building the {n_pg:,}-account PostgreSQL database: {2 * n_pg:,} readings)",
                   time.perf_counter() - t0, "s")
            _stage_pairs(report, engine, url, n_pg, 86400, _D0 + 86400 + 600, rounds=5, server=pg)
        # whole cycles (rate, debit, decide, act), a day each, alternately on the cluster and in process
        catalog = load_catalog()
        walls: dict[str, list[float]] = {"dask": [], "here": []}
        with open_store(db) as store:
            for day, kind in zip(range(1, 5), ("dask", "here", "here", "dask")):
                at = _D0 + day * 86400 + 9 * 3600
                store._clock = lambda at=at: at
                t0 = time.perf_counter()
                rep = run_cycle(store, catalog, at, engine=engine if kind == "dask" else rate)
                walls[kind].append(time.perf_counter() - t0)
                assert rep.rated == n, rep.rated
        for kind, how in (("dask", "readings read and rated on the 2 workers"), ("here", "in process")):
            report(f"  whole cost-control cycle, {n:,} accounts x 1 day on SQLite, {how} (wall, mean of 2 days)",
                   float(np.mean(walls[kind])), "s")
        # days 1 and 4 on the cluster, 2 and 3 in process: the pairs (1, 2) and (4, 3)
        r = paired([n / w for w in walls["dask"]], [n / w for w in walls["here"][::-1]])
        report(f"  whole cost-control cycles, {n:,} accounts x 1 day on SQLite: readings read and rated on the 2"
               " workers vs in process, per wall second (pairs of adjacent days)", r.a, "accounts/s",
               baseline=r.b, pairs=r)
    finally:
        engine.close()
        cluster.close()


# ----------------------------------------------------------------------------- rating on Dask
_BLOCK = 1 << 16          # rows generated per seed: any span of accounts gives the same rows


def _rows(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accounts lo..hi - 1 of the benchmark's fleet: a day of quarter-hour Wh, ladder and remainder
    (tools/bench/bench_tariff.py's day_batch), the same whichever process builds them."""
    from tools.bench.bench_tariff import day_batch

    energy = np.empty((hi - lo, 96), dtype=np.int32)
    ladder, rem = np.empty(hi - lo, dtype=np.int64), np.empty(hi - lo, dtype=np.int64)
    for b in range(lo // _BLOCK, (hi - 1) // _BLOCK + 1 if hi > lo else 0):
        b_lo, b_hi = b * _BLOCK, (b + 1) * _BLOCK
        e, args = day_batch(_BLOCK, seed=b + 1)
        a, z = max(lo, b_lo), min(hi, b_hi)
        energy[a - lo:z - lo] = e[a - b_lo:z - b_lo]
        ladder[a - lo:z - lo] = args[5][a - b_lo:z - b_lo]
        rem[a - lo:z - lo] = args[6][a - b_lo:z - b_lo]
    return energy, ladder, rem


def _rating(report: Any, n: int, placed: bool) -> None:
    from distributed import LocalCluster

    from headend.costctl.distributed import DaskRating
    from headend.tariff.kernel import get_num_threads, rate
    from tools.bench.bench_tariff import day_batch
    from tools.bench.interleave import interleaved

    tariff = day_batch(1)[1][:5]
    energy, ladder, rem = _rows(0, n)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=50)   # not the workers' heartbeat errors as the cluster closes
    engine = DaskRating(cluster.scheduler_address, kernel_threads=1)
    try:
        if placed:
            rows = engine.place(_rows, n)
            dask = lambda: engine.rate_placed(rows, *tariff)  # noqa: E731
        else:
            dask = lambda: engine(energy, *tariff, ladder, rem)  # noqa: E731
        here, there = rate(energy, *tariff, ladder, rem), dask()
        assert all(np.array_equal(a, b) for a, b in zip(here[:3], there[:3])), "Dask and in-process disagree"
        del here, there
        load0 = os.getloadavg()[0]
        r = interleaved(dask, lambda: rate(energy, *tariff, ladder, rem), rounds=7, work_a=n, work_b=n)
        load = (load0 + os.getloadavg()[0]) / 2
    finally:
        engine.close()
        cluster.close()
    # what a Dask call timed here includes: the tasks sent (the tariff inside), the kernel on the
    # workers, the results back and joined into the int64 Bill here; placed, not the rows' building
    how = ("rows built on the workers beforehand (not timed), the tariff out and 12 bytes per account back"
           if placed else "rows sent from this process in each call, 384 bytes per account (the cost-control cycle's workers read theirs from the store instead)")
    report(f"rating {n:,} accounts x 96 intervals: Dask LocalCluster of 2 worker processes x 1 kernel thread, {how}, "
           f"vs in-process kernel ({get_num_threads()} threads), same machine", r.a, "accounts/s", baseline=r.b,
           pairs=r)
    report(f"  load average (1 min) of the machine during those {n:,}-account rating pairs", load, "runnable")


def run(report: Any, parts: tuple[str, ...] = (), cycle_accounts: int = CYCLE_ACCOUNTS, days: int = 3) -> None:
    """Every figure of the module docstring (or only ``parts``), each part on its own throwaway
    PostgreSQL server."""
    from tools.pg_server import PgServer

    parts = parts or ("rating", "payments", "cycle", "dask-cycle")
    if "dask-cycle" in parts:
        with tempfile.TemporaryDirectory(prefix="bench-dcycle-") as tmp, \
                PgServer(settings={"synchronous_commit": "off"}) as pg:
            _cycle_dask(report, Path(tmp), DASK_CYCLE_ACCOUNTS, DASK_CYCLE_96_ACCOUNTS, pg, DASK_CYCLE_PG_ACCOUNTS)
    if "rating" in parts:
        _rating(report, RATING_ACCOUNTS, placed=True)
        _rating(report, max(1, RATING_ACCOUNTS // 10), placed=False)
    if "payments" in parts:
        # durable as SQLite's NORMAL is (synchronous_commit off: an OS crash may lose the last
        # commits, never corrupt), then PostgreSQL's defaults, where each commit waits for the disk
        for settings in (ASYNC_COMMIT, DURABLE):
            with tempfile.TemporaryDirectory(prefix="bench-pg-") as tmp, PgServer(settings=settings) as pg:
                if settings is DURABLE:
                    report("fdatasync/s of the disk under the PostgreSQL data (one connection's commits/s ceiling"
                           " with synchronous_commit on)", _fsyncs_per_s(pg.dir), "flushes/s")
                _payments(report, pg, Path(tmp), settings)
    if "cycle" in parts:
        with tempfile.TemporaryDirectory(prefix="bench-pg-") as tmp, \
                PgServer(settings={"synchronous_commit": "off"}) as pg:
            _cycle(report, pg, Path(tmp), cycle_accounts, days)


if __name__ == "__main__":
    import argparse

    from tools.bench.run import reporter

    ap = argparse.ArgumentParser(description="PostgreSQL and Dask figures (the module docstring); all by default")
    ap.add_argument("--only", action="append", choices=("rating", "payments", "cycle", "dask-cycle"),
                    help="run only these parts (repeatable)")
    ap.add_argument("--rating-only", action="store_true", help="the Dask figures alone (no PostgreSQL server)")
    ap.add_argument("--cycle-accounts", type=int, default=CYCLE_ACCOUNTS,
                    help=f"accounts in the cost-control cycle (default {CYCLE_ACCOUNTS:,}; 20000 for a quick run)")
    ap.add_argument("--days", type=int, default=3, help="cycles on each engine, interleaved (default 3)")
    opts = ap.parse_args()
    parts = ("rating",) if opts.rating_only else tuple(opts.only or ())
    run(reporter([]), parts=parts, cycle_accounts=opts.cycle_accounts, days=opts.days)
