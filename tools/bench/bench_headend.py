"""Head-end comms benchmark: read every meter of a 1,000-meter simulated fleet, and recharge them.

The fleet (1,000 real `meter.core.Meter` cores, one TCP port each, `tools.fleet`) runs in its own
process, as meters would on their own hardware; the head-end side runs here.  The ceiling is
measured in the same run, in short windows interleaved with the reads over three rounds (the
machine may be shared; medians are reported).  It is what plain asyncio does with nothing but
moving the bytes, on the same machine and the same shape of traffic:

* the far end is its own process (``python -m tools.bench.bench_headend --echo 1000``): 1,000
  listening ports, one per connection like the fleet's port per meter, each served by an
  ``asyncio.Protocol`` that writes every chunk straight back;
* the near end is this process: 1,000 ``asyncio.open_connection`` streams, each its own
  coroutine that writes one 24-byte frame (a read reply with the FE preamble: no shorter than
  the head-end's 20-byte read request or the meter's 20-byte reply), ``readexactly``-s it back
  and goes again at once, for one second;
* the default event loop on both ends (as the fleet and the head-end use), no batching, no
  pipelining: one outstanding round trip per connection, as on a meter bus.

Round trips/s of that is the ceiling; every ratio below is against it.  Figures:

* read cycle: time to read forward active energy from every meter and store every reading;
  reads/s over back-to-back cycles (each cycle waits for its slowest meter), as a ratio of
  the plain round-trip ceiling;
* the same cycles from a bare asyncio client (no matching, decoding or storing): what the
  simulated meters themselves allow, so head-end overhead shows apart from the meters' cost;
* full register cycle: eight items from every meter (energy total and per rate, remaining
  money, status word 3, clock), read one after another per meter, all meters at once;
* recharges/s: every meter topped up through the command outbox (wallet query, session,
  recharge, read-back; each command recorded before sending and confirmed after).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from statistics import median
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
N_METERS = int(os.environ.get("BENCH_HEADEND_METERS", "1000"))
WINDOW_S = 1.0
ROUNDS = 3
# what a collection round reads from each meter: energy total and per rate, money, status word 3
FULL_SET = [0x00010000, 0x00010100, 0x00010200, 0x00010300, 0x00010400, 0x00900200, 0x04000503, 0x0400010C]


def _spawn(module: str, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=str(ROOT), env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line:
        raise RuntimeError(f"{module} did not start: {proc.stderr.read()}")  # type: ignore[union-attr]
    return proc, json.loads(line)


class _Echo(asyncio.Protocol):
    """Plain asyncio: send every chunk straight back (the meters' side of the ceiling)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


async def _serve_echo(count: int) -> None:
    """COUNT plain asyncio echo ports; prints {"echo": [links]} and serves until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(_Echo, "127.0.0.1", 0, backlog=4096) for _ in range(count)]
    print(json.dumps({"echo": [f"tcp://127.0.0.1:{s.sockets[0].getsockname()[1]}" for s in servers]}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        s.close()


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


async def _ceiling(links: list[str], frame: bytes, seconds: float) -> float:
    """Round trips/s: each connection sends a frame and waits for it back, as fast as it can."""
    conns = []
    for url in links:
        host, port = url[len("tcp://"):].rsplit(":", 1)
        conns.append(await asyncio.open_connection(host, int(port)))
    n = 0
    stop = time.perf_counter() + seconds

    async def loop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal n
        while time.perf_counter() < stop:
            writer.write(frame)
            await reader.readexactly(len(frame))
            n += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(loop(r, w) for r, w in conns))
    elapsed = time.perf_counter() - t0
    for _, w in conns:
        w.close()
    return n / elapsed


async def _raw_cycles(buses: list[dict], seconds: float) -> float:
    """Reads/s of a bare asyncio client against the same fleet, in the same back-to-back cycles
    (one read per meter, wait for all): what the simulated meters allow without a head-end."""
    from protocol import build_frame

    conns = []
    for bus in buses:
        host, port = bus["link"][len("tcp://"):].rsplit(":", 1)
        r, w = await asyncio.open_connection(host, int(port))
        a = bus["meters"][0]
        req = build_frame(a, 0x11, (0x00010000).to_bytes(4, "little"), preamble=4)
        conns.append((r, w, req, len(build_frame(a, 0x91, bytes(8), preamble=0))))

    async def one(r: asyncio.StreamReader, w: asyncio.StreamWriter, req: bytes, n: int) -> None:
        w.write(req)
        await r.readexactly(n)

    reads = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        await asyncio.gather(*(one(*c) for c in conns))
        reads += len(conns)
    elapsed = time.perf_counter() - t0
    for _, w, _, _ in conns:
        w.close()
    return reads / elapsed


def run(report) -> None:  # noqa: ANN001
    from headend.commands import MeterClient, OutboxWorker
    from headend.commands.collect import read_cycle
    from headend.keys import KeyStore
    from headend.store import open_store
    from headend.transports import FrontEnd, LinkSettings
    from protocol import build_frame

    master = os.urandom(32)
    keys = KeyStore.in_memory(master)
    # a read request and its reply are about this size: the ceiling moves frames like them
    frame = build_frame("000000000001", 0x91, b"\x00\x00\x01\x00" + b"\x12\x34\x56\x00", preamble=4)
    echo, echo_info = _spawn("tools.bench.bench_headend", "--echo", str(N_METERS))
    fleet, info = _spawn("tools.fleet", "--count", str(N_METERS), env={"PREPAID645_MASTER_KEY": master.hex()})
    tmp = tempfile.mkdtemp(prefix="bench-headend-")
    try:
        store = open_store(Path(tmp) / "bench.db")
        for bus in info["buses"]:
            for a in bus["meters"]:
                store.add_meter(a, link=bus["link"], customer="000000000042", actor="bench")
        meters = store.find_meters()

        async def main() -> tuple:
            fe = FrontEnd(LinkSettings(timeout=5.0, retries=2, connect_timeout=10.0))
            client = MeterClient(fe, lambda m: keys.meter_key(m.address, m.krn))
            warm = await read_cycle(client, store, meters, [0x00900200])  # opens the 1,000 connections
            gc.collect()
            gc.freeze()  # long-lived link state need not be walked by every collection (as serve does)
            # the machine may be shared and its load drifts: short windows of each measurement,
            # interleaved, several rounds; medians are reported
            rounds = []
            for _ in range(ROUNDS):
                ceiling = await _ceiling(echo_info["echo"], frame, WINDOW_S)
                cycles = []
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < WINDOW_S or len(cycles) < 2:
                    cycles.append(await read_cycle(client, store, meters, [0x00010000]))
                read_s = time.perf_counter() - t0
                full = await read_cycle(client, store, meters, FULL_SET)
                bare = await _raw_cycles(info["buses"], WINDOW_S)
                rounds.append((ceiling, cycles, read_s, full, bare))
            worker = OutboxWorker(store, client, concurrency=N_METERS)
            store.enqueue_many([m.address for m in meters], "recharge", {"amount_fen": 1000}, actor="bench")
            t1 = time.perf_counter()
            await worker.drain(600)
            recharge_s = time.perf_counter() - t1
            await fe.close()
            return warm, rounds, recharge_s

        warm, rounds, recharge_s = asyncio.run(main())
        all_cycles = [c for r in rounds for c in r[1]]
        fulls = [r[3] for r in rounds]
        failed = warm.failed or next((c.failed for c in all_cycles + fulls if c.failed), {})
        if failed:
            raise RuntimeError(f"reads failed: {list(failed.items())[:3]}")
        stored = store.readings_for_di("00010000", since=0, until=2**40)
        if len({r[0] for r in stored}) != N_METERS or any(c.stored != N_METERS for c in all_cycles):
            raise RuntimeError(f"not every reading stored: {len({r[0] for r in stored})} meters")
        if any(f.stored != N_METERS * len(FULL_SET) for f in fulls):
            raise RuntimeError("a full register cycle did not store every value")
        ceiling = median(r[0] for r in rounds)
        reads = median(sum(c.stored for c in r[1]) / r[2] for r in rounds)
        bare = median(r[4] for r in rounds)
        full_rate = median(f.reads_per_s for f in fulls)
        report("headend: plain asyncio round trips, 1,000 connections (ceiling)", ceiling, "round trips/s")
        report("headend: read cycle, 1,000 meters, every reading stored (best)",
               min(c.seconds for c in all_cycles) * 1000, "ms")
        report("headend: reads/s, back-to-back read cycles, stored", reads, "reads/s", baseline=ceiling)
        report("headend: same cycles, bare asyncio client, nothing decoded or stored", bare, "reads/s", baseline=ceiling)
        report("headend: reads/s of the head-end vs the bare client on the same fleet", reads, "reads/s", baseline=bare)
        report(f"headend: full register cycle ({len(FULL_SET)} items x 1,000 meters), stored",
               median(f.seconds for f in fulls) * 1000, "ms")
        report("headend: reads/s, full register cycle, stored", full_rate, "reads/s", baseline=ceiling)
        counts = store.count_commands()
        done = [c for c in store.list_commands(kind="recharge", limit=N_METERS) if c.status == "confirmed"
                and c.reply.get("result") == "credited" and c.reply.get("balance_fen") == 1000]
        if counts["confirmed"] != N_METERS or len(done) != N_METERS:
            raise RuntimeError(f"recharges not all confirmed with one credit: {counts}, {len(done)} credited once")
        report("headend: recharges/s (outbox, session, MACs, read-back)", N_METERS / recharge_s, "recharges/s")
        store.close()
    finally:
        _stop(fleet)
        _stop(echo)


if __name__ == "__main__":  # the ceiling's echo process: python -m tools.bench.bench_headend --echo N
    if sys.argv[1:2] != ["--echo"] or len(sys.argv) != 3:
        sys.exit("usage: python -m tools.bench.bench_headend --echo COUNT (run the benchmark with make bench)")
    asyncio.run(_serve_echo(int(sys.argv[2])))
