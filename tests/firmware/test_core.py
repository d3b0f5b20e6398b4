"""The Meter's command set: reads of every DI it holds (single, block, follow-up), writes,
relay control, broadcast time, addresses, and what it refuses or ignores."""

import pytest
from hypothesis import given, settings, strategies as st

import protocol
from meter import clock, codec, desktop, powerup
from meter.wallet import SUBFEN
from tests.firmware.core_support import ADDR, T0, ask, headend, make, opened
from tools.bench.hes import bcd, dt6, le, parse

HE = headend()


def read(m, di, now=T0, he=HE):
    r = m.handle(he.read(di), now)
    assert r is not None
    ref = protocol.parse_frame(r)  # every reply is a frame the head-end's codec accepts
    assert ref.address == ADDR
    return ref.control, ref.data


def value(m, di, now=T0):
    ctrl, data = read(m, di, now)
    assert ctrl == 0x91, (hex(di), hex(ctrl), data)
    assert data[:4] == le(di, 4)
    return data[4:]


def test_energy_money_and_identity_reads():
    m, he, _ = opened(12345)
    m.add_energy(1234, T0)
    assert value(m, 0x00010000) == bcd(123, 4)  # 1.23 kWh (XXXXXX.XX)
    assert value(m, 0x00000000) == bcd(123, 4)
    rate = m.tariff.rate_at(T0)
    assert value(m, 0x00010000 + ((rate + 1) << 8)) == bcd(123, 4)
    cost = (1234 * 5000) // SUBFEN  # default flat 0.5000 yuan/kWh, ladder tier 0 adds 0
    assert value(m, 0x00900200) == bcd(12345 - cost, 4)
    assert value(m, 0x00900201) == bcd(0, 4)
    assert value(m, 0x04000401) == bytes.fromhex("129078563412")
    assert value(m, 0x04000402) == bytes.fromhex("129078563412")
    assert value(m, 0x0400040E) == bytes.fromhex("420000000000")
    assert value(m, 0x03330201) == bcd(1, 2)  # purchase count after the last purchase
    assert value(m, 0x03330301) == bcd(12345, 4)
    assert value(m, 0x03330601) == bcd(12345, 4)


def test_time_reads_follow_the_clock():
    m, _ = make()
    y, mo, d, h, mi, s, wd = clock.to_fields(T0)
    assert value(m, 0x04000101) == bytes(bcd(v, 1)[0] for v in (wd, d, mo, y - 2000))
    assert value(m, 0x04000102) == bytes(bcd(v, 1)[0] for v in (s, mi, h))
    assert value(m, 0x0400010C) == bytes(bcd(v, 1)[0] for v in (s, mi, h, wd, d, mo, y - 2000))


def test_power_and_status_words():
    m, he, _ = opened(100000)
    m.set_power(1234)
    assert value(m, 0x02030000) == bytes.fromhex("402301")  # 01.2340 kW
    m.set_power(-1234)
    assert value(m, 0x02030000) == bytes.fromhex("402381")  # sign in bit7 of the last byte
    sw3 = int.from_bytes(value(m, 0x04000503), "little")
    assert sw3 & 0x0300 == 0x0200 and not sw3 & 0x4000  # money prepaid, account opened
    assert sw3 & 0x2000  # identity authentication valid
    assert not sw3 & 0x50
    assert ask(m, he.control(0x1A, T0 + 600))[0] == 0x9C
    sw3 = int.from_bytes(value(m, 0x04000503), "little")
    assert sw3 & 0x50 == 0x50
    m.relay_sense(False)  # the contacts did not open: actual (bit 4) differs from command (bit 6)
    sw3 = int.from_bytes(value(m, 0x04000503), "little")
    assert sw3 & 0x50 == 0x40
    block = value(m, 0x040005FF)
    assert block == b"".join(value(m, 0x04000500 + i) for i in range(1, 8))


@pytest.mark.parametrize("block", [0x0001FF00, 0x0000FF00, 0x040005FF, 0x040501FF, 0x040600FF, 0x040601FF,
                                   0x0333FF01, 0x033301FF, 0x1D00FF01, 0x1E0001FF, 0x040010FF])
