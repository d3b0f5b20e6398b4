"""The token keypad: the 4x4 matrix scan (hal/keypad.py) on a board under the real micropython
binary with a fake matrix wired to the fake `machine` pins, its pins checked by the config, and
the simulator's keypad from the control socket of a real `meter run` child (CPython and
micropython), with the token record then read over TCP."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from hal import config
from hal.keypad import Keypad
from headend.vouchers import token as H
from protocol import Deframer, build_frame, di, parse_frame
from tests.mpy import run_micropython
from tools.sim.launch import start_meter

FAKES = str(Path(__file__).parent / "fakes")
ADDR = "000000000001"
KEY = "00112233445566778899aabbccddeeff"
TK = H.token_key(bytes.fromhex(KEY), 0)
ROWS, COLS = [12, 13, 14, 15], [18, 19, 21, 22]
PINS = {"tx": 17, "rx": 16, "de": 4, "relay_set": 25, "relay_reset": 26, "relay_sense": 27, "button": 0,
        "led": 2, "pulse": 32, "keypad_rows": ROWS, "keypad_cols": COLS}


class _Matrix:
    """Row outputs and column inputs of a 4x4 matrix: a column reads 0 while the row driven low
    has a pressed key on it."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.rows = [_Out() for _ in range(4)]
        self.cols = [_In(self, j) for j in range(4)]


class _Out:
    def __init__(self) -> None:
        self.v = 1

    def value(self, v: int | None = None) -> int | None:
        if v is None:
            return self.v
        self.v = v
        return None


class _In:
    def __init__(self, m: _Matrix, j: int) -> None:
        self.m, self.j = m, j

    def value(self) -> int:
        for i, r in enumerate(self.m.rows):
            if r.v == 0 and "123A456B789C*0#D"[4 * i + self.j] in self.m.down:
                return 0
        return 1


def test_a_key_counts_once_per_press_after_two_scans_and_again_after_release():
    m = _Matrix()
    kp = Keypad(m.rows, m.cols)
    assert kp.take() == ""
    m.down = {"7"}
    assert kp.take() == ""      # one scan down: could be bounce
    assert kp.take() == "7"
    assert kp.take() == ""      # held: not again
    m.down = set()
    kp.take()
    m.down = {"7", "#"}
    kp.take()
    assert kp.take() == "7#"    # both, in key order
    m.down = {"#"}
    assert kp.take() == ""      # 7 released, # still held
    m.down = {"#", "0"}
    kp.take()
    assert kp.take() == "0"
    assert all(r.v == 1 for r in m.rows)  # no row left driven low between scans


BOARD = r"""
import json, machine
from hal import config, esp32 as halmod
meter_cfg, hw = config.load("config.json")
pins = hw["pins"]  # the board empties hw once it is wired
b = halmod.Esp32(meter_cfg, hw)
P = machine.pins
rows = [P[p] for p in pins["keypad_rows"]]
cols = pins["keypad_cols"]
down = []
def col(j):
    def value(v=None):
        for i in range(4):
            if rows[i]._v == 0 and "123A456B789C*0#D"[4 * i + j] in down:
                return 0
        return 1
    return value
for j in range(4):
    P[cols[j]].value = col(j)
b.meter.wallet.opened = True  # an account opened over the line before
shown = []
for text in {entries!r}:
    for c in text:
        down.append(c)
        b.step()
        b.step()
        down.remove(c)
        b.step()
    shown.append(b.app.shown)
print(json.dumps({{"shown": shown, "balance": b.meter.status()["balance_fen"]}}))
"""


def test_a_board_reads_a_token_from_its_matrix_keypad(tmp_path: Path) -> None:
    cfg = {"board": "esp32", "address": ADDR, "key": KEY, "mode": "local", "pins": PINS, "reply_delay_ms": 0}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    tok = H.encode(TK, H.CREDIT, 0, 100, H.amount_field(2500))
    other = H.encode(H.token_key(bytes(range(1, 17)), 0), H.CREDIT, 0, 101, H.amount_field(2500))
    r = run_micropython(BOARD.format(entries=[tok + "#", tok + "#", "12*" + other + "#"]), cwd=tmp_path,
                        path=[FAKES])
    assert r.returncode == 0, r.stderr + r.stdout
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"shown": [0, 1, 2], "balance": 2500}  # accepted, used, invalid


