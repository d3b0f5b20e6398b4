"""Meter cost-control logic (meter.tariff, meter.wallet, meter.relay) on CPython and MicroPython.

Figures:
* readings priced and deducted per second (Tariff.settle + Tariff.charge + Wallet.deduct, one
  15-minute reading each, TOU table with 7 points and a 3-tier ladder) under MicroPython, against
  the same loop under CPython in the same run (the baseline);
* relay events handled per second under MicroPython (command + tick + pop_events);
* heap kept under MicroPython by the three modules loaded from .mpy, and by one Tariff + Wallet +
  Relay built with their defaults (gc.mem_alloc after collect);
* bytes of JSON in the three dump() records (what the power-safe store writes), and the heap and
  record of a fully programmed Tariff (every day table and zone slot used).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from tools import mpy
from tools.bench.interleave import paired
from tools.meter_image import compile_mpy

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
Report = Callable[..., None]
N = 20000

# Runs unchanged on both interpreters; prints "name value" lines.
PROGRAM = """
import gc, time
gc.collect()
a0 = gc.mem_alloc()
from meter import clock, tariff, wallet, relay
gc.collect()
a1 = gc.mem_alloc()
t = tariff.Tariff()
w = wallet.Wallet(hoard=0)
r = relay.Relay(trip_delay=600)
gc.collect()
a2 = gc.mem_alloc()
from meter import tariffcheck  # the setters: loaded by a tariff write
tariffcheck.set_prices(t, 0, [8680, 8680, 5380, 2880])
tariffcheck.set_day_table(t, 0, 0, [(0, 3), (480, 1), (660, 2), (1080, 1), (1140, 0), (1200, 1), (1260, 2)])
tariffcheck.set_ladder(t, 0, [2760000, 4800000], [0, 500, 3000])
w.balance = 10 ** 9
now = clock.from_fields(2025, 1, 1)
last, lw = now, 0
ticks = getattr(time, "ticks_us", None)
clk = (lambda: ticks() / 1e6) if ticks else time.perf_counter
t0 = clk()
for i in range(N):
    now += 900
    lw = t.settle(now, last, lw)
    c, lw, rate = t.charge(37 + i % 200, now, lw)
    w.deduct(c)
    last = now
print("charge", N / (clk() - t0))
cmds = (0x1A, 0x1B, 0x1C, 0x1D, 0x1E, 0x3A, 0x3B)
t0 = clk()
for i in range(N):
    r.command(cmds[i % 7], 1, now + i, 1)
    r.tick(now + i + 300)
    r.pop_events()
print("relay", N / (clk() - t0))
print("import", a1 - a0)
print("objects", a2 - a1)
import json
print("dump", len(json.dumps(desktop.tariff_dump(t))) + len(json.dumps(w.dump())) + len(json.dumps(r.dump())))
del t
gc.collect()
a3 = gc.mem_alloc()
full = tariff.Tariff()
for s in range(2):
    for k in range(8):
        tariffcheck.set_day_table(full, s, k, [(i * 100 + k, (i + k) % 4) for i in range(14)])
    tariffcheck.set_zones(full, s, [(m, 1 + s, m % 8) for m in range(1, 13)] + [(12, 20, 1), (12, 30, 2)])
gc.collect()
print("full", gc.mem_alloc() - a3)
print("fulldump", len(json.dumps(desktop.tariff_dump(full))))
"""


def _parse(out: str) -> dict[str, float]:
    return {k: float(v) for k, v in (line.split() for line in out.splitlines() if line.strip())}


def _cpython() -> dict[str, float]:
    code = "import sys\nsys.path.insert(0, %r)\nimport gc\ngc.mem_alloc = lambda: 0\nN = %d\n" % (str(FIRMWARE), N)
    proc = subprocess.run([sys.executable, "-c", code + PROGRAM], capture_output=True, text=True, check=True)
    return _parse(proc.stdout)


def _micropython(tmp: Path) -> dict[str, float]:
    pkg = tmp / "meter"
    pkg.mkdir()
    shutil.copy(FIRMWARE / "meter" / "__init__.py", pkg / "__init__.py")
    for name in ("clock", "tariff", "tariffcheck", "wallet", "relay"):  # tariffcheck: loaded by a tariff write
        compile_mpy(FIRMWARE / "meter" / (name + ".py"), pkg / (name + ".mpy"), f"meter/{name}.py", debug=True)
    proc = mpy.run("N = %d\n" % N + PROGRAM, heapsize="96K", path=[tmp], cwd=tmp)
    proc.check_returncode()
    return _parse(proc.stdout)


def run(report: Report) -> None:
    """Run the firmware-logic benchmarks and report each figure."""
    # A, B, A, B: the MicroPython and CPython runs alternate, so each ratio pairs neighbours in time
    runs: list[tuple[dict[str, float], dict[str, float]]] = []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as tmp:   # a fresh build folder each run
            mp = _micropython(Path(tmp))
        runs.append((mp, _cpython()))
    for key, label, unit in (("charge", "readings priced+deducted/s, MicroPython x86 unix port (.mpy, 96K heap)"
                              " vs CPython, same code", "readings/s"),
                             ("relay", "relay command+tick/s, MicroPython x86 unix port vs CPython, same code",
                              "events/s")):
        pairs = paired([m[key] for m, _ in runs], [c[key] for _, c in runs])
        report(f"fwlogic: {label}", pairs.a, unit, baseline=pairs.b, pairs=pairs)
    report("fwlogic: heap kept by clock+tariff+wallet+relay modules from .mpy", mp["import"], "bytes")
    report("fwlogic: heap kept by one Tariff+Wallet+Relay (defaults)", mp["objects"], "bytes")
    report("fwlogic: JSON bytes of the three dump() records", mp["dump"], "bytes")
    report("fwlogic: heap kept by a fully programmed Tariff (2 sets x 8 tables x 14 points, 14 zones)",
           mp["full"], "bytes")
    report("fwlogic: JSON bytes of that Tariff's dump()", mp["fulldump"], "bytes")