def test_block_is_its_items_in_order(block):
    m, he, _ = opened(5000)
    m.add_energy(777, T0)
    ask(m, he.control(0x1A, T0 + 600))
    lo = block & 0xFF == 0xFF
    parts = []
    for i in range(0x40):
        sub = (block & ~0xFF) | i if lo else (block & ~0xFF00) | i << 8
        if block >> 24 in (0x03, 0x1D, 0x1E) and not lo and i == 0:
            continue
        ctrl, data = read(m, sub)
        if ctrl == 0x91:
            parts.append(data[4:])
    assert parts and value(m, block) == b"".join(parts)


def _collect(m, di):
    ctrl, data = read(m, di)
    assert ctrl == 0xB1 and len(data) == 200
    got = data[4:]
    seq = 0
    while ctrl & 0x20:
        seq += 1
        r = parse(m.handle(HE.frame(0x12, le(di, 4) + bytes([seq])), T0))
        ctrl, data = r
        assert ctrl in (0x92, 0xB2) and data[:4] == le(di, 4) and data[-1] == seq
        assert len(data) <= 200
        got += data[4:-1]
    return got, seq


def test_long_blocks_continue_with_follow_ups():
    m, _ = make(bench=True)
    got, frames = _collect(m, 0x040100FF)  # zones + 8 day tables = 378 bytes
    assert frames == 1
    assert got == value(m, 0x04010000) + b"".join(value(m, 0x04010000 + k) for k in range(1, 9))
    for i in range(10):  # programming records: 3 + 10 x 50 bytes, three frames
        ask(m, HE.write_plain(0x04001001, bcd(1000 + i, 4)))
    got, frames = _collect(m, 0x033000FF)
    assert frames == 2 and len(got) == 503
    assert got[:3] == bcd(10, 3)
    assert got[3:9] == dt6(T0) and got[13:17] == le(0x04001001, 4)
    assert parse(m.handle(HE.frame(0x12, le(0x033000FF, 4) + b"\x03"), T0)) == (0xD2, b"\x02")
    assert parse(m.handle(HE.frame(0x12, le(0x040100FF, 4) + b"\x01"), T0)) == (0xD2, b"\x02")


def test_unknown_di_and_odd_requests():
    m, _ = make()
    assert read(m, 0x12345678) == (0xD1, b"\x02")
    assert read(m, 0x0001FFFF) == (0xD1, b"\x02")
    assert parse(m.handle(HE.frame(0x11, b"\x00"), T0)) == (0xD1, b"\x01")
    assert parse(m.handle(HE.frame(0x17, b"\x20"), T0)) == (0xD7, b"\x08")
    assert parse(m.handle(HE.frame(0x1A, bytes(8)), T0)) == (0xDA, b"\x04")


def test_addressing():
    m, _ = make()
    req = HE.read(0x00010000)
    other = headend(address="123456789013")
    assert m.handle(other.read(0x00010000), T0) is None
    bad = bytearray(req)
    bad[-2] ^= 0xFF
    assert m.handle(bytes(bad), T0) is None
    wild = headend(address="AAAAAAAA9012")
    r = protocol.parse_frame(m.handle(wild.read(0x00010000), T0))
    assert r.address == ADDR and r.control == 0x91
    allaa = headend(address="AAAAAAAAAAAA")
    r = protocol.parse_frame(m.handle(allaa.frame(0x13), T0))
    assert (r.address, r.control, r.data) == (ADDR, 0x93, bytes.fromhex("129078563412"))
    bc = headend(address="999999999999")
    assert m.handle(bc.read(0x00010000), T0) is None
    # wildcards only address reads
    assert m.handle(allaa.write_plain(0x04001001, bytes(4)), T0) is None
    # a reply from another meter on the bus is not a request
    assert m.handle(desktop.build(ADDR, 0x91, le(0x00010000, 4) + bytes(4)), T0) is None


def test_write_address():
    allaa = headend(address="AAAAAAAAAAAA")
    m, _ = make()
    assert parse(m.handle(allaa.frame(0x15, codec.addr_bytes("000000000777")), T0)) == (0xD5, b"\x04")
    b, flash = make(bench=True)
    r = protocol.parse_frame(b.handle(allaa.frame(0x15, codec.addr_bytes("000000000777")), T0))
    assert (r.control, r.address) == (0x95, "000000000777")
    assert b.handle(HE.read(0x00010000), T0) is None
    assert parse(b.handle(headend(address="000000000777").read(0x04000401), T0))[1][4:] == \
        codec.addr_bytes("000000000777")
    b2, _ = make(flash=flash, bench=True)  # the new address survives a restart
    assert b2.status()["address"] == "000000000777"


