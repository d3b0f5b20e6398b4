# Simulated household days of one meter on real littlefs, for the flash-wear benchmark and its
# test. Runs under the MicroPython unix port (it needs vfs.VfsLfs2): the filesystem sits on a
# RAM block device of 4096-byte blocks, as the ports mount their flash, which counts every block
# erase and every byte programmed. The meter is the board path: hal.slots keeps its records in
# state.bin.0/.1 on that filesystem, meter.app.MeterApp drives the core from the "hardware" the
# day plays (energy pulses, the relay's sense contact, the line) in loop passes as the board runs
# them (MeterApp.poll: a record written in one pass is committed in the next).
#
#   micropython wear_day.py DAYS STEP_S ERASE_LIMIT PROGSIZE IMAGE_BYTES
#
# prints one line: "wear " + JSON. It stops early (and says so) once ERASE_LIMIT erases are
# counted, so a meter that wears its flash fast fails quickly instead of simulating on.

import gc
import json
import sys
import time

import vfs

from hal.load import Energy, LoadModel
from meter import clock, codec, desktop

BLOCK = 4096
BLOCKS = 352  # a Pico's 1.4 MB filesystem (1,441,792 bytes)
DAY = 86400
ADDR = "000000000001"
KWH_SCALE = 52  # the residential profile at 52 %: about 10 kWh a day
IMP = 1000  # pulses per kWh: one pulse per Wh