@pytest.mark.parametrize("pins, says", [
    ({"keypad_rows": ROWS}, "pins.keypad_cols must be a list of 4 GPIO numbers"),
    ({"keypad_rows": ROWS[:3], "keypad_cols": COLS}, "pins.keypad_rows must be a list of 4 GPIO numbers"),
    ({"keypad_rows": ROWS, "keypad_cols": [18, 19, 21, 4]}, "pins.de and pins.keypad_cols[3] are both GPIO4"),
    ({"keypad_rows": [34, 13, 14, 15], "keypad_cols": COLS}, "pins.keypad_rows[0] = GPIO34 is input-only"),
])
def test_keypad_pins_are_checked_and_named(pins: dict, says: str) -> None:
    cfg = {"board": "esp32", "address": ADDR, "key": KEY, "pins": {**PINS, "keypad_rows": None, "keypad_cols": None}}
    cfg["pins"].update(pins)
    cfg["pins"] = {k: v for k, v in cfg["pins"].items() if v is not None}
    with pytest.raises(config.ConfigError, match=says.replace("[", r"\[").replace("]", r"\]")):
        config.check(cfg)
    ok = {"board": "esp32", "address": ADDR, "key": KEY, "pins": PINS}
    assert config.check(ok)[1]["pins"]["keypad_rows"] == ROWS


def _read(addr: tuple[str, int], di_: int) -> bytes:
    d = Deframer()
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(build_frame(ADDR, 0x11, di.di_to_wire(di_)))
        while (frame := d.next_frame()) is None:
            chunk = s.recv(256)
            assert chunk
            d.feed(chunk)
    f = parse_frame(frame)
    assert f.control == 0x91
    return f.data[4:]


@pytest.mark.parametrize("micropython", [pytest.param(False, id="cpython"), pytest.param(True, id="micropython")])
def test_the_simulator_takes_keys_from_its_control_socket(tmp_path: Path, micropython: bool) -> None:
    m = start_meter(ADDR, KEY, str(tmp_path / "m.state"), micropython=micropython, extra=("--load-w", "0"))
    try:
        hoard = H.encode(TK, H.MANAGEMENT, H.SET_HOARD, 500, H.amount_field(80000))
        assert m.command("keys " + hoard[:7]) == {"entry": hoard[:7], "token": None}
        assert m.command("keys " + hoard[7:] + "#") == {"entry": "", "token": "accepted"}
        assert m.command("keys " + hoard + "#")["token"] == "used"
        assert m.command("keys 5*" + "1" * 20 + "#")["token"] == "invalid"
        credit = H.encode(TK, H.CREDIT, 0, 501, H.amount_field(100))
        assert m.command(f"keys {credit}#")["token"].startswith("refused")  # no account opened yet
        assert "keys are" in m.command("keys 12x")["error"]
        st = m.command("status")
        assert st["token"].startswith("refused") and st["keys"] == ""
        rec = di.decode(0x033D0001, _read(m.tcp, 0x033D0001)).value
        assert (rec["kind"], rec["tid"], rec["value"]) == (0x21, 500, 800)
        assert di.decode(0x04001004, _read(m.tcp, 0x04001004)).value == 800  # the hoarding limit now
    finally:
        assert m.stop() == 0


@pytest.mark.parametrize("micropython", [pytest.param(False, id="cpython"), pytest.param(True, id="micropython")])
def test_the_simulator_takes_keys_typed_on_its_terminal(tmp_path: Path, micropython: bool) -> None:
    """`meter run` on a terminal (a pty here): keys typed there, one at a time without Enter, reach
    the keypad; the control socket then shows the result."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tools.sim import ROOT

    master, slave = os.openpty()
    argv = [sys.executable, "-m", "tools.meter_cli", "run", "--quiet", "--address", ADDR, "--state",
            str(tmp_path / "t.state"), "--control", "tcp://127.0.0.1:0", "--load-w", "0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREPAID645_")}
    env["PREPAID645_METER_KEY"] = KEY
    proc = subprocess.Popen(argv + (["--micropython"] if micropython else []), cwd=str(ROOT), env=env, stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    os.close(slave)
    try:
        assert proc.stdout is not None
        line = ""
        while " ready " not in line:  # after the new-state notice
            line = proc.stdout.readline()
            assert line, "meter run ended before it was ready"
        host, port = [w for w in line.split() if w.startswith("control=")][0][8:].rsplit(":", 1)
        hoard = H.encode(TK, H.MANAGEMENT, H.SET_HOARD, 700, H.amount_field(50000))
        os.write(master, ("9*" + hoard + "#").encode())  # a stray digit cleared first

        def status() -> dict:
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(b"status\n")
                buf = b""
                while not buf.endswith(b"\n"):
                    buf += s.recv(4096)
            return json.loads(buf)

        deadline = time.monotonic() + 30
        while (st := status())["token"] is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert st["token"] == "accepted" and st["keys"] == ""
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        os.close(master)
