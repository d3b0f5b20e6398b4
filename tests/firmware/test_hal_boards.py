"""The ESP32 and RP2 HALs under the real micropython binary, against a fake `machine` module:
DL/T 645 bytes in and out of the UART with the RS-485 direction pin, the pulse interrupt, the
latching relay, the button, the watchdog, and state that survives a restart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meter import clock
from protocol import build_frame, parse_frame
from tests.mpy import run_micropython

FAKES = str(Path(__file__).parent / "fakes")
ADDR = "000000000001"
KEY = "00112233445566778899aabbccddeeff"
PINS = {"esp32": {"tx": 17, "rx": 16, "de": 4, "relay_set": 25, "relay_reset": 26, "relay_sense": 27,
                  "button": 0, "led": 2, "pulse": 32},
        "rp2": {"tx": 0, "rx": 1, "de": 2, "relay_set": 6, "relay_reset": 7, "relay_sense": 8,
                "button": 9, "led": 25, "pulse": 10}}

READ_ENERGY = build_frame(ADDR, 0x11, bytes.fromhex("00000100"))  # DI 00 01 00 00, forward active total
# 1CH trip (N1=1A) in a bench image: level 02, password 000000, operator 0, deadline 2026-06-02 00:00:00
TRIP = build_frame(ADDR, 0x1C, bytes([2, 0, 0, 0, 0, 0, 0, 0, 0x1A, 0, 0x00, 0x00, 0x00, 0x02, 0x06, 0x26]))
CLOSE = build_frame(ADDR, 0x1C, bytes([2, 0, 0, 0, 0, 0, 0, 0, 0x1C, 0, 0x00, 0x00, 0x00, 0x02, 0x06, 0x26]))
OTHER_METER = build_frame("000000000002", 0x11, bytes.fromhex("00000100"))


def _config(tmp: Path, board: str, **extra: object) -> None:
    cfg = {"board": board, "address": ADDR, "key": KEY, "mode": "remote", "bench": True, "pins": PINS[board],
           "imp_per_kwh": 100, "relay_pulse_ms": 10, "reply_delay_ms": 0, "button_ms": 50, **extra}
    (tmp / "config.json").write_text(json.dumps(cfg))


SCRIPT = r"""
import json, time, machine
from hal import config, {board} as halmod
meter_cfg, hw = config.load("config.json")
pins = hw["pins"]  # the board empties hw once it is wired
b = halmod.{cls}(meter_cfg, hw)
u = machine.uarts[0]
u.de = pins["de"]
P = machine.pins
presses = []
orig = b.meter.button
def press(now):
    presses.append(now)
    return orig(now)
b.meter.button = press
b.step()
for _ in range({pulses}):          # pulse edges from the metering chip
    P[pins["pulse"]].level(0)
    P[pins["pulse"]].level(1)
b.step()
for byte in bytes.fromhex("{other}"):   # a frame for another meter on the bus: no answer
    u.rx.append(byte)
    b.step()
for byte in bytes.fromhex("{read}"):    # arrives byte by byte, as a UART delivers it
    u.rx.append(byte)
    b.step()
