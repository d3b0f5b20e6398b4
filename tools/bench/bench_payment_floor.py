"""How far a payment can get towards the no-op: the payments API with its store work taken away,
and the store work's SQLite alone.

bench_payments compares signed payments with the same server's no-op ``GET /v1/health`` (aim:
0.5x).  This benchmark says where that ratio's ceiling lies, from parts measured in one run:

* **The request path, store free.**  tools/bench/payment_floor_server.py runs two payments APIs in
  one process on one SQLite store: ``real``, exactly as ``headend serve --api`` runs it, and
  ``free``, the same app and uvicorn set-up whose service answers every store call of a payment
  from memory at once (no transaction, nonce row, rules or rows), so that a payment there is only
  what the request itself costs: the signature, the body, the JSON model, the group-commit round,
  the receipt.
* **The store's SQLite alone.**  The rows a round of payments writes (its nonce row, the payment
  rows, the journal rows, the balance updates) written by bare sqlite3 in this process, with
  nothing else: copies of rows the real server wrote in this run (so the same sizes and the same
  indexes), the real server's round size, multi-row statements, one commit a round, and the WAL
  checkpoint the server's background thread does, once per window.

A third side reads a payment's request exactly as a payment does (``POST /bench/read`` on the real
server: its signature headers and its body, ``_Api.read``) and answers it as the no-op does: what
HTTP alone costs for a payment's bytes (its answer is the no-op's short one, not a receipt).  A
fourth computes, in this process by the standard library alone, the least a payment must besides
its bytes and its rows: the signature's HMAC-SHA256 (with the body's SHA-256) compared in constant
time, the JSON body parsed, a receipt made JSON.

Windows of no-ops (real server), read-only requests, free payments, real payments (32 keep-alive
connections each, as bench_payments), bare-SQLite rounds and bare checks rotate round after round
(``interleaved_group``); every figure is requests per CPU-second of the process that does the work
(the server's, from /proc/PID/stat; this process's own for the bare sides).  Then, per round,
four bounds against that round's no-op:

* a payment that costs the server what a free payment costs plus what its rows cost bare SQLite:
  the best this request path can do on this schema, however cheap the store's own code;
* a payment that costs only its request read plus its rows in bare SQLite: as if its signature
  check, JSON, payment rules and receipt cost nothing;
* the same plus the bare checks: the least any payment path can cost on this HTTP server and this
  schema (still without payment rules, a nonce check or a receipt's longer answer).  A faster HTTP
  server would not raise it: the no-op would gain more than the payment;
* the same again with the rows written on tables stripped of every index but their keys and unique
  constraints (the bare rounds run on such a copy too): what the indexes that a customer's ledger
  and payments, the days and the reports are read by cost a payment.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from tools.bench.bench_payments import (CONNECTIONS, _Conn, _cpu_s, _drive, _request, add_accounts_and_channel,
                                        signed_payment)
from tools.proc import terminate, wait_for_line

ROOT = Path(__file__).resolve().parents[2]
ACCOUNTS = 1000
CHANNEL = "floor-bank"
ROUNDS = int(os.environ.get("BENCH_PAYMENT_FLOOR_ROUNDS", "7"))
WINDOW_S = 1.0
SQL_WINDOW_S = 0.3  # the bare rounds are timed in-process: a shorter window keeps the file small


class _Servers:
    """A database with remote accounts and one API channel, and the two APIs serving it."""

    def __init__(self, tmp: Path) -> None:
        from headend.keys import KeyStore
        from headend.store import open_store

        master = os.urandom(32)
        keys = KeyStore.in_memory(master)
        self.db = tmp / "floor.db"
        self.customers = [f"{700_001 + i:012d}" for i in range(ACCOUNTS)]
        with open_store(self.db) as s:
            self.key_id, self.secret = add_accounts_and_channel(s, keys, self.customers, CHANNEL)
        env = dict(os.environ, PREPAID645_MASTER_KEY=master.hex())
        self.proc = subprocess.Popen([sys.executable, "-m", "tools.bench.payment_floor_server", str(self.db)],
                                     cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        seen: list[str] = []
        if not wait_for_line(self.proc, '{"real"', seen, 120):
            self.proc.kill()
            raise RuntimeError("the floor servers did not start:\n" + "".join(seen[-30:]))
        urls = json.loads(seen[-1])
        self.addr = {k: urls[k][len("http://"):].rsplit(":", 1) for k in ("real", "free")}

    def close(self) -> None:
        terminate(self.proc, grace_s=30)

    def payment(self, which: str, txn: str, customer: str, amount: int, path: str = "/v1/payments") -> bytes:
        """A signed payment request to the ``which`` server (its bytes sent to ``path``)."""
        host, port = self.addr[which]
        return signed_payment(self.key_id, self.secret, f"{host}:{port}", CHANNEL, txn, customer, amount, path)

    def noop(self) -> bytes:
        host, port = self.addr["real"]
        return _request("GET", "/v1/health", f"{host}:{port}")

    def round_size(self) -> float:
        """Payments per group-commit round so far at the real server (one nonce row a round)."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as c:
            [(pays,)] = c.execute("SELECT COUNT(*) FROM payments").fetchall()
            [(rounds,)] = c.execute("SELECT COUNT(*) FROM api_nonce_rounds").fetchall()
        return pays / rounds if rounds else 0.0

    def templates(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The last payment row and its journal row the real server wrote."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as c:
            c.row_factory = sqlite3.Row
            pay = dict(c.execute("SELECT * FROM payments ORDER BY id DESC LIMIT 1").fetchone())
            led = dict(c.execute("SELECT * FROM ledger WHERE payment_id = ?", (pay["id"],)).fetchone())
        return pay, led


class _BareRounds:
    """Payment rounds written by bare sqlite3: only the rows, on a database of the same schema
    (``keys_only``: without the indexes that are not a table's key or a unique constraint)."""

    def __init__(self, tmp: Path, customers: list[str], pay: dict[str, Any], led: dict[str, Any],
                 per_round: float, *, keys_only: bool = False) -> None:
        from headend.store import open_store

        path = tmp / ("bare-keys.db" if keys_only else "bare.db")
        with open_store(path) as s:
            with s.atomic():
                for c in customers:
                    s.add_account(c, actor="bench")
            s.add_channel(pay["channel"], "online_banking", actor="bench")
        self.c = sqlite3.connect(path, isolation_level=None)
        if keys_only:
            # a unique constraint's index has no SQL of its own (sqlite_autoindex_*); it stays
            for (name,) in self.c.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                                          " AND sql NOT LIKE 'CREATE UNIQUE%' AND tbl_name IN"
                                          " ('payments', 'ledger', 'accounts', 'api_nonce_rounds')").fetchall():
                self.c.execute(f'DROP INDEX "{name}"')
        for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "foreign_keys = ON", "cache_size = -65536",
                       "temp_store = MEMORY", "wal_autocheckpoint = 0"):  # as the store opens it
            self.c.execute(f"PRAGMA {pragma}")
        self.customers, self.pay, self.led, self.n = customers, pay, led, max(1, round(per_round))
        self.pay_cols = [k for k in pay if k != "id"]
        self.led_cols = [k for k in led if k != "id"]
        self.serial = 0

    def _insert(self, table: str, cols: list[str], rows: list[list[Any]]) -> None:
        one = "(" + ", ".join("?" * len(cols)) + ")"
        self.c.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES {', '.join([one] * len(rows))}",
                       [v for r in rows for v in r])

    def one_round(self) -> None:
        now = int(time.time())
        picks = []
        for _ in range(self.n):
            k = self.serial
            self.serial += 1
            picks.append((f"B{k}", self.customers[k % len(self.customers)], 100 + k % 900))
        c = self.c
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO api_nonce_rounds (keep_until, nonces) VALUES (?, ?)",
                  (now + 301, " ".join(f"{self.pay['channel']}\t{os.urandom(16).hex()}" for _ in picks)))
        base = {**self.pay, "paid_at": now, "accepted_at": now, "credited_at": now}
        self._insert("payments", self.pay_cols,
                     [[{**base, "txn_id": t, "customer": cu, "amount_fen": a}[k] for k in self.pay_cols]
                      for t, cu, a in picks])
        last = c.execute("SELECT last_insert_rowid()").fetchone()[0]
        first = last - len(picks) + 1
        vals = ", ".join(["(?, ?)"] * len(picks))
        c.execute("UPDATE accounts SET balance_fen = balance_fen + d.fen, version = version + 1, updated_at = ?"
                  f" FROM (SELECT column1 AS customer, column2 AS fen FROM (VALUES {vals})) AS d"
                  " WHERE accounts.customer = d.customer RETURNING accounts.balance_fen",
                  [now] + [v for _, cu, a in picks for v in (cu, a)]).fetchall()
        lbase = {**self.led, "at": now}
        self._insert("ledger", self.led_cols,
                     [[{**lbase, "customer": cu, "amount_fen": a, "balance_after": a, "txn_id": t,
                        "payment_id": first + i, "ref": f"payment:{first + i}"}[k] for k in self.led_cols]
                      for i, (t, cu, a) in enumerate(picks)])
        c.execute("COMMIT")

    def window(self, n_rounds: int) -> float:
        """Payments per CPU-second over ``n_rounds`` rounds and one checkpoint."""
        t0 = time.process_time()
        for _ in range(n_rounds):
            self.one_round()
        self.c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        dt = time.process_time() - t0
        return n_rounds * self.n / dt if dt > 0 else float("inf")