def test_tariff_writes_read_back_and_price_energy():
    m, he, _ = opened(1000000)
    # day table 1: valley 00:00, peak 08:00, flat 22:00 (NN first, hhmm BCD)
    table = bytes.fromhex("04 00 00 02 00 08 03 00 22")
    assert ask(m, he.write(0x04010001, table))[0] == 0x94
    assert value(m, 0x04010001)[:9] == table
    prices = bcd(3000, 4) + bcd(6000, 4) + bcd(4000, 4) + bcd(2000, 4)
    assert ask(m, he.write(0x040501FF, prices))[0] == 0x94
    assert value(m, 0x040501FF) == prices
    assert ask(m, he.write(0x04050102, bcd(6500, 4)))[0] == 0x94
    thr = bcd(100, 4) + bcd(200, 4) + bytes(16)  # 1.00 kWh, 2.00 kWh
    inc = bcd(0, 4) + bcd(1000, 4) + bcd(2000, 4) + bytes(16)
    assert ask(m, he.write(0x040600FF, thr))[0] == 0x94
    assert ask(m, he.write(0x040601FF, inc))[0] == 0x94
    assert value(m, 0x040600FF) == thr and value(m, 0x040601FF) == inc
    assert m.tariff.thresholds[0] == [1000, 2000]
    assert ask(m, he.write(0x04060401, bytes.fromhex("00 01 01")))[0] == 0x94  # settle 1 Jan 00h
    assert ask(m, he.write(0x04000108, bytes.fromhex("00 00 01 01 26")))[0] == 0x94
    assert value(m, 0x04000108) == bytes.fromhex("0000010126")
    assert ask(m, he.write(0x04010001, bytes.fromhex("09 00 00")))[0] == 0xD4  # rate 9
    assert ask(m, he.write(0x04010001, table * 5 + table[:3]))[1] == b"\x20"  # 16 points
    # peak hour (10:22), price 0.6500; 1500 Wh crosses the 1 kWh threshold at the exact Wh
    ref = powerup.tariff_from(desktop.tariff_dump(m.tariff))
    before = m.wallet.balance
    m.add_energy(1500, T0)
    sub, lw, rate = ref.charge(1500, T0, 0)
    assert rate == 1 and sub == 1000 * 6500 + 500 * 7500
    assert before - m.wallet.balance == sub // SUBFEN
    assert value(m, 0x00010200) == bcd(150, 4)  # T2 = peak
    assert value(m, 0x02800020) == bcd(7500, 4)  # current price incl. the ladder increment
    assert value(m, 0x02800021) == bcd(6500, 4)


def test_time_write_moves_the_meter_clock():
    m, he, _ = opened(100)
    assert ask(m, he.write(0x04000102, bytes.fromhex("00 00 12")))[0] == 0x94  # 12:00:00
    assert value(m, 0x04000102) == bytes.fromhex("000012")
    assert ask(m, he.write(0x04000101, bytes.fromhex("03 01 01 26")))[0] == 0x94  # 2026-01-01
    assert value(m, 0x0400010C) == bytes.fromhex("00001204010126")
    assert ask(m, he.query(), T0 + 299)[0] == 0x83  # the session window did not move with the clock
    assert ask(m, he.query(), T0 + 300)[0] == 0xC3
    assert ask(m, he.write(0x04000102, bytes.fromhex("00 61 12")))[0] == 0xD4


def test_limits_write_re_evaluates_the_balance_state():
    m, he, _ = opened(3000)  # 30.00 yuan: NORMAL with A1 = 10.00
    assert m.wallet.state == 0
    assert ask(m, he.write(0x04001002, bcd(4000, 4)))[0] == 0x94  # alarm 2 = 40.00 -> pre-trip
    assert m.wallet.state == 2 and m.relay_open
    assert m.button(T0)
    assert not m.relay_open


