"""Shared pieces of the firmware tests (CPython side)."""

from pathlib import Path

from meter import clock
from meter.core import Meter
from meter.desktop import RamFlash
from tools.bench.hes import HeadEnd, parse
from tools.meter_image import compile_mpy
from tools.bench.bench_firmware import beside, run_mpy, std_hmac  # noqa: F401 - the tests use them from here
from tools.sim.seeded_rand import Rand

ADDR = "123456789012"
KEY = bytes(range(16))
T0 = clock.from_fields(2025, 6, 5, 10, 22, 51)


def make(flash=None, now=T0, **cfg):
    config = {"address": ADDR, "key": KEY, "krn": 0, "mode": "local", "bench": False}
    config.update(cfg)
    flash = flash or RamFlash(16384)
    return Meter(config, flash, now, Rand()), flash


def headend(key=KEY, address=ADDR):
    return HeadEnd(address, key, std_hmac)


def session(m, he, now=T0, r1=b"\x11" * 8):
    he.login(lambda f: m.handle(f, now), r1)
    return he


def ask(m, frame, now=T0):
    r = m.handle(frame, now)
    return None if r is None else parse(r)


def serr(reply):
    ctrl, data = reply
    assert ctrl == 0xC3, (hex(ctrl), data)
    return data[0] | data[1] << 8


def opened(amount=10000, customer="000000000042", now=T0, **cfg):
    """A meter with an opened account, and a head-end in session with it."""
    m, flash = make(now=now, **cfg)
    he = session(m, headend(), now)
    assert ask(m, he.purchase(amount, 1, customer, open_account=True), now)[0] == 0x83
    return m, he, flash


# --- running the firmware from .mpy under the real micropython binary ----------------------

ROOT = Path(__file__).resolve().parents[2]


def build_mpy(dest, extra=()):
    """Compile firmware/meter/*.py (and `extra` files, to top-level modules) into dest as .mpy, with
    line numbers, each under its name on a board (meter/core.py): a source path would be interned on
    the heap, its length this checkout's."""
    dest = Path(dest)
    (dest / "meter").mkdir(parents=True, exist_ok=True)
    for src in sorted((ROOT / "firmware/meter").glob("*.py")):
        compile_mpy(src, dest / "meter" / (src.stem + ".mpy"), f"meter/{src.name}", debug=True)
    for src in extra:
        src = Path(src).resolve()
        compile_mpy(src, dest / (src.stem + ".mpy"), src.name, debug=True)
    return dest


def as_written_from_2000(state):
    """A meter's desktop.json_state() as firmware that counted meter time from 2000-01-01 held it (its JSON
    records): every time moved back to that epoch, as meter.epoch2000.to_epoch moves it forward."""
    import copy
    s = copy.deepcopy(state)
    d = -clock.from_fields(2000, 1, 1)
    dd = d // clock.DAY
    s["lt"] += d
    s["ts"] += d
    if s["b"] >= 0:
        s["b"] += dd
    if "fz" in s:
        s["fz"][1] += dd
    if s["r"][4]:
        s["r"][4] += d
    if len(s["s"]) == 4 and s["s"][3]:
        s["s"][3] += d
    if s.get("k") and s["k"][1][1]:
        s["k"][1][1] += d
    t = s["t"]
    t["sw"] = [None if v is None else v + d for v in t["sw"]]
    t["ho"] = [h + dd * 8 for h in t["ho"]]
    s["e"][1] = [[(r[0] + d,) + tuple(r[1:]) for r in recs] for recs in s["e"][1]]
    return s
