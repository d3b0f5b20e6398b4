"""Meter image figures: .mpy size, heap after boot under micropython, smallest heap that boots and
serves, and simulator frames/s over TCP loopback: the MicroPython x86 unix port against CPython on
this machine (not a board), measured interleaved (A, B, A, B; the median of the pair ratios, with
its spread).

The heap figures are a board's boot, so the fake `machine` and `esp32` modules (tests/firmware/fakes)
are where a board has its own: in ROM. A board's are C modules built into the firmware, whose code
and names take no heap; the fakes loaded from .mpy put ~7 KB of bytecode, names and objects on the
heap that no board has. Every boot here therefore mounts a ROMFS image of the fakes (compiled with
-s, so no checkout path is interned) and executes them in place, and every heap figure is the heap
beside that image's buffer: "fake board modules in ROM as on a board". In place they still make
their classes and functions on the heap (~5 KB with their names' share of the qstr pools), so the
figures stay a little over a board's. The meter's own modules stay .mpy files loaded into RAM,
unless a figure says ROMFS or frozen. The old harness's figures (the fakes from .mpy in RAM) are
reported beside, labelled "fake board modules from .mpy (old harness)". With a MicroPython checkout
(PREPAID645_MICROPYTHON_SRC), the aim's case is also measured as a board has it: the unix port
built with machine and esp32 as C modules (tools/board_unix), labelled "board modules in C as in
a board's firmware", the meter still .mpy files in RAM (board_figures)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from tools import mpy
from tools.bench.interleave import interleaved_values
from tools.meter_image import board_config, build_image
from tools.sim import ROOT
from tools.sim.launch import start_meter

ADDR = "000000000001"
KEY = "00112233445566778899aabbccddeeff"
# the built image boots as a board would (hal.board + hal.esp32 with fake machine and esp32
# modules; the key in the fake NVS, where `meter flash` puts it), then serves one read. "code" is
# the heap the modules' bytecode and names take (what a frozen image keeps in flash instead)
BOOT = """
import gc, json, micropython
gc.collect()
a0 = gc.mem_alloc()
import machine, esp32
from hal import start
from hal import esp32 as port
from meter import drop
meter_cfg, hw = start.load_config('config.json', port.Esp32)
start.load_core()
start = None
drop('hal.start')
gc.collect()
code = gc.mem_alloc() - a0
hw['state'] = 'state.bin'
b = port.Esp32(meter_cfg, hw)
meter_cfg = hw = None  # as hal.board.main holds neither once the board runs
u = machine.uarts[0]
u.rx.extend(bytes.fromhex('{req}'))
b.step()
gc.collect()
micropython.qstr_info()
print(json.dumps({{'alloc': gc.mem_alloc() - a0, 'code': code, 'tx': len(u.tx)}}))
"""


# The same boot with the image's .mpy files in a ROMFS (mpremote romfs build/deploy; MicroPython
# >= 1.25 on boards built with a ROM partition): bytecode and constants execute in place, as
# frozen modules do. The ROMFS image is read into one buffer before anything else (on a board it
# is flash) and every figure leaves it out; a frozen image keeps the names in flash as well, so
# its figure is this one less the qstr pools.
ROM_FAKES = "rom.img"  # the fakes' ROMFS image, in build_test_image's fakes directory
ROM_PRELUDE = """
import gc, os, sys, vfs
gc.collect()
buf = bytearray(os.stat('{rom}')[6])
f = open('{rom}', 'rb')
f.readinto(buf)
f.close()
vfs.mount(vfs.VfsRom(buf), '/rom')
sys.path.insert(0, '/rom')
"""


def romfs_image(img: Path, out: Path, fakes: Path | None = None, modules: bool = True) -> int:
    """Write the image's hal/ and meter/ .mpy files (modules) and the fake machine and esp32
    modules' .mpy files in fakes (a board has those in ROM) as a ROMFS image to out; its size in
    bytes."""
    import contextlib
    import io
    import shutil

    from mpremote.romfs import make_romfs

    with tempfile.TemporaryDirectory() as d:
        if fakes is not None:
            for f in fakes.glob("*.mpy"):
                shutil.copy(f, Path(d) / f.name)
        for sub in ("hal", "meter") if modules else ():
            shutil.copytree(img / sub, Path(d) / sub)
        with contextlib.redirect_stdout(io.StringIO()):  # it lists every file
            data = make_romfs(d, mpy_cross=False)
    out.write_bytes(data)
    return len(data)


def _read_frame(addr: str = ADDR) -> bytes:
    from protocol import build_frame
    return build_frame(addr, 0x11, bytes.fromhex("00000100"))


def _programmed_state() -> tuple[bytes, str, str]:
    """A 16 KB state file of a fully programmed meter (both tariff sets, ladders, full event
    logs: the firmware bench's mixed frames) and the meter's address."""
    from tools.bench import bench_firmware as bf
    from meter.core import Meter
    from meter.desktop import RamFlash

    flash = RamFlash(16384)
    m = Meter(bf._config(), flash, bf.T0, bf.Rand())
    for q, _ in bf.mixed_frames():
        m.handle(q, bf.T0)
    return bytes(flash.mem), bf.ADDR, bf.KEY.hex()


def _rom(fakes: Path, rom: Path | None, old_fakes: bool) -> Path | None:
    # the ROMFS image a boot mounts: rom (the modules and the fakes), else the fakes' own
    # (build_test_image), else none (old_fakes: the fakes from .mpy in RAM, the old harness)
    return rom if rom is not None else None if old_fakes else fakes / ROM_FAKES


def _board_root(cwd: Path, img: Path, fakes: Path, rom: Path | None, frozen: Path | None = None,
                old_fakes: bool = False) -> None:
    # cwd as a board's filesystem: the image's files at its root, imported from there
    # (MICROPYPATH ""), so every module's __file__ is as short as a board's ("meter/core.mpy": the
    # interned names do not grow with a test's path); the fake machine and esp32 modules from the
    # ROMFS image (_rom), or with old_fakes their .mpy files beside the image's
    (cwd / "config.json").symlink_to(img / "config.json")
    if frozen is not None:  # the modules and the fakes are in the binary (tools/frozen_unix.py)
        return
    if old_fakes:
        for f in fakes.glob("*.mpy"):
            (cwd / f.name).write_bytes(f.read_bytes())
    if rom is None:  # else the modules come from the ROMFS image
        for sub in ("hal", "meter"):
            (cwd / sub).symlink_to(img / sub)


def _command(heap_kb: float, code: str, frozen: Path | None, rom: Path | None = None,
             cwd: str = "", board: Path | None = None,
             binary: Path | None = None) -> tuple[list[str], dict[str, str]]:
    # the image's micropython with a heap_kb heap (to the byte) beside the buffer rom is read
    # into (ROM_PRELUDE) running code in cwd, with rom mounted first, and its environment; frozen:
    # the unix port with the meter frozen in (tools/frozen_unix.py), its modules found in .frozen
    # only; board: the unix port with the board's machine and esp32 modules in C
    # (tools/board_unix), the code's harness lines turned to its hooks (_c_board); binary: a unix
    # port to run instead of this environment's micropython (the C build's checkout's own)
    from tools.bench.bench_firmware import beside

    if rom is not None:  # under one short name: the prelude's text is the same in every run
        code = ROM_PRELUDE.format(rom=beside(Path(cwd), rom, "rom.img")) + code
    heap = f"heapsize={round(heap_kb * 1024) + (0 if rom is None else rom.stat().st_size)}"
    run = str(frozen or board or binary or mpy.micropython())
    if board is not None:
        code = _c_board(code)
    return [run, "-X", heap, "-c", code], {"MICROPYPATH": "" if frozen is None else ".frozen", **mpy.FRESH_HEAP}


# The harness's lines that play the outside world through the Python fakes' attributes, and the
# same through the C board modules' hooks (tools/board_unix: static buffers, no heap)
C_BOARD = (("u = machine.uarts[0]\nu.rx.extend(", "machine.bench_rx("),
           ("'tx': len(u.tx)", "'tx': machine.bench_sent()"),
           ("'reply': bytes(u.tx).hex()", "'reply': machine.bench_take().hex()"),
           ("pulse = machine.pins[pulse]\n", ""),
           ("u = machine.uarts[0]\n", ""),
           ("u.rx.extend(", "machine.bench_rx("),
           ("while not u.tx and", "while not machine.bench_sent() and"),
           ("print(bytes(u.tx).hex())\n        u.tx = bytearray()", "print(machine.bench_take().hex())"),
           ("pulse.level(i & 1)", "machine.bench_level(pulse, i & 1)"))


def _c_board(code: str) -> str:
    # BOOT or SESSION for the C board modules; the fakes' names must all be gone from it
    for fake, hook in C_BOARD:
        code = code.replace(fake, hook)
    if "u.tx" in code or "u.rx" in code or "machine.pins" in code or "machine.uarts" in code:
        raise ValueError("a harness line plays the outside world through the Python fakes: add it to C_BOARD")
    return code


def _boot(img: Path, fakes: Path, heap_kb: float, state: tuple[bytes, str, str] | None = None,
          rom: Path | None = None, frozen: Path | None = None, old_fakes: bool = False,
          board: Path | None = None, reply: bool = False, binary: Path | None = None) -> dict | None:
    """Boot the image in heap_kb of heap beside the ROMFS buffer (rom: the modules and the fake
    machine and esp32 modules from that ROMFS image, else the fakes alone from ROMFS, as a board
    has them in ROM; old_fakes: the fakes from .mpy in RAM; board: under that build of
    tools/board_unix, whose machine and esp32 are C, no ROMFS; binary: the fakes' boot under that
    unix port instead of this environment's micropython); its figures, every one without the
    ROMFS buffer (reply: with the reply's bytes in hex), or None when it ran out of heap or did
    not reply."""
    mounted = None if frozen is not None or board is not None else _rom(fakes, rom, old_fakes)
    with tempfile.TemporaryDirectory() as cwd:
        addr = ADDR
        key = KEY
        if state is not None:
            (Path(cwd) / "state.bin").write_bytes(state[0])  # the one-file layout: split at boot
            addr, key = state[1], state[2]
        (Path(cwd) / "nvs.json").write_text(json.dumps({"prepaid645": {"key": key.encode().hex()}}))
        _board_root(Path(cwd), img, fakes, rom, frozen, old_fakes)
        code = BOOT.format(img=img, req=_read_frame(addr).hex())
        if reply:
            code = code.replace("'tx': len(u.tx)", "'tx': len(u.tx), 'reply': bytes(u.tx).hex()")
        cmd, env = _command(heap_kb, code, frozen, mounted, cwd, board, binary)
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60, env=env)
    if r.returncode != 0:
        return None
    out = json.loads(r.stdout.splitlines()[-1])
    q = re.search(r"n_pool=(\d+), n_qstr=(\d+), n_str_data_bytes=(\d+), n_total_bytes=(\d+)", r.stdout)
    if q:
        out.update(pools=int(q[1]), names=int(q[2]), qstr_bytes=int(q[4]))
    return out if out["tx"] > 0 else None


# Where the heap goes when a fully programmed meter boots: the boot above one step at a time, a
# collection and a mark after each (heap in use, and the interned names' pools and text from
# micropython.qstr_info, so a module's figure is its bytecode and constants and the names apart);
# then the running meter's state, one part at a time let go (each part's figure is what letting
# it go frees: what it alone holds).
BREAKDOWN = """
import gc, micropython
def mark(label):
    gc.collect()
    print('@' + label, gc.mem_alloc())
    micropython.qstr_info()
mark('start')
import machine, esp32
mark('fake machine and esp32 modules, {fakes}')
from hal import start
mark('hal.start with hal.slots, meter.clock, meter.store')
from hal import esp32 as port
mark('hal.esp32 and hal.board')
meter_cfg, hw = start.load_config('config.json', port.Esp32)
mark('config read (hal.config loaded and let go)')
for name in ('clock', 'codec', 'events', 'wallet', 'relay', 'tariff', 'store', 'core', 'dis', 'app'):
    __import__('meter.' + name)
    mark('meter.' + name)
from meter import drop
start = None
drop('hal.start')
mark('hal.start let go')
hw['state'] = 'state.bin'
b = port.Esp32(meter_cfg, hw)
meter_cfg = hw = None
mark('meter powered up (its state)')
u = machine.uarts[0]
u.rx.extend(bytes.fromhex('{req}'))
b.step()
mark('one read (the line buffers)')
m = b.meter
for part in {parts}:
    setattr(m, part, None)
    mark('state: meter.' + part)
"""
# the meter's parts (meter.core.Meter attributes) the breakdown lets go, largest first as measured
STATE_PARTS = ("events", "tariff", "deframer", "fr", "wallet", "out", "sec", "relay", "store", "energy")


def breakdown(img: Path, fakes: Path, state: tuple[bytes, str, str]) -> list[tuple[str, int, int]]:
    """(step, heap bytes, of which interned-name bytes) for each step of BREAKDOWN: what a
    fully programmed meter's boot takes, step by step, on the 64-bit unix port (.mpy in RAM, the
    fake machine and esp32 modules in place from ROMFS)."""
    code = (BREAKDOWN.replace("{req}", _read_frame(state[1]).hex()).replace("{parts}", repr(STATE_PARTS))
            .replace("{fakes}", "in place from ROMFS (their classes and functions: a board has none)"))
    with tempfile.TemporaryDirectory() as cwd:
        (Path(cwd) / "state.bin").write_bytes(state[0])
        (Path(cwd) / "nvs.json").write_text(json.dumps({"prepaid645": {"key": state[2].encode().hex()}}))
        _board_root(Path(cwd), img, fakes, None)
        cmd, env = _command(256, code, None, fakes / ROM_FAKES, cwd)
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60, env=env)
    if r.returncode != 0:
        raise RuntimeError("the heap breakdown failed under micropython: " + (r.stderr or r.stdout)[-500:])
    rows = []
    label, alloc = None, 0
    for line in r.stdout.splitlines():
        if line.startswith("@"):
            label, _, n = line[1:].rpartition(" ")
            alloc = int(n)
        q = re.search(r"n_total_bytes=(\d+)", line)
        if q and label is not None:
            rows.append((label, alloc, int(q[1])))
    out = []
    for (_, a0, q0), (step, a1, q1) in zip(rows, rows[1:]):
        out.append((step, a1 - a0, q1 - q0))
    return out


# A board's working session after the boot above: the harness feeds the head-end's frames into
# the fake UART and runs the main loop (Board.step) until the reply is out, or runs passes with
# energy pulses, one command a line on stdin, so a frame that depends on the meter's answer (the
# authentication over its random challenge) is made from that answer. What the harness holds
# (one line, one frame) is about what a board's UART read holds.
SESSION = """
import gc, sys, machine
from hal import start
from hal import esp32 as port
from meter import drop
meter_cfg, hw = start.load_config('config.json', port.Esp32)
start = None
drop('hal.start')
hw['state'] = 'state.bin'
pulse = hw['pins']['pulse']  # the board empties hw once it is wired
b = port.Esp32(meter_cfg, hw)
pulse = machine.pins[pulse]
meter_cfg = hw = None  # as hal.board.main holds neither once the board runs
u = machine.uarts[0]
print('up')
while True:
    line = sys.stdin.readline()
    if not line or line[0] == 'q':
        break
    if line[0] == 'f':
        u.rx.extend(bytes.fromhex(line[2:-1]))
        line = None
        n = 0
        while not u.tx and n < 20:
            b.step()
            n += 1
        print(bytes(u.tx).hex())
        u.tx = bytearray()
    else:
        for i in range(int(line[2:])):
            pulse.level(i & 1)  # a falling edge every other pass: one Wh at 1000 imp/kWh
            b.step()
        print('ok')
gc.collect()
import micropython
micropython.qstr_info()
print(gc.mem_alloc())
"""


class _Line:
    """The harness's stdin/stdout with the session's micropython; a reply that never comes (the
    meter ran out of heap and the harness died) is None."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def ask(self, line: str) -> str | None:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return None
        out = self.proc.stdout.readline()
        return out.strip() if out else None

    def frame(self, frame: bytes) -> bytes | None:
        r = self.ask("f " + frame.hex())
        return None if not r else bytes.fromhex(r)


def session(img: Path, fakes: Path, heap_kb: int, state: tuple[bytes, str, str],
            rom: Path | None = None, frozen: Path | None = None, old_fakes: bool = False,
            board: Path | None = None, binary: Path | None = None) -> dict | None:
    """Boot the fully programmed meter of state through the board HAL in heap_kb of heap beside
    the ROMFS buffer (rom, old_fakes: as _boot) and serve a board's session: energy and balance reads, an
    authenticated recharge checked by the meter's sealed replies, a relay trip and close, a
    parameter write and a day-table write read back, purchase and programming event reads, a day-table block read with
    its follow-up, and 400 main-loop passes with 200 energy pulses, read back as energy. Its
    figures, or None when it ran out of heap or answered wrong."""
    from tools.bench import bench_firmware as bf
    from tools.bench.hes import HeadEnd, bcd, le, parse

    mounted = None if frozen is not None or board is not None else _rom(fakes, rom, old_fakes)
    he = HeadEnd(state[1], bytes.fromhex(state[2]), bf.std_hmac)
    with tempfile.TemporaryDirectory() as cwd:
        (Path(cwd) / "state.bin").write_bytes(state[0])
        (Path(cwd) / "nvs.json").write_text(json.dumps({"prepaid645": {"key": state[2].encode().hex()}}))
        _board_root(Path(cwd), img, fakes, rom, frozen, old_fakes)
        cmd, env = _command(heap_kb, SESSION.format(img=img), frozen, mounted, cwd, board, binary)
        proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=env)
        timer = threading.Timer(120, proc.kill)  # a hung meter fails the run, never the caller
        timer.start()
        try:
            return _serve_session(_Line(proc), he, bcd, le, parse)
        except ValueError:  # a reply that does not parse or verify: answered wrong
            return None
        finally:
            timer.cancel()
            proc.kill()
            proc.wait()


def _serve_session(line: _Line, he, bcd, le, parse) -> dict | None:
    from meter import clock
    deadline = clock.from_fields(2026, 6, 2)  # a day after the fake machine.RTC's date: in force
    for text in line.proc.stdout:  # the config's warnings first, as a board prints them
        if text.strip() == "up":
            break
    else:
        return None

    def read(di: int) -> bytes | None:
        r = line.frame(he.read(di))
        if r is None:
            return None
        ctrl, data = parse(r)
        return data[4:] if ctrl == 0x91 and data[:4] == le(di, 4) else None

    def get(di: int) -> int | None:
        v = read(di)
        return None if v is None else int(v[::-1].hex())  # BCD, low byte first

    energy, balance = get(0x00000000), get(0x00900200)
    if energy is None or balance is None:
        return None
    r = line.frame(he.challenge())
    if r is None:
        return None
    he.challenged(r)
    r = line.frame(he.auth(bytes(range(8))))
    if r is None:
        return None
    he.authed(r)
    r = line.frame(he.query())
    if r is None:
        return None
    fen, count, customer = he.query_check(r)
    r = line.frame(he.purchase(12345, count + 1, customer))
    if r is None or he.sealed(r, 0x070102FF)[0] != 0x83:
        return None
    r = line.frame(he.query())
    if r is None or he.query_check(r) != (fen + 12345, count + 1, customer):
        return None
    for n1 in (0x1A, 0x1C):  # trip, then direct close, each followed by a few passes (the relay moves)
        r = line.frame(he.control(n1, deadline))
        if r is None or parse(r)[0] != 0x9C or line.ask("p 4") != "ok":
            return None
    r = line.frame(he.write(0x04001001, bcd(1500, 4)))  # alarm 1 at 15.00 yuan
    if r is None or parse(r)[0] != 0x94 or get(0x04001001) != 1500:
        return None
    # a day table of the backup set written (TOU programming: 14 points), read back
    points = b"".join(bytes((bcd(1 + p % 4, 1)[0], 0x30 if p % 2 else 0, bcd(p + 6, 1)[0])) for p in range(14))
    r = line.frame(he.write(0x04020003, points))
    if r is None or parse(r)[0] != 0x94 or read(0x04020003) != points:
        return None
    if get(0x03330201) != count + 1 or read(0x03300001) is None:  # the purchase and the write, kept
        return None
    r = line.frame(he.read(0x040100FF))  # a day table's block: read and follow-up
    if r is None or parse(r)[0] != 0xB1:
        return None
    r = line.frame(he.frame(0x12, le(0x040100FF, 4) + b"\x01"))
    if r is None or parse(r)[0] != 0x92:
        return None
    if line.ask("p 400") != "ok" or get(0x00000000) != energy + 20:  # 200 Wh, shown as 0.01 kWh
        return None
    names = line.ask("q")  # the interned names after the session, then the heap in use
    alloc = line.proc.stdout.readline().strip()
    q = re.search(r"n_qstr=(\d+)", names or "")
    return {"alloc": int(alloc), "names": int(q[1])} if q and alloc else None


def smallest_session_heap(img: Path, fakes: Path, state: tuple[bytes, str, str],
                          rom: Path | None = None, frozen: Path | None = None, old_fakes: bool = False,
                          board: Path | None = None, binary: Path | None = None) -> int | None:
    """Smallest heap (KB, to the KB; -X heapsize less the ROMFS buffer) in which session() boots
    and serves (rom, old_fakes, board, binary: as _boot; frozen: under that frozen build)."""
    return _smallest(lambda kb: session(img, fakes, kb, state, rom, frozen, old_fakes, board, binary))


def _smallest(serves: Callable[[int], object]) -> int | None:
    # the first 4 KB step from 16 KB in which serves(kb) is true, then down a KB at a time while
    # it still is; None when no size up to 256 KB serves
    kb = next((k for k in range(16, 257, 4) if serves(k)), None)
    while kb is not None and kb > 16 and serves(kb - 1):
        kb -= 1
    return kb


def _machine_heap(fakes: Path, old_fakes: bool = False) -> int:
    # the heap importing the fake machine and esp32 modules takes: from ROMFS (what stays is
    # their classes and functions), or with old_fakes from .mpy in RAM
    code = "import gc\ngc.collect()\na = gc.mem_alloc()\nimport machine, esp32\ngc.collect()\nprint(gc.mem_alloc() - a)"
    with tempfile.TemporaryDirectory() as cwd:
        if old_fakes:
            cmd, env = [mpy.micropython(), "-c", code], {"MICROPYPATH": str(fakes), **mpy.FRESH_HEAP}
        else:
            cmd, env = _command(256, code, None, fakes / ROM_FAKES, cwd)
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60, env=env)
    return int(r.stdout)


