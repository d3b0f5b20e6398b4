"""Power-fail-safe storage: two alternating records with sequence and CRC; a power cut at
any byte of any write during top-ups, deductions and relay changes leaves the meter, after
a restart, exactly in its old or its new state."""

import json

import pytest

from meter import desktop, disrec, tariffcheck
from meter.desktop import RamFlash
from meter.store import Store
from tests.firmware.core_support import T0, as_written_from_2000, ask, headend, make, opened, serr, session


class PowerCut(Exception):
    pass


class CutFlash(RamFlash):
    """A flash chip whose supply fails at byte `k` of write number `at` (1 = the next write)."""

    def __init__(self, mem):
        super().__init__(len(mem))
        self.mem = bytearray(mem)
        self.at = 0
        self.k = 0
        self.writes = []

    def arm(self, at, k):
        self.at, self.k = at, k

    def write(self, offset, data):
        self.writes.append(len(data))
        if self.at:
            self.at -= 1
            if self.at == 0:
                for i in range(self.k):  # the first k bytes made it, then nothing
                    self.mem[offset + i] = data[i]
                raise PowerCut(offset + self.k)
        super().write(offset, data)


def test_blank_flash_and_alternating_records():
    f = RamFlash(1024)
    s = Store(f)
    assert s.load() is None
    desktop.save(s, {"v": 1})
    desktop.save(s, {"v": 2})
    desktop.save(s, {"v": 3})
    s2 = Store(f)
    assert s2.load() == {"v": 3} and s2.seq == 3
    desktop.save(s2, {"v": 4})
    assert s2.slot != s.slot or s2.seq == 4
    assert Store(f).load() == {"v": 4}


def test_crc_guards_each_record():
    f = RamFlash(1024)
    s = Store(f)
    desktop.save(s, {"v": 1})
    desktop.save(s, {"v": 2})
    f.mem[512 + 12] ^= 0x01  # a bit flip inside the newer record (slot 1)
    assert Store(f).load() == {"v": 1}
    f.mem[12] ^= 0x01
    assert Store(f).load() is None


def test_state_too_big_is_refused_without_writing():
    f = RamFlash(64)
    before = bytes(f.mem)
    with pytest.raises(ValueError):
        desktop.save(Store(f), {"v": "x" * 100})
    assert bytes(f.mem) == before


def test_torn_store_write_at_every_byte():
    base = RamFlash(1024)
    s = Store(base)
    desktop.save(s, {"balance": 100, "count": 1})
    desktop.save(s, {"balance": 90, "count": 1})
    new = {"balance": 5090, "count": 2}
    ref = CutFlash(base.mem)
    st = Store(ref)
    st.load()
    desktop.save(st, new)
    sizes = ref.writes
    assert len(sizes) == 3 and sum(sizes) == len(json.dumps(new)) + 12  # header, JSON, CRC
    for w, size in enumerate(sizes, 1):
        for k in range(size + 1):
            f = CutFlash(base.mem)
            st = Store(f)
            st.load()
            f.arm(w, k)
            try:
                desktop.save(st, new)
            except PowerCut:
                pass
            done = w == len(sizes) and k == size
            assert Store(f).load() == (new if done else {"balance": 90, "count": 1}), (w, k)


# --- whole-meter power cuts ----------------------------------------------------------------

def _logical(m):
    # the state the cut must leave old or new; a FAULT event the restart records for the torn
    # record (this flash writes in place, so a cut tears the record being written) is checked
    # by the fallback tests, not here
    from meter import events
    s = desktop.json_state(m)
    counts, recs = s["e"]
    s["e"] = [counts[:events.FAULT], recs[:events.FAULT]]
    return s


