"""Writes state_2000.json: the flash of a fully programmed meter as the firmware that counted
meter time in seconds since 2000-01-01 saved it (run against that firmware, commit 8e7ba35:
PYTHONPATH=<its checkout>:<its checkout>/firmware python tests/firmware/data/make_state_2000.py),
and the replies that firmware gave to reads after powering up from it. test_epoch.py powers the
current firmware up from the same bytes at the same civil times and expects the same replies:
a meter upgraded in the field keeps its clock, deadlines, events and tariff."""

import base64
import json
import zlib
from pathlib import Path

from meter import clock, tariffcheck
from meter.core import Meter
from meter.desktop import RamFlash
from tools.bench import bench_firmware as bf
from tools.bench.hes import HeadEnd, parse

DAY = 86400


def main():
    flash = RamFlash(16384)
    m = Meter(bf._config(), flash, bf.T0, bf.Rand())
    for q, _ in bf.mixed_frames():
        m.handle(q, bf.T0)
    bad = HeadEnd(bf.ADDR, b"not the meter key", bf.std_hmac)
    t = bf.T0
    for d in range(12):  # MAC failures, faults and a day's energy a day: the logs fill up
        t = bf.T0 + DAY * (d + 1)
        bad.challenged(m.handle(bad.challenge(), t))
        m.handle(bad.auth(bytes((d,)) * 8), t)
        m.fault(t, 0x5EED0000 + d)
        m.add_energy(150 + d, t)
    he = HeadEnd(bf.ADDR, bf.KEY, bf.std_hmac)
    assert he.login(lambda f: m.handle(f, t), bytes(range(8)))
    for q in (he.write(0x04000106, bytes.fromhex("0000010126")),  # zones switch 2026-01-01 00:00
              he.write(0x04001401, bytes.fromhex("2000")),        # trip delay 20 min
              he.control(0x1C, t + 3600),                         # closed, then a remote trip: delayed
              he.control(0x1A, t + 3600)):
        r = parse(m.handle(q, t))
        assert r[0] & 0x40 == 0, (q.hex(), r)
    tariffcheck.set_weekend(m.tariff, 0x41, 3)
    tariffcheck.set_holidays(m.tariff, [(2025, 10, 1, 2), (2026, 1, 1, 2), (2030, 5, 1, 1)])
    m._save()
    assert m.relay.until > t and m.sec.fail_t and m.tariff.switch[0]
    image = bytes(flash.mem)
    civil = clock.to_fields

    reads = [0x04000101, 0x04000102, 0x0400010C, 0x04000106, 0x04000503, 0x00010000, 0x00900200,
             0x1D000001, 0x1D000101, 0x1E000101, 0x03330101, 0x03300001, 0x033E0001, 0x033E0000,
             0x033F0001, 0x05060001, 0x05060101, 0x0506000A, 0x02800020, 0x040100FF]
    steps = []

    def power(at):
        f = RamFlash(16384)
        f.mem[:] = image
        steps.append({"at": civil(at)[:6], "do": "power"})
        return Meter(bf._config(), f, at, bf.Rand())

    def read_all(mm, at):
        for di in reads:
            q = he.read(di)
            steps.append({"at": civil(at)[:6], "do": "frame", "q": q.hex(), "r": (mm.handle(q, at) or b"").hex()})

    for later, tick in ((600, 3600), (3 * DAY, 3 * DAY + 60)):
        at = t + later
        mm = power(at)
        read_all(mm, at)
        mm.tick(t + tick)
        steps.append({"at": civil(t + tick)[:6], "do": "tick"})
        read_all(mm, t + tick)
    out = {"flash": base64.b64encode(zlib.compress(image, 9)).decode(), "address": bf.ADDR,
           "saved_at": civil(t)[:6], "steps": steps}
    Path(__file__).with_name("state_2000.json").write_text(json.dumps(out, indent=0) + "\n")


if __name__ == "__main__":
    main()
