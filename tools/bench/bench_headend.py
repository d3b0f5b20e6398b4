"""Head-end comms benchmark: read every meter of a 1,000-meter simulated fleet, and recharge them.

The fleet (1,000 real `meter.core.Meter` cores, one TCP port each, `tools.fleet`) runs in its own
process, as meters would on their own hardware; the head-end side runs here, on the same two
cores.  Every ratio is measured interleaved (one-second windows A, B, A, B ..., median of the
pair ratios with its spread; tools/bench/interleave.py) and names both sides and their far end:

* read cycles vs the ceiling against the same far end: a bare asyncio client (one
  ``open_connection`` stream per meter, a prebuilt read request written and its reply
  ``readexactly``-ed, nothing matched, decoded or stored) running the same back-to-back cycles
  (one read per meter, wait for all) against the same fleet.  The head-end's read cycles store
  every reading.  Also the head-end's CPU per read and the meters' (fleet process) share of the
  CPU while they run;
* the full register cycle (eight items per meter: energy total and per rate, remaining money,
  status word 3, clock) against the same bare client;
* the bare client on the fleet against plain asyncio echo ports (``python -m
  tools.bench.bench_headend --echo 1000``: an ``asyncio.Protocol`` per connection writing
  every chunk straight back): two different far ends, so this shows what the meter cores
  themselves cost, not the head-end;
* recharges/s: every meter topped up once through the command outbox (wallet query, session,
  recharge, read-back; each command recorded before sending and confirmed after), with the
  meters' share of the CPU and the head-end's CPU per recharge;
* CPU per read at scale: a 20,000-meter fleet (20 meters per bus), reads per CPU second of
  the head-end over all of them against over the first 1,000 (flat = 1).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
N_METERS = int(os.environ.get("BENCH_HEADEND_METERS", "1000"))
WINDOW_S = 1.0
ROUNDS = 5
SCALE_METERS = int(os.environ.get("BENCH_HEADEND_SCALE_METERS", "20000"))
SCALE_PER_BUS = 20
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


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(report) -> None:  # noqa: ANN001
    from headend.commands import MeterClient, OutboxWorker
    from headend.commands.collect import read_cycle
    from headend.keys import KeyStore
    from headend.store import open_store
    from headend.transports import FrontEnd, LinkSettings
    from protocol import build_frame
    from tools.bench.interleave import interleaved_values_async

    master = os.urandom(32)
    keys = KeyStore.in_memory(master)
    # a read request and its reply are about this size: the echo ceiling moves frames like them
    frame = build_frame("000000000001", 0x91, b"\x00\x00\x01\x00" + b"\x12\x34\x56\x00", preamble=4)
    fleet_env = {"PREPAID645_MASTER_KEY": master.hex()}
    echo, echo_info = _spawn("tools.bench.bench_headend", "--echo", str(N_METERS))
    fleet, info = _spawn("tools.fleet", "--count", str(N_METERS), env=fleet_env)
    tmp = tempfile.mkdtemp(prefix="bench-headend-")
    try:
        store = open_store(Path(tmp) / "bench.db")
        for bus in info["buses"]:
            for a in bus["meters"]:
                store.add_meter(a, link=bus["link"], customer="000000000042", actor="bench")
        meters = store.find_meters()
        cycles: list = []          # (items per meter, result) of every cycle timed

        async def main() -> dict:
            fe = FrontEnd(LinkSettings(timeout=5.0, retries=2, connect_timeout=10.0))
            client = MeterClient(fe, lambda m: keys.meter_key(m.address, m.krn))
            await read_cycle(client, store, meters, [0x00900200])   # opens the 1,000 connections
            gc.collect()
            gc.freeze()  # long-lived link state need not be walked by every collection (as serve does)
            cpu = {"headend": 0.0, "fleet": 0.0, "reads": 0}

            async def reads() -> float:
                """Back-to-back read cycles for a window: reads/s, every reading stored."""
                t0, c0, f0 = time.perf_counter(), time.process_time(), _cpu_of(fleet.pid)
                got = []
                while time.perf_counter() - t0 < WINDOW_S or len(got) < 2:
                    got.append(await read_cycle(client, store, meters, [0x00010000]))
                dt = time.perf_counter() - t0
                cpu["headend"] += time.process_time() - c0
                cpu["fleet"] += _cpu_of(fleet.pid) - f0
                cpu["reads"] += sum(c.stored for c in got)
                cycles.extend((1, c) for c in got)
                return sum(c.stored for c in got) / dt

            async def bare() -> float:
                return await _raw_cycles(info["buses"], WINDOW_S)

            async def echo_ceiling() -> float:
                return await _ceiling(echo_info["echo"], frame, WINDOW_S)

            async def full() -> float:
                c = await read_cycle(client, store, meters, FULL_SET)
                cycles.append((len(FULL_SET), c))
                return c.reads_per_s

            out = {"same_far_end": await interleaved_values_async(reads, bare, rounds=ROUNDS),
                   "echo": await interleaved_values_async(bare, echo_ceiling, rounds=ROUNDS),
                   "full": await interleaved_values_async(full, bare, rounds=ROUNDS), "cpu": dict(cpu)}
            worker = OutboxWorker(store, client, concurrency=N_METERS)
            store.enqueue_many([m.address for m in meters], "recharge", {"amount_fen": 1000}, actor="bench")
            t1, c1, f1 = time.perf_counter(), time.process_time(), _cpu_of(fleet.pid)
            await worker.drain(600)
            out["recharge"] = (time.perf_counter() - t1, time.process_time() - c1, _cpu_of(fleet.pid) - f1)
            await fe.close()
            return out

        got = asyncio.run(main())
        failed = next((c.failed for _, c in cycles if c.failed), {})
        if failed:
            raise RuntimeError(f"reads failed: {list(failed.items())[:3]}")
        if any(c.stored != N_METERS * items for items, c in cycles):
            raise RuntimeError("a read cycle did not store every value")
        r = got["same_far_end"]
        report(f"headend: read cycles (every reading stored) vs a bare asyncio client, same {N_METERS:,}-meter "
               "fleet, same cycles", r.a, "reads/s", r.b, pairs=r)
        cpu = got["cpu"]
        report("  head-end CPU per read (this process, read cycles)", cpu["headend"] / cpu["reads"] * 1e6, "us")
        report("  meters' share of the CPU during read cycles (fleet process / both)",
               100 * cpu["fleet"] / (cpu["fleet"] + cpu["headend"]), "%")
        r = got["full"]
        report(f"headend: full register cycle ({len(FULL_SET)} items per meter) vs the bare client, same fleet",
               r.a, "reads/s", r.b, pairs=r)
        r = got["echo"]
        report(f"headend: bare client on the fleet (meter cores) vs plain asyncio echo ({N_METERS:,} ports): "
               "different far ends, the meters' own cost", r.a, "round trips/s", r.b, pairs=r)
        counts = store.count_commands()
        done = [c for c in store.list_commands(kind="recharge", limit=N_METERS) if c.status == "confirmed"
                and c.reply.get("result") == "credited" and c.reply.get("balance_fen") == 1000]
        if counts["confirmed"] != N_METERS or len(done) != N_METERS:
            raise RuntimeError(f"recharges not all confirmed with one credit: {counts}, {len(done)} credited once")
        wall, hcpu, fcpu = got["recharge"]
        report("headend: recharges/s (outbox, session, MACs, read-back), every meter once", N_METERS / wall,
               "recharges/s")
        report("  meters' share of the CPU during recharges (fleet process / both)", 100 * fcpu / (fcpu + hcpu), "%")
        report("  head-end CPU per recharge (this process)", hcpu / N_METERS * 1e3, "ms")
        store.close()
        _stop(fleet)
        fleet = None
        _scale(report, master)
    finally:
        if fleet is not None:
            _stop(fleet)
        _stop(echo)


def _scale(report, master: bytes) -> None:  # noqa: ANN001
    """Head-end CPU per read at SCALE_METERS meters against the first 1,000 of them (interleaved).

    The fleet has SCALE_METERS meters, SCALE_PER_BUS per TCP port (the buses a serial server
    fronts); the small side reads the meters of the first 1,000 / SCALE_PER_BUS buses.  The
    head-end's caches (addresses, requests, items) must not lose their entries past a size:
    CPU per read stays flat when the ratio stays near 1.
    """
    from headend.commands import MeterClient
    from headend.commands.collect import read_cycle
    from headend.keys import KeyStore
    from headend.store import open_store
    from headend.transports import FrontEnd, LinkSettings
    from tools.bench.interleave import interleaved_values_async

    keys = KeyStore.in_memory(master)
    fleet, info = _spawn("tools.fleet", "--count", str(SCALE_METERS), "--per-bus", str(SCALE_PER_BUS),
                         env={"PREPAID645_MASTER_KEY": master.hex()})
    tmp = tempfile.mkdtemp(prefix="bench-headend-scale-")
    try:
        store = open_store(Path(tmp) / "bench.db")
        store.add_meters(({"address": a, "link": bus["link"], "customer": "000000000042"}
                          for bus in info["buses"] for a in bus["meters"]), actor="bench")
        every = store.find_meters()
        first = {bus["link"] for bus in info["buses"][: 1000 // SCALE_PER_BUS]}
        small = [m for m in every if m.link in first]

        async def main():
            fe = FrontEnd(LinkSettings(timeout=10.0, retries=2, connect_timeout=10.0))
            client = MeterClient(fe, lambda m: keys.meter_key(m.address, m.krn))
            await read_cycle(client, store, every, [0x00010000])
            gc.collect()
            gc.freeze()

            def per_read(meters):
                async def go() -> float:        # reads per CPU second of this process
                    c0 = time.process_time()
                    res = await read_cycle(client, store, meters, [0x00010000])
                    if res.failed or res.stored != len(meters):
                        raise RuntimeError(f"scale read cycle: {res.stored} stored, failed {list(res.failed)[:3]}")
                    return res.stored / (time.process_time() - c0)
                return go

            r = await interleaved_values_async(per_read(every), per_read(small), rounds=5)
            await fe.close()
            return r

        r = asyncio.run(main())
        report(f"headend: reads per CPU second at {SCALE_METERS:,} meters vs at {len(small):,} of them "
               f"({SCALE_PER_BUS} per bus; flat = 1)", r.a, "reads/CPU s", r.b, pairs=r)
        report(f"  head-end CPU per read at {SCALE_METERS:,} meters", 1e6 / r.a, "us")
        store.close()
    finally:
        _stop(fleet)


if __name__ == "__main__":  # the ceiling's echo process: python -m tools.bench.bench_headend --echo N
    if sys.argv[1:2] != ["--echo"] or len(sys.argv) != 3:
        sys.exit("usage: python -m tools.bench.bench_headend --echo COUNT (run the benchmark with make bench)")
    asyncio.run(_serve_echo(int(sys.argv[2])))
