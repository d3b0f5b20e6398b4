"""Meter core benchmark: frame rate of Meter.handle (read-energy request -> reply) under
CPython and under the real micropython binary, heap in use after import and after 1,000
mixed frames (modules loaded from .mpy, gc.mem_alloc after gc.collect), the smallest
-X heapsize in which the meter imports, powers up and serves those frames, and the smallest
in which a fully programmed meter powers up from its flash and serves reads.

Speeds are x86 figures: the MicroPython unix port on this machine, paired with CPython runs
interleaved (A, B, A, B; the median of the pair ratios with its spread), not a board.

Under micropython the meter's flash is a file (as on a board, it is not heap); the mixed
frames are recorded from a CPython meter (reads, block reads with follow-ups, an
authenticated session with writes, relay commands and top-ups) and replayed; each reply is
checked against the CPython one, so a figure is only reported for a meter that answered right.
The modules are compiled as `meter build` compiles them (mpy-cross -O3), and the harness reads
each frame into a buffer it owns and compares the reply byte by byte, as a UART loop would: its
own allocations (hex lines, hex replies) are not charged to the meter.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "firmware"))

from meter import clock  # noqa: E402
from meter.core import Meter  # noqa: E402
from meter.desktop import RamFlash  # noqa: E402
from tools import mpy  # noqa: E402
from tools.bench.hes import HeadEnd, le  # noqa: E402
from tools.bench.interleave import interleaved_values  # noqa: E402
from tools.sim.seeded_rand import Rand as SeededRand  # noqa: E402


def std_hmac(key, msg) -> bytes:
    """HMAC-SHA256 from the standard library: the head-end model's, independent of the meter's."""
    return hmac.new(bytes(key), bytes(msg), hashlib.sha256).digest()


def run_mpy(dest, code: str, heapsize: str = "96K", timeout: float = 300) -> subprocess.CompletedProcess:
    """Run code under micropython with ONLY the .mpy tree in dest importable."""
    return mpy.run(code, heapsize=heapsize, path=[dest], cwd=dest, timeout=timeout)


ADDR = "123456789012"
KEY = b"0123456789abcdef"
T0 = clock.from_fields(2025, 6, 5, 10, 22, 51)
READ_ENERGY = bytes.fromhex("fefefefe68129078563412681104333334336816")
RATE_FRAMES = 20000
MIXED = 1000


def Rand() -> SeededRand:  # noqa: N802 - a class until now; tools/bench/bench_image.py calls bf.Rand()
    """rand(n) with the seed the mixed frames are recorded with (the micropython replay below uses it too)."""
    return SeededRand(7)


def _config():
    return {"address": ADDR, "key": KEY, "krn": 1, "mode": "local"}


def _bcd(v: int) -> int:
    return (v // 10) << 4 | v % 10


def _bcdn(v: int, n: int) -> bytes:
    return bytes(_bcd(v // 100**i % 100) for i in range(n))


def mixed_frames(n: int = MIXED) -> list[tuple[bytes, bytes]]:
    """n (request, expected reply) pairs recorded from a CPython meter."""
    m = Meter(_config(), RamFlash(16384), T0, Rand())
    he = HeadEnd(ADDR, KEY, std_hmac)
    out: list[tuple[bytes, bytes]] = []

    def send(frame):
        r = m.handle(frame, T0)
        out.append((frame, r or b""))
        return r

    he.login(send, bytes(range(8)))
    send(he.purchase(100000, 1, "000000000042", open_account=True))
    # a fully programmed tariff (both sets: 14 zones, 8 day tables of 14 points, prices, ladder)
    # is the largest record the meter keeps
    for s in (0x0401, 0x0402):
        zones = b"".join(bytes((_bcd(k % 8 + 1), _bcd(1 + (k % 2) * 14), _bcd(k // 2 + 1))) for k in range(14))
        send(he.write(s << 16, zones))
        for t in range(1, 9):
            pts = b"".join(bytes((_bcd(1 + (p + t) % 4), _bcd(p % 2 * 30), _bcd(p + 5))) for p in range(14))
            send(he.write(s << 16 | t, pts))
    for s in (1, 2):
        send(he.write(0x040500FF | s << 8, b"".join(_bcdn(4000 + 500 * r, 4) for r in range(4))))
    send(he.write(0x040600FF, b"".join(_bcdn(100000 * (k + 1), 4) for k in range(6))))
    send(he.write(0x040601FF, b"".join(_bcdn(100 * k, 4) for k in range(7))))
    reads = [0x00010000, 0x00900200, 0x04000503, 0x0001FF00, 0x04000102, 0x04000101, 0x040005FF,
             0x0400040E, 0x03330201, 0x1D000001, 0x02030000, 0x12345678]
    i = 0
    count = 1
    while len(out) < n:
        k = i % 40
        if k == 10:
            send(he.read(0x040100FF))
            send(he.frame(0x12, le(0x040100FF, 4) + b"\x01"))
        elif k == 20:
            send(he.write(0x04001001, bytes.fromhex("00200000")))
        elif k == 30:
            count += 1
            send(he.purchase(100, count, "000000000042"))
        elif k == 35:
            send(he.control(0x1A if i % 80 < 40 else 0x1C, T0 + 3600))
        else:
            send(he.read(reads[i % len(reads)]))
        i += 1
    return out[:n]


# The heap scripts carry their helpers as text: importing another module under micropython
# would charge that module's heap to the meter being measured.
_FILE_FLASH = r"""
class FileFlash:
    def __init__(self, path, size):
        self.size = size
        self.f = open(path, "r+b")

    def read(self, off, n):
        self.f.seek(off)
        return self.f.read(n)

    def write(self, off, data):
        self.f.seek(off)
        self.f.write(data)

    def sync(self):
        self.f.flush()