u.rx.extend(bytes.fromhex("{trip}"))
b.step()
after_trip = b.meter.relay_open
u.rx.extend(bytes.fromhex("{close}"))
b.step()
btn = P[pins["button"]]
btn.level(0)
b.step()
time.sleep_ms(80)
b.step()
b.step()
btn.level(1)
b.step()
print(json.dumps({{
    "blocks": [[de, bytes(data).hex()] for de, data in u.blocks],
    "uart": list(u.args[:4]), "waits": u.waits,
    "de_writes": P[pins["de"]].writes,
    "set_writes": P[pins["relay_set"]].writes, "reset_writes": P[pins["relay_reset"]].writes,
    "after_trip": after_trip, "relay_open": b.meter.relay_open, "presses": len(presses),
    "sensed_open": b.meter.actual_open, "wdt_fed": machine.wdts[0].fed, "wdt_timeout": machine.wdts[0].timeout,
    "energy_wh": b.meter.status()["energy_wh"],
}}))
"""


def _run(tmp: Path, board: str, pulses: int, heapsize: str = "256K", end: str = "") -> dict:  # source: compiled here
    code = SCRIPT.format(board=board, cls={"esp32": "Esp32", "rp2": "Rp2"}[board], pulses=pulses,
                         other=OTHER_METER.hex(), read=READ_ENERGY.hex(), trip=TRIP.hex(), close=CLOSE.hex())
    code = code.replace("print(json.dumps({{", end + "\nprint(json.dumps({{") if end else code
    r = run_micropython(code, heapsize=heapsize, cwd=tmp, path=[FAKES])
    assert r.returncode == 0, r.stderr + r.stdout
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("board", ["esp32", "rp2"])
def test_board_serves_read_and_relay_commands(tmp_path: Path, board: str) -> None:
    _config(tmp_path, board)
    out = _run(tmp_path, board, pulses=7)  # 7 pulses at 100 imp/kWh = 70 Wh
    assert out["uart"] == [2400, 8, 0, 1]  # 2400 8E1 (parity 0 = even)
    assert out["energy_wh"] == 70
    replies = [parse_frame(bytes.fromhex(h)) for _, h in out["blocks"]]
    assert [f.control for f in replies] == [0x91, 0x9C, 0x9C]  # nothing for the other meter's frame
    read = replies[0]
    assert read.address == ADDR
    assert read.data[:4] == bytes.fromhex("00000100")
    assert read.data[4:8] == bytes([0x07, 0, 0, 0])  # 0.07 kWh, BCD XXXXXX.XX low byte first
    # every byte left with DE high, and DE fell after each reply (half duplex: listen again)
    assert all(de == 1 for de, _ in out["blocks"])
    assert out["de_writes"] == [1, 0] * 3
    assert out["waits"] >= 3
    # latching relay: the trip pulsed the reset coil once, the close pulsed the set coil
    assert out["after_trip"] is True
    assert out["reset_writes"][-2:] == [1, 0]
    assert out["set_writes"].count(1) == 2  # boot drive (closed) + the close command
    assert out["relay_open"] is False
    assert out["presses"] == 1  # one press per hold
    assert out["sensed_open"] is True  # fake sense pin idles high = open level 1
    assert out["wdt_timeout"] == 8000 and out["wdt_fed"] > 5


# the supply fails: the comparator pulls power_fail low, the next pass of the loop saves
SUPPLY_LOST = """
P[pins["power_fail"]].level(0)
b.step()
"""


def test_board_state_survives_restart(tmp_path: Path) -> None:
    _config(tmp_path, "esp32", pins={**PINS["esp32"], "power_fail": 34})
    first = _run(tmp_path, "esp32", pulses=3, end=SUPPLY_LOST)
    assert first["energy_wh"] == 30
    # one file per record slot, each holding one whole record (never the one-file layout)
    assert not (tmp_path / "state.bin").exists()
    assert 0 < (tmp_path / "state.bin.0").stat().st_size < 8192
    second = _run(tmp_path, "esp32", pulses=2)
    assert second["energy_wh"] == 50  # 30 Wh saved when the supply failed + 20 Wh metered now
    read = parse_frame(bytes.fromhex(second["blocks"][0][1]))
    assert read.data[4:8] == bytes([0x05, 0, 0, 0])


def test_board_splits_a_one_file_state_into_slot_files(tmp_path: Path) -> None:
    """A board whose state.bin was written by an earlier image keeps its balance and energy."""
    import os
    from hal.flash import open_state
    from meter.core import Meter
    flash = open_state(str(tmp_path / "state.bin"), 16384)
    m = Meter({"address": ADDR, "key": bytes.fromhex(KEY), "mode": "remote", "bench": True}, flash,
              clock.from_fields(2026, 6, 1, 0, 0, 0), os.urandom)
    m.add_energy(40, clock.from_fields(2026, 6, 1, 0, 0, 0))
    m.persist()
    flash.close()
    _config(tmp_path, "esp32")
    out = _run(tmp_path, "esp32", pulses=1)
    assert out["energy_wh"] == 50
    assert not (tmp_path / "state.bin").exists() and (tmp_path / "state.bin.1").exists()


def test_board_in_service_refuses_missing_state_and_retries(tmp_path: Path) -> None:
    _config(tmp_path, "rp2", in_service=True)
    r = run_micropython("from hal import rp2\nrp2.main('config.json', 300)", cwd=tmp_path, path=[FAKES])
    assert "meter cannot start" in r.stdout and "in service" in r.stdout
    assert "machine.reset()" in r.stderr  # started again after blinking, not left blinking forever
    assert "start StateError" in (tmp_path / "faults.log").read_text()


def test_board_without_config_retries(tmp_path: Path) -> None:
    r = run_micropython("from hal import esp32\nesp32.main('config.json', 0)", cwd=tmp_path, path=[FAKES])
    assert "config file config.json is missing" in r.stdout and "machine.reset()" in r.stderr


BOOT = """
import machine
machine.levels.update({levels})
from hal import {board}
{board}.main('config.json', 0)
print("returned", len(machine.wdts))
"""


@pytest.mark.parametrize("how", ["file", "button"])
def test_boot_escape_starts_neither_watchdog_nor_loop(tmp_path: Path, how: str) -> None:
    _config(tmp_path, "esp32")
    if how == "file":
        (tmp_path / "maintenance").touch()  # what `meter flash` writes with mpremote
    levels = {PINS["esp32"]["button"]: 0} if how == "button" else {}
    r = run_micropython(BOOT.format(board="esp32", levels=levels), cwd=tmp_path, path=[FAKES])
    assert r.returncode == 0, r.stderr
    assert "meter not started (maintenance" in r.stdout
    assert "returned 0" in r.stdout  # back at the REPL, and no watchdog was ever started


CRASH = """
import machine, json
from hal import config, esp32
meter_cfg, hw = config.load("config.json")
b = esp32.Esp32(meter_cfg, hw)
def broken(now):
    raise ValueError("a bug in the loop")