class _BareChecks:
    """The least a payment must compute besides its bytes and its rows, by the standard library
    alone: the signature's HMAC-SHA256 over its string to sign (with the body's SHA-256) compared in
    constant time, the JSON body parsed, and a receipt of the API's 15 fields made JSON."""

    def __init__(self, servers: _Servers) -> None:
        from headend.api.signing import ALGORITHM, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign_headers

        self.algorithm, self.secret = ALGORITHM, servers.secret
        self.requests = []
        for i in range(1000):
            body = json.dumps({"channel_id": CHANNEL, "txn_id": f"C{i}", "customer_no": servers.customers[i],
                               "amount_fen": 100 + i, "paid_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                              separators=(",", ":")).encode()
            h = sign_headers(servers.key_id, self.secret, "POST", "/v1/payments", body)
            self.requests.append((h[HEADER_TIMESTAMP], h[HEADER_NONCE], h[HEADER_SIGNATURE], body))

    def window(self, n: int) -> float:
        """Payments per CPU-second over ``n`` payments."""
        import hashlib
        import hmac

        reqs, secret, head = self.requests, self.secret, f"{self.algorithm}\nPOST\n/v1/payments\n"
        t0 = time.process_time()
        for k in range(n):
            ts, nonce, sig, body = reqs[k % len(reqs)]
            text = f"{head}{ts}\n{nonce}\n{hashlib.sha256(body).hexdigest()}".encode()
            if not hmac.compare_digest(hmac.digest(secret, text, "sha256").hex(), sig):
                raise RuntimeError("a bench request's signature did not check")
            d = json.loads(body)
            json.dumps({"payment_id": k, "channel_id": d["channel_id"], "txn_id": d["txn_id"],
                        "customer_no": d["customer_no"], "meter_no": None, "amount_fen": d["amount_fen"], "fee_fen": 0,
                        "state": "credited", "day": "2026-12-06", "paid_at": 1796526070, "accepted_at": 1796526070,
                        "sent_at": None, "confirmed_at": None, "credited_at": 1796526070, "reversed_at": None})
        dt = time.process_time() - t0
        return n / dt if dt > 0 else float("inf")


def run(report: Any) -> None:
    """The four sides, interleaved, and the bound (see the module docstring)."""
    from tools.bench.interleave import interleaved_group, paired

    with tempfile.TemporaryDirectory(prefix="bench-payment-floor-") as tmp:
        servers = _Servers(Path(tmp))
        loop = asyncio.new_event_loop()
        report("payment floor bench: load average (1 min) at the start", os.getloadavg()[0], "")
        try:
            async def connect(host: str, port: str) -> list[_Conn]:
                return list(await asyncio.gather(*(_Conn.open(host, int(port)) for _ in range(CONNECTIONS))))

            counter = iter(range(10**9))
            size = {"noop": 2000, "read": 2000, "free": 1000, "real": 500}

            def window(kind: str) -> float:
                # requests built and signed before the clock starts, as in bench_payments
                if kind == "noop":
                    reqs, want, target = [servers.noop()] * size[kind], {200}, "real"
                elif kind == "read":
                    reqs = [servers.payment("real", f"R{next(counter)}", servers.customers[i % ACCOUNTS], 100 + i % 900,
                                            path="/bench/read") for i in range(size[kind])]
                    want, target = {200}, "real"
                else:
                    reqs = [servers.payment(kind, f"F{next(counter)}", servers.customers[i % ACCOUNTS], 100 + i % 900)
                            for i in range(size[kind])]
                    want, target = {201}, kind
                # connections opened for each window, outside its CPU count: a server closes those
                # idle for 5 s (uvicorn's keep-alive), as they are while the other sides run
                conns = loop.run_until_complete(connect(*servers.addr[target]))
                cpu0 = _cpu_s(servers.proc.pid)
                rate = loop.run_until_complete(_drive(conns, reqs, want))
                cpu1 = _cpu_s(servers.proc.pid)
                for c in conns:
                    c.close()
                size[kind] = max(200, int(rate * WINDOW_S))
                if cpu0 is None or cpu1 is None or cpu1 <= cpu0:
                    raise RuntimeError("no CPU time of the server process to be read (/proc/PID/stat)")
                return len(reqs) / (cpu1 - cpu0)

            for kind in ("noop", "read", "free", "real", "real"):  # warm up, size the windows, fill the templates
                window(kind)
            per_round = servers.round_size()
            pay, led = servers.templates()
            bare = _BareRounds(Path(tmp), servers.customers, pay, led, per_round)
            bare_keys = _BareRounds(Path(tmp), servers.customers, pay, led, per_round, keys_only=True)
            checks = _BareChecks(servers)
            # in-process sides: each window about SQL_WINDOW_S of work at the last rate seen
            # (how, payments per unit of work, the least units a window, the units of the next window)
            paced: dict[str, tuple[Callable[[int], float], int, int, list[int]]] = {
                "sql": (bare.window, bare.n, 20, [20]), "sql_keys": (bare_keys.window, bare_keys.n, 20, [20]),
                "checks": (checks.window, 1, 2000, [2000])}

            def in_process(kind: str) -> float:
                work, per_unit, least, n = paced[kind]
                rate = work(n[0])
                n[0] = max(least, int(rate / per_unit * SQL_WINDOW_S))
                return rate

            for kind in paced:
                in_process(kind)
            seen: dict[str, list[float]] = {k: [] for k in ("noop", "read", "free", "real", *paced)}

            def kept(kind: str) -> Callable[[], float]:
                def side() -> float:
                    value = in_process(kind) if kind in paced else window(kind)
                    seen[kind].append(value)
                    return value
                return side

            noop, read, free, real, sql, sql_keys, bare_checks = interleaved_group([kept(k) for k in seen], rounds=ROUNDS)
        finally:
            loop.close()
            servers.close()
        report("payment floor bench: load average (1 min) at the end", os.getloadavg()[0], "")
    same = "32 keep-alive connections, same machine; each per CPU-second of the process doing the work"
    report(f"payment floor: no-op GET /v1/health per server CPU-second ({same})", noop.a, "requests/CPU-s")
    report("payment floor: a payment's request read (signature headers and body) and answered as the no-op, per"
           " server CPU-second vs no-ops per server CPU-second", read.a, "requests/CPU-s", baseline=noop.a, pairs=read)
    report("payment floor: signed payments per server CPU-second, every store call answered from memory at once"
           " (request path only) vs no-ops per server CPU-second", free.a, "payments/CPU-s", baseline=noop.a,
           pairs=free)
    report("payment floor: signed payments per server CPU-second, real store (SQLite, WAL) vs no-ops per server"
           " CPU-second", real.a, "payments/CPU-s", baseline=noop.a, pairs=real)
    report(f"payment floor: a payment's rows alone by bare sqlite3 ({bare.n} a round, one commit a round) per"
           " CPU-second vs no-ops per server CPU-second", sql.a, "payments/CPU-s", baseline=noop.a, pairs=sql)
    report(f"payment floor: a payment's rows alone by bare sqlite3 ({bare.n} a round, one commit a round), the"
           " tables without their indexes but keys and unique constraints, per CPU-second vs no-ops per server"
           " CPU-second", sql_keys.a, "payments/CPU-s", baseline=noop.a, pairs=sql_keys)
    report("payment floor: a payment's signature check, JSON body parsed and receipt made JSON by the standard"
           " library alone, per CPU-second vs no-ops per server CPU-second", bare_checks.a, "payments/CPU-s",
           baseline=noop.a, pairs=bare_checks)
    # per round: a payment that costs the request path (free) plus its rows (bare SQLite), against
    # that round's no-op
    bound = paired([1 / (1 / f + 1 / q) for f, q in zip(seen["free"], seen["sql"])], seen["noop"])
    both = "per CPU-second (the server's for the request, this process's for the bare parts)"
    report("payment floor: bound, a payment costing the request path (store free) plus its rows in bare sqlite3,"
           f" {both} vs no-ops per server CPU-second", bound.a, "payments/CPU-s", baseline=noop.a,
           pairs=bound)
    least = paired([1 / (1 / r + 1 / q) for r, q in zip(seen["read"], seen["sql"])], seen["noop"])
    report("payment floor: bound, a payment costing only its request read plus its rows in bare sqlite3,"
           f" {both} vs no-ops per server CPU-second", least.a, "payments/CPU-s", baseline=noop.a, pairs=least)
    least = paired([1 / (1 / r + 1 / q + 1 / c) for r, q, c in zip(seen["read"], seen["sql"], seen["checks"])],
                   seen["noop"])
    report("payment floor: bound, a payment costing its request read, its signature check, JSON and receipt by the"
           f" standard library and its rows in bare sqlite3, {both} vs no-ops per server CPU-second",
           least.a, "payments/CPU-s", baseline=noop.a, pairs=least)
    least = paired([1 / (1 / r + 1 / q + 1 / c) for r, q, c in zip(seen["read"], seen["sql_keys"], seen["checks"])],
                   seen["noop"])
    report("payment floor: bound, as the last but the rows on tables without their indexes but keys and unique"
           f" constraints, {both} vs no-ops per server CPU-second", least.a, "payments/CPU-s",
           baseline=noop.a, pairs=least)


if __name__ == "__main__":
    from tools.bench.run import reporter

    run(reporter([]))