def test_relay_control_rules():
    m, he, _ = opened(100000)
    assert ask(m, he.control(0x1A, T0 - 1)) == (0xDC, b"\x04")  # deadline already past
    assert not m.relay_open
    assert ask(m, he.write(0x04001401, bcd(1, 2)))[0] == 0x94  # trip delay 1 minute
    assert ask(m, he.control(0x1A, T0 + 600, op=0x1234))[0] == 0x9C
    assert not m.relay_open
    assert int.from_bytes(value(m, 0x04000503), "little") & 0x80  # pre-trip alarm while waiting
    m.tick(T0 + 59)
    assert not m.relay_open
    m.tick(T0 + 60)
    assert m.relay_open
    assert value(m, 0x1D000001) == bcd(1, 3)
    assert value(m, 0x1D000101) == dt6(T0 + 60) and value(m, 0x1D000201) == le(0x1234, 4)
    assert ask(m, he.control(0x1B, T0 + 600))[0] == 0x9C
    assert m.relay_open  # close permitted: waits for the customer
    assert m.button(T0 + 70) and not m.relay_open
    assert value(m, 0x1E000001) == bcd(1, 3)
    assert value(m, 0x1E000201) == le(0xFFFFFFFF, 4)  # closed by the meter (button)
    assert ask(m, he.control(0x3A, T0 + 600))[0] == 0x9C  # power hold
    assert ask(m, he.control(0x1A, T0 + 600)) == (0xDC, b"\x04")
    assert ask(m, he.control(0x3B, T0 + 600))[0] == 0x9C
    assert ask(m, he.write(0x04001401, bcd(0, 2)))[0] == 0x94
    assert ask(m, he.control(0x1A, T0 + 600))[0] == 0x9C and m.relay_open
    assert ask(m, he.control(0x1C, T0 + 600))[0] == 0x9C and not m.relay_open
    assert ask(m, he.control(0x77, T0 + 600)) == (0xDC, b"\x01")


def test_remote_mode_meters_without_deducting_and_obeys():
    m, he, _ = opened(1000, mode="remote")
    m.add_energy(100000, T0)
    assert m.wallet.balance == 1000  # no local deduction
    assert value(m, 0x00010000) == bcd(10000, 4)  # still metering
    assert not m.relay_open
    assert ask(m, he.control(0x1A, T0 + 600))[0] == 0x9C and m.relay_open
    assert ask(m, he.control(0x1C, T0 + 600))[0] == 0x9C and not m.relay_open
    assert not int.from_bytes(value(m, 0x04000503), "little") & 0x0300  # not a local prepaid meter


def _bc(t, address="999999999999"):
    return headend(address=address).frame(0x08, dt6(t))


def test_broadcast_time_limits():
    m, _ = make()
    assert m.handle(_bc(T0 + 100), T0) is None
    assert value(m, 0x04000102) == dt6(T0 + 100)[:3]
    assert m.handle(_bc(T0 + 150), T0) is None
    assert value(m, 0x04000102) == dt6(T0 + 100)[:3]  # once a day
    for target, now in ((T0 + 301, T0), (T0 - 301, T0),                     # too big
                        (clock.from_fields(2025, 6, 5, 10, 14, 50), clock.from_fields(2025, 6, 5, 10, 15, 10)),
                        (clock.from_fields(2025, 6, 5, 23, 57), clock.from_fields(2025, 6, 5, 23, 56))):
        fresh, _ = make(now=now)
        assert fresh.handle(_bc(target), now) is None
        assert value(fresh, 0x04000102, now) == dt6(now)[:3], target
    # unicast 08H: applied silently, refused with an error reply
    u, _ = make()
    assert u.handle(_bc(T0 + 10, ADDR), T0) is None
    assert parse(u.handle(_bc(T0 + 20, ADDR), T0)) == (0xC8, b"\x04")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=8))
def test_line_noise_changes_nothing(chunks):
    m, he, flash = opened(5000)
    before = (desktop.json_state(m), bytes(flash.mem))
    read_req = he.read(0x00010000)
    for c in chunks:
        m.feed(c, T0)
        m.feed(read_req[: len(c) % len(read_req)], T0)  # half frames too
    for c in chunks:
        m.handle(c, T0)
    assert (desktop.json_state(m), bytes(flash.mem)) == before