def _frames_per_second(tcp: tuple[str, int], seconds: float = 2.0) -> float:
    # one master, request then reply, as a head-end polls a meter (no pipelining)
    req = _read_frame()
    n = 0
    with socket.create_connection(tcp) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            s.sendall(req)
            got = b""
            while len(got) < 10 or len(got) < 12 + got[9]:  # whole reply: header, L data bytes, CS, 16
                chunk = s.recv(256)
                if not chunk:
                    raise ConnectionError("the simulator closed the connection")
                got += chunk
            n += 1
        return n / (time.perf_counter() - t0)


def smallest_heap(img: Path, fakes: Path, state: tuple[bytes, str, str] | None = None,
                  rom: Path | None = None, frozen: Path | None = None, old_fakes: bool = False,
                  board: Path | None = None, binary: Path | None = None) -> int | None:
    """Smallest heap (KB, to the KB; -X heapsize less the ROMFS buffer, which is allocated first,
    in one block) in which the image boots and serves (rom, old_fakes, board, binary: as _boot; frozen:
    under that frozen build)."""
    return _smallest(lambda kb: _boot(img, fakes, kb, state, rom, frozen, old_fakes, board, binary=binary))


def failing_heaps(img: Path, fakes: Path, state: tuple[bytes, str, str], kb: int, span: int = 4,
                  step: float = 0.25, old_fakes: bool = False, board: Path | None = None) -> list[float]:
    """The heaps (KB) from kb - span to kb + span in step-KB steps in which the fully programmed
    boot fails. A boot's smallest heap is not a threshold: past it, a size that leaves the
    long-lived objects where no hole is left for a later buffer (the Deframer's 512 bytes, the
    record's event log read at once) fails again, so a change that frees heap can move the
    1 KB figure either way; these show how far."""
    n = round(span / step)
    return [kb + i * step for i in range(-n, n + 1)
            if _boot(img, fakes, kb + i * step, state, old_fakes=old_fakes, board=board) is None]


