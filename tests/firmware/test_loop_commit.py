"""A record written in one main-loop pass is committed in the next (hal/slots.py, meter/app.py):
until then the replies and the relay move that depend on it are held, so nothing the meter says or
does describes state a power cut could take back, and no pass takes more than one flash erase."""

from hal.start import open_slots
from meter.app import MeterApp
from meter.core import Meter
from tests.firmware.core_support import KEY, T0
from tools.bench.bench_firmware import Rand
from tools.bench.hes import parse

ADDR = "000000000007"


class Pulses:
    n = 0

    def take(self):
        n, self.n = self.n, 0
        return n


class Contact:
    def __init__(self):
        self.commanded = None
        self.drives = 0

    def drive(self, open_):
        self.commanded = open_
        self.drives += 1

    def sensed_open(self):
        return self.commanded


def _control_plain(n1):
    from tests.firmware.epoch_scenario import _b
    from meter import clock, desktop
    y, mo, d, h, mi, s, _ = clock.to_fields(T0 + 3600)
    deadline = bytes((_b(s), _b(mi), _b(h), _b(d), _b(mo), _b(y - 2000)))
    return desktop.build(ADDR, 0x1C, bytes((2, 0, 0, 0, 0, 0, 0, 0, n1, 0)) + deadline)


def _meter(path):
    cfg = {"address": ADDR, "key": KEY, "krn": 0, "mode": "remote", "bench": True}
    flash = open_slots(str(path), 16384)
    return Meter(cfg, flash, T0, Rand()), flash


def test_a_reply_and_its_relay_move_wait_for_the_record_to_be_committed(tmp_path):
    m, flash = _meter(tmp_path / "state")
    contact = Contact()
    app = MeterApp(m, Pulses(), 1000, contact, flash=flash)
    assert app.poll(None, T0, 0) == [] and contact.commanded is False  # the closed contact, driven at start
    drives = contact.drives
    # a trip: the record is written in this pass, not committed; no reply, the relay not moved
    assert app.poll(_control_plain(0x1A), T0 + 1, 1000) == []
    assert flash.due and contact.drives == drives and not contact.commanded
    seq = m.store.seq
    # the next pass only commits: then the reply goes out and the relay moves
    out = app.poll(b"", T0 + 1, 1010)
    assert not flash.due and [parse(r)[0] for r in out] == [0x9C]
    assert contact.commanded is True and contact.drives == drives + 1
    flash.close()
    again, f2 = _meter(tmp_path / "state")  # what a power cut now would find: the tripped state
    assert again.relay_open and again.store.seq == seq + 1  # + the power-up record
    f2.close()


def test_a_frame_in_the_committing_pass_waits_for_the_next(tmp_path):
    m, flash = _meter(tmp_path / "state")
    pulses = Pulses()
    app = MeterApp(m, pulses, 1000, Contact(), flash=flash)
    app.poll(None, T0, 0)
    app.poll(None, T0, 5)
    pulses.n = 100  # the policy's 100 Wh: a record is written this pass
    assert app.poll(None, T0 + 2, 2000) == [] and flash.due
    assert app.due()  # the board leaves the line's bytes in the UART for the next pass
    assert app.poll(None, T0 + 2, 2005) == [] and not flash.due
    flash.close()


def test_bytes_given_to_a_committing_pass_are_handled_in_the_next(tmp_path):
    m, flash = _meter(tmp_path / "state")
    app = MeterApp(m, Pulses(), 1000, Contact(), flash=flash)
    app.poll(None, T0, 0)
    app.poll(_control_plain(0x1A), T0 + 1, 1000)
    assert flash.due
    assert app.poll(_control_plain(0x1C), T0 + 1, 1005) != []  # commits: the trip's reply
    assert m.relay_open  # tripped; the close has not been handled yet
    out = app.poll(None, T0 + 1, 1010)  # the close is handled now: written, its reply held
    assert out == [] and flash.due and not m.relay_open
    assert [parse(r)[0] for r in app.poll(None, T0 + 1, 1015)] == [0x9C]
    flash.close()
