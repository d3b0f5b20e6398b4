"""A whole prepaid life, the same scenario under CPython and under the real micropython
binary (modules loaded from .mpy); both must log the same checkpoints. The CPython run is
also recorded as a transcript (every frame, pulse batch, button press and power-up) and
replayed into a micropython meter in a 90 KB heap, which must answer every frame with the
very same bytes."""

from pathlib import Path

from meter.core import Meter
from tests.firmware import life_scenario
from tests.firmware.core_support import beside, build_mpy, run_mpy, std_hmac

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SEEDED_RAND = HERE.parents[1] / "tools/sim/seeded_rand.py"


def _cpython_log():
    return [[str(x) for x in row] for row in life_scenario.run(std_hmac)]


def test_prepaid_life_under_cpython():
    log = life_scenario.run(std_hmac)
    rows = {r[0]: r for r in log}
    assert [r[0] for r in log] == ["opened", "alarm1", "alarm2", "alarm2-button", "zero", "overdraft",
                                   "recharged", "recharged-button", "events", "power-cycled", "query", "end"]
    assert rows["opened"][1:5] == [3000, 0, 0, 1]
    assert rows["alarm1"][1] <= 2000 and rows["alarm2"][1] <= 1000
    assert rows["overdraft"][1] <= -500 and rows["overdraft"][3] == 1
    assert rows["recharged"][1] == rows["overdraft"][1] + 5000
    assert rows["events"][1:] == [3, 3, 2]  # trips: alarm2, zero, overdraft; closes: 3 buttons
    assert rows["query"][1:] == [rows["end"][1], 2, "000000000042"]
    # every Wh was paid for: 0.50 yuan/kWh, flat, first ladder tier
    assert rows["end"][1] == 3000 + 5000 - rows["end"][5] * 5000 // 100000


def test_prepaid_life_under_micropython_from_mpy(tmp_path):
    dest = build_mpy(tmp_path / "mpy", [ROOT / "tools" / "bench" / "hes.py", HERE / "life_scenario.py", SEEDED_RAND])
    res = run_mpy(dest, "import life_scenario\nlife_scenario.main()", heapsize="160K")
    assert res.returncode == 0, res.stderr + res.stdout
    got = [line.split(" ") for line in res.stdout.strip().split("\n")]
    assert got == _cpython_log()


def _transcript():
    rows = []

    class Recording(Meter):
        def __init__(self, cfg, flash, now, rand):
            rows.append(("p", now))
            super().__init__(cfg, flash, now, rand)

        def handle(self, frame, now):
            r = super().handle(frame, now)
            rows.append(("h", now, bytes(frame).hex(), r.hex() if r else "-"))
            return r

        def add_energy(self, wh, now):
            rows.append(("e", now, wh))
            super().add_energy(wh, now)

        def button(self, now):
            rows.append(("b", now))
            return super().button(now)

    life_scenario.run(std_hmac, Recording)
    return rows


_REPLAY = """
import gc
from meter.core import Meter
from meter.desktop import RamFlash

%(rand)s
cfg = {"address": %(addr)r, "key": %(key)r, "krn": 1, "mode": "local"}
flash = RamFlash(%(flash)d)
rand = Rand(7)
m = None
peak = 0
for line in open(%(path)r):
    p = line.split()
    now = int(p[1])
    if p[0] == "p":
        m = None
        gc.collect()
        m = Meter(cfg, flash, now, rand)
    elif p[0] == "h":
        r = m.handle(bytes.fromhex(p[2]), now)
        print(r.hex() if r else "-")
    elif p[0] == "e":
        m.add_energy(int(p[2]), now)
    elif p[0] == "b":
        m.button(now)
gc.collect()
print("heap", gc.mem_alloc())
"""


def test_micropython_meter_replays_the_life_byte_for_byte_in_90k(tmp_path):
    rows = _transcript()
    path = tmp_path / "transcript.txt"
    path.write_text("".join(" ".join(str(x) for x in r) + "\n" for r in rows))
    dest = build_mpy(tmp_path / "mpy")
    # Rand is pasted in rather than imported: one more module would take heap the budget is about
    code = _REPLAY % {"rand": SEEDED_RAND.read_text(), "addr": life_scenario.ADDR, "key": life_scenario.KEY,
                      "flash": life_scenario.FLASH_SIZE, "path": beside(dest, path, "transcript.txt")}
    res = run_mpy(dest, code, heapsize="90K")
    assert res.returncode == 0, res.stderr + res.stdout
    out = res.stdout.split()
    want = [r[3] for r in rows if r[0] == "h"]
    assert len(want) > 30
    assert out[:-2] == want
    assert int(out[-1]) < 90 * 1024