def build_test_image(tmp: Path) -> tuple[Path, Path]:
    """The esp32 image of ADDR/KEY in tmp/img, and the fake machine and esp32 modules precompiled
    in tmp/fakes (a board has them in ROM: compiling them must cost no measured heap), with a
    ROMFS image of them there (ROM_FAKES) that the boots mount, as a board has them in ROM."""
    img = tmp / "img"
    build_image("esp32", board_config("esp32", ADDR, bytes.fromhex(KEY)), img)
    fakes = tmp / "fakes"
    fakes.mkdir()
    for fake in ("machine", "esp32"):
        # -s: the name a board's module has, not this checkout's path (an interned name the heap holds)
        mpy.cross_compile(ROOT / "tests" / "firmware" / "fakes" / f"{fake}.py", fakes / f"{fake}.mpy",
                          "-s", f"{fake}.py")
    romfs_image(img, fakes / ROM_FAKES, fakes, modules=False)
    return img, fakes


def frozen_figures(report: Callable[..., None], img: Path, fakes: Path, state: tuple[bytes, str, str]) -> None:
    """The heap of a frozen image, measured: with PREPAID645_MICROPYTHON_SRC naming a MicroPython
    checkout, the unix port is built with the meter and the fakes frozen in (tools/frozen_unix.py,
    under build/frozen-unix) and the fully programmed meter booted and served under it. Frozen
    modules keep bytecode and names in flash; their module globals, functions and classes are
    still made on the heap at import."""
    import os

    from tools.frozen_unix import build
    src = os.environ.get("PREPAID645_MICROPYTHON_SRC")
    if not src:
        print("  (frozen figures: set PREPAID645_MICROPYTHON_SRC to a MicroPython checkout to measure them; "
              "the ROMFS figures above estimate them)")
        return
    binary = build(Path(src), ROOT / "build" / "frozen-unix")
    booted = _boot(img, fakes, 256, state, frozen=binary)
    if booted is None:
        raise RuntimeError(f"the fully programmed meter does not boot under the frozen build {binary}")
    report("heap in use after a fully programmed boot + one read, meter frozen into the unix port (measured)",
           booted["alloc"] / 1024, "KB")
    report("smallest -X heapsize that boots a fully programmed meter and serves one read, meter frozen "
           "(unix port, 64-bit; aim 64 is for .mpy)", smallest_heap(img, fakes, state, frozen=binary) or 0, "KB")
    report("smallest -X heapsize that boots a fully programmed meter and serves a session, meter frozen "
           "(unix port, 64-bit)", smallest_session_heap(img, fakes, state, frozen=binary) or 0, "KB")