def _cut_everywhere(prepare, op, after_restart=None, stride=1):
    """prepare() -> (meter, flash); op(meter) performs the operation. For each write the
    operation makes and each byte k of it, cut power there, restart, and check the state is
    exactly the old or the new one. Returns how many restarts were checked."""
    m, flash = prepare()
    image = bytes(flash.mem)
    old = _logical(m)
    ref_flash = CutFlash(image)
    ref, _ = make(flash=ref_flash)
    ref_flash.writes.clear()
    op(ref)
    new = _logical(ref)
    assert new != old, "the operation changed nothing"
    sizes = list(ref_flash.writes)
    assert sizes, "the operation wrote nothing"
    checked = 0
    for w, size in enumerate(sizes, 1):
        for k in list(range(0, size + 1, stride)) + [size]:
            f = CutFlash(image)
            mm, _ = make(flash=f)
            f.arm(w, k)
            try:
                op(mm)
            except PowerCut:
                pass
            f.arm(0, 0)
            back, _ = make(flash=f)
            got = _logical(back)
            assert got in (old, new), (w, k)
            assert back.relay_open == back.relay.commanded_open
            if after_restart:
                after_restart(back, got == new)
            checked += 1
    return checked


def test_power_cut_during_recharge_then_retry_credits_exactly_once():
    def prepare():
        m, he, flash = opened(1000)
        return m, flash

    def op(m):
        he = session(m, headend(), T0, r1=b"\x33" * 8)
        he.seq = 0
        ask(m, he.purchase(2500, 2, "000000000042"))

    def retry(back, applied):
        he = session(back, headend(), T0, r1=b"\x44" * 8)
        r = ask(back, he.purchase(2500, 2, "000000000042"))
        if applied:
            assert serr(r) == 2  # repeat recharge: the head-end counts it as done
        else:
            assert r[0] == 0x83
        st = back.status()
        assert (st["balance_fen"], st["count"], st["total_bought"]) == (3500, 2, 3500)
        assert back.events.counts[2] == 2  # one purchase record per credited top-up

    assert _cut_everywhere(prepare, op, retry) > 100


def test_power_cut_during_deduction_that_pre_trips():
    def prepare():
        m, he, flash = opened(510)  # just above alarm 2 (5.00 yuan)
        return m, flash

    def op(m):
        m.add_energy(300, T0)  # 0.15 yuan: into ALARM2, local pre-trip

    def check(back, applied):
        st = back.status()
        assert back.relay_open == applied
        assert st["balance_fen"] == (510 - 15 if applied else 510)
        assert st["energy_wh"] == (300 if applied else 0)

    _cut_everywhere(prepare, op, check)


def test_power_cut_during_relay_command_and_button():
    def prepare():
        m, he, flash = opened(100000)
        return m, flash

    def trip(m):
        he = session(m, headend(), T0, r1=b"\x55" * 8)
        ask(m, he.control(0x1A, T0 + 600, op=7))

    def check(back, applied):
        assert back.relay_open == applied
        assert back.events.counts[0] == (1 if applied else 0)

    _cut_everywhere(prepare, trip, check)

    def prepare_permit():
        m, he, flash = opened(100000)
        ask(m, he.control(0x1A, T0 + 600))
        ask(m, he.control(0x1B, T0 + 600))
        assert m.relay_open
        return m, flash

    def press(m):
        assert m.button(T0)

    def check_button(back, applied):
        assert back.relay_open == (not applied)

    _cut_everywhere(prepare_permit, press, check_button, stride=3)


def test_power_cut_during_key_update_leaves_exactly_one_working_key():
    new_key = bytes(range(200, 216))

    def prepare():
        m, he, flash = opened(1000)
        return m, flash

    def op(m):
        he = session(m, headend(), T0, r1=b"\x66" * 8)
        ask(m, he.key_update(1, new_key))

    def check(back, applied):
        def gets_in(key, r1):
            he = headend(key=key)
            he.challenged(back.handle(he.challenge(), T0))
            return ask(back, he.auth(r1))[0] == 0x83

        old_ok = gets_in(headend().key, b"\x77" * 8)
        new_ok = gets_in(new_key, b"\x78" * 8)
        assert (old_ok, new_ok) == ((False, True) if applied else (True, False))
        assert back.status()["krn"] == (1 if applied else 0)

    _cut_everywhere(prepare, op, check, stride=7)


