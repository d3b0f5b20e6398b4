"""HAL building blocks: the image config, the state file, the load model, the frame splitter."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal import config
from hal.flash import FileFlash, StateError, open_state
from hal.load import RESIDENTIAL_W, Energy, LoadModel
from hal.sim import SimClock, frames_of, parse_endpoint, parse_time
from meter.codec import Deframer
from meter.core import Meter
from protocol import build_frame
from tests.mpy import run_micropython

KEY = "00112233445566778899aabbccddeeff"
GOOD = {"address": "000000000001", "key": KEY}
PINS = {"tx": 17, "rx": 16, "de": 4, "relay_set": 25, "relay_reset": 26, "relay_sense": 27, "button": 0,
        "led": 2, "pulse": 32}
RP2_PINS = {"tx": 0, "rx": 1, "de": 2, "relay_set": 6, "relay_reset": 7, "relay_sense": 8, "button": 9,
            "led": 25, "pulse": 10}


# ---- config -------------------------------------------------------------------------------------
def test_config_gives_core_fields_and_defaults() -> None:
    meter_cfg, hw = config.check(dict(GOOD, krn=3, mode="remote"), "c.json")
    assert meter_cfg == {"address": "000000000001", "key": bytes.fromhex(KEY), "krn": 3, "mode": "remote",
                         "bench": False, "meter_number": "000000000001", "save_wh": 100, "save_s": 900}
    assert hw["board"] == "sim" and hw["baud"] == 2400 and hw["parity"] == "E" and hw["state_size"] == 16384


@pytest.mark.parametrize("change, words", [
    ({"address": "12345"}, "address must be 12 decimal digits"),
    ({"address": "99999999999A"}, "address must be 12 decimal digits"),
    ({"address": "999999999999"}, "broadcast address"),
    ({"key": "00" * 16}, "all zeros"),
    ({"key": "abc"}, "32 hex digits"),
    ({"krn": 256}, "krn must be an integer 0..255"),
    ({"mode": "prepaid"}, "mode must be"),
    ({"bench": "yes"}, "bench must be true or false"),
    ({"board": "esp8266"}, "board must be one of"),
    ({"board": "esp32"}, "needs \"pins\""),
    ({"board": "rp2", "pins": dict(PINS, pulse=None)}, "pins.pulse must be a GPIO number"),
    ({"baud": 2400.0}, "baud must be an integer"),
    ({"board": "rp2", "pins": RP2_PINS, "wdt_ms": 10000}, "at most 8388 on an RP2040"),
])
def test_config_faults_name_file_and_field(change: dict, words: str) -> None:
    with pytest.raises(config.ConfigError) as e:
        config.check(dict(GOOD, **change), "/flash/config.json")
    assert "config file /flash/config.json" in str(e.value)
    assert words in str(e.value)


C3 = "ESP32C3 module with ESP32C3"
WROVER = "Generic ESP32 module with SPIRAM with ESP32"
C3_PINS = {"tx": 21, "rx": 20, "de": 4, "relay_set": 5, "relay_reset": 6, "relay_sense": 7, "button": 10,
           "led": 3, "pulse": 1}


@pytest.mark.parametrize("cfg, machine, words", [
    (dict(GOOD, board="esp32", pins=C3_PINS, uart=2), C3, "uart 2 does not exist on the ESP32C3 (UART0..UART1); "
                                                           "build with --uart 1"),
    (dict(GOOD, board="esp32", pins=PINS, uart=1), C3, "pins.relay_set = GPIO25 does not exist on the ESP32C3"),
    (dict(GOOD, board="esp32", pins=dict(PINS, relay_set=34)), None, "pins.relay_set = GPIO34 is input-only"),
    (dict(GOOD, board="rp2", pins=RP2_PINS, uart=2), "Raspberry Pi Pico with RP2040", "uart 2 does not exist on the RP2040"),
    (dict(GOOD, board="rp2", pins=RP2_PINS, uart=2), None, "uart 2 does not exist on the RP2040"),
])
def test_config_is_checked_against_the_chip(cfg: dict, machine: str | None, words: str) -> None:
    with pytest.raises(config.ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        config.check(cfg, "config.json", machine)


def test_config_defaults_and_warnings_per_chip() -> None:
    # no UART2 on a C3: a config without "uart" gets UART1 there, UART2 on a classic ESP32
    assert config.check(dict(GOOD, board="esp32", pins=C3_PINS), "c.json", C3)[1]["uart"] == 1
    _, hw = config.check(dict(GOOD, board="esp32", pins=PINS), "c.json", WROVER)
    assert hw["uart"] == 2 and hw["uart"] == config.DEFAULTS["esp32"]["uart"]
    warned = " | ".join(hw["warnings"])
    assert "pins.button = GPIO0 is a strapping pin of the ESP32: held low while the board resets it starts the ROM" \
        in warned
    assert "pins.tx = GPIO17 is wired to the PSRAM on WROVER modules" in warned and "GPIO16" in warned
    assert "pins.led = GPIO2 is a strapping pin" in warned
    # a WROOM (no SPIRAM in its name) has GPIO16/17 free
    _, hw = config.check(dict(GOOD, board="esp32", pins=PINS), "c.json", "Generic ESP32 module with ESP32")
    assert not any("PSRAM" in w for w in hw["warnings"])


def test_config_without_key_refuses() -> None:
    with pytest.raises(config.ConfigError, match="no meter key"):
        config.check({"address": "000000000001"}, "c.json")


def test_config_file_missing_or_corrupt(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match=r"config file .*nope.json is missing"):
        config.load(str(tmp_path / "nope.json"))
    bad = tmp_path / "config.json"
    bad.write_text('{"address": "000000000001", "key": ')
    with pytest.raises(config.ConfigError, match=r"config.json is corrupt: not valid JSON"):
        config.load(str(bad))
    bad.write_text(json.dumps(dict(GOOD, board="esp32", pins=PINS)))
    assert config.load(str(bad))[1]["pins"] == PINS


# ---- state file -----------------------------------------------------------------------------------
def test_file_flash_creates_blank_and_keeps_bytes(tmp_path: Path) -> None:
    p = str(tmp_path / "s.bin")
    f = FileFlash(p, 1024)
    assert f.created and f.blank() and os.path.getsize(p) == 1024
    f.write(100, b"hello")
    f.close()
    g = FileFlash(p, 1024)
    assert not g.created and not g.blank() and g.read(98, 9) == b"\xff\xffhello\xff\xff"
    with pytest.raises(ValueError):
        g.write(1020, b"12345")


def test_file_flash_refuses_wrong_size_and_missing_when_asked(tmp_path: Path) -> None:
    p = tmp_path / "s.bin"
    p.write_bytes(b"\xff" * 1000)
    with pytest.raises(StateError, match=r"s.bin is 1000 bytes, expected 1024: it is truncated"):
        FileFlash(str(p), 1024)
    with pytest.raises(StateError, match="is missing; refusing to start a blank meter"):
        FileFlash(str(tmp_path / "other.bin"), 1024, create=False)


def _meter_with_energy(path: str, wh: int) -> None:
    flash = open_state(path, 16384)
    m = Meter({"address": "000000000001", "key": bytes.fromhex(KEY)}, flash, 1000, os.urandom)
    m.add_energy(wh, 1000)
    m.persist()  # a clean stop (or the supply-loss save): under the save policy's threshold
    flash.close()


def _energy(path: str) -> int:
    flash = open_state(path, 16384)
    try:
        return Meter({"address": "000000000001", "key": bytes.fromhex(KEY)}, flash, 1001, os.urandom).status()["energy_wh"]
    finally:
        flash.close()


def test_state_with_one_damaged_record_falls_back(tmp_path: Path) -> None:
    p = str(tmp_path / "s.bin")
    _meter_with_energy(p, 5)
    _meter_with_energy(p, 7)  # 12 Wh now, in the newer record; the older holds 5 Wh
    data = bytearray(Path(p).read_bytes())
    # find the newer record (higher sequence) and damage it; the older one must be used
    seqs = [int.from_bytes(data[h + 2:h + 6], "little") if data[h:h + 2] == b"P6" else -1 for h in (0, 8192)]
    newest = (0, 8192)[seqs.index(max(seqs))]
    data[newest + 20] ^= 0xFF
    Path(p).write_bytes(bytes(data))
    assert _energy(p) == 5
    assert _energy(p) == 5  # and the next start keeps it (the good record was rewritten)


@pytest.mark.parametrize("damage", ["both", "zeros"])
def test_state_with_no_intact_record_refuses_to_start(tmp_path: Path, damage: str) -> None:
    p = str(tmp_path / "s.bin")
    _meter_with_energy(p, 5)
    data = bytearray(Path(p).read_bytes())
    if damage == "both":
        data[20] ^= 0xFF
        data[8192 + 20] ^= 0xFF
    else:
        data = bytearray(len(data))
    Path(p).write_bytes(bytes(data))
    with pytest.raises(StateError) as e:
        open_state(p, 16384)
    assert p in str(e.value) and "refusing to start rather than reset it to zero" in str(e.value)
    assert Path(p).read_bytes() == bytes(data)  # the evidence is left as it was


# ---- load model -----------------------------------------------------------------------------------
def test_load_profile_has_evening_peak_and_night_base() -> None:
    lm = LoadModel(noise_pct=0)
    day = 9000 * 86400
    assert lm.power_w(day + 3 * 3600) == RESIDENTIAL_W[3]
    assert lm.power_w(day + 19 * 3600) == RESIDENTIAL_W[19]
    assert lm.power_w(day + 19 * 3600 + 1800) == (RESIDENTIAL_W[19] + RESIDENTIAL_W[20]) // 2
    assert LoadModel(noise_pct=0, scale_pct=50).power_w(day + 19 * 3600) == RESIDENTIAL_W[19] // 2


def test_load_noise_is_bounded_and_repeatable() -> None:
    a, b = LoadModel(noise_pct=20, seed=7), LoadModel(noise_pct=20, seed=7)
    ts = range(0, 86400 * 2, 60)
    wa = [a.power_w(t) for t in ts]
    assert wa == [b.power_w(t) for t in ts]
    base = LoadModel(noise_pct=0)
    ratios = [w / base.power_w(t) for w, t in zip(wa, ts)]
    assert 0.79 < min(ratios) < 0.9 and 1.1 < max(ratios) < 1.21
    assert wa != [LoadModel(noise_pct=20, seed=8).power_w(t) for t in ts]


def test_load_model_rejects_bad_profiles() -> None:
    with pytest.raises(ValueError, match="24 hourly values"):
        LoadModel(profile=(100,) * 23)
    with pytest.raises(ValueError, match="whole watts"):
        LoadModel(profile=(100.5,) * 24)


def test_load_model_same_under_micropython() -> None:
    code = ("from hal.load import LoadModel\nm = LoadModel(seed=5)\n"
            "print(sum(m.power_w(t) for t in range(0, 86400, 97)))")
    r = run_micropython(code)
    assert r.returncode == 0, r.stderr
    m = LoadModel(seed=5)
    assert int(r.stdout) == sum(m.power_w(t) for t in range(0, 86400, 97))


@settings(max_examples=50)
@given(st.integers(0, 5000), st.lists(st.integers(1, 600000), min_size=1, max_size=50))
def test_energy_integration_is_exact_whatever_the_steps(watts: int, steps: list[int]) -> None:
    e = Energy()
    total = sum(e.add(watts, ms) for ms in steps)
    assert total == watts * sum(steps) // 3600000


# ---- clock, endpoints, frames ----------------------------------------------------------------------
def test_clock_speed_and_shift() -> None:
    start = parse_time("2026-03-01T06:00")
    c = SimClock(start, speed=3600)
    assert start <= c.now() < start + 3600
    c.shift(86400)
    assert c.now() >= start + 86400
    with pytest.raises(ValueError, match="speed"):
        SimClock(start, speed=0)


@pytest.mark.parametrize("text", ["2026-02-30T00:00", "2026-01-01T25:00", "tomorrow"])
def test_bad_start_time(text: str) -> None:
    with pytest.raises(ValueError, match="start time must look like"):
        parse_time(text)


def test_endpoints() -> None:
    assert parse_endpoint("tcp://127.0.0.1:8645") == ("127.0.0.1", 8645)
    assert parse_endpoint("0.0.0.0:0") == ("0.0.0.0", 0)
    with pytest.raises(ValueError, match="endpoint must look like"):
        parse_endpoint("tcp://localhost")


def test_link_frames_split_merged_and_noisy() -> None:
    """Each simulator link cuts its stream with the firmware codec's Deframer (hal.sim.frames_of)."""
    a = build_frame("000000000001", 0x11, bytes.fromhex("00000100"))
    b = build_frame("000000000001", 0x11, bytes.fromhex("00000000"), preamble=0)
    stream = b"\x00\x68\x16garbage" + a + b
    d = Deframer(512)
    got = []
    for i in range(0, len(stream), 3):
        got += frames_of(d, stream[i:i + 3])
    assert got == [a[4:], b]
    bad = bytearray(b)
    bad[-2] ^= 1  # checksum
    assert frames_of(Deframer(512), bytes(bad)) == []


def test_link_frames_under_micropython() -> None:
    a = build_frame("000000000001", 0x11, bytes.fromhex("00000100"))
    stream = b"\x68\x16noise" + a + a
    code = ("from hal.sim import frames_of\nfrom meter.codec import Deframer\nf = Deframer(512)\n"
            "s = bytes.fromhex(%r)\nout = []\n"
            "for i in range(0, len(s), 5):\n    out += frames_of(f, s[i:i + 5])\n"
            "print(' '.join(x.hex() for x in out))" % stream.hex())
    r = run_micropython(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [a[4:].hex()] * 2


def test_new_state_file_is_private(tmp_path: Path) -> None:
    p = tmp_path / "s.bin"
    FileFlash(str(p), 1024).close()
    assert p.stat().st_mode & 0o777 == 0o600
