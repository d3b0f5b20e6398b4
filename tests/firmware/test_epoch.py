"""Meter time past 2034 on a 32-bit board: seconds since 2024-01-01 stay in a board's 31-bit small
ints until 9 January 2058 (seconds since 2000 left them in January 2034, and every time value became
a long on the heap). The clock, billing and event scenarios of epoch_scenario.py run at dates after
2034 and after 2038 under CPython and the real micropython binary, checking every time value the
meter keeps against the small-int range; a meter upgraded in the field reads the state the
firmware counting from 2000 saved as it was, and writes it back in the new form."""

import base64
import json
import zlib
from pathlib import Path

from meter import clock, desktop
from meter.core import Meter
from meter.desktop import RamFlash
from meter.store import Store
from hal.start import saved_time
from tests.firmware import epoch_scenario
from tests.mpy import ROOT, run_micropython
from tools.bench import bench_firmware as bf

HERE = ROOT / "tests" / "firmware"
OLD = json.loads((Path(__file__).parent / "data" / "state_2000.json").read_text())


def test_meter_time_counts_from_2024_and_stays_a_small_int_until_2058():
    assert clock.from_fields(2024, 1, 1) == 0
    assert clock.to_fields(0) == (2024, 1, 1, 0, 0, 0, 1)  # a Monday
    assert clock.from_fields(2058, 1, 9, 13, 37, 3) == epoch_scenario.SMALL - 1
    assert clock.to_fields(epoch_scenario.SMALL - 1)[:6] == (2058, 1, 9, 13, 37, 3)


def test_clock_billing_and_events_after_2034_and_2038_cpython():
    epoch_scenario.run_all(clock.from_fields)


def test_clock_billing_and_events_after_2034_and_2038_micropython():
    r = run_micropython("import epoch_scenario\nfrom meter import clock\nepoch_scenario.run_all(clock.from_fields)\n",
                        heapsize="256K", path=[str(HERE)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert [line.split()[1] for line in r.stdout.splitlines() if line.startswith("PASS ")] == ["2034", "2038", "2058"]


def _old_flash():
    f = RamFlash(16384)
    f.mem[:] = zlib.decompress(base64.b64decode(OLD["flash"]))
    return f


def test_an_upgraded_meter_reads_the_state_saved_by_the_firmware_counting_from_2000():
    # the same reads at the same civil times give the replies the old firmware gave: clock,
    # switch-over time, event and freeze times, a trip delay running across the power cut
    m = None
    flash = None
    for step in OLD["steps"]:
        t = clock.from_fields(*step["at"])
        if step["do"] == "power":
            flash = _old_flash()
            m = Meter(bf._config(), flash, t, bf.Rand())
            assert all(-(1 << 30) <= v < 1 << 30 for v in epoch_scenario.time_values(m))
        elif step["do"] == "tick":
            m.tick(t)
        else:
            assert (m.handle(bytes.fromhex(step["q"]), t) or b"").hex() == step["r"], step
    # the upgraded meter's record is in the new form, and reads back the same again
    st = Store(flash)
    assert st.load() is not None and st.payload(0, 1)[0] == 2 and st.shift == 0
    again = Meter(bf._config(), flash, t, bf.Rand())
    assert desktop.event_records(again.events) == desktop.event_records(m.events) and again.tariff.switch == m.tariff.switch


def test_a_board_resumes_from_the_time_an_old_record_was_saved_at():
    assert saved_time(_old_flash()) == clock.from_fields(*OLD["saved_at"])


def test_a_time_before_the_meter_epoch_is_refused():
    cfg = {"address": epoch_scenario.ADDR, "key": bytes(16), "krn": 0, "mode": "remote", "bench": True}
    t = clock.from_fields(2025, 6, 5, 10, 0, 0)
    m = Meter(cfg, RamFlash(16384), t, epoch_scenario.Rand())
    before = bytes((4, 0, 0, 0, 0, 0, 0, 0))
    ctrl, _ = epoch_scenario._ask(m, 0x14, bytes((0x0C, 1, 0, 4)) + before + bytes((0, 0, 0x12, 0, 0x31, 0x12, 0x23)), t)
    assert ctrl == 0xD4  # 2023-12-31 12:00: before 2024-01-01, the first instant the meter counts
    assert m.time(t) == t
    epoch_scenario.write(m, 0x0400010C, bytes((0, 0, 0x12, 0, 0x01, 0x01, 0x24)), t)
    assert m.time(t) == clock.from_fields(2024, 1, 1, 12, 0, 0)
