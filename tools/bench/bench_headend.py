"""Head-end comms benchmark: read every meter of a 1,000-meter simulated fleet, and recharge them.

The fleet (1,000 real `meter.core.Meter` cores, one TCP port each, `tools.fleet`) runs in its own
process, as meters would on their own hardware; the head-end side runs here, on the same two
cores.  Every ratio is measured interleaved (one-second windows A, B, A, B ..., median of the
pair ratios with its spread; tools/bench/interleave.py) and names both sides and their far end:

* read cycles vs the plain-asyncio ceiling against the same far end (the same fleet process,
  the same meter cores): tools/bench/ceiling.py, one ``asyncio.Protocol`` connection per port,
  each request written from ``data_received`` as the previous reply's last byte arrives,
  requests built once, replies only counted (nothing matched, decoded or stored), in the same
  back-to-back cycles (every meter once, wait for all).  The head-end's read cycles match,
  decode and store every reading.  Also the head-end's CPU per read and the meters' (fleet
  process) share of the CPU while they run;
* the full register cycle (eight items per meter: energy total and per rate, remaining money,
  status word 3, clock) against the same ceiling asking the same eight items;
* the ceiling on the fleet against the same ceiling on plain asyncio echo ports (``python -m
  tools.bench.bench_headend --echo 1000``: an ``asyncio.Protocol`` per connection writing every
  chunk straight back): two different far ends, so this shows what the meter cores themselves
  cost, not the head-end;
* recharges/s: every meter topped up once through the command outbox (wallet query, session,
  recharge, read-back; each command recorded before sending and confirmed after), with the
  meters' share of the CPU and the head-end's CPU per recharge;
* CPU per read at scale: one 20,000-meter fleet (20 meters per port, as buses behind serial
  servers) and four head-ends, each its own process holding 1,000, 5,000, 10,000 or 20,000 of
  those meters in its own store (``--scale-child N``); each round every head-end runs serve's
  collection (registry query, read cycle, readings stored) over all its meters, in turn with
  the order rotating, and reports its own CPU time (``time.process_time``) per read; the
  figures are ratios to the 1,000-meter head-end's of the same round (flat = 1.0).  Each
  head-end then runs as many cycles of the plain-asyncio ceiling over its own buses, in the same
  process right after its collections (so what those leave behind, the garbage collections
  they made due among it, lands there), and the head-end's CPU per read beyond that against the
  same at 1,000; the cyclic garbage collector's CPU time is reported on its own.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
N_METERS = int(os.environ.get("BENCH_HEADEND_METERS", "1000"))
WINDOW_S = 1.0
ROUNDS = 5
# the head-ends of the scale figure, the first the baseline; the fleet has as many meters as the largest
SCALE_SIZES = tuple(int(n) for n in os.environ.get("BENCH_HEADEND_SCALE", "1000,5000,10000,20000").split(","))
SCALE_PER_BUS = 20
SCALE_CYCLES = 2   # collection cycles of each head-end per round
SCALE_ROUNDS = 11  # on a loaded machine single pairs spread 0.6-1.8: 7 rounds moved the median 1.13-1.37 between runs
READ_DI = 0x00010000  # total active energy: what the read cycles ask
# what a collection round reads from each meter: energy total and per rate, money, status word 3
FULL_SET = [0x00010000, 0x00010100, 0x00010200, 0x00010300, 0x00010400, 0x00900200, 0x04000503, 0x0400010C]


def _spawn(module: str, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, dict]:
    """Start ``python -m module args``; returns it and the JSON of the first line it prints."""
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=str(ROOT), env={**os.environ, **(env or {})},
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, _first_line(proc, module)


def _first_line(proc: subprocess.Popen, what: str) -> dict:
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line:
        proc.wait()
        raise RuntimeError(f"{what} did not start: {proc.stderr.read()}")  # type: ignore[union-attr]
    return json.loads(line)


class _Echo(asyncio.Protocol):
    """Plain asyncio: send every chunk straight back (the far end of the echo comparison)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