# --- text copied from the newest record ----------------------------------------------------

def test_text_copied_from_the_newest_record_survives_switch_overs_and_restarts():
    """The meter copies its tariff's and event log's text from the newest record while they
    stand; a set switch-over rolled by tick() (no event logged), a restart (the first save after
    it copies both) and a write through a setter must all come back exactly."""
    from meter.tariff import _SW_PRICES as SW_PRICES

    m, he, flash = opened(5000, save_wh=1)  # every Wh saved: each add_energy writes a record
    tariffcheck.set_prices(m.tariff, 1, [7000, 6000, 5000, 4000])
    tariffcheck.set_switch(m.tariff, SW_PRICES, T0 + 60)
    m.add_energy(10, T0)
    m.add_energy(10, T0 + 30)    # tariff and events unchanged: both copied
    m.tick(T0 + 61)              # set 1 prices become current: tariff text rebuilt, events copied
    m.add_energy(10, T0 + 62)
    assert m.tariff.prices[0] == [7000, 6000, 5000, 4000]
    again, _ = make(flash, now=T0 + 62, save_wh=1)  # at the instant of the last save: last_t stays
    assert desktop.json_state(again) == desktop.json_state(m)
    again.add_energy(5, T0 + 64)  # first save after power-up: both texts copied from the record
    tariffcheck.set_prices(again.tariff, 1, [1, 2, 3, 4])  # a setter marks the tariff text stale
    again.add_energy(5, T0 + 65)
    third, _ = make(flash, now=T0 + 65)
    assert desktop.json_state(third) == desktop.json_state(again)
    assert third.tariff.prices[1] == [1, 2, 3, 4]
    st = Store(flash)
    assert "t" not in st.load() and st.payload(0, 1) == b"\x02"  # tables in the binary head


# --- the record's packed binary head ----------------------------------------------------------

