"""Daily freezes: the meter freezes forward active energy (total and T1..T4) once a day at its
freeze time (midnight unless a 16H 9999hhmm moved it) and on a 16H instant freeze, keeps the
last ten (DIs 050600nn time, 050601nn energy), survives power cycles, and freezes the days it
was off for at power-up, each stamped with its own freeze time. The same scenario runs under
CPython and under the micropython binary from .mpy."""

import pytest

import protocol
from meter import clock, desktop, disrec, tariffcheck
from tests.firmware.core_support import as_written_from_2000, build_mpy, make, run_mpy
from tools.bench.hes import bcd, le, parse
from tests.firmware.test_core import HE, read, value

DAY = clock.DAY
# 2025-06-05 22:00:00
EVE = clock.from_fields(2025, 6, 5, 22, 0, 0)
MIDNIGHT = clock.from_fields(2025, 6, 6)


def ymdhm(t):
    y, mo, d, h, mi, _, _ = clock.to_fields(t)
    return bcd(mi, 1) + bcd(h, 1) + bcd(d, 1) + bcd(mo, 1) + bcd(y - 2000, 1)


def energy_block(wh):
    return b"".join(bcd(w // 10, 4) for w in wh)


def freeze(m, n, now):
    """(time bytes, energy bytes) of the n-th last daily freeze."""
    return value(m, 0x05060000 | n, now), value(m, 0x05060100 | n, now)


def tou(m):
    # T4 before 08:00, T2 08:00-20:00, T3 after: energy lands in three registers
    tariffcheck.set_day_table(m.tariff, 0, 0, [(0, 3), (480, 1), (1200, 2)])


def test_midnight_freeze_holds_the_registers_once_per_day():
    m, _ = make(now=EVE, mode="remote")
    tou(m)
    m.add_energy(1500, EVE)             # T3
    m.add_energy(250, EVE + 3000)       # T3
    before = list(m.energy)
    assert value(m, 0x05060001, EVE) == bytes(5)  # nothing frozen yet: zeros, as unused records
    assert value(m, 0x05060101, EVE) == bytes(20)
    m.tick(MIDNIGHT - 1)
    assert disrec.last(m.events, 5, 1) is None
    m.tick(MIDNIGHT + 1)
    m.tick(MIDNIGHT + 2)
    m.tick(MIDNIGHT + 3600)
    assert freeze(m, 1, MIDNIGHT + 3600) == (ymdhm(MIDNIGHT), energy_block(before))
    assert value(m, 0x05060002, MIDNIGHT) == bytes(5)  # exactly one record for the day
    assert before == [1750, 0, 0, 1750, 0]


def test_energy_crossing_midnight_is_frozen_as_it_stood_before():
    m, _ = make(now=EVE, mode="remote")
    tou(m)
    m.add_energy(1000, EVE)
    m.add_energy(40, MIDNIGHT + 600)    # no tick in between: the freeze comes before these Wh
    assert freeze(m, 1, MIDNIGHT + 600) == (ymdhm(MIDNIGHT), energy_block([1000, 0, 0, 1000, 0]))
    m.add_energy(3000, MIDNIGHT + 9 * 3600)  # T2, 09:00
    m.tick(MIDNIGHT + DAY)
    assert freeze(m, 1, MIDNIGHT + DAY) == (ymdhm(MIDNIGHT + DAY), energy_block([4040, 0, 3000, 1000, 40]))
    assert freeze(m, 2, MIDNIGHT + DAY)[0] == ymdhm(MIDNIGHT)


def test_days_missed_while_off_are_frozen_at_power_up_with_their_own_times():
    m, flash = make(now=EVE, mode="remote")
    m.add_energy(5000, EVE)
    m.tick(MIDNIGHT)
    del m
    # off from the 6th 00:00 to the 9th 07:00: the 7th, 8th and 9th were missed
    back = MIDNIGHT + 3 * DAY + 7 * 3600
    m, _ = make(flash, now=back, mode="remote")
    want = energy_block([5000, 0, 0, 5000, 0])
    for n, day in ((1, 3), (2, 2), (3, 1), (4, 0)):
        assert freeze(m, n, back) == (ymdhm(MIDNIGHT + day * DAY), want)
    assert value(m, 0x05060005, back) == bytes(5)
    # a second power-up on the same day freezes nothing again, and the records survived
    m2, _ = make(flash, now=back + 60, mode="remote")
    assert freeze(m2, 1, back + 60) == (ymdhm(MIDNIGHT + 3 * DAY), want)
    assert value(m2, 0x05060005, back + 60) == bytes(5)


def test_only_the_last_ten_are_kept_and_eleven_is_no_data():
    m, _ = make(now=EVE, mode="remote")
    for d in range(14):
        m.add_energy(100 * (d + 1), MIDNIGHT + d * DAY + 3600)
    last = MIDNIGHT + 13 * DAY + 3600
    times = [value(m, 0x05060000 | n, last) for n in range(1, 11)]
    assert times == [ymdhm(MIDNIGHT + d * DAY) for d in range(13, 3, -1)]
    ctrl, data = read(m, 0x0506000B, last)
    assert ctrl == 0xD1 and data == b"\x02"  # no such record: ERR "no data"
    # the block of all ten energy records needs a follow-up (200 bytes)
    ctrl, data = read(m, 0x050601FF, last)
    assert ctrl == 0xB1
    r = m.handle(HE.frame(0x12, le(0x050601FF, 4) + b"\x01"), last)
    ctrl2, data2 = parse(r)
    assert ctrl2 == 0x92 and data2[-1] == 1
    blk = data[4:] + data2[4:-1]
    assert len(blk) == 200
    assert blk[:20] == value(m, 0x05060101, last)
    assert blk[180:] == value(m, 0x0506010A, last)


def test_a_long_outage_freezes_only_the_ten_newest_days():
    m, flash = make(now=EVE, mode="remote")
    m.add_energy(10, EVE)
    back = MIDNIGHT + 40 * DAY + 5
    m, _ = make(flash, now=back, mode="remote")
    assert [value(m, 0x05060000 | n, back) for n in (1, 10)] == [ymdhm(MIDNIGHT + 40 * DAY),
                                                                 ymdhm(MIDNIGHT + 31 * DAY)]
    assert len(m.events.records(5)) == 10


def test_16h_instant_freeze_unicast_replies_96_broadcast_stays_silent():
    m, _ = make(now=EVE, mode="remote")
    m.add_energy(1234, EVE)
    t = EVE + 125
    assert parse(m.handle(HE.frame(0x16, b"\x99\x99\x99\x99"), t)) == (0x96, b"")
    assert freeze(m, 1, t) == (ymdhm(t), energy_block([1234, 0, 0, 1234, 0]))
    m.add_energy(766, t)
    bc = protocol.build_frame("999999999999", 0x16, b"\x99\x99\x99\x99")
    assert m.handle(bc, t + 60) is None
    assert freeze(m, 1, t + 60) == (ymdhm(t + 60), energy_block([2000, 0, 0, 2000, 0]))
    assert freeze(m, 2, t + 60)[0] == ymdhm(t)


def test_16h_daily_pattern_moves_the_freeze_time_and_persists():
    m, flash = make(now=EVE, mode="remote")
    m.add_energy(300, EVE)
    # 9999hhmm = 99 99 07 30 as people write it; mm hh DD MM on the wire
    assert parse(m.handle(HE.frame(0x16, b"\x30\x07\x99\x99"), EVE)) == (0x96, b"")
    m.tick(MIDNIGHT + 60)
    assert disrec.last(m.events, 5, 1) is None  # midnight is no longer the freeze time
    m, _ = make(flash, now=MIDNIGHT + 7 * 3600, mode="remote")  # a power cycle keeps 07:30
    m.tick(MIDNIGHT + 7 * 3600 + 29 * 60)
    assert disrec.last(m.events, 5, 1) is None
    m.tick(MIDNIGHT + 7 * 3600 + 30 * 60)
    assert freeze(m, 1, MIDNIGHT + 8 * 3600)[0] == ymdhm(MIDNIGHT + 7 * 3600 + 30 * 60)
    # broadcast: no reply, but the time moves (back to midnight: tomorrow's comes at 00:00)
    assert m.handle(protocol.build_frame("999999999999", 0x16, b"\x00\x00\x99\x99"), MIDNIGHT + 9 * 3600) is None
    m.tick(MIDNIGHT + DAY)
    assert freeze(m, 1, MIDNIGHT + DAY)[0] == ymdhm(MIDNIGHT + DAY)
    assert freeze(m, 2, MIDNIGHT + DAY)[0] == ymdhm(MIDNIGHT + 7 * 3600 + 30 * 60)


@pytest.mark.parametrize("data", [
    b"\x00\x00\x05\x99",      # monthly 99DDhhmm: not kept by this meter
    b"\x15\x99\x99\x99",      # hourly 999999mm
    b"\x60\x07\x99\x99",      # minute 60
    b"\x00\x24\x99\x99",      # hour 24
    b"\x0a\x07\x99\x99",      # not BCD
    b"\x00\x00\x06\x06",      # a date: not a periodic pattern
    b"\x99\x99\x99",          # short
    b"\x99\x99\x99\x99\x99",  # long
])
def test_16h_patterns_it_does_not_keep_are_refused_and_change_nothing(data):
    m, flash = make(now=EVE, mode="remote")
    m.add_energy(300, EVE)
    before = (desktop.json_state(m), bytes(flash.mem))
    assert parse(m.handle(HE.frame(0x16, data), EVE)) == (0xD6, b"\x01")
    assert (desktop.json_state(m), bytes(flash.mem)) == before


def test_a_record_from_before_freezes_loads_and_freezes_from_its_last_save():
    m, flash = make(now=EVE, mode="remote")
    m.add_energy(800, EVE)
    state = as_written_from_2000(desktop.json_state(m))
    # as written before freezes existed: no "fz", five event kinds
    del state["fz"]
    state["e"] = [state["e"][0][:5], state["e"][1][:5]]
    desktop.save(m.store, state)
    back = MIDNIGHT + DAY + 60
    m2, _ = make(flash, now=back, mode="remote")
    assert [value(m2, 0x05060000 | n, back) for n in (1, 2)] == [ymdhm(MIDNIGHT + DAY), ymdhm(MIDNIGHT)]
    assert disrec.last(m2.events, 0, 1) == disrec.last(m.events, 0, 1)


# --- the same scenario under CPython and under the micropython binary --------------------

SCENARIO = '''
from meter import clock, codec, desktop, tariffcheck
from meter.core import Meter
from meter.desktop import RamFlash

ADDR = "123456789012"
CFG = {"address": ADDR, "key": b"0123456789abcdef", "krn": 1, "mode": "remote"}


def le4(v):
    return bytes((v & 255, v >> 8 & 255, v >> 16 & 255, v >> 24 & 255))


def ask(m, ctrl, data, t, addr=ADDR):
    r = m.handle(desktop.build(addr, ctrl, data), t)
    if r is None:
        return "-"
    fr = codec.Frame()
    codec.decode(r, fr)
    return "%02x:%s" % (fr.ctrl, bytes(fr.data[:fr.n]).hex())


def run(out):
    fl = RamFlash(16384)
    t = clock.from_fields(2025, 6, 5, 22, 0, 0)
    m = Meter(CFG, fl, t, lambda n: bytes(n))
    tariffcheck.set_day_table(m.tariff, 0, 0, [(0, 3), (480, 1), (1200, 2)])
    m.add_energy(1500, t)
    m.tick(t + 7200)
    m.tick(t + 7260)
    m.add_energy(700, t + 7200 + 9 * 3600)
    out(ask(m, 0x16, b"\\x99\\x99\\x99\\x99", t + 7200 + 10 * 3600))
    out(ask(m, 0x16, b"\\x30\\x07\\x99\\x99", t + 7200 + 10 * 3600, "999999999999"))
    out(ask(m, 0x16, b"\\x00\\x00\\x05\\x99", t + 7200 + 10 * 3600))
    m = None
    back = t + 7200 + 3 * 86400 + 8 * 3600
    m = Meter(CFG, fl, back, lambda n: bytes(n))
    m.add_energy(55, back)
    for n in range(1, 8):
        out(ask(m, 0x11, le4(0x05060000 | n), back))
        out(ask(m, 0x11, le4(0x05060100 | n), back))
    out(ask(m, 0x11, le4(0x050601FF), back))
    out(ask(m, 0x12, le4(0x050601FF) + b"\\x01", back))
    out(ask(m, 0x11, le4(0x050600FF), back))


def main():
    run(print)
'''


def _cpython_lines():
    ns = {}
    exec(compile(SCENARIO, "freeze_scenario", "exec"), ns)
    lines = []
    ns["run"](lines.append)
    return lines


def test_freeze_scenario_under_cpython(tmp_path):
    lines = _cpython_lines()
    assert lines[0] == "96:" and lines[1] == "-" and lines[2] == "d6:01"
    # records, newest first: 9th 07:30, 8th 07:30, 7th 07:30 (missed while off), the instant
    # freeze on the 6th 10:00, the 6th 00:00, then nothing
    times = [lines[3 + 2 * k][11:] for k in range(7)]
    assert times == ["3007090625", "3007080625", "3007070625", "0010060625", "0000060625", "0000000000",
                     "0000000000"]
    day_energy = lines[4][11:]
    assert day_energy == (bcd(220, 4) + bcd(0, 4) + bcd(70, 4) + bcd(150, 4) + bcd(0, 4)).hex()
    assert lines[12][11:] == (bcd(150, 4) + bcd(0, 4) + bcd(0, 4) + bcd(150, 4) + bcd(0, 4)).hex()
    assert lines[17].startswith("b1:") and lines[18].startswith("92:")
    assert lines[19].startswith("91:ff000605")


def test_freeze_scenario_under_micropython_from_mpy(tmp_path):
    src = tmp_path / "freeze_scenario.py"
    src.write_text(SCENARIO)
    dest = build_mpy(tmp_path / "mpy", [src])
    # 128 KB: the scenario's 16 KB RamFlash lives in the heap (a board's flash does not); the
    # meter's own budget is held by test_life and tools/bench/bench_firmware.py
    res = run_mpy(dest, "import freeze_scenario\nfreeze_scenario.main()", heapsize="128K")
    assert res.returncode == 0, res.stderr + res.stdout
    assert res.stdout.split() == _cpython_lines()