def board_figures(report: Callable[..., None], img: Path, fakes: Path, state: tuple[bytes, str, str]) -> None:
    """The aim's case as a board has it: with PREPAID645_MICROPYTHON_SRC naming a MicroPython
    checkout, the unix port is built with `machine` and `esp32` as C modules (tools/board_unix,
    under build/board-unix), whose types, functions and names are in the binary and take no heap,
    as in a board's firmware; the meter and hal load from .mpy files in RAM, as in the aim's row.
    Skipped, said why, without the checkout or when the build fails."""
    import os

    from tools.board_unix import build
    src = os.environ.get("PREPAID645_MICROPYTHON_SRC")
    if not src:
        print("  (C board module figures skipped: set PREPAID645_MICROPYTHON_SRC to a MicroPython checkout "
              "to build the unix port with machine and esp32 in C, tools/board_unix)")
        return
    try:
        binary = build(Path(src), ROOT / "build" / "board-unix")
        std = build(Path(src), ROOT / "build" / "std-unix", c_modules=False)
    except RuntimeError as e:
        print(f"  (C board module figures skipped: the build of tools/board_unix failed: {e})")
        return
    # each C figure beside the Python fakes' (in place from ROMFS) under the standard unix port of
    # the same checkout, built alike: the two differ only in the board modules
    label = ".mpy files loaded into RAM, board modules in C as in a board's firmware"
    fakes_label = "the same checkout's standard build, fake board modules in ROM (Python fakes in place from ROMFS)"
    booted = _boot(img, fakes, 256, state, board=binary)
    if booted is None:
        raise RuntimeError(f"the fully programmed meter does not boot under the C board modules' build {binary}")
    report(f"heap in use after a fully programmed boot + one read ({label}; unix port, 64-bit)",
           booted["alloc"] / 1024, "KB")
    fake = _boot(img, fakes, 256, state, binary=std)
    report(f"  the same, {fakes_label}", fake["alloc"] / 1024 if fake else 0, "KB")
    full = smallest_heap(img, fakes, state, board=binary)
    report(f"smallest heap that boots a fully programmed meter and serves one read ({label}; aim 64)",
           full or 0, "KB")
    if full is not None:  # as for the fakes' row: where it still fails around it
        above = [h for h in failing_heaps(img, fakes, state, full, board=binary) if h > full]
        report("  quarter-KB heaps up to 4 KB above that in which that boot fails (C board modules)", len(above), "sizes")
        report("  the largest of them (0: none)", max(above, default=0), "KB")
    report(f"  the same, {fakes_label}", smallest_heap(img, fakes, state, binary=std) or 0, "KB")
    report(f"smallest heap that boots a fully programmed meter and serves a session ({label})",
           smallest_session_heap(img, fakes, state, board=binary) or 0, "KB")
    report(f"  the same, {fakes_label}", smallest_session_heap(img, fakes, state, binary=std) or 0, "KB")
    for what, served in (("board modules in C", session(img, fakes, 256, state, board=binary)),
                         (fakes_label, session(img, fakes, 256, state, binary=std))):
        report(f"  heap in use after that session in 256 KB, {what} (the fakes keep every pin and UART write)",
               served["alloc"] / 1024 if served else 0, "KB")