def test_feed_cuts_frames_from_a_stream():
    m, _ = make()
    req = HE.read(0x00010000)
    stream = b"\x00\x68junk" + req + req[:7]
    out = []
    for i in range(0, len(stream), 3):
        out += m.feed(stream[i:i + 3], T0)
    assert len(out) == 1 and parse(out[0])[0] == 0x91
    out = m.feed(req[7:] + req * 3, T0)
    assert len(out) == 4


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 0x7F), st.binary(max_size=200), st.sampled_from([ADDR, "AAAAAAAAAAAA", "AAAAAAAA9012",
                                                                        "999999999999"]))
def test_any_well_formed_frame_leaves_money_and_relay_alone(ctrl, data, address):
    m, he, _ = opened(5000)
    keep = lambda: (m.wallet.dump(), m.relay.dump(), desktop.tariff_dump(m.tariff), m.energy, codec.addr_str(m.addr))  # noqa: E731
    before = keep()
    frame = headend(address=address).frame(ctrl, data)
    r = m.handle(frame, T0)
    if r is not None:
        protocol.parse_frame(r)
    assert keep() == before


def test_power_hold_release_re_sends_the_wallet_command():
    m, he, _ = opened(2000)
    assert ask(m, he.control(0x3A, T0 + 600))[0] == 0x9C
    m.add_energy(31000, T0)  # 15.50 yuan: into ALARM2, the pre-trip is refused under hold
    assert m.wallet.state == 2 and not m.relay_open
    assert ask(m, he.control(0x3B, T0 + 600))[0] == 0x9C
    assert m.relay_open  # released: the pending pre-trip happens now
    assert m.button(T0) and not m.relay_open


_WRITABLE = [0x04001001, 0x04001002, 0x04001003, 0x04001004, 0x04001005, 0x04001401, 0x04000101, 0x04000102,
             0x0400010C, 0x04000106, 0x04000107, 0x04000108, 0x04000109, 0x04000402, 0x04010000, 0x04010001,
             0x04010008, 0x04020003, 0x04050101, 0x04050204, 0x040501FF, 0x040502FF, 0x04060001, 0x04060006,
             0x040600FF, 0x04060101, 0x040601FF, 0x040602FF, 0x040603FF, 0x04060401, 0x040604FF, 0x04000501]


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.sampled_from(_WRITABLE), st.integers(0, 0xFFFFFFFF)), st.binary(max_size=40),
       st.integers(0, 0xFF), st.integers(0, 0xFF), st.integers(0, 3))
def test_any_authenticated_command_keeps_the_meter_serving(di, value, n1, n2, which):
    m, he, flash = opened(5000, bench=True)
    if which == 0:
        frame = he.write_plain(di, value)
    elif which == 1:
        frame = he.write(di, value)
    elif which == 2:
        frame = he.control(n1, T0 + 600, n2=n2)
    else:
        frame = he.frame(0x03, le(di, 4) + bytes(4) + value)
    r = m.handle(frame, T0)
    assert r is not None and protocol.parse_frame(r).control & 0x80
    m.add_energy(100, T0 + 1)
    m.tick(T0 + 2)
    assert read(m, 0x00900200)[0] == 0x91
    assert read(m, 0x040100FF)[0] == 0xB1
    again, _ = make(flash=flash, now=T0 + 3, bench=True)  # and what it saved powers up again
    a, b = desktop.json_state(again), desktop.json_state(m)
    assert [a[k] for k in "wtEs"] == [b[k] for k in "wtEs"]  # events: power-up may end a pre-trip
    assert read(again, 0x00010000, T0 + 3)[0] == 0x91


def test_a_write_the_flash_cannot_hold_is_refused_and_undone():
    from meter.desktop import RamFlash
    m, flash = make(flash=RamFlash(1280), bench=True)  # 640-byte records: a full tariff will not fit
    assert ask(m, HE.write_plain(0x04001001, bcd(2000, 4)))[0] == 0x94
    refused = 0
    for k in range(1, 9):
        pts = b"".join(bytes((1 + (p + k) % 4, p % 2 * 0x30, p + 5 if p < 5 else 0x10 + p - 5)) for p in range(14))
        ctrl, data = ask(m, HE.write_plain(0x04010000 + k, pts))
        if ctrl == 0xD4:
            assert data == b"\x01"
            refused += 1
            assert len(m.tariff.day_table(0, k - 1)) == 1  # undone in RAM too
    assert refused
    again, _ = make(flash=flash, bench=True)
    assert desktop.json_state(again) == desktop.json_state(m)
    assert m.wallet.alarm1 == 2000
