"""`meter run` end to end: a real child process, real TCP sockets and a real pty, under CPython
and under the micropython binary; button from outside; clean stop; state that survives."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from protocol import Deframer, build_frame, parse_frame
from tools.sim import ROOT
from tools.sim.launch import start_meter

ADDR = "000000000001"
KEY = "00112233445566778899aabbccddeeff"
READ_ENERGY = build_frame(ADDR, 0x11, bytes.fromhex("00000100"))
READ_ADDRESS = build_frame("AAAAAAAAAAAA", 0x13)
INTERPRETERS = [pytest.param(False, id="cpython"), pytest.param(True, id="micropython")]


def _exchange_tcp(addr: tuple[str, int], request: bytes) -> bytes:
    d = Deframer()
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(request)
        while (frame := d.next_frame()) is None:
            chunk = s.recv(256)
            assert chunk, "meter closed the connection"
            d.feed(chunk)
    return frame


def _bcd_kwh_wh(data: bytes) -> int:
    digits = "".join(f"{b:02x}" for b in reversed(data))
    return int(digits) * 10  # XXXXXX.XX kWh -> Wh


@pytest.mark.parametrize("micropython", INTERPRETERS)
def test_run_serves_tcp_and_pty_takes_button_and_keeps_state(tmp_path: Path, micropython: bool) -> None:
    state = str(tmp_path / "m.state")
    # 3600 W at 3600x: 1 Wh per meter second, 3.6 kWh per real second
    extra = ("--load-w", "3600", "--noise", "0")
    m = start_meter(ADDR, KEY, state, pty=True, micropython=micropython, speed=3600, extra=extra)
    try:
        assert m.tcp and m.pty and m.control
        time.sleep(0.5)
        reply = parse_frame(_exchange_tcp(m.tcp, READ_ENERGY))
        assert reply.control == 0x91 and reply.address == ADDR
        assert reply.data[:4] == bytes.fromhex("00000100")
        assert _bcd_kwh_wh(reply.data[4:8]) > 0
        # the pty: any serial program can open it (parity N: a pty has no line characters, and
        # some kernels refuse PARENB on one)
        with serial.Serial(m.pty, 2400, timeout=3) as port:
            port.write(READ_ADDRESS)
            d = Deframer()
            deadline = time.monotonic() + 5
            while (frame := d.next_frame()) is None and time.monotonic() < deadline:
                d.feed(port.read(port.in_waiting or 1))
        assert frame is not None, "no reply on the pty"
        f = parse_frame(frame)
        assert f.control == 0x93 and f.address == ADDR
        m.press_button()
        assert m.command("button")["contact"] in ("open", "closed")
        deadline = time.monotonic() + 5
        while (st := m.command("status"))["presses"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert st["presses"] == 2 and st["address"] == ADDR and st["frames_in"] >= 2
        energy_before_stop = st["energy_wh"]
    finally:
        rc = m.stop()
    assert rc == 0, m.output
    assert any("stopped; state kept in" in line for line in m.output), m.output
    assert Path(state).stat().st_size == 16384
    # a restart carries on from the state file (the meter kept counting between status and stop)
    m2 = start_meter(ADDR, KEY, state, micropython=micropython, extra=("--load-w", "0"))
    try:
        assert m2.command("status")["energy_wh"] >= energy_before_stop > 0
    finally:
        assert m2.stop(signal.SIGTERM) == 0


def _key_env(key: str | None = KEY) -> dict[str, str]:
    """The environment with the meter key in it (never on the command line), or with no key at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREPAID645_")}
    if key is not None:
        env["PREPAID645_METER_KEY"] = key
    return env


def _run_cli(*args: str, key: str | None = KEY) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.meter_cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=_key_env(key))


@pytest.mark.parametrize("micropython", INTERPRETERS)
def test_run_refuses_corrupt_state_naming_it(tmp_path: Path, micropython: bool) -> None:
    state = tmp_path / "m.state"
    state.write_bytes(b"\x00" * 16384)  # not blank, no record: the balance is unknown
    args = ["run", "--quiet", "--address", ADDR, "--state", str(state), "--listen",
            "tcp://127.0.0.1:0"] + (["--micropython"] if micropython else [])
    r = _run_cli(*args)
    assert r.returncode == 2
    assert f"state file {state} is corrupt" in r.stderr and "refusing to start" in r.stderr
    assert state.read_bytes() == b"\x00" * 16384


@pytest.mark.parametrize("micropython", INTERPRETERS)
def test_run_refuses_truncated_state(tmp_path: Path, micropython: bool) -> None:
    state = tmp_path / "m.state"
    state.write_bytes(b"\xff" * 100)
    r = _run_cli("run", "--quiet", "--address", ADDR, "--state", str(state),
                 *(["--micropython"] if micropython else []))
    assert r.returncode == 2 and f"state file {state} is 100 bytes, expected 16384" in r.stderr
    assert state.read_bytes() == b"\xff" * 100


def _source_tree() -> set[str]:
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--ignored", "firmware"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return set(out.splitlines())


@pytest.mark.parametrize("micropython", INTERPRETERS)
def test_run_state_file_is_relative_to_the_callers_directory(tmp_path: Path, micropython: bool) -> None:
    """`--state m.state` is the file in the directory the operator runs `meter run` from, created
    0600 (it holds the meter key), kept for the next run; nothing lands in the source tree."""
    before = _source_tree()
    argv = [sys.executable, "-m", "tools.meter_cli", "run", "--quiet", "--address", ADDR,
            "--state", "m.state", "--listen", "tcp://127.0.0.1:0", "--load-w", "0",
            *(["--micropython"] if micropython else [])]
    outputs = []
    for _ in range(2):
        proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=dict(_key_env(KEY), PYTHONPATH=str(ROOT)))
        assert proc.stdout is not None
        head = ""
        while f"meter {ADDR} ready" not in head and (line := proc.stdout.readline()):
            head += line
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, head + out
        outputs.append(head + out)
    state = tmp_path / "m.state"
    assert state.stat().st_size == 16384 and state.stat().st_mode & 0o777 == 0o600
    assert "new state file" in outputs[0] and "new state file" not in outputs[1], outputs
    assert _source_tree() == before