b.meter.tick = broken
try:
    b.run()
except SystemExit as e:
    print("reset", e)
"""


def test_main_loop_exception_is_logged_kept_as_an_event_and_resets(tmp_path: Path) -> None:
    _config(tmp_path, "esp32")
    r = run_micropython(CRASH, cwd=tmp_path, path=[FAKES])
    assert "reset machine.reset()" in r.stdout, r.stdout + r.stderr
    log = (tmp_path / "faults.log").read_text()
    assert "loop ValueError: " in log and "a bug in the loop" in log
    # after the restart the head-end reads the fault as an event (DI 033F0001: time, code 2, CRC)
    import binascii
    line = log.strip().splitlines()[-1]
    crc = binascii.crc32(line.split(" ", 1)[1].encode())
    code = (
        "import machine, json\nfrom hal import config, esp32\nmeter_cfg, hw = config.load('config.json')\n"
        "b = esp32.Esp32(meter_cfg, hw)\nu = machine.uarts[0]\n"
        f"u.rx.extend(bytes.fromhex('{build_frame(ADDR, 0x11, bytes.fromhex('01003f03')).hex()}'))\n"
        "b.step()\nprint(bytes(u.tx).hex())\n")
    r = run_micropython(code, cwd=tmp_path, path=[FAKES])
    reply = parse_frame(bytes.fromhex(r.stdout.strip().splitlines()[-1]))
    assert reply.control == 0x91 and reply.data[:4] == bytes.fromhex("01003f03")
    assert reply.data[4 + 6] == 2 and int.from_bytes(reply.data[4 + 7:4 + 11], "little") == crc


def test_board_without_config_says_which_file(tmp_path: Path) -> None:
    r = run_micropython("from hal import esp32\nesp32.main('config.json', 0)", cwd=tmp_path, path=[FAKES])
    assert r.returncode != 0
    assert "config file config.json is missing" in r.stdout


def test_board_with_wrong_pin_names_it(tmp_path: Path) -> None:
    _config(tmp_path, "rp2", pins={**PINS["rp2"], "de": "GP2"})
    r = run_micropython("from hal import rp2\nrp2.main('config.json', 0)", cwd=tmp_path, path=[FAKES])
    assert r.returncode != 0
    assert "pins.de must be a GPIO number" in r.stdout


# What each port's RTC reads after a reset: the RP2040's restarts at 2021-01-01 after every reset
# (a watchdog reset too), the ESP32's at 2000-01-01 after a power cut (machine.RTC weekday 0 = Monday)
RESET_RTC = {"rp2": (2021, 1, 1, 4, 0, 0, 0, 0), "esp32": (2000, 1, 1, 5, 0, 0, 0, 0)}
BOOT_AT = """
import machine
machine.RTC.now = {rtc}
machine.I2C.devices.update({{k: bytearray(v) for k, v in {chips}.items()}})
from hal import config, {board} as halmod
meter_cfg, hw = config.load('config.json')
b = halmod.{cls}(meter_cfg, hw)
print(machine.RTC.now[:3], b.now(), {{k: bytes(v[:16]).hex() for k, v in machine.I2C.devices.items()}})
"""


def _boot_at(tmp: Path, board: str, rtc: tuple, chips: dict | None = None) -> tuple[str, int, dict]:
    code = BOOT_AT.format(rtc=rtc, board=board, cls={"esp32": "Esp32", "rp2": "Rp2"}[board], chips=chips or {})
    r = run_micropython(code, cwd=tmp, path=[FAKES])
    assert r.returncode == 0, r.stderr + r.stdout
    line = r.stdout.strip().splitlines()[-1]
    date, rest = line.split(") ", 1)
    now, regs = rest.split(" ", 1)
    return date + ")", int(now), eval(regs)  # noqa: S307 - our own printed dict of hex strings


@pytest.mark.parametrize("board", ["rp2", "esp32"])
def test_board_resumes_saved_time_when_rtc_reads_earlier(tmp_path: Path, board: str) -> None:
    _config(tmp_path, board)
    _run(tmp_path, board, pulses=1)  # runs at the fake RTC's 2026-06-01 12:00 and saves
    saved = clock.from_fields(2026, 6, 1, 12, 0, 0)
    date, now, _ = _boot_at(tmp_path, board, RESET_RTC[board])
    assert date == "(2026, 6, 1)"  # the RTC was set to the last saved time
    assert saved <= now < saved + 60
    # an RTC that reads later than the saved time (it kept running) is left alone
    date, now, _ = _boot_at(tmp_path, board, (2026, 7, 1, 2, 8, 0, 0, 0))
    assert date == "(2026, 7, 1)" and now == clock.from_fields(2026, 7, 1, 8, 0, 0)


@pytest.mark.parametrize("board", ["rp2", "esp32"])
def test_a_new_meter_whose_rtc_reads_before_2024_starts_at_the_meter_epoch(tmp_path: Path, board: str) -> None:
    # nothing saved yet, the RTC at its reset value (2021 or 2000): the meter's count starts at 0,
    # never below it, and the RTC is set to 2024-01-01
    _config(tmp_path, board)
    date, now, _ = _boot_at(tmp_path, board, RESET_RTC[board])
    assert date == "(2024, 1, 1)" and 0 <= now < 60


def _bcd(v: int) -> int:
    return (v // 10) << 4 | v % 10


def _ds3231(y, mo, d, h, mi, s, lost=False) -> bytes:
    regs = bytearray(256)
    regs[0:7] = bytes((_bcd(s), _bcd(mi), _bcd(h), 1, _bcd(d), _bcd(mo), _bcd(y - 2000)))
    regs[0x0F] = 0x80 if lost else 0
    return bytes(regs)


def _pcf8563(y, mo, d, h, mi, s, lost=False) -> bytes:
    regs = bytearray(256)
    regs[2:9] = bytes((_bcd(s) | (0x80 if lost else 0), _bcd(mi), _bcd(h), _bcd(d), 0, _bcd(mo), _bcd(y - 2000)))
    return bytes(regs)


@pytest.mark.parametrize("chip, addr, regs", [("ds3231", 0x68, _ds3231), ("pcf8563", 0x51, _pcf8563)])
def test_board_keeps_time_on_a_battery_backed_rtc_chip(tmp_path: Path, chip: str, addr: int, regs) -> None:
    _config(tmp_path, "rp2", rtc=chip, pins={**PINS["rp2"], "sda": 4, "scl": 5})
    # the chip kept time through the reset; the RP2040's own RTC restarted at 2021
    _, now, _ = _boot_at(tmp_path, "rp2", RESET_RTC["rp2"], {addr: regs(2026, 6, 3, 14, 30, 5)})
    assert now == clock.from_fields(2026, 6, 3, 14, 30, 5)
    # a chip that lost its time (battery flat) resumes from the saved time and is set to it
    _, now, after = _boot_at(tmp_path, "rp2", RESET_RTC["rp2"], {addr: regs(2000, 1, 1, 0, 0, 0, lost=True)})
    saved = clock.from_fields(2026, 6, 3, 14, 30, 5)
    assert saved <= now < saved + 60
    r = bytes.fromhex(after[addr])
    set_at = (r[0:7] if chip == "ds3231" else r[2:9])
    y, mo, d = (set_at[6], set_at[5], set_at[4]) if chip == "ds3231" else (set_at[6], set_at[5], set_at[3])
    assert (y, mo, d) == (0x26, 0x06, 0x03)  # the chip now holds the resumed date (BCD)
    assert not (set_at[0] & 0x80 if chip == "pcf8563" else r[0x0F] & 0x80)  # and is marked good


def test_rtc_chip_needs_its_i2c_pins() -> None:
    from hal import config
    with pytest.raises(config.ConfigError, match="rtc ds3231 needs pins.sda"):
        config.check({"address": ADDR, "key": KEY, "board": "rp2", "pins": PINS["rp2"], "rtc": "ds3231"}, "c.json")
    with pytest.raises(config.ConfigError, match="rtc must be one of internal, ds3231, pcf8563"):
        config.check({"address": ADDR, "key": KEY, "board": "rp2", "pins": PINS["rp2"], "rtc": "m41t81"}, "c.json")