def run(report: Callable[..., None]) -> None:
    # the fake board modules in ROM unless labelled otherwise (the module docstring says why)
    with tempfile.TemporaryDirectory() as tmp:
        img, fakes = build_test_image(Path(tmp))
        record = json.loads((img / "image.json").read_text())
        report("image .mpy total (esp32)", record["mpy_kb"], "KB")
        booted = _boot(img, fakes, 256)
        if booted is None:
            raise RuntimeError("the image does not boot under micropython with a 256 KB heap")
        rom = _machine_heap(fakes)
        report("heap in use after boot + one read (unix port, 64-bit; fake board modules in ROM as on a board)",
               booted["alloc"] / 1024, "KB")
        report("  of which the fake machine and esp32 modules' classes and functions (a board's: none)",
               rom / 1024, "KB")
        report("  fake machine and esp32 modules from .mpy (old harness): their heap",
               _machine_heap(fakes, old_fakes=True) / 1024, "KB")
        report("  of which the image's modules (bytecode and names, and their globals and functions)",
               (booted["code"] - rom) / 1024, "KB")
        report("  of which qstr pools (interned names; frozen: in flash)", booted.get("qstr_bytes", 0) / 1024, "KB")
        report("interned names after boot (the 621st allocates a 640-entry qstr pool of 7 KB here)", booted.get("names", 0),
               "names")
        smallest = smallest_heap(img, fakes)
        report("smallest heap that boots and serves (.mpy in RAM; fake board modules in ROM as on a board)",
               smallest or 0, "KB")
        # power-up of a meter that has been programmed for a while: its record is parsed and
        # restored, the larger case (the figure above is a new meter)
        state = _programmed_state()
        full = smallest_heap(img, fakes, state)
        report("smallest heap that boots a fully programmed meter and serves one read (.mpy in RAM; "
               "fake board modules in ROM as on a board; aim 64)", full or 0, "KB")
        if full is not None:  # the same boot in quarter-KB steps around it: where it still fails
            fails = failing_heaps(img, fakes, state, full)
            above = [h for h in fails if h > full]
            report("  largest heap, 4 KB either side in quarter-KB steps, in which that boot fails "
                   "(smallest is no threshold: fragmentation)", max(fails, default=0), "KB")
            report("  quarter-KB heaps above the smallest in which that boot fails", len(above), "sizes")
        report("smallest -X heapsize that boots a fully programmed meter and serves one read (.mpy in RAM; "
               "fake board modules from .mpy (old harness))", smallest_heap(img, fakes, state, old_fakes=True) or 0,
               "KB")
        # where it goes: each step's heap (bytecode, constants, state) and the interned names apart
        for step, heap, names in breakdown(img, fakes, state):
            report("fully programmed boot, heap by step (unix port, .mpy in RAM): " + step, heap / 1024, "KB")
            if names:
                report("  of which interned names (qstr pools and text)", names / 1024, "KB")
        report("smallest heap that boots a fully programmed meter and serves a session "
               "(.mpy in RAM; fake board modules in ROM as on a board)", smallest_session_heap(img, fakes, state) or 0,
               "KB")
        report("smallest -X heapsize that boots a fully programmed meter and serves a session "
               "(.mpy in RAM; fake board modules from .mpy (old harness))",
               smallest_session_heap(img, fakes, state, old_fakes=True) or 0, "KB")
        # the modules executed in place from ROMFS, as frozen modules are (the fakes beside them)
        romfs = Path(tmp) / "img.romfs"
        size = romfs_image(img, romfs, fakes)
        report("ROMFS image of the modules and the fake board modules (flash)", size / 1024, "KB")
        inplace = _boot(img, fakes, 256, rom=romfs)
        if inplace is None:
            raise RuntimeError("the image does not boot from ROMFS under micropython with a 256 KB heap")
        report("heap in use after boot + one read, modules in place from ROMFS", inplace["alloc"] / 1024, "KB")
        report("  of which qstr pools (frozen: in flash)", inplace.get("qstr_bytes", 0) / 1024, "KB")
        for what, smallest in (("boots a fully programmed meter", smallest_heap),
                               ("boots a fully programmed meter and serves a session", smallest_session_heap)):
            found = smallest(img, fakes, state, romfs)
            if found is None:
                continue
            report(f"smallest heap that {what}, modules in place from ROMFS (-X heapsize less the ROMFS buffer)",
                   found, "KB")
            report("  frozen estimate: that less the qstr pools and the fake machine/esp32 modules' objects",
                   found - (inplace.get("qstr_bytes", 0) + rom) / 1024, "KB")

        board_figures(report, img, fakes, state)  # first: it skips, said why, where the frozen build raises
        frozen_figures(report, img, fakes, state)

        # both simulators up at once, then measured A, B, A, B in windows of a second: each
        # MicroPython window is paired with a CPython one next to it in time
        meters = {mp: start_meter(ADDR, KEY, str(Path(tmp) / f"{label}.state"), micropython=mp, control=False,
                                  extra=("--load-w", "500"))
                  for label, mp in (("CPython", False), ("micropython", True))}
        try:
            tcp = {mp: m.tcp for mp, m in meters.items()}
            assert None not in tcp.values()
            r = interleaved_values(lambda: _frames_per_second(tcp[True], 1.0),
                                   lambda: _frames_per_second(tcp[False], 1.0), rounds=5)
        finally:
            for m in meters.values():
                m.stop()
        report("simulator read frames/s over TCP loopback, CPython (this x86 machine)", r.b, "frames/s")
        report("simulator read frames/s over TCP loopback, MicroPython x86 unix port vs CPython", r.a, "frames/s",
               baseline=r.b, pairs=r)
