"""Keypad token decode (firmware/meter/token.py, protocol/TOKENS.md) on the meter's interpreter.

Figures:
* tokens decoded per second under the MicroPython unix port on this x86 machine (meter.token
  from .mpy, 64K heap), against the same program under CPython, interleaved (one process of each
  per pair, median of the pair ratios); the aim is under 5 ms a token under the unix port;
* under MicroPython, invalid strings (random digits) against valid tokens, interleaved in one
  process: constant decode time means a ratio near 1;
* heap kept by the token module loaded from .mpy, and heap taken by one decode (gc.mem_alloc);
* a whole keypad entry on a Meter under MicroPython (meter.core.Meter.token from .mpy: the decoder
  loaded, the token decoded and applied, the record saved to a RAM flash, the decoder let go)
  against decode alone, interleaved in one process (median of 9 rounds of the ratio).
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from tools import mpy
from tools.bench.interleave import interleaved_values
from tools.meter_image import compile_mpy

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
Report = Callable[..., None]
N = 400
REPEAT = 10  # each timed side runs long enough (~30 ms) that one lost time slice is not the figure
KEY = bytes(range(16))

PROGRAM = """
import gc, time
gc.collect()
a0 = gc.mem_alloc()
from meter import token
gc.collect()
a1 = gc.mem_alloc()
if hasattr(time, "ticks_us"):
    clk, dt = time.ticks_us, lambda a, b: time.ticks_diff(b, a) / 1e6
else:
    clk, dt = time.perf_counter, lambda a, b: b - a
def rate(ss):
    gc.collect()  # start each side with the same empty heap
    t0 = clk()
    for _ in range(REPEAT):
        for s in ss:
            token.decode(KEY, s)
    return REPEAT * len(ss) / dt(t0, clk())
token.decode(KEY, GOOD[0])
gc.collect()
a2 = gc.mem_alloc()
token.decode(KEY, GOOD[0])
a3 = gc.mem_alloc()
print("rate", rate(GOOD + BAD))
rv, rb = [], []
for i in range(9):
    rv.append(rate(GOOD))
    rb.append(rate(BAD))
print("ratio", sorted([b / v for b, v in zip(rb, rv)])[4])
print("import", a1 - a0)
print("decode_heap", a3 - a2)
"""


ENTRY = """
import gc, time
from meter.core import Meter
from meter.desktop import RamFlash
m = Meter({"address": "000000000001", "key": MKEY, "krn": 0, "mode": "local"}, RamFlash(16384), 900000000,
          lambda n: bytes(n))
m.wallet.opened = True
m.wallet.hoard = 0
from meter import token
def us(f, ss):
    gc.collect()
    t0 = time.ticks_us()
    for s in ss:
        f(s)
    return time.ticks_diff(time.ticks_us(), t0) / len(ss)
r, e = [], []
for i in range(9):
    d = us(lambda s: token.decode(TKEY, s), ENTRIES[i])
    x = us(lambda s: m.token(s, 900000000), ENTRIES[i])
    r.append(x / d)
    e.append(x)
assert m.status()["balance_fen"] == 9 * len(ENTRIES[0]) * 100
print("entry_us", sorted(e)[4])
print("entry_ratio", sorted(r)[4])
"""
ENTRY_N = 20  # tokens per round (each typed once: later rounds use later TIDs)


def _entry_inputs() -> str:
    from headend.vouchers import token as H
    mkey = bytes(range(1, 17))
    tkey = H.token_key(mkey, 0)
    rounds = [[H.encode(tkey, H.CREDIT, 0, 1000 + i * ENTRY_N + j, H.amount_field(100)) for j in range(ENTRY_N)]
              for i in range(9)]
    return f"MKEY = {mkey!r}\nTKEY = {tkey!r}\nENTRIES = {rounds!r}\n"


def _inputs() -> str:
    from headend.vouchers import token as H
    rng = random.Random(5)
    good = [H.encode(KEY, H.CREDIT, 0, rng.randrange(1 << 24), rng.randrange(1 << 16)) for _ in range(N // 2)]
    bad = [f"{rng.randrange(10 ** 20):020d}" for _ in range(N // 2)]
    return f"REPEAT = {REPEAT}\nKEY = {KEY!r}\nGOOD = {good!r}\nBAD = {bad!r}\n"


def _parse(out: str) -> dict[str, float]:
    return {k: float(v) for k, v in (line.split() for line in out.splitlines() if line.strip())}


def _cpython(head: str) -> dict[str, float]:
    code = "import sys\nsys.path.insert(0, %r)\nimport gc\ngc.mem_alloc = lambda: 0\n" % str(FIRMWARE)
    proc = subprocess.run([sys.executable, "-c", code + head + PROGRAM], capture_output=True, text=True, check=True)
    return _parse(proc.stdout)


def _build(tmp: Path) -> None:
    pkg = tmp / "meter"
    pkg.mkdir()
    shutil.copy(FIRMWARE / "meter" / "__init__.py", pkg / "__init__.py")
    compile_mpy(FIRMWARE / "meter" / "token.py", pkg / "token.mpy", "meter/token.py")  # as `meter build` does


def _entry(tmp: Path) -> dict[str, float]:
    """The whole-entry figures, every meter module from .mpy (-O3, as `meter build` compiles them)."""
    from tools.bench.bench_firmware import build_o3

    dest = build_o3(tmp / "entry")
    proc = mpy.run(_entry_inputs() + ENTRY, heapsize="128K", path=[dest], cwd=dest)
    proc.check_returncode()
    return _parse(proc.stdout)


def _micropython(tmp: Path, head: str) -> dict[str, float]:
    proc = mpy.run(head + PROGRAM, heapsize="64K", path=[tmp], cwd=tmp)
    proc.check_returncode()
    return _parse(proc.stdout)


def run(report: Report) -> None:
    """Run the token-decode benchmarks and report each figure."""
    head = _inputs()
    with tempfile.TemporaryDirectory() as tmp:
        _build(Path(tmp))
        seen: dict[str, dict[str, float]] = {}

        def mp() -> float:
            seen["mp"] = _micropython(Path(tmp), head)
            return seen["mp"]["rate"]

        pairs = interleaved_values(mp, lambda: _cpython(head)["rate"], rounds=5)
        entry = _entry(Path(tmp))
    report("tokens: decodes/s, MicroPython x86 unix port (.mpy, 64K heap) vs CPython, half valid",
           pairs.a, "tokens/s", baseline=pairs.b, pairs=pairs)
    report("tokens: microseconds per decode, MicroPython x86 unix port (aim < 5,000)", 1e6 / pairs.a, "us")
    report("tokens: decode rate invalid / valid strings, MicroPython x86 unix port (1 = constant time)",
           seen["mp"]["ratio"], "ratio")
    report("tokens: heap kept by meter.token from .mpy, MicroPython", seen["mp"]["import"], "bytes")
    report("tokens: heap taken by one decode, MicroPython", seen["mp"]["decode_heap"], "bytes")
    report("tokens: keypad entry on a Meter (decoder loaded, decode, apply, save to RAM flash), MicroPython x86"
           " unix port, microseconds", entry["entry_us"], "us")
    report("tokens: keypad entry / decode alone, MicroPython x86 unix port (median of 9 interleaved rounds)",
           entry["entry_ratio"], "ratio")


if __name__ == "__main__":
    from tools.bench.run import reporter
    run(reporter([]))
