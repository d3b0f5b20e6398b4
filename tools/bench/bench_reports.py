"""Reports over a generated year of ledger: each report's time, and the collection report against
the same aggregation in DuckDB (a columnar engine, the data already loaded into it), interleaved.

Size: BENCH_REPORTS_ACCOUNTS accounts (default 20,000; the issue's 1,000,000 with
``BENCH_REPORTS_ACCOUNTS=1000000 .venv/bin/python -m tools.bench.run reports``), each with a
charge every ~2 weeks and a payment every ~month over a year: about 40 journal rows per account.
The database is built once per size under /tmp (bulk SQL, not the store's one-by-one paths) and
reused by later runs; every day of the year is closed with its figures as close-day keeps them, so
the collection report reads closed days from those (``live`` below: the same report from the
journal alone, for the figure before day closes existed).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from tools.bench.interleave import interleaved

ACCOUNTS = int(os.environ.get("BENCH_REPORTS_ACCOUNTS", "20000"))
YEAR_START = "2026-01-01"
DISTRICTS = ("east", "west", "north", "south", "centre")
CHANNELS = ("counter", "unionpay_pos", "online_banking", "mobile_app", "third_party", "agent")


def _db_path() -> Path:
    from headend.store.sqlite import MIGRATIONS

    # the schema version in the name: a file built before a migration is never reused
    return Path(tempfile.gettempdir()) / f"prepaid645-bench-reports-{ACCOUNTS}-v{MIGRATIONS[-1][0]}.db"


def _build(path: Path) -> None:
    from headend.store import open_store

    tmp = path.with_suffix(".building")
    for p in (tmp, Path(str(tmp) + "-wal"), Path(str(tmp) + "-shm")):
        p.unlink(missing_ok=True)
    open_store(str(tmp)).close()  # the real schema, migrated
    rng = np.random.default_rng(7)
    con = sqlite3.connect(tmp)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    now = 1767196800  # 2026-01-01 00:00 UTC+8
    custs = [f"{i:012d}" for i in range(1, ACCOUNTS + 1)]
    con.executemany("INSERT INTO accounts (customer, name, balance_fen, district, segment, alarm1_fen, alarm2_fen,"
                    " created_at, updated_at) VALUES (?, '', 0, ?, ?, 2000, 500, ?, ?)",
                    ((c, DISTRICTS[i % 5], "resident" if i % 7 else "business", now, now)
                     for i, c in enumerate(custs)))
    for ch in CHANNELS:
        con.execute("INSERT INTO channels (id, kind, created_at, updated_at) VALUES (?, ?, ?, ?)",
                    (ch, ch if ch != "agent" else "agent", now, now))
    # per account: 26 charges (every 14 days) and 12 payments (every ~30 days), ids in time order
    day_s = 86400
    rows = []
    for k in range(365):
        t = now + k * day_s + 36000
        day = time.strftime("%Y-%m-%d", time.gmtime(t + 8 * 3600))
        idx = np.nonzero((np.arange(ACCOUNTS) + k) % 14 == 0)[0]
        fen = rng.integers(500, 12000, idx.size)
        rows.append((k, "charge", t, day, idx, -fen))
        idx2 = np.nonzero((np.arange(ACCOUNTS) * 7 + k) % 30 == 0)[0]
        fen2 = (rng.integers(1, 30, idx2.size) * 1000)
        rows.append((k, "payment", t + 3600, day, idx2, fen2))
    bal = np.zeros(ACCOUNTS, dtype=np.int64)
    owing_since = np.full(ACCOUNTS, -1, dtype=np.int64)      # as the store keeps it: -1 for none
    pid = 0
    # (district, segment) of each account, as the accounts rows above were written
    dist = np.arange(ACCOUNTS) % 5
    seg = (np.arange(ACCOUNTS) % 7 != 0).astype(np.int64)
    cell = dist * 2 + seg
    figures: dict[str, np.ndarray] = {}
    for k, kind, t, day, idx, fen in rows:
        f = figures.setdefault(day, np.zeros((10, 3), dtype=np.int64))
        if kind == "charge":
            before = bal[idx]
            np.add.at(f[:, 0], cell[idx], -fen)
            np.add.at(f[:, 2], cell[idx], np.minimum(-fen, np.maximum(0, before)))
        else:
            np.add.at(f[:, 1], cell[idx], fen)
        bal[idx] += fen
        went = idx[(bal[idx] < 0) & (owing_since[idx] < 0)]
        owing_since[went] = t
        owing_since[idx[bal[idx] >= 0]] = -1
        if kind == "payment":
            chans = [CHANNELS[(i + k) % len(CHANNELS)] for i in idx]
            con.executemany(
                "INSERT INTO payments (id, channel, txn_id, customer, amount_fen, state, paid_at, accepted_at,"
                " confirmed_at, day, actor, request) VALUES (?, ?, ?, ?, ?, 'credited', ?, ?, ?, ?, 'bench', '{}')",
                ((pid + j + 1, chans[j], f"T{pid + j + 1}", custs[i], int(f), t, t, t + 20 + j % 40, day)
                 for j, (i, f) in enumerate(zip(idx.tolist(), fen.tolist()))))
            con.executemany(
                "INSERT INTO ledger (customer, at, kind, amount_fen, balance_after, actor, day, channel, payment_id)"
                " VALUES (?, ?, 'payment', ?, ?, 'bench', ?, ?, ?)",
                ((custs[i], t, int(f), int(b), day, chans[j], pid + j + 1)
                 for j, (i, f, b) in enumerate(zip(idx.tolist(), fen.tolist(), bal[idx].tolist()))))
            pid += idx.size
            # the day is over (payments come after the day's charges): close it as close-day would
            owed = np.zeros(10, dtype=np.int64)
            nowe = np.zeros(10, dtype=np.int64)
            neg = bal < 0
            np.add.at(owed, cell[neg], -bal[neg])
            np.add.at(nowe, cell[neg], 1)
            con.execute("INSERT INTO ledger_days (day, closed_at, actor) VALUES (?, ?, 'bench')", (day, t + 86400))
            con.executemany(
                "INSERT INTO day_figures (day, district, segment, due_fen, paid_fen, advance_fen, arrears_fen,"
                " arrears_accounts, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ((day, DISTRICTS[c // 2], "resident" if c % 2 else "business", int(f[c, 0]), int(f[c, 1]),
                  int(f[c, 2]), int(owed[c]), int(nowe[c]), t + 86400) for c in range(10)))
        else:
            con.executemany(
                "INSERT INTO ledger (customer, at, kind, amount_fen, balance_after, actor, day)"
                " VALUES (?, ?, 'charge', ?, ?, 'costctl', ?)",
                ((custs[i], t, int(f), int(b), day) for i, f, b in zip(idx.tolist(), fen.tolist(),
                                                                       bal[idx].tolist())))
    con.executemany("UPDATE accounts SET balance_fen = ?, owing_since = ? WHERE customer = ?",
                    ((int(b), None if s < 0 else int(s), c) for b, s, c in zip(bal.tolist(), owing_since.tolist(),
                                                                            custs)))
    _keep_payments(con)
    con.commit()
    con.close()
    tmp.rename(path)


def _keep_payments(con: sqlite3.Connection) -> None:
    """Each closed day's payments as close-day keeps them (the same function, over the built rows)."""
    from headend.store.reporting import snapshot_payments

    for day, closed_at in con.execute("SELECT day, closed_at FROM ledger_days ORDER BY day").fetchall():
        snapshot_payments(con, day, closed_at, 8 * 3600)


