"""Operator console benchmark: page render times over real HTTP with 100,000 accounts in the store.

The store (BENCH_CONSOLE_ACCOUNTS accounts, default 100,000, each with one meter in a mix of states,
a payment today on every 20th, daily energy readings for the measured meter) is built once per size
under /tmp with bulk SQL and reused.  The payments API with the console is served by uvicorn on
loopback from a thread of this process, exactly as `headend serve --api` mounts it; one signed-in
client asks, one request at a time:

* the dashboard (meter states over all meters, today's collections by channel, chart),
* a customer search by part of a name (the store's search: a scan of the names),
* a customer page (account, meters, ledger, payments, notices),

each in windows of WINDOW requests interleaved with windows of the same server's no-op
``GET /v1/health`` (the floor of uvicorn + FastAPI + HTTP over the same connection).  Reported per
page: p95 over all its requests in ms (the aim is under 200 ms) and the median over windows of
(page mean / no-op mean).

The dashboard shows meters by state from a count shared by all dashboards and renewed in the
background every 10 s (headend.console.app.STATES_EVERY_S); that count is measured on its own,
interleaved with the accounts report's state count over the same accounts (the same state
expression, per account instead of per meter).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path

from tools.bench.interleave import interleaved, interleaved_values

ACCOUNTS = int(os.environ.get("BENCH_CONSOLE_ACCOUNTS", "100000"))
WINDOW = 20
ROUNDS = 5
PASSWORD = "bench-console-1"
NOW = 1796443200  # 2026-12-05 12:00 +08:00


def _db_path() -> Path:
    return Path(tempfile.gettempdir()) / f"prepaid645-bench-console-v2-{ACCOUNTS}.db"


def _build(path: Path) -> None:
    from headend.operators import hash_password
    from headend.store import open_store

    tmp = path.with_suffix(".building")
    for p in (tmp, Path(str(tmp) + "-wal"), Path(str(tmp) + "-shm")):
        p.unlink(missing_ok=True)
    with open_store(str(tmp), clock=lambda: NOW) as s:  # the real schema, migrated; one real operator
        s.add_operator("bench", "operator", hash_password(PASSWORD), actor="bench")
        s.add_channel("hall", "counter", actor="bench")
        s.add_channel("bank", "online_banking", actor="bench")
    con = sqlite3.connect(tmp)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    names = ("Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang", "Zhou", "Wu")
    con.executemany(
        "INSERT INTO accounts (customer, name, phone, balance_fen, alarm1_fen, alarm2_fen, district, created_at,"
        " updated_at) VALUES (?, ?, ?, 0, 2000, 500, ?, ?, ?)",
        ((f"{i:012d}", f"{names[i % 10]} {i}", f"138{i:08d}", ("east", "west")[i % 2], NOW, NOW)
         for i in range(1, ACCOUNTS + 1)))
    con.executemany(
        "INSERT INTO meters (address, link, customer, mode, meter_number, balance_fen, relay, last_seen, created_at,"
        " updated_at) VALUES (?, 'tcp://127.0.0.1:1', ?, 'local', ?, ?, ?, ?, ?, ?)",
        ((f"{100000000000 + i:012d}", f"{i:012d}", f"{100000000000 + i:012d}", (i * 37) % 9000,
          "open" if i % 50 == 0 else "closed", None if i % 97 == 0 else NOW - 3600, NOW, NOW)
         for i in range(1, ACCOUNTS + 1)))
    day = "2026-12-05"
    con.executemany(
        "INSERT INTO payments (channel, txn_id, customer, meter, amount_fen, state, paid_at, accepted_at, day, actor,"
        " request) VALUES (?, ?, ?, NULL, ?, 'credited', ?, ?, ?, 'bench', '{}')",
        ((("hall", "bank")[(i // 20) % 2], f"T{i}", f"{i:012d}", 1000 + i % 5000, NOW - 600, NOW - 600, day)
         for i in range(20, ACCOUNTS + 1, 20)))
    con.executemany("INSERT INTO readings (meter, di, read_at, value, stored_at) VALUES (?, '00010000', ?, ?, ?)",
                    (("100000000001", NOW - (30 - d) * 86400, 1_000_000 + d * 7_500 + (d % 3) * 900, NOW)
                     for d in range(31)))
    con.commit()
    con.close()
    os.replace(tmp, path)


class _Server:
    """The API with the console on loopback, from its own thread and loop."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.url = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from headend.api.config import ApiConfig
        from headend.api.server import start_api
        from headend.keys import KeyStore
        from headend.store import open_store

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            store = open_store(str(self.db), clock=lambda: NOW)
            server = await start_api(store, ApiConfig(listen="tcp://127.0.0.1:0"), keys=KeyStore.in_memory(b"b" * 32),
                                     clock=lambda: NOW, console=True)
            self.url = server.url
            self._ready.set()
            await self._stop.wait()
            await server.stop()
            store.close()

        asyncio.run(main())

    def __enter__(self) -> "_Server":
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the console did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def run(report) -> None:  # noqa: ANN001
    import httpx

    path = _db_path()
    t0 = time.perf_counter()
    if not path.exists():
        _build(path)
    print(f"   {ACCOUNTS:,} accounts and meters (store ready in {time.perf_counter() - t0:.1f} s)")
    from headend.store import open_store

    with open_store(str(path), clock=lambda: NOW) as store:
        r = interleaved(lambda: store.meter_states(seen_since=NOW - 3 * 86400), store.account_states, rounds=3)
        report(f"console meter-state count over {ACCOUNTS:,} meters (background, every 10 s) vs the accounts"
               " report's state count over the same accounts", r.a, "counts/s", baseline=r.b, pairs=r)
        print(f"   one count: {1000 / r.a:.0f} ms")
    with _Server(path) as srv, httpx.Client(base_url=srv.url, timeout=60, follow_redirects=True) as c:
        page = c.get("/login").text
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        r = c.post("/login", data={"name": "bench", "password": PASSWORD, "csrf": csrf, "next": "/"})
        assert r.status_code == 200 and "bench (operator)" in r.text, r.text[:300]
        pages = {"dashboard": "/", "customer search (name part)": "/customers?q=Zhou%20777",
                 "customer page": f"/customers/{1:012d}"}
        for label, url in pages.items():
            took: list[float] = []
            floor: list[float] = []

            def window(u: str, into: list[float]) -> float:
                ts = []
                for _ in range(WINDOW):
                    t = time.perf_counter()
                    resp = c.get(u)
                    ts.append(time.perf_counter() - t)
                    assert resp.status_code == 200, (u, resp.status_code)
                into.extend(ts)
                return 1.0 / statistics.mean(ts)

            c.get(url)  # warm up
            r2 = interleaved_values(lambda u=url, t=took: window(u, t), lambda f=floor: window("/v1/health", f),
                                    rounds=ROUNDS)
            p95 = statistics.quantiles(took, n=20)[-1] * 1000
            report(f"console {label} render p95, {ACCOUNTS:,} accounts, real HTTP on loopback (aim < 200 ms)",
                   p95, "ms")
            report(f"console {label}: pages/s vs the same server's no-op /v1/health", r2.a, "pages/s",
                   baseline=r2.b, pairs=r2)