"""
_RAND = (Path(__file__).resolve().parents[1] / "sim" / "seeded_rand.py").read_text()


_MPY = r"""
import gc, time
gc.collect()
base = gc.mem_alloc()
from meter.core import Meter
gc.collect()
after_import = gc.mem_alloc() - base

%(file_flash)s
%(rand)s
m = Meter({"address": %(addr)r, "key": %(key)r, "krn": 1, "mode": "local"}, FileFlash(%(flash)r, 16384),
          %(t0)d, Rand(7))
gc.collect()
after_meter = gc.mem_alloc() - base
hdr = bytearray(4)
buf = bytearray(600)  # one request and the reply it must get
mv = memoryview(buf)


def replay(check):
    bad = 0
    n = 0
    f = open(%(frames)r, "rb")
    while f.readinto(hdr) == 4:
        nq = hdr[0] | hdr[1] << 8
        nr = hdr[2] | hdr[3] << 8
        f.readinto(mv[:nq + nr])
        r = m.handle(mv[:nq], %(t0)d)
        n += 1
        if check:
            k = 0 if r is None else len(r)
            ok = k == nr
            for i in range(k if ok else 0):
                if r[i] != buf[nq + i]:
                    ok = False
            if not ok:
                bad += 1
    f.close()
    return n, bad


n, bad = replay(True)
gc.collect()
after_mixed = gc.mem_alloc() - base
replay(False)  # a second pass: the protected frames are now stale, refused
gc.collect()
after_mixed2 = gc.mem_alloc() - base
view_alloc = bytes_alloc = rate = 0
if %(rate)d:
    # with the collector off, 200 frames' garbage (~13 KB) must fit: measured only in the
    # large-heap run, not charged to the smallest heap that serves frames
    req = bytes.fromhex(%(read)r)
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    for _ in range(100):
        m.handle_view(req, %(t0)d)
    b = gc.mem_alloc()
    for _ in range(100):
        m.handle(req, %(t0)d)
    c = gc.mem_alloc()
    gc.enable()
    view_alloc = (b - a) // 100
    bytes_alloc = (c - b) // 100
    req = bytes.fromhex(%(read)r)
    t = time.ticks_us()
    for _ in range(%(rate)d):
        m.handle(req, %(t0)d)
    rate = %(rate)d * 1000000 // max(1, time.ticks_diff(time.ticks_us(), t))
print("result", n, bad, after_import, after_meter, after_mixed, after_mixed2, rate, view_alloc, bytes_alloc, base)
"""


DAY = 86400
_FULL_MPY = r"""
import gc
gc.collect()
base = gc.mem_alloc()
from meter.core import Meter

%(file_flash)s
m = Meter({"address": %(addr)r, "key": %(key)r, "krn": 1, "mode": "local"}, FileFlash(%(flash)r, 16384),
          %(t)d, None)
gc.collect()
up = gc.mem_alloc() - base
hdr = bytearray(4)
buf = bytearray(600)
mv = memoryview(buf)
n = bad = 0
f = open(%(frames)r, "rb")
while f.readinto(hdr) == 4:
    nq = hdr[0] | hdr[1] << 8
    nr = hdr[2] | hdr[3] << 8
    f.readinto(mv[:nq + nr])
    r = m.handle(mv[:nq], %(t)d)
    n += 1
    k = 0 if r is None else len(r)
    ok = k == nr
    for i in range(k if ok else 0):
        if r[i] != buf[nq + i]:
            ok = False
    if not ok:
        bad += 1