def _store():
    from headend.store import open_store

    path = _db_path()
    if not path.exists():
        _build(path)
    return open_store(str(path), clock=lambda: 1798732800)  # 2027-01-01


def _duckdb_collection(store_path: Path):
    """The collection report's grouped journal flows, in DuckDB over the same rows (loaded once)."""
    import duckdb

    csv = store_path.with_suffix(".ledger.csv")
    if not csv.exists():
        rows = ("SELECT l.customer, l.day, l.kind, l.amount_fen, l.balance_after, a.district"
                " FROM ledger l JOIN accounts a ON a.customer = l.customer")
        part = csv.with_suffix(".part")
        with open(part, "w") as f:
            if shutil.which("sqlite3"):      # tens of millions of rows: the shell writes them faster
                subprocess.run(["sqlite3", "-csv", "-header", str(store_path), rows], stdout=f, check=True)
            else:
                f.write("customer,day,kind,amount_fen,balance_after,district\n")
                con = sqlite3.connect(store_path)
                for r in con.execute(rows):
                    f.write(",".join(map(str, r)) + "\n")
                con.close()
        part.rename(csv)
    db = duckdb.connect()
    db.execute(f"CREATE TABLE ledger AS SELECT * FROM read_csv('{csv}', header=true,"
               " columns={'customer':'VARCHAR','day':'VARCHAR','kind':'VARCHAR','amount_fen':'BIGINT',"
               "'balance_after':'BIGINT','district':'VARCHAR'})")
    q = ("SELECT day, SUM(CASE WHEN kind IN ('charge','fixed_charge','rerate') THEN -amount_fen ELSE 0 END),"
         " SUM(CASE WHEN kind IN ('payment','reversal') THEN amount_fen ELSE 0 END),"
         " SUM(CASE WHEN kind IN ('charge','fixed_charge','rerate') AND amount_fen < 0 THEN"
         "  CASE WHEN balance_after - amount_fen <= 0 THEN 0 WHEN balance_after >= 0 THEN -amount_fen"
         "  ELSE balance_after - amount_fen END ELSE 0 END)"
         " FROM ledger WHERE day BETWEEN '2026-01-01' AND '2026-12-31' GROUP BY day")
    q2 = ("SELECT customer, day, arg_max(balance_after, 0) FROM ledger WHERE day <= '2026-12-31'"
          " GROUP BY customer, day")

    def run():
        db.execute(q).fetchall()
        db.execute(q2).fetchall()
    return run


def run(report) -> None:  # noqa: ANN001
    from headend.reports import Query, run_report

    t0 = time.perf_counter()
    store = _store()
    with sqlite3.connect(_db_path()) as con:
        rows = con.execute("SELECT COUNT(*) FROM ledger").fetchone()[0]
    print(f"   {ACCOUNTS:,} accounts, {rows:,} journal rows (ready in {time.perf_counter() - t0:.1f} s)")
    q = Query(first="2026-01-01", last="2026-12-31", by="month")
    for name in ("collection", "channels", "speed", "accounts", "operations"):
        t = time.perf_counter()
        run_report(store, name, q)
        report(f"report {name}: {ACCOUNTS:,} accounts, a year by month", time.perf_counter() - t, "s")
    try:
        duck = _duckdb_collection(_db_path())
    except ImportError:
        print("   (duckdb not installed: no engine comparison)")
        return
    r = interleaved(lambda: run_report(store, "collection", q), duck, rounds=3)
    report(f"collection report (closed days from kept figures) vs DuckDB aggregating the in-memory journal, "
           f"{ACCOUNTS:,} accts",
           r.a, "reports/s", baseline=r.b, pairs=r)
    store.close()
