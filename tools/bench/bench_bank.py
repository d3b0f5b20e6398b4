"""Applying a bank's return file: BENCH_BANK_ROWS rows (half local meters topped up through the
outbox, half remote accounts credited; 2% partial, 5% insufficient funds, 3% closed accounts),
interleaved with reading and checking the same file alone (the floor: the rows must be read before
they are applied); and the same imports' rows per CPU-second of this process (on a machine shared
with other work the wall clock measures the neighbours too).

`make bench` runs 20,000 rows; the aim (a 100,000-row file applied in < 10 s) is for the full size:

    BENCH_BANK_ROWS=100000 .venv/bin/python -m tools.bench.run bank

The customers, agreements and the exported batch are written once per size under /tmp with bulk
SQL (not the agreement path); each import runs on a fresh copy of that file, and only the import
is timed. Aim: < 10 s for 100,000 rows.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from tools.bench.interleave import interleaved_values

ROWS = int(os.environ.get("BENCH_BANK_ROWS", "20000"))
BANK, DAY = "ICBC", "2026-12-04"


def _result(i: int, amount: int) -> tuple[str, int]:
    k = i % 100
    if k < 2:
        return "partial", amount // 2
    if k < 7:
        return "insufficient", 0
    if k < 10:
        return "closed", 0
    return "debited", amount


def _db() -> tuple[Path, bytes]:
    from headend.bank import load_profile, write_file
    from headend.bank.batch import ensure_bank_channel, file_date

    from headend.store.sqlite import MIGRATIONS

    # the schema version in the name: a file built before a new migration is never reused
    path = Path(tempfile.gettempdir()) / f"prepaid645-bench-bank-{ROWS}-v{MIGRATIONS[-1][0]}.db"
    ret = path.with_suffix(".ret")
    if path.exists() and ret.exists():
        return path, ret.read_bytes()
    from headend.store import open_store

    p = load_profile(BANK)
    tmp = path.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    s = open_store(str(tmp))
    ensure_bank_channel(s, p, actor="bench")
    s.close()
    customers = [f"{300000000000 + i:012d}" for i in range(ROWS)]
    con = sqlite3.connect(tmp)
    con.execute("PRAGMA synchronous=OFF")
    con.executemany("INSERT INTO accounts (customer, name, created_at, updated_at) VALUES (?, ?, 0, 0)",
                    ((c, f"H{i}") for i, c in enumerate(customers)))
    con.executemany("INSERT INTO meters (address, link, customer, mode, meter_number, created_at, updated_at)"
                    " VALUES (?, 'tcp://127.0.0.1:9', ?, ?, ?, 0, 0)",
                    ((f"{i + 1:012d}", c, "local" if i % 2 == 0 else "remote", f"{i + 1:012d}")
                     for i, c in enumerate(customers)))
    amounts = [5000 + (i % 7) * 1000 for i in range(ROWS)]
    con.execute("INSERT INTO bank_batches (id, bank, day, rows, total_fen, content, created_at, actor)"
                " VALUES (1, ?, ?, ?, ?, x'', 0, 'bench')", (BANK, DAY, ROWS, sum(amounts)))
    con.executemany("INSERT INTO bank_batch_rows (batch_id, seq, customer, amount_fen) VALUES (1, ?, ?, ?)",
                    ((i + 1, c, a) for i, (c, a) in enumerate(zip(customers, amounts))))
    con.commit()
    con.close()
    rows = []
    for i, (c, a) in enumerate(zip(customers, amounts)):
        res, debited = _result(i, a)
        rows.append({"seq": i + 1, "customer": c, "account": f"6222{i:012d}", "amount_fen": a,
                     "result": p.code_of(res), "debited_fen": debited, "serial": f"SN{i:010d}"})
    data = write_file(p, "return", {"bank": BANK, "batch": 1, "date": file_date(DAY), "count": ROWS,
                                    "total_fen": sum(amounts)},
                      rows, {"count": ROWS, "debited_fen": sum(r["debited_fen"] for r in rows)})
    ret.write_bytes(data)
    tmp.rename(path)
    return path, data


def run(report) -> None:  # noqa: ANN001
    from headend.bank import import_return, load_profile, read_file
    from headend.bank.returns import check_return
    from headend.store import open_store

    base, data = _db()
    p = load_profile(BANK)
    work = Path(tempfile.mkdtemp(prefix="prepaid645-bench-bank-"))
    seconds: list[float] = []
    cpu: list[float] = []
    summary: dict = {}

    def apply() -> float:
        db = work / "apply.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(base, db)
        store = open_store(str(db))
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            summary.update(import_return(store, p, data, actor="bench").summary)
            dt = time.perf_counter() - t0
            cpu.append(time.process_time() - c0)
        finally:
            store.close()
        seconds.append(dt)
        return ROWS / dt

    def read_alone() -> float:
        store = open_store(str(base))
        try:
            t0 = time.perf_counter()
            parsed = read_file(p, "return", data)
            requested = {r.seq: (r.customer, r.amount_fen) for r in store.bank_batch_rows(1)}
            _, errors = check_return(p, parsed, store.get_bank_batch(1), requested)
            dt = time.perf_counter() - t0
        finally:
            store.close()
        assert errors == [], errors[:3]
        return ROWS / dt

    r = interleaved_values(apply, read_alone, rounds=int(os.environ.get("BENCH_BANK_ROUNDS", "3")))
    report(f"apply a {ROWS:,}-row bank return file (payments, outbox recharges, notices, one transaction)"
           f" vs reading and checking it alone", r.a, "rows/s", baseline=r.b, pairs=r)
    print(f"   {r.describe()}; import took {min(seconds):.1f}-{max(seconds):.1f} s (aim < 10 s); {summary}")
    report(f"apply a {ROWS:,}-row bank return file: rows per CPU-second of this process (median of {len(cpu)})",
           ROWS / sorted(cpu)[len(cpu) // 2], "rows/s")
    shutil.rmtree(work, ignore_errors=True)