print("result", n, bad, up)
"""


def programmed_meter() -> tuple[bytes, int, list[tuple[bytes, bytes]]]:
    """A fully programmed meter's 16 KB flash (both tariff sets: 14 zones, 8 day tables of 14
    points; prices; ladder; every event log full, 10 daily freezes among them), the instant
    it powers up again (three days after its last save: the freezes it missed are taken at
    power-up, so its first save rewrites the event log) and reads it must then answer, with
    the replies a CPython meter powered up from the same flash gives."""
    flash = RamFlash(16384)
    m = Meter(_config(), flash, T0, Rand())
    for q, _ in mixed_frames():
        m.handle(q, T0)
    bad = HeadEnd(ADDR, b"not the meter key", std_hmac)
    t = T0
    from headend.vouchers import token as vt
    tk = vt.token_key(m.sec.key, 0)
    for d in range(12):  # a MAC failure, a fault, a keypad token and a day's energy a day: the logs fill up
        t = T0 + DAY * (d + 1)
        bad.challenged(m.handle(bad.challenge(), t))
        m.handle(bad.auth(bytes((d,)) * 8), t)
        m.fault(t, 0x5EED0000 + d)
        assert m.token(vt.encode(tk, vt.CREDIT, 0, 1000 + d, vt.amount_field(100)), t) == 0
        m.add_energy(150 + d, t)
    m.persist()
    assert all(len(m.events.records(k)) == 10 for k in range(len(m.events.logs)))
    image = bytes(flash.mem)
    t += 3 * DAY
    he = HeadEnd(ADDR, KEY, std_hmac)
    reads = [he.read(0x00010000), he.read(0x040100FF), he.frame(0x12, le(0x040100FF, 4) + b"\x01"),
             he.read(0x05060001), he.read(0x03330201)]
    ref = Meter(_config(), _flash_of(image), t, Rand())
    return image, t, [(q, ref.handle(q, t) or b"") for q in reads]


def _flash_of(image: bytes) -> RamFlash:
    f = RamFlash(len(image))
    f.mem[:] = image
    return f


def beside(dest: Path, path: Path, name: str) -> str:
    """`name`, a link in dest (where run_mpy runs) to path, for a harness to open: a file name
    in a harness is a string on the heap, so the same short name wherever the checkout and the
    temporary directory are keeps the heap measured the same (tests/firmware/test_core_heap.py)."""
    link = dest / name
    if link.is_symlink():
        link.unlink()
    link.symlink_to(Path(path).resolve())
    return name


def full_power_up_run(dest: Path, tmp: Path, heapsize: str) -> list[int] | None:
    """Power a fully programmed meter up from its flash (a file, as on a board) under
    micropython in heapsize and serve the reads of programmed_meter(): [reads, wrong replies,
    heap kept after power-up], or None when it ran out of heap."""
    name = "bench_full_harness"
    frames = tmp / "full_frames.bin"
    flash = tmp / "full_flash.bin"
    saved = tmp / "full_image.bin"
    if not (dest / f"{name}.mpy").exists():
        image, t, pairs = programmed_meter()
        saved.write_bytes(image)
        write_frames(frames, pairs)
        src = dest / f"{name}.py"
        src.write_text(_FULL_MPY % {"file_flash": _FILE_FLASH, "addr": ADDR, "key": KEY, "t": t,
                                    "flash": beside(dest, flash, "full_flash.bin"),
                                    "frames": beside(dest, frames, "full_frames.bin")})
        mpy.cross_compile(src.name, dest / f"{name}.mpy", cwd=dest)
        src.unlink()
    flash.write_bytes(saved.read_bytes())  # each power-up from the same state
    res = run_mpy(dest, f"import {name}", heapsize=heapsize)
    for line in res.stdout.splitlines():
        if line.startswith("result"):
            return [int(x) for x in line.split()[1:]]
    return None


def smallest_full_heap(dest: Path, tmp: Path) -> int:
    """Smallest -X heapsize (KB) in which a fully programmed meter powers up and serves right."""
    lo, hi = 8, 256
    r = full_power_up_run(dest, tmp, f"{hi}K")
    if r is None or r[1]:
        raise RuntimeError("a fully programmed meter does not power up and serve even in 256 KB")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        r = full_power_up_run(dest, tmp, f"{mid}K")
        if r is not None and r[1] == 0:
            hi = mid
        else:
            lo = mid
    return hi


def build_o3(dest: Path, src: Path = ROOT / "firmware" / "meter") -> Path:
    """Compile the meter modules in src into dest/meter as `meter build` does (-O3, each module
    named meter.NAME: a source path would be interned on the heap, its length this checkout's)."""
    from tools.meter_image import compile_mpy

    (dest / "meter").mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob("*.py")):
        compile_mpy(f, dest / "meter" / (f.stem + ".mpy"), f"meter/{f.name}")
    return dest