def _programmed():
    """An opened meter with every kind of tariff field and event value the head must carry:
    holidays past one piece of 16, a ladder without thresholds in set 1, switch times, a
    weekend, a negative balance, the meter's own operator code and values past 32 bits."""
    from meter import events
    from meter.tariff import _SW_DAYS as SW_DAYS, _SW_LADDER as SW_LADDER

    m, he, flash = opened(5000)
    tf = m.tariff
    tariffcheck.set_day_table(tf, 1, 3, [(m_, m_ // 60 % 4) for m_ in range(0, 1400, 100)])
    tariffcheck.set_zones(tf, 0, [(mo, 1, mo % 8) for mo in range(1, 13)])
    tariffcheck.set_ladder(tf, 1, [], [7])
    tariffcheck.set_switch(tf, SW_DAYS, T0 + 10 * 86400)
    tariffcheck.set_switch(tf, SW_LADDER, T0 + 20 * 86400)
    tariffcheck.set_weekend(tf, 0x41, 5)
    tariffcheck.set_holidays(tf, [(2026, 1 + k // 28, 1 + k % 28, k % 8) for k in range(37)])
    tariffcheck.set_settlement(tf, [(1, 1, 0), (7, 15, 12)])
    m.events.add(events.PURCHASE, (T0, 2, 100, -900, -800, 2 ** 40))
    m.events.add(events.TRIP, (T0, events.METER, 2 ** 33 + 5, 0))
    m.add_energy(10, T0)
    m.persist()
    return m, flash


def _head(flash):
    st = Store(flash)
    st.load()
    return st.payload(0, 1)  # the newest record's first byte: "{" JSON, 2 packed head (1: times from 2000)


def test_packed_head_round_trips_every_field():
    m, flash = _programmed()
    st = Store(flash)
    assert "t" not in st.load() and st.payload(0, 1) == b"\x02"
    back, _ = make(flash)
    assert desktop.json_state(back) == desktop.json_state(m)
    assert tariffcheck.holiday_list(back.tariff) == tariffcheck.holiday_list(m.tariff) and len(back.tariff.holidays) == 37
    assert back.tariff.rate_at(T0 + 11 * 86400) == m.tariff.rate_at(T0 + 11 * 86400)


def test_a_json_record_still_loads_and_is_rewritten_packed():
    """Records written before the binary head (the whole state as one JSON object) load as
    they were; the save at power-up rewrites them in the packed form."""
    m, flash = _programmed()
    old = desktop.json_state(m)
    desktop.save(m.store, as_written_from_2000(old))  # the JSON layout earlier firmware wrote
    assert _head(flash) == b"{"
    back, _ = make(flash)
    assert desktop.json_state(back) == old
    assert _head(flash) == b"\x02"
    again, _ = make(flash)
    assert desktop.json_state(again) == old


def test_a_record_of_unknown_format_is_refused_not_reset(tmp_path):
    from hal.flash import StateError, open_state

    m, flash = _programmed()
    desktop.save_parts(m.store, [b"\x03\x00\x00{}"])  # intact (CRC right) but of a format not known here
    with pytest.raises(ValueError, match="unknown format"):
        Store(flash).load()
    with pytest.raises(ValueError):
        make(flash)  # never a new meter with a zero balance
    path = tmp_path / "meter.state"
    path.write_bytes(bytes(flash.mem))
    with pytest.raises(StateError, match="meter.state"):
        open_state(str(path), 16384, create=False)


def test_power_cut_during_a_tariff_write_that_repacks_the_head():
    days = bytes.fromhex("010000" "023007" "031512" "040020")  # rate, mm, hh: 4 points (BCD)

    def prepare():
        m, he, flash = opened(1000)
        return m, flash

    def op(m):
        he = session(m, headend(), T0, r1=b"\x21" * 8)
        assert ask(m, he.write(0x04010001, days))[0] == 0x94

    def check(back, applied):
        assert len(back.tariff.day_table(0, 0)) == (4 if applied else 1)

    assert _cut_everywhere(prepare, op, check, stride=5) > 50


# --- the energy save policy ------------------------------------------------------------------

def _restart(flash, now):
    """A meter powered up from a copy of flash (the original meter keeps writing its own)."""
    copy = RamFlash(flash.size)
    copy.mem[:] = flash.mem
    return make(copy, now=now)


def test_energy_alone_is_saved_by_threshold_or_time_and_a_cut_loses_at_most_the_threshold():
    m, flash = make(save_wh=100, save_s=900)
    m.add_energy(60, T0)
    m.add_energy(39, T0 + 10)  # 99 Wh unsaved: no record written for them
    assert _restart(flash, now=T0 + 20)[0].status()["energy_wh"] == 0
    m.add_energy(1, T0 + 20)  # the 100th Wh: saved
    assert _restart(flash, now=T0 + 21)[0].status()["energy_wh"] == 100
    m.add_energy(5, T0 + 30)
    m.tick(T0 + 929)  # 899 s after the first unsaved Wh: not yet
    assert _restart(flash, now=T0 + 929)[0].status()["energy_wh"] == 100
    m.tick(T0 + 930)
    assert _restart(flash, now=T0 + 930)[0].status()["energy_wh"] == 105
    m.add_energy(7, T0 + 931)
    assert m.persist() and not m.persist()  # the supply-loss save; then nothing is left to save
    assert _restart(flash, now=T0 + 932)[0].status()["energy_wh"] == 112


def test_a_local_meter_saves_at_once_when_its_balance_changes_state():
    """Energy that trips (or alarms) a local meter is saved with the relay change it causes."""
    m, he, flash = opened(100, save_wh=1000)  # 1.00 yuan
    m.add_energy(1, T0)
    assert _restart(flash, now=T0 + 1)[0].status()["energy_wh"] == 0  # policy: not yet saved
    wh = 0
    while m.status()["state"] == _restart(flash, now=T0 + 1)[0].status()["state"] and wh < 1000:
        m.add_energy(10, T0 + 2)
        wh += 10
    back = _restart(flash, now=T0 + 3)[0]
    assert back.status()["state"] == m.status()["state"]  # the change was saved with its energy
    assert back.status()["energy_wh"] == m.status()["energy_wh"]


# --- a fallback to the older record is an event the head-end reads --------------------------

def test_damaged_newest_record_falls_back_with_an_event_and_status_word_1():
    from meter import events
    m, he, flash = opened(5000)
    assert ask(m, he.purchase(1000, 2, "000000000042"))[0] == 0x83
    st = Store(flash)
    st.load()
    assert not st.fell_back
    flash.mem[st.slot * st.half + 40] ^= 0x04  # one bit of the newest record (the recharge)
    back, _ = make(flash, now=T0 + 60)
    assert back.status()["count"] == 1 and back.status()["balance_fen"] == 5000  # one recharge back
    r = disrec.last(back.events, events.FAULT, 1)
    assert r[0] == T0 + 60 and r[1] == events.FALLBACK
    ctrl, data = ask(back, headend().read(0x033F0001))
    assert ctrl == 0x91 and data[4 + 6] == events.FALLBACK
    assert ask(back, headend().read(0x033F0000))[1][4:7] == b"\x01\x00\x00"  # one fault, BCD
    sw1 = ask(back, headend().read(0x04000501))[1]
    assert sw1[4] | sw1[5] << 8 == 0x2000  # memory_fault
    # restarting again: the power-up save rewrote the damaged slot, no second fault
    again, _ = make(flash, now=T0 + 120)
    assert again.events.counts[events.FAULT] == 1


def test_a_first_save_beside_a_blank_slot_is_no_fallback():
    from meter import events
    m, flash = make()
    back, _ = make(flash)
    assert back.events.counts[events.FAULT] == 0


def test_erased_state_of_a_meter_in_service_is_refused(tmp_path):
    from hal.flash import StateError, open_state
    path = tmp_path / "meter.state"
    path.write_bytes(b"\xff" * 16384)  # erased: what a flash wipe or a lost file leaves
    open_state(str(path), 16384).close()  # a new meter may start from it
    with pytest.raises(StateError, match="erased .* in service"):
        open_state(str(path), 16384, create=False)


class FlushLog(RamFlash):
    """A flash object that logs its writes ("w") and flushes ("s") in order."""

    def __init__(self, size):
        super().__init__(size)
        self.log = []

    def write(self, offset, data):
        self.log.append("w")
        super().write(offset, data)

    def sync(self):
        self.log.append("s")


def test_each_record_reaches_flash_in_one_flush_after_its_last_byte():
    # littlefs rewrites a file from its first changed block on at every flush: a record flushed
    # part by part (header, each part, CRC) cost 85 block erases per Wh. One flush per record, and
    # only once the record is whole: a record, a purchase and a write each flush exactly once.
    flash = FlushLog(16384)
    m, _ = make(flash=flash)
    he = headend()
    session(m, he)
    seq0 = m.store.seq
    del flash.log[:]
    m.add_energy(100, T0)  # the energy save policy's threshold: one record
    ask(m, he.purchase(5000, 1, "000000000042"))
    ask(m, he.write(0x04001001, bytes.fromhex("00150000")))
    records = m.store.seq - seq0
    assert records >= 3
    text = "".join(flash.log)
    assert text.count("s") == records
    assert all(part.startswith("w") for part in text.split("s")[:-1])  # each flush ends a record's writes
    assert text.endswith("s")
