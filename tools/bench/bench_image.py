"""Meter image figures: .mpy size, heap after boot under micropython, smallest heap that boots and
serves, and simulator frames/s over TCP loopback: the MicroPython x86 unix port against CPython on
this machine (not a board), measured interleaved (A, B, A, B; the median of the pair ratios, with
its spread)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import tempfile
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
from hal import board
from hal import esp32 as port
board._load_core()
gc.collect()
code = gc.mem_alloc() - a0
meter_cfg, hw = board.load_config('{img}/config.json', port.Esp32)
hw['state'] = 'state.bin'
b = port.Esp32(meter_cfg, hw)
u = machine.uarts[0]
u.rx.extend(bytes.fromhex('{req}'))
b.step()
gc.collect()
micropython.qstr_info()
print(json.dumps({{'alloc': gc.mem_alloc() - a0, 'code': code, 'tx': len(u.tx)}}))
"""


def _read_frame(addr: str = ADDR) -> bytes:
    from protocol import build_frame
    return build_frame(addr, 0x11, bytes.fromhex("00000100"))


def _programmed_state() -> tuple[bytes, str, str]:
    """A 16 KB state file of a fully programmed meter (both tariff sets, ladders, full event
    logs: the firmware bench's mixed frames) and the meter's address."""
    from tools.bench import bench_firmware as bf
    from meter.core import Meter
    from meter.store import RamFlash

    flash = RamFlash(16384)
    m = Meter(bf._config(), flash, bf.T0, bf.Rand())
    for q, _ in bf.mixed_frames():
        m.handle(q, bf.T0)
    return bytes(flash.mem), bf.ADDR, bf.KEY.hex()


def _boot(img: Path, fakes: Path, heap_kb: int, state: tuple[bytes, str, str] | None = None) -> dict | None:
    with tempfile.TemporaryDirectory() as cwd:
        addr = ADDR
        key = KEY
        if state is not None:
            (Path(cwd) / "state.bin").write_bytes(state[0])  # the one-file layout: split at boot
            addr, key = state[1], state[2]
        (Path(cwd) / "nvs.json").write_text(json.dumps({"prepaid645": {"key": key.encode().hex()}}))
        r = subprocess.run([mpy.micropython(), "-X", f"heapsize={heap_kb}K", "-c",
                            BOOT.format(img=img, req=_read_frame(addr).hex())], cwd=cwd, capture_output=True,
                           text=True, timeout=60, env={"MICROPYPATH": f"{img}:{fakes}"})
    if r.returncode != 0:
        return None
    out = json.loads(r.stdout.splitlines()[-1])
    q = re.search(r"n_pool=(\d+), n_qstr=(\d+), n_str_data_bytes=(\d+), n_total_bytes=(\d+)", r.stdout)
    if q:
        out.update(pools=int(q[1]), names=int(q[2]), qstr_bytes=int(q[4]))
    return out if out["tx"] > 0 else None


def _machine_heap(fakes: Path) -> int:
    code = "import gc\ngc.collect()\na = gc.mem_alloc()\nimport machine, esp32\ngc.collect()\nprint(gc.mem_alloc() - a)"
    r = subprocess.run([mpy.micropython(), "-c", code], capture_output=True, text=True, timeout=60,
                       env={"MICROPYPATH": str(fakes)})
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


def run(report: Callable[..., None]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        img = Path(tmp) / "img"
        cfg = board_config("esp32", ADDR, bytes.fromhex(KEY))
        record = build_image("esp32", cfg, img)
        report("image .mpy total (esp32)", record["mpy_kb"], "KB")
        fakes = Path(tmp) / "fakes"
        fakes.mkdir()
        for fake in ("machine", "esp32"):
            mpy.cross_compile(ROOT / "tests" / "firmware" / "fakes" / f"{fake}.py", fakes / f"{fake}.mpy")
        booted = _boot(img, fakes, 256)
        if booted is None:
            raise RuntimeError("the image does not boot under micropython with a 256 KB heap")
        rom = _machine_heap(fakes)
        report("heap in use after boot + one read (unix port, 64-bit)", booted["alloc"] / 1024, "KB")
        report("  of which the fake machine and esp32 modules (in ROM on a board)", rom / 1024, "KB")
        report("  of which the image's bytecode and names (in flash when frozen)", (booted["code"] - rom) / 1024, "KB")
        report("  of which qstr pools (interned names; frozen: in flash)", booted.get("qstr_bytes", 0) / 1024, "KB")
        report("interned names after boot (a 6th pool of 7.3 KB starts at ~620 here)", booted.get("names", 0), "names")
        report("heap after boot + one read with the image frozen (estimate: total - bytecode/names - fakes)",
               (booted["alloc"] - booted["code"]) / 1024, "KB")
        smallest = next((kb for kb in range(64, 257, 4) if _boot(img, fakes, kb)), None)
        if smallest is not None:
            while smallest > 64 and _boot(img, fakes, smallest - 1):  # to the KB
                smallest -= 1
            report("smallest -X heapsize that boots and serves (aim 96)", smallest, "KB")
        # power-up of a meter that has been programmed for a while: its record is parsed and
        # restored, the larger case (the figure above is a new meter)
        state = _programmed_state()
        full = next((kb for kb in range(64, 257, 4) if _boot(img, fakes, kb, state)), None)
        if full is not None:
            while full > 64 and _boot(img, fakes, full - 1, state):
                full -= 1
            report("smallest -X heapsize that boots a fully programmed meter and serves", full, "KB")

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