def write_frames(path: Path, pairs: list[tuple[bytes, bytes]]) -> None:
    """(request, reply) pairs as len(request), len(reply) (2 bytes LE each), request, reply."""
    path.write_bytes(b"".join(len(q).to_bytes(2, "little") + len(r).to_bytes(2, "little") + q + r for q, r in pairs))


def smallest_heap(dest: Path, frames: Path, flash: Path) -> int:
    """Smallest -X heapsize (KB) in which the meter imports, powers up and serves the frames right."""
    lo, hi = 8, 256  # KB: lo fails, hi runs
    if _mpy_run(dest, frames, flash, f"{hi}K", 0) is None:
        raise RuntimeError("the meter does not run even in 256 KB")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        r = _mpy_run(dest, frames, flash, f"{mid}K", 0)
        if r is not None and r[1] == 0:
            hi = mid
        else:
            lo = mid
    return hi


def _mpy_run(dest: Path, frames: Path, flash: Path, heapsize: str, rate: int):
    # the harness is compiled to .mpy too: source compiled on the device would charge the
    # compiler's heap to the meter
    name = f"bench_harness_{rate}"
    if not (dest / f"{name}.mpy").exists():
        src = dest / f"{name}.py"
        src.write_text(_MPY % {"file_flash": _FILE_FLASH, "rand": _RAND, "addr": ADDR, "key": KEY,
                               "flash": beside(dest, flash, "flash.bin"), "t0": T0,
                               "frames": beside(dest, frames, "frames.bin"), "rate": rate, "read": READ_ENERGY.hex()})
        mpy.cross_compile(src.name, dest / f"{name}.mpy", cwd=dest)
        src.unlink()
    flash.write_bytes(bytes(16384))  # every run boots a new meter on a blank flash
    res = run_mpy(dest, f"import {name}", heapsize=heapsize)
    for line in res.stdout.splitlines():
        if line.startswith("result"):
            return [int(x) for x in line.split()[1:]]
    return None


def _cpython_rate(n: int = RATE_FRAMES) -> float:
    m = Meter(_config(), RamFlash(16384), T0, Rand())
    handle = m.handle
    want = handle(READ_ENERGY, T0)
    assert want and want[8] == 0x91
    t = time.perf_counter()
    for _ in range(n):
        handle(READ_ENERGY, T0)
    return n / (time.perf_counter() - t)


def run(report) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dest = build_o3(tmp / "mpy")
        frames = tmp / "frames.bin"
        write_frames(frames, mixed_frames())
        runs: list[list[int]] = []

        def micropython_rate() -> float:
            res = _mpy_run(dest, frames, tmp / "flash.bin", "1M", RATE_FRAMES // 4)
            if res is None:
                raise RuntimeError("the meter did not run under micropython")
            runs.append(res)
            return float(res[6])

        # A, B, A, B: each MicroPython run is paired with a CPython run next to it in time
        r = interleaved_values(micropython_rate, _cpython_rate, rounds=5)
        n, bad, imp, meter, mixed, mixed2, _rate, view_alloc, bytes_alloc, _base = runs[-1]
        if bad:
            raise RuntimeError(f"{bad} of {n} micropython replies differ from CPython's")
        report("firmware: Meter.handle read-energy, CPython (this x86 machine)", r.b, "frames/s")
        report("firmware: Meter.handle read-energy, MicroPython x86 unix port (.mpy -O3) vs CPython, same frames",
               r.a, "frames/s", baseline=r.b, pairs=r)
        report("firmware: micropython heap taken per read-energy frame, handle_view", view_alloc, "bytes")
        report("firmware: micropython heap taken per read-energy frame, handle (bytes reply)", bytes_alloc, "bytes")
        report("firmware: micropython heap after import (.mpy)", imp / 1024, "KB")
        report("firmware: micropython heap with the Meter powered up", meter / 1024, "KB")
        report(f"firmware: micropython heap after {n} mixed frames", mixed / 1024, "KB")
        report(f"firmware: micropython heap after {2 * n} mixed frames", mixed2 / 1024, "KB", baseline=mixed / 1024)
        report("firmware: smallest micropython -X heapsize serving the mixed frames",
               smallest_heap(dest, frames, tmp / "flash.bin"), "KB")
        report("firmware: smallest micropython -X heapsize for a fully programmed meter to power up and serve",
               smallest_full_heap(dest, tmp), "KB")


if __name__ == "__main__":
    def _print(name, value, unit, baseline=None, pairs=None):
        ratio = pairs.describe() if pairs else f"{value / baseline:.2f}x" if baseline else ""
        print(f"{name:<70} {value:>12,.1f} {unit}" + (f"  ({ratio})" if ratio else ""))

    os.chdir(ROOT)
    run(_print)
