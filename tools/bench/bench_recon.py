"""Reconciling a channel's day: a BENCH_RECON_LINES-line statement against the same number of
payments in the journal, 0.1% of them out of line, interleaved with just parsing the same file
(the floor: no engine can classify lines it has not read).  Also the same run's lines per
CPU-second of this process: on a machine shared with other work the wall-clock rate measures
the neighbours as much as the code.

`make bench` runs 200,000 lines; the aim (>= 200,000 lines/s) is for a million:

    BENCH_RECON_LINES=1000000 .venv/bin/python -m tools.bench.run recon

The payments are written once per size under /tmp with bulk SQL (not the payment path).
"""

from __future__ import annotations

import os
import random
import sqlite3
import tempfile
import time
from pathlib import Path

from tools.bench.interleave import interleaved

LINES = int(os.environ.get("BENCH_RECON_LINES", "200000"))
CHANNEL, DAY = "bench-bank", "2026-12-04"


def _db() -> Path:
    path = Path(tempfile.gettempdir()) / f"prepaid645-bench-recon-{LINES}.db"
    if path.exists():
        return path
    from headend.store import open_store

    tmp = path.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    s = open_store(str(tmp))
    s.add_account("000000000001", actor="bench")
    s.add_channel(CHANNEL, "online_banking", actor="bench")
    s.close()
    con = sqlite3.connect(tmp)
    con.execute("PRAGMA synchronous=OFF")
    rnd = random.Random(3)
    con.executemany("INSERT INTO payments (channel, txn_id, customer, amount_fen, state, paid_at, accepted_at, day,"
                    " actor, request) VALUES (?, ?, '000000000001', ?, 'credited', 0, 0, ?, 'bench', '{}')",
                    ((CHANNEL, f"B{i:010d}", rnd.randint(100, 500000), DAY) for i in range(LINES)))
    con.commit()
    con.close()
    tmp.rename(path)
    return path


def _statement(db: Path) -> bytes:
    from headend.reconcile.statement import Line, load_profile, write

    con = sqlite3.connect(db)
    rows = con.execute("SELECT txn_id, amount_fen FROM payments WHERE channel = ? AND day = ?", (CHANNEL, DAY))
    lines = []
    for k, (t, a) in enumerate(rows):
        if k % 1000 == 7:
            a += 1            # amount mismatch
        if k % 1000 == 11:
            continue          # ours only
        lines.append(Line(0, t, a, a // 200, a - a // 200, "paid"))
    con.close()
    lines += [Line(0, f"X{i}", 100, 0, 100, "paid") for i in range(LINES // 1000)]  # theirs only
    return write(load_profile("csv"), lines)


def run(report) -> None:  # noqa: ANN001
    from headend.reconcile import reconcile_day
    from headend.reconcile.statement import load_profile, parse
    from headend.store import open_store

    db = _db()
    data = _statement(db)
    store = open_store(str(db))
    profile = load_profile("csv")
    counts = {}

    cpu: list[float] = []

    def full() -> None:
        t0 = time.process_time()
        counts.update(reconcile_day(store, CHANNEL, DAY, data, profile="csv", actor="bench").counts)
        cpu.append(time.process_time() - t0)

    r = interleaved(full, lambda: parse(profile, data), rounds=3, work_a=LINES, work_b=LINES)
    report(f"reconcile {LINES:,}-line statement vs the journal (parse+match+keep) vs parsing it alone",
           r.a, "lines/s", baseline=r.b, pairs=r)
    print(f"   {r.describe()}; classes {counts}")
    report(f"reconcile {LINES:,}-line statement: lines per CPU-second of this process (median of {len(cpu)})",
           LINES / sorted(cpu)[len(cpu) // 2], "lines/s")
    store.close()
