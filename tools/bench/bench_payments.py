"""Payments API benchmark: sustained signed payments/s through real HTTP, and payment-to-meter latency.

Everything runs as it does in production, each part its own process: `headend serve --api` (the
comms front-end, the outbox worker and the payments API on one loop, SQLite in WAL mode), a
simulated fleet of 1,000 meters (`tools.fleet`, a port each), and this process as the channels.

* **Throughput.**  Signed ``POST /v1/payments`` to remote-cost-control accounts (each one is its
  nonce, a payment row, journal row, account update and queued notice, written with the other requests
  of the same loop turn in one SQLite transaction: headend/api/commit.py), against the same
  server's no-op ``GET /v1/health`` as the ceiling: what uvicorn and the app do with nothing to do
  along the path a payment takes (both are plain Starlette routes of the same app, behind the same
  middleware; behind FastAPI's route and response model the no-op cost about twice as much, which
  made a lower ceiling), over the same connections.  The serve under test runs
  neither cost control nor the notice sender (``--no-costctl --no-notices``): every 5 s the sender
  would derive the payments' "payment received" notices and send them in one burst, in whichever
  window was running, paid or no-op alike (and in quiet hours, 21:00-08:00 by default, it defers
  them instead of sending them, so the figure followed the time of day).  Taking a payment queues
  no notice: the sender derives it from the payment (headend.notices.events.notify_payments), so
  that work is the sender's, outside these figures; bench_payment_parts measures it per payment
  (its "notices queued in the round" side) and tools/bench/bench_notices.py the sending.  The
  load client is this process: a bare asyncio HTTP/1.1 client (keep-alive,
  ``CONNECTIONS`` connections, one request in flight on each), so that it, not httpx, is the cheap
  side; it shares the machine's cores with the server.  The payment requests are signed with the
  channel's key ahead of each window, each with its own nonce and transaction id.  Windows of
  payments and of no-ops alternate (tools/bench/interleave.py); the ratio is the median of
  adjacent pairs.  Each window also counts the server process's own CPU time (Linux
  /proc/PID/stat): requests per server CPU-second is what the server can do per core, which a
  busy shared machine distorts far less than requests per wall-clock second.  The load average
  at the start and the end is reported beside them.
* **Latency.**  One payment to each of 1,000 local-cost-control meters, posted at a steady rate;
  for each, the time from sending the request to the store recording the meter's confirmation
  (watched by polling the payments table every 5 ms from here): p50, p95, p99.
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
from typing import Any

from headend.api.signing import sign_headers
from tools.proc import terminate

ROOT = Path(__file__).resolve().parents[2]
N_METERS = int(os.environ.get("BENCH_PAYMENTS_METERS", "1000"))
CONNECTIONS = 32
WINDOW_S = 1.0
ROUNDS = 9  # window pairs: five gave CPU ratios from 0.41x to 0.49x for the same code on this shared machine
# payments/s offered in the latency run (each one a recharge: four meter round trips)
LATENCY_RATE = int(os.environ.get("BENCH_PAYMENTS_RATE", "100"))


# ----------------------------------------------------------------------------- a bare HTTP/1.1 client
class _Conn:
    """One keep-alive HTTP/1.1 connection: send a request, read one response (Content-Length bodies only)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> "_Conn":
        r, w = await asyncio.open_connection(host, port)
        return cls(r, w)

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


def _request(method: str, path: str, host: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _drive(conns: list[_Conn], requests: list[bytes], want: set[int]) -> float:
    """Send every request over the connections (one in flight on each); return requests/s."""
    queue = list(reversed(requests))
    bad: list[tuple[int, bytes]] = []

    async def worker(c: _Conn) -> None:
        while queue:
            status, body = await c.exchange(queue.pop())
            if status not in want:
                bad.append((status, body))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    dt = time.perf_counter() - t0
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(requests)} requests refused, e.g. {bad[0]}")
    return len(requests) / dt


# ----------------------------------------------------------------------------- the system under test
PASSPHRASE = "bench passphrase"
CHANNEL = "bench-bank"
FIRST_METER = 100_001
FIRST_REMOTE = 900_001