async def _serve_echo(count: int) -> None:
    """COUNT plain asyncio echo ports; prints {"echo": [links]} and serves until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(_Echo, "127.0.0.1", 0, backlog=4096) for _ in range(count)]
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"echo": [f"tcp://127.0.0.1:{s.sockets[0].getsockname()[1]}" for s in servers]}), flush=True)
    await stop.wait()
    for s in servers:
        s.close()


def _stop(proc: subprocess.Popen) -> None:
    if proc.stdin is None:
        proc.terminate()
    try:  # a scale head-end ends at the end of its input (communicate closes it)
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def run(report) -> None:  # noqa: ANN001
    from headend.commands import MeterClient, OutboxWorker
    from headend.commands.collect import read_cycle
    from headend.keys import KeyStore
    from headend.store import open_store
    from headend.transports import FrontEnd, LinkSettings
    from tools.bench.ceiling import ceiling_cycles, open_buses
    from tools.bench.interleave import interleaved_values_async
    from tools.proc import cpu_seconds

    master = os.urandom(32)
    keys = KeyStore.in_memory(master)
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
        # the echo ports stand for the fleet's: one each, asked the same read (echoed, as long as asked)
        echo_buses = [{"link": url, "meters": bus["meters"]} for url, bus in zip(echo_info["echo"], info["buses"])]

        async def main() -> dict:
            fe = FrontEnd(LinkSettings(timeout=5.0, retries=2, connect_timeout=10.0))
            client = MeterClient(fe, lambda m: keys.meter_key(m.address, m.krn))
            await read_cycle(client, store, meters, [0x00900200])   # opens the 1,000 connections
            # the ceiling keeps its connections open from window to window too
            one, full_set = await open_buses(info["buses"], [READ_DI]), await open_buses(info["buses"], FULL_SET)
            echoed = await open_buses(echo_buses, [READ_DI], echo=True)
            gc.collect()
            gc.freeze()  # long-lived link state need not be walked by every collection
            cpu = {"headend": 0.0, "fleet": 0.0, "reads": 0}

            async def reads() -> float:
                """Back-to-back read cycles for a window: reads/s, every reading stored."""
                t0, c0, f0 = time.perf_counter(), time.process_time(), cpu_seconds(fleet.pid)
                got = []
                while time.perf_counter() - t0 < WINDOW_S or len(got) < 2:
                    got.append(await read_cycle(client, store, meters, [READ_DI]))
                dt = time.perf_counter() - t0
                cpu["headend"] += time.process_time() - c0
                cpu["fleet"] += cpu_seconds(fleet.pid) - f0
                cpu["reads"] += sum(c.stored for c in got)
                cycles.extend((1, c) for c in got)
                return sum(c.stored for c in got) / dt

            async def ceiling() -> float:
                return await ceiling_cycles(info["buses"], WINDOW_S, [READ_DI], conns=one)

            async def ceiling_echo() -> float:
                return await ceiling_cycles(echo_buses, WINDOW_S, [READ_DI], conns=echoed)

            async def full() -> float:
                """Back-to-back full register cycles for a window (at least one): reads/s."""
                t0, n = time.perf_counter(), 0
                while time.perf_counter() - t0 < WINDOW_S or n == 0:
                    c = await read_cycle(client, store, meters, FULL_SET)
                    cycles.append((len(FULL_SET), c))
                    n += c.stored
                return n / (time.perf_counter() - t0)

            async def ceiling_full() -> float:
                return await ceiling_cycles(info["buses"], WINDOW_S, FULL_SET, conns=full_set)

            out = {"same_far_end": await interleaved_values_async(reads, ceiling, rounds=ROUNDS),
                   "echo": await interleaved_values_async(ceiling, ceiling_echo, rounds=ROUNDS),
                   "full": await interleaved_values_async(full, ceiling_full, rounds=ROUNDS), "cpu": dict(cpu)}
            for c in one + full_set + echoed:
                c.transport.close()  # type: ignore[union-attr]
            worker = OutboxWorker(store, client, concurrency=N_METERS)
            store.enqueue_many([m.address for m in meters], "recharge", {"amount_fen": 1000}, actor="bench")
            t1, c1, f1 = time.perf_counter(), time.process_time(), cpu_seconds(fleet.pid)
            await worker.drain(600)
            out["recharge"] = (time.perf_counter() - t1, time.process_time() - c1, cpu_seconds(fleet.pid) - f1)
            await fe.close()
            return out

        got = asyncio.run(main())
        failed = next((c.failed for _, c in cycles if c.failed), {})
        if failed:
            raise RuntimeError(f"reads failed: {list(failed.items())[:3]}")
        if any(c.stored != N_METERS * items for items, c in cycles):
            raise RuntimeError("a read cycle did not store every value")
        ceiling_is = ("plain-asyncio ceiling (tools/bench/ceiling.py: asyncio.Protocol, replies counted, "
                      "nothing matched, decoded or stored)")
        r = got["same_far_end"]
        report(f"headend: read cycles (every reading matched, decoded, stored) vs the {ceiling_is}, same "
               f"{N_METERS:,}-meter fleet process and meter cores, same cycles", r.a, "reads/s", r.b, pairs=r)
        cpu = got["cpu"]
        report("  head-end CPU per read (this process, read cycles)", cpu["headend"] / cpu["reads"] * 1e6, "us")
        report("  meters' share of the CPU during read cycles (fleet process / both)",
               100 * cpu["fleet"] / (cpu["fleet"] + cpu["headend"]), "%")
        r = got["full"]
        report(f"headend: full register cycle ({len(FULL_SET)} items per meter) vs the plain-asyncio ceiling "
               "asking the same items, same fleet process", r.a, "reads/s", r.b, pairs=r)
        r = got["echo"]
        report(f"headend: plain-asyncio ceiling on the fleet (meter cores) vs the same on plain asyncio echo "
               f"({N_METERS:,} ports): different far ends, the meters' own cost", r.a, "reads/s", r.b, pairs=r)
        counts = store.count_commands()
        done = [c for c in store.list_commands(kind="recharge", limit=N_METERS) if c.status == "confirmed"
                and c.reply.get("result") == "credited" and c.reply.get("balance_fen") == 1000]
        if counts["confirmed"] != N_METERS or len(done) != N_METERS:
            raise RuntimeError(f"recharges not all confirmed with one credit: {counts}, {len(done)} credited once")
        wall, hcpu, fcpu = got["recharge"]
        report("headend: recharges/s (outbox, session, MACs, read-back), every meter once, meters and head-end "
               "on the same 2 cores", N_METERS / wall, "recharges/s")
        report("  meters' share of the CPU during recharges (fleet process / both)", 100 * fcpu / (fcpu + hcpu), "%")
        report("  head-end CPU per recharge (this process)", hcpu / N_METERS * 1e3, "ms")
        report("  meters' CPU per recharge (fleet process)", fcpu / N_METERS * 1e3, "ms")
        store.close()
        _stop(fleet)
        fleet = None
        if len(SCALE_SIZES) > 1:   # BENCH_HEADEND_SCALE=1000 leaves the scale figures out
            _scale(report, master)
    finally:
        if fleet is not None:
            _stop(fleet)
        _stop(echo)


def _scale(report, master: bytes) -> None:  # noqa: ANN001
    """Head-end CPU per read with 1,000 ... 20,000 meters, each size its own head-end process.

    The fleet has max(SCALE_SIZES) meters, SCALE_PER_BUS per TCP port; the head-end of size N
    holds the meters of the first N / SCALE_PER_BUS ports.  Each round every head-end runs
    SCALE_CYCLES collection cycles over all its meters, one head-end at a time (the others idle),
    the order rotating; every head-end has then collected as often, so each meter has as many
    readings stored whatever the fleet's size.  CPU per read is flat when every ratio stays near 1.
    """
    from tools.bench.interleave import interleaved_group, paired

    env = {"PREPAID645_MASTER_KEY": master.hex()}
    fleet, info = _spawn("tools.fleet", "--count", str(max(SCALE_SIZES)), "--per-bus", str(SCALE_PER_BUS), env=env)
    heads: list[subprocess.Popen] = []
    store_cpu: dict[int, list[float]] = {n: [] for n in SCALE_SIZES}
    gc_cpu: dict[int, list[float]] = {n: [] for n in SCALE_SIZES}
    ceiling_gc: dict[int, list[float]] = {n: [] for n in SCALE_SIZES}
    ceiling_cpu: dict[int, list[float]] = {n: [] for n in SCALE_SIZES}
    headend_cpu: dict[int, list[float]] = {n: [] for n in SCALE_SIZES}
    try:
        layout = json.dumps({"buses": info["buses"]}) + "\n"
        for n in SCALE_SIZES:   # all start at once; each says when its first cycle is done
            heads.append(subprocess.Popen([sys.executable, "-m", "tools.bench.bench_headend", "--scale-child", str(n)],
                                          cwd=str(ROOT), env={**os.environ, **env}, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            heads[-1].stdin.write(layout)  # type: ignore[union-attr]
            heads[-1].stdin.flush()  # type: ignore[union-attr]
        for n, h in zip(SCALE_SIZES, heads):
            _first_line(h, f"the {n:,}-meter head-end")

        def side(n: int, h: subprocess.Popen):  # noqa: ANN202
            def measure() -> float:   # this head-end's CPU per read (us) over whole cycles
                # the ceiling stores nothing, so it may run as many reads at every size: -(-a // b) is ceil
                h.stdin.write(f"{SCALE_CYCLES} {-(-max(SCALE_SIZES) // n)}\n")  # type: ignore[union-attr]
                h.stdin.flush()  # type: ignore[union-attr]
                got = _first_line(h, f"the {n:,}-meter head-end's cycle")
                if got["stored"] != got["reads"] or got["failed"]:
                    raise RuntimeError(f"{n:,}-meter head-end: {got}")
                store_cpu[n].append(got["store_cpu"] / got["reads"] * 1e6)
                gc_cpu[n].append(got["gc_cpu"] / got["reads"] * 1e6)
                ceiling_gc[n].append(got["ceiling_gc_cpu"] / got["ceiling_reads"] * 1e6)
                ceiling_cpu[n].append(got["ceiling_cpu"] / got["ceiling_reads"] * 1e6)
                headend_cpu[n].append(got["cpu"] / got["reads"] * 1e6)
                return headend_cpu[n][-1]
            return measure

        got = interleaved_group([side(n, h) for n, h in zip(SCALE_SIZES, heads)], rounds=SCALE_ROUNDS)
    finally:
        for h in heads:
            _stop(h)
        _stop(fleet)
    base = SCALE_SIZES[0]
    for n, r in zip(SCALE_SIZES[1:], got[1:]):
        report(f"headend: CPU per read with {n:,} meters vs with {base:,} (serve's collection: registry query, read "
               f"cycle, readings stored; a head-end process each, {SCALE_PER_BUS} meters per port; flat = 1.0)",
               r.a, "us", r.b, pairs=r)
    report(f"  head-end CPU per read with {base:,} meters", got[0].a, "us")
    for n in (base, SCALE_SIZES[-1]):
        report(f"  of which storing the readings (SQLite, with the checkpoints commits make, on worker threads) with {n:,} meters",
               statistics.median(store_cpu[n]), "us")
    for n in (base, SCALE_SIZES[-1]):
        report(f"  of which cyclic garbage collection (gc module, whichever thread it ran on) with {n:,} meters",
               statistics.median(gc_cpu[n]), "us")
    for n in (base, SCALE_SIZES[-1]):   # collections the head-end's cycles left due, run while the ceiling's go
        report(f"  cyclic garbage collection per read of the plain-asyncio ceiling's cycles with {n:,} meters",
               statistics.median(ceiling_gc[n]), "us")
    for n in SCALE_SIZES[1:]:
        r = paired(ceiling_cpu[n], ceiling_cpu[base])
        report(f"  the plain-asyncio ceiling's CPU per read on the same buses with {n:,} meters vs with {base:,} "
               "(sockets and event loop only, in that head-end's process right after its collections)", r.a, "us", r.b, pairs=r)
    for n in SCALE_SIZES[1:]:
        own = [h - c for h, c in zip(headend_cpu[n], ceiling_cpu[n])]
        r = paired(own, [h - c for h, c in zip(headend_cpu[base], ceiling_cpu[base])])
        report(f"  head-end CPU per read beyond the plain-asyncio ceiling's (its own code: matching, decoding, "
               f"storing, the registry) with {n:,} meters vs with {base:,}", r.a, "us", r.b, pairs=r)


async def _scale_child(n: int) -> None:
    """One head-end of the scale figure: its own store holding the first N meters of the fleet
    (layout read from stdin); for each line "K C" on stdin serve's collection cycle run K times,
    then C cycles of the plain-asyncio ceiling on the same buses, and one JSON line back:
    {"cpu": s, "store_cpu": s, "gc_cpu": s, "reads": n, "stored": n, "failed": n, "ceiling_cpu": s,
    "ceiling_gc_cpu": s, "ceiling_reads": n} (this process's CPU time in the collections, the parts
    of it spent storing readings and in the cyclic garbage collector, and its CPU time in the
    ceiling's cycles, with the collector's part)."""
    from headend.commands import MeterClient
    from headend.commands.collect import freeze_after_first_cycle, read_cycle
    from headend.keys import KeyStore
    from headend.store import open_store
    from headend.transports import FrontEnd, LinkSettings
    from tools.bench.ceiling import ceiling_cycles, open_buses

    layout = json.loads(sys.stdin.readline())
    rows = [{"address": a, "link": bus["link"], "customer": "000000000042"}
            for bus in layout["buses"] for a in bus["meters"]][:n]
    have = {r["address"] for r in rows}
    buses = [{"link": b["link"], "meters": [a for a in b["meters"] if a in have]} for b in layout["buses"]]
    buses = [b for b in buses if b["meters"]]   # the same meters, for the plain-asyncio ceiling
    keys = KeyStore.in_memory(bytes.fromhex(os.environ["PREPAID645_MASTER_KEY"]))
    with tempfile.TemporaryDirectory(prefix="bench-headend-scale-") as tmp:
        store = open_store(Path(tmp) / "bench.db")
        store.add_meters(rows, actor="bench")
        fe = FrontEnd(LinkSettings(timeout=10.0, retries=2, connect_timeout=10.0))
        client = MeterClient(fe, lambda m: keys.meter_key(m.address, m.krn))
        at = [int(time.time())]
        store_cpu = [0.0]
        add_readings = store.add_readings

        def timed_add(readings: list) -> int:   # on the cycle's worker thread: that thread's CPU time
            t = time.thread_time()
            try:
                return add_readings(readings)
            finally:
                store_cpu[0] += time.thread_time() - t

        store.add_readings = timed_add  # type: ignore[method-assign]
        gc_cpu = [0.0, 0.0]   # CPU time in the collector, and when the running collection started

        def on_gc(phase: str, info: dict) -> None:   # a collection starts and stops on one thread
            if phase == "start":
                gc_cpu[1] = time.thread_time()
            else:
                gc_cpu[0] += time.thread_time() - gc_cpu[1]

        gc.callbacks.append(on_gc)

        async def collect() -> tuple[int, int]:
            # every cycle a second later, so every reading is a new row (re-reading the same second stores once)
            at[0] += 1
            res = await read_cycle(client, store, store.find_meters(), [READ_DI], clock=lambda: at[0])
            return res.stored, len(res.failed)

        stored, failed = await collect()   # opens the connections
        if failed or stored != n:
            raise SystemExit(f"{n}-meter head-end: first cycle stored {stored}, {failed} failed")
        freeze_after_first_cycle()   # as serve's collection does
        conns = await open_buses(buses, [READ_DI])
        print(json.dumps({"ready": n}), flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            collections, ceilings = (int(x) for x in line.split())
            reads = stored = failed = 0
            c0, store_cpu[0], gc_cpu[0] = time.process_time(), 0.0, 0.0
            for _ in range(collections):
                s, f = await collect()
                reads, stored, failed = reads + n, stored + s, failed + f
            cpu, c0, collector = time.process_time() - c0, time.process_time(), gc_cpu[0]
            ceiling_reads = 0
            for _ in range(ceilings):   # one cycle each (no window)
                await ceiling_cycles(buses, 0.0, [READ_DI], conns=conns)
                ceiling_reads += sum(len(c.requests) for c in conns)
            print(json.dumps({"cpu": cpu, "store_cpu": store_cpu[0], "gc_cpu": collector, "reads": reads,
                              "stored": stored, "failed": failed, "ceiling_cpu": time.process_time() - c0,
                              "ceiling_gc_cpu": gc_cpu[0] - collector, "ceiling_reads": ceiling_reads}), flush=True)
        for c in conns:
            c.transport.close()  # type: ignore[union-attr]
        await fe.close()
        store.close()


if __name__ == "__main__":  # the processes the benchmark starts (run the benchmark itself with make bench)
    if len(sys.argv) == 3 and sys.argv[1] == "--echo":
        asyncio.run(_serve_echo(int(sys.argv[2])))
    elif len(sys.argv) == 3 and sys.argv[1] == "--scale-child":
        asyncio.run(_scale_child(int(sys.argv[2])))
    else:
        sys.exit("usage: python -m tools.bench.bench_headend --echo COUNT | --scale-child METERS "
                 "(started by the benchmark; run it with make bench)")