class CountingBdev:
    """A RAM block device with littlefs's extended interface; counts erases per block."""

    def __init__(self, blocks, size):
        self.bs = size
        self.n = blocks
        self.mem = bytearray(blocks * size)
        for i in range(len(self.mem)):
            self.mem[i] = 0xFF
        self.worn = [0] * blocks
        self.erases = 0
        self.prog = 0

    def readblocks(self, n, buf, off=0):
        a = n * self.bs + off
        buf[:] = memoryview(self.mem)[a:a + len(buf)]

    def writeblocks(self, n, buf, off=0):
        a = n * self.bs + off
        self.mem[a:a + len(buf)] = buf
        self.prog += len(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.n
        if op == 5:
            return self.bs
        if op == 6:  # erase
            self.erases += 1
            self.worn[arg] += 1
            a = arg * self.bs
            mv = memoryview(self.mem)
            mv[a:a + self.bs] = b"\xff" * self.bs
            return 0
        return 0


class Pulses:
    """The pulse input as MeterApp sees a board's: take() returns the pulses counted so far."""

    def __init__(self):
        self.n = 0

    def take(self):
        n = self.n
        self.n = 0
        return n


class Contact:
    """The relay: its contact follows what the meter commands."""

    def __init__(self):
        self.open = False
        self.commanded = None

    def drive(self, open_):
        self.commanded = open_
        self.open = open_

    def sensed_open(self):
        return self.open


def _dt6(t):
    y, mo, d, h, mi, s, _ = clock.to_fields(t)
    b = bytearray(6)
    for i, v in enumerate((s, mi, h, d, mo, y - 2000)):
        codec.put_bcd(b, i, v, 1)
    return bytes(b)


def _control(addr, n1, deadline):
    # bench image: 1CH at plain level 02 with password 000000
    return desktop.build(addr, 0x1C, bytes((2, 0, 0, 0, 0, 0, 0, 0, n1, 0)) + _dt6(deadline))


def _write(addr, di, value):
    # bench image: 14H at plain level 04; a new record with a new event, as a top-up saves
    return desktop.build(addr, 0x14, bytes((di & 0xFF, di >> 8 & 0xFF, di >> 16 & 0xFF, di >> 24,
                                          4, 0, 0, 0, 0, 0, 0, 0)) + value)


def main(days, step_s, limit, progsize, image_bytes):
    bdev = CountingBdev(BLOCKS, BLOCK)
    vfs.VfsLfs2.mkfs(bdev)
    fs = vfs.VfsLfs2(bdev, progsize=progsize)
    vfs.mount(fs, "/flash")
    # the image's files take their blocks first, as on a board (littlefs spreads wear over the rest)
    f = open("/flash/image.bin", "wb")
    chunk = b"\x5a" * 1024
    left = image_bytes
    while left > 0:
        f.write(chunk[:min(1024, left)])
        left -= 1024
    f.close()

    from hal.start import open_slots
    from meter.app import MeterApp
    from meter.core import Meter

    t0 = clock.from_fields(2026, 3, 2, 0, 0, 0)
    flash = open_slots("/flash/state.bin", 16384)
    m = Meter({"address": ADDR, "key": b"0123456789abcdef", "krn": 0, "mode": "remote", "bench": True},
              flash, t0, None)
    pulses = Pulses()
    contact = Contact()
    app = MeterApp(m, pulses, IMP, contact, flash=flash)
    app.poll(None, t0, 0)
    addr = codec.addr_bytes(ADDR)
    load = LoadModel(scale_pct=KWH_SCALE, seed=3)
    energy = Energy()
    st = fs.statvfs("/flash")
    free_blocks = st[3]
    e0 = bdev.erases
    p0 = bdev.prog
    saves0 = m.store.seq
    worn0 = list(bdev.worn)
    gc.collect()
    max_us = 0
    passes = 0
    max_step_erases = 0
    max_step_prog = 0
    wh = 0
    stopped = False
    steps = days * DAY // step_s
    t = t0
    for i in range(steps):
        t = t0 + (i + 1) * step_s
        n = energy.add(0 if contact.open else load.power_w(t), step_s * 1000)
        pulses.n += n * IMP // 1000
        wh += n
        frames = None
        day = (t - t0) // DAY
        sec = (t - t0) % DAY
        if sec == 7 * 3600 or sec == 19 * 3600:  # two trips a day (a remote cut), each closed again
            frames = _control(addr, 0x1A, t + DAY)
        elif sec == 7 * 3600 + 600 or sec == 19 * 3600 + 600:
            frames = _control(addr, 0x1C, t + DAY)
        elif sec == 12 * 3600 and day % 7 == 3:  # a recharge a week
            frames = _write(addr, 0x04001001, bytes((0, day & 0x0F, 0, 0)))
        # the board's loop passes at this instant (hal.board.Board.step): a pass that finds a
        # record waiting commits it and does nothing else, the frame waits for the next pass
        while True:
            chunk = None
            if not app.due():
                chunk = frames
                frames = None
            e = bdev.erases
            p = bdev.prog
            a = time.ticks_us()
            app.poll(chunk, t, (t - t0) * 1000)
            el = time.ticks_diff(time.ticks_us(), a)
            passes += 1
            if el > max_us:
                max_us = el
            if bdev.erases - e > max_step_erases:
                max_step_erases = bdev.erases - e
            if bdev.prog - p > max_step_prog:
                max_step_prog = bdev.prog - p
            if frames is None and not app.due():
                break
        if bdev.erases - e0 > limit:
            stopped = True
            break
    simulated = t - t0
    spread = [bdev.worn[k] - worn0[k] for k in range(BLOCKS)]
    print("wear " + json.dumps({
        "seconds": simulated, "wh": wh, "erases": bdev.erases - e0, "prog": bdev.prog - p0,
        "saves": m.store.seq - saves0, "max_step_us": max_us, "max_step_erases": max_step_erases,
        "max_step_prog": max_step_prog, "passes": passes, "free_blocks": free_blocks, "blocks": BLOCKS,
        "most_worn": max(spread), "blocks_erased": sum(1 for k in spread if k), "stopped": stopped,
        "energy_wh": m.status()["energy_wh"], "relay_open": m.relay_open}))


if __name__ == "__main__":
    a = sys.argv
    main(int(a[1]), int(a[2]), int(a[3]), int(a[4]), int(a[5]))