def _spawn(argv: list[str], env: dict[str, str], ready: str, seen: list[str], timeout: float = 120) -> subprocess.Popen:
    from tools.proc import wait_for_line

    proc = subprocess.Popen(argv, cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait_for_line(proc, ready, seen, timeout):
        proc.kill()
        raise RuntimeError(f"{argv[2:4]} did not start:\n" + "".join(seen[-30:]))
    return proc


def add_accounts_and_channel(store: Any, keys: Any, customers: list[str], channel: str) -> tuple[str, bytes]:
    """Remote-cost-control accounts and one API channel; the channel's (key id, secret)."""
    from headend.payments import issue_credentials

    with store.atomic():
        for c in customers:
            store.add_account(c, actor="bench")
    key_id, secret, sealed = issue_credentials(keys, channel)
    store.add_channel(channel, "online_banking", actor="bench", key_id=key_id, secret=sealed)
    return key_id, secret.encode()


def signed_payment(key_id: str, secret: bytes, host: str, channel: str, txn: str, customer: str, amount: int,
                   path: str = "/v1/payments") -> bytes:
    """The bytes of a signed ``POST /v1/payments`` (sent to ``path``) for ``host`` ("HOST:PORT")."""
    body = json.dumps({"channel_id": channel, "txn_id": txn, "customer_no": customer, "amount_fen": amount,
                       "paid_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, separators=(",", ":")).encode()
    headers = sign_headers(key_id, secret, "POST", "/v1/payments", body)
    return _request("POST", path, host, body, headers)


class _Site:
    """A database with N local meters (each its own customer), N remote accounts and one API channel;
    the fleet and `headend serve --api` running on it."""

    def __init__(self, tmp: Path, n: int) -> None:
        from headend.keys import KeyStore
        from headend.store import open_store

        self.n = n
        master = os.urandom(32)
        db, key_file = tmp / "bench.db", tmp / "bench.key"
        KeyStore.create(key_file, PASSPHRASE, master=master, scrypt_n=2**12)
        keys = KeyStore.in_memory(master)
        env = dict(os.environ, PREPAID645_DB=str(db), PREPAID645_KEY_FILE=str(key_file),
                   PREPAID645_KEY_PASSPHRASE=PASSPHRASE, PREPAID645_MASTER_KEY=master.hex(), USER="bench")
        env.pop("PREPAID645_CONFIG", None)
        seen: list[str] = []
        self.fleet = _spawn([sys.executable, "-m", "tools.fleet", "--count", str(n), "--first", str(FIRST_METER),
                             "--per-bus", "1"], env, '{"buses"', seen)
        buses = json.loads(seen[-1])["buses"]
        self.meters = [b["meters"][0] for b in buses]
        self.remote = [f"{FIRST_REMOTE + i:012d}" for i in range(n)]
        with open_store(db) as s:
            s.add_meters([{"address": b["meters"][0], "link": b["link"], "customer": f"{200_000 + i:012d}",
                           "mode": "local"} for i, b in enumerate(buses)], actor="bench")
            self.key_id, self.secret = add_accounts_and_channel(s, keys, self.remote, CHANNEL)
        self.db = db
        self.serve_out: list[str] = []
        self.serve = _spawn([sys.executable, "-m", "headend.cli.main", "serve", "--api", "tcp://127.0.0.1:0",
                             "--no-costctl", "--no-notices"], env, "headend serve: working", self.serve_out)
        url = next(x for x in self.serve_out if "payments API on" in x).split("payments API on ")[1].split()[0]
        self.host, port = url[len("http://"):].rsplit(":", 1)
        self.port = int(port)

    def close(self) -> None:
        terminate(self.serve, grace_s=60)
        terminate(self.fleet, grace_s=60)

    def payment(self, txn: str, customer: str, amount: int) -> bytes:
        return signed_payment(self.key_id, self.secret, f"{self.host}:{self.port}", CHANNEL, txn, customer, amount)

    def noop(self) -> bytes:
        return _request("GET", "/v1/health", f"{self.host}:{self.port}")


# ----------------------------------------------------------------------------- the two measurements
async def _open(site: _Site, n: int) -> list[_Conn]:
    return list(await asyncio.gather(*(_Conn.open(site.host, site.port) for _ in range(n))))


def _cpu_s(pid: int) -> float | None:
    """A process's CPU time so far (user + system), or None where /proc is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sched_s(pid: int) -> tuple[float, float] | None:
    """A process's (CPU time, time runnable but waiting for a CPU) so far, over its threads, from
    /proc/PID/task/*/schedstat; None where that is not there."""
    run = wait = 0
    found = False
    for f in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            ran, waited, _ = f.read_text().split()
        except (OSError, ValueError):
            continue
        run, wait, found = run + int(ran), wait + int(waited), True
    return (run / 1e9, wait / 1e9) if found else None


def _throughput(site: _Site, loop: asyncio.AbstractEventLoop, report: Any) -> None:
    from tools.bench.interleave import interleaved_values, paired

    conns = loop.run_until_complete(_open(site, CONNECTIONS))
    counter = iter(range(10**9))
    size = {"pay": 500, "noop": 1000}
    per_cpu: dict[str, list[float]] = {"pay": [], "noop": []}  # requests per server CPU-second, by window

    def window(kind: str) -> float:
        # each window sends about WINDOW_S worth at the last rate seen; requests are built (and
        # signed) before the clock starts, so the client's own work is the same for both sides
        if kind == "pay":
            reqs = [site.payment(f"T{next(counter)}", site.remote[i % site.n], 100 + i % 900)
                    for i in range(size[kind])]
        else:
            reqs = [site.noop()] * size[kind]
        cpu0 = _cpu_s(site.serve.pid)
        rate = loop.run_until_complete(_drive(conns, reqs, {201} if kind == "pay" else {200}))
        cpu1 = _cpu_s(site.serve.pid)
        if cpu0 is not None and cpu1 is not None and cpu1 > cpu0:
            per_cpu[kind].append(len(reqs) / (cpu1 - cpu0))
        size[kind] = max(200, int(rate * WINDOW_S))
        return rate

    for kind in ("pay", "noop"):  # warm up (and size the windows)
        window(kind)
    for values in per_cpu.values():
        values.clear()
    r = interleaved_values(lambda: window("pay"), lambda: window("noop"), rounds=ROUNDS)
    client = f"bare asyncio client, {CONNECTIONS} keep-alive connections, same machine"
    report(f"payments API: signed payments/s (remote accounts, WAL, serve without its notice sender) vs no-op"
           f" GET /v1/health (both plain Starlette routes of the same app; {client})", r.a,
           "payments/s", baseline=r.b, pairs=r)
    if len(per_cpu["pay"]) == len(per_cpu["noop"]) == ROUNDS:
        c = paired(per_cpu["pay"], per_cpu["noop"])
        report("payments API: signed payments per server CPU-second vs no-ops per server CPU-second", c.a,
               "payments/CPU-s", baseline=c.b, pairs=c)
    for c in conns:
        c.close()


def _latency(site: _Site, loop: asyncio.AbstractEventLoop, report: Any) -> None:
    """Payment sent -> the meter's confirmation recorded, for one payment to each local meter."""
    import threading

    sent: dict[str, float] = {}
    done: dict[str, float] = {}
    stop = threading.Event()

    db = sqlite3.connect(f"file:{site.db}?mode=ro", uri=True, check_same_thread=False)
    # only the rows written from here on are looked at (a range of the primary key): scanning the
    # throughput run's payments every 5 ms doubled this process's CPU in the run, taken from the
    # server and the fleet on the same cores, so it inflated the latency it was measuring
    [(first,)] = db.execute("SELECT COALESCE(MAX(id), 0) FROM payments").fetchall()

    def watch() -> None:
        while not stop.is_set():
            rows = db.execute("SELECT txn_id FROM payments WHERE id > ? AND state = 'confirmed_on_meter'"
                              " AND txn_id LIKE 'LAT%'", (first,)).fetchall()
            now = time.perf_counter()
            for (t,) in rows:
                done.setdefault(t, now)
            time.sleep(0.005)
        db.close()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    async def go() -> None:
        conns = await _open(site, 8)
        reqs = [(f"LAT{i}", site.payment(f"LAT{i}", f"{200_000 + i:012d}", 500)) for i in range(site.n)]
        t0 = time.perf_counter()

        async def sender(k: int) -> None:
            for i in range(k, len(reqs), len(conns)):
                delay = t0 + i / LATENCY_RATE - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                txn, req = reqs[i]
                sent[txn] = time.perf_counter()
                status, body = await conns[k].exchange(req)
                if status != 201:
                    raise RuntimeError(f"payment {txn} refused: {status} {body[:200]!r}")

        await asyncio.gather(*(sender(k) for k in range(len(conns))))
        for c in conns:
            c.close()

    sched0 = _sched_s(site.serve.pid)
    loop.run_until_complete(go())
    deadline = time.monotonic() + 300
    while len(done) < site.n and time.monotonic() < deadline:
        time.sleep(0.05)
    sched1 = _sched_s(site.serve.pid)
    stop.set()
    watcher.join()
    if len(done) < site.n:
        raise RuntimeError(f"only {len(done)} of {site.n} payments were confirmed on the meter in 300 s")
    lat = sorted(done[t] - sent[t] for t in sent)

    def q(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000

    label = f"payment -> meter confirmation, {site.n} meters at {LATENCY_RATE}/s"
    report(f"{label}: p50", q(0.50), "ms")
    report(f"{label}: p95", q(0.95), "ms")
    report(f"{label}: p99", q(0.99), "ms")
    if sched0 is not None and sched1 is not None:
        # on a shared machine the server may be ready to work and not get a core: that wait is
        # part of every latency above, and says how much of it is the machine's
        report(f"{label}: the server's CPU time in the run", sched1[0] - sched0[0], "s")
        report(f"{label}: the server's time runnable but waiting for a CPU in the run", sched1[1] - sched0[1], "s")


def run(report: Any) -> None:
    """Both figures on one site (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="bench-payments-") as tmp:
        site = _Site(Path(tmp), N_METERS)
        loop = asyncio.new_event_loop()
        report("payments bench: load average (1 min) at the start", os.getloadavg()[0], "")
        try:
            _throughput(site, loop, report)
            _latency(site, loop, report)
        finally:
            loop.close()
            site.close()
        report("payments bench: load average (1 min) at the end", os.getloadavg()[0], "")


if __name__ == "__main__":
    from tools.bench.run import reporter

    run(reporter([]))