def test_run_needs_a_key(tmp_path: Path) -> None:
    r = _run_cli("run", "--quiet", "--address", ADDR, "--state", str(tmp_path / "m.state"), key=None)
    assert r.returncode == 2 and "there is no default key" in r.stderr
    assert not (tmp_path / "m.state").exists()


def test_live_view_renders_the_meter() -> None:
    from rich.console import Console

    from tools.sim.display import render
    console = Console(record=True, width=80)
    console.print(render({"address": ADDR, "balance_fen": -1234, "state": 2, "contact": "open", "rate": 3,
                          "power_w": 1500, "energy_wh": 12345, "count": 4, "rem": 7}))
    text = console.export_text()
    for words in ("meter 000000000001", "-12.34 yuan", "alarm 2", "open", "valley", "1,500 W", "12.345 kWh"):
        assert words in text
    assert "rem" not in text  # internals stay off the operator's view


def test_live_view_speaks_words_not_codes() -> None:
    from rich.console import Console

    from tools.sim.display import render

    def shown(status: dict) -> str:
        console = Console(record=True, width=100)
        console.print(render(dict({"address": ADDR, "balance_fen": 0}, **status)))
        return console.export_text()

    new = shown({"state": 4, "opened": False, "relay": 0, "hold": False})
    assert "account not opened" in new and "overdraft" not in new
    assert "relay state" not in new and "False" not in new and re.search(r"power hold +off", new)
    tripped = shown({"state": 4, "opened": True, "relay": 3, "hold": True})
    assert "overdraft" in tripped and "open: remote trip" in tripped and "on (never cut)" in tripped
    assert "True" not in tripped and " 3\n" not in tripped


@pytest.mark.parametrize("micropython", INTERPRETERS)
def test_run_shows_live_state_until_ctrl_c(tmp_path: Path, micropython: bool) -> None:
    argv = [sys.executable, "-m", "tools.meter_cli", "run", "--address", ADDR, "--state",
            str(tmp_path / "m.state"), "--listen", "tcp://127.0.0.1:0", "--load-w", "2000"]
    proc = subprocess.Popen(argv + (["--micropython"] if micropython else []), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_key_env())
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "balance" in out and "2,000 W" in out and "closed" in out
    assert out.rstrip().endswith(f"meter {ADDR} stopped; state kept in {tmp_path / 'm.state'}")


def test_micropython_child_stops_when_its_launcher_dies(tmp_path: Path) -> None:
    m = start_meter(ADDR, KEY, str(tmp_path / "m.state"), micropython=True, control=False)
    child = subprocess.run(["pgrep", "-P", str(m.proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(child) == 1
    m.proc.kill()  # SIGKILL: no chance to say quit
    m.proc.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child[0]}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{child[0]}").exists() or "zombie" in Path(f"/proc/{child[0]}/status").read_text()


def test_micropython_heap_too_small_is_said(tmp_path: Path) -> None:
    for heap in ("64K", "128K"):  # too small to import the simulator / to compile the core
        r = _run_cli("run", "--quiet", "--micropython", "--heapsize", heap, "--address", ADDR,
                     "--state", str(tmp_path / "m.state"), "--listen", "tcp://127.0.0.1:0")
        assert r.returncode != 0 and "MemoryError" not in r.stdout
        assert "heap is too small" in r.stderr or f"larger heap (--heapsize, now {heap})" in r.stderr


def _read_time(addr: tuple[str, int]) -> str:
    """The meter's date and time read over DL/T 645 (04000101, 04000102) as 'YYYY-MM-DD hh:mm:ss'."""
    from protocol.payloads import parse_read_reply, read_request

    out = []
    for di in (0x04000101, 0x04000102):
        _, data = parse_read_reply(parse_frame(_exchange_tcp(addr, build_frame(ADDR, 0x11, read_request(di)))).data)
        out.append(data[::-1].hex())
    ymdw, hms = out
    return f"20{ymdw[0:2]}-{ymdw[2:4]}-{ymdw[4:6]} {hms[0:2]}:{hms[2:4]}:{hms[4:6]}"


def test_status_time_is_the_time_the_meter_answers_after_a_time_set(tmp_path: Path) -> None:
    """A broadcast time set moves the meter's clock; the control socket's `status` shows that
    clock, the same one a DL/T 645 master reads."""
    from protocol import BROADCAST

    extra = ("--start", "2026-03-04T10:01:00", "--load-w", "0")
    with start_meter(ADDR, KEY, str(tmp_path / "m.state"), extra=extra) as m:
        assert m.tcp is not None
        sync = bytes(int(x, 16) for x in ("00", "04", "10", "04", "03", "26"))  # 10:04:00 on 2026-03-04
        with socket.create_connection(m.tcp, timeout=5) as s:
            s.sendall(build_frame(BROADCAST, 0x08, sync))
        for _ in range(3):  # a second boundary may pass between the two questions: ask again
            status, wire = m.command("status")["time"], _read_time(m.tcp)
            if status == wire:
                break
        assert status == wire and wire >= "2026-03-04 10:04:00", (status, wire)
