"""Many meters in one process (tools/fleet.py): a shared bus port and a port per meter, real TCP,
real cores; `meter fleet` from the command line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from headend.keys import derive_meter_key
from protocol import Deframer, build_frame, parse_frame
from tools.fleet import start_fleet
from tools.sim import ROOT

MASTER = bytes(range(32))
READ_ENERGY = bytes.fromhex("00000100")


async def _ask(port: int, request: bytes, expect: int = 1, timeout: float = 1.0) -> list:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    d = Deframer()
    frames = []
    try:
        writer.write(request)
        await writer.drain()
        while len(frames) < expect:
            chunk = await asyncio.wait_for(reader.read(4096), timeout)
            if not chunk:
                break
            d.feed(chunk)
            frames += [parse_frame(f) for f in d.frames()]
    except asyncio.TimeoutError:
        pass
    finally:
        writer.close()
    return frames


def test_bus_of_many_meters_answers_by_address() -> None:
    async def go() -> None:
        addrs = [f"{i:012d}" for i in range(1, 301)]
        fleet = await start_fleet(addrs, master=MASTER, port=0, speed=3600, tick_s=0.05)
        try:
            assert fleet.port
            for a in ("000000000001", "000000000150", "000000000300"):
                got = await _ask(fleet.port, build_frame(a, 0x11, READ_ENERGY))
                assert [(f.address, f.control) for f in got] == [(a, 0x91)]
            assert await _ask(fleet.port, build_frame("000000000301", 0x11, READ_ENERGY), timeout=0.3) == []
            # broadcast time: every meter hears it, none answers
            assert await _ask(fleet.port, build_frame("999999999999", 0x08, bytes(6)), timeout=0.3) == []
            await asyncio.sleep(0.3)  # the load runs: 0.3 s at 3600x is 18 meter minutes
            assert fleet.status("000000000007")["energy_wh"] > 0
            before = fleet.status("000000000002")["relay"]
            fleet.press_button("000000000002")
            assert fleet.status("000000000002")["relay"] == before  # nothing to close: a press changes nothing
        finally:
            await fleet.close()

    asyncio.run(go())


def test_port_per_meter_and_state_dir(tmp_path: Path) -> None:
    async def go(expect_energy: int | None) -> int:
        fleet = await start_fleet(["000000000011", "000000000012"], master=MASTER, port_base=_free_base(),
                                  state_dir=str(tmp_path), speed=3600, tick_s=0.05)
        try:
            p11, p12 = fleet.ports["000000000011"], fleet.ports["000000000012"]
            assert p12 == p11 + 1
            got = await _ask(p12, build_frame("000000000012", 0x11, READ_ENERGY))
            assert got and got[0].address == "000000000012"
            # a meter behind its own port ignores another's address
            assert await _ask(p11, build_frame("000000000012", 0x11, READ_ENERGY), timeout=0.3) == []
            if expect_energy is not None:
                assert fleet.status("000000000011")["energy_wh"] >= expect_energy
            await asyncio.sleep(0.2)
            return fleet.status("000000000011")["energy_wh"]
        finally:
            await fleet.close()

    first = asyncio.run(go(None))
    assert first > 0
    assert (tmp_path / "meter-000000000011.state").stat().st_size == 16384
    asyncio.run(go(first))  # the state files carried the energy over


def test_fleet_keys_are_the_headends() -> None:
    async def go() -> bytes:
        fleet = await start_fleet(["000000000005"], master=MASTER, port=0)
        try:
            return bytes(fleet.meters["000000000005"].sec.key)
        finally:
            await fleet.close()

    assert asyncio.run(go()) == derive_meter_key(MASTER, "000000000005", 0)


def test_fleet_needs_keys_and_one_layout() -> None:
    with pytest.raises(ValueError, match="no default meter key"):
        asyncio.run(start_fleet(["000000000001"], port=0))
    with pytest.raises(ValueError, match="exactly one of port"):
        asyncio.run(start_fleet(["000000000001"], master=MASTER))


def _free_base() -> int:
    import socket
    for base in range(20000, 60000, 97):
        try:
            socks = []
            for p in (base, base + 1):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            for s in socks:
                s.close()
            return base
        except OSError:
            for s in socks:
                s.close()
    raise RuntimeError("no two free ports in a row")


def test_meter_fleet_command(tmp_path: Path) -> None:
    env = {**os.environ, "PREPAID645_MASTER_KEY": MASTER.hex()}  # never on the command line
    proc = subprocess.Popen([sys.executable, "-m", "tools.meter_cli", "fleet", "--count", "50", "--port", "0"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("fleet 50 meters 000000000001..000000000050 ready bus=127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        got = asyncio.run(_ask(port, build_frame("000000000033", 0x11, READ_ENERGY)))
        assert got and got[0].address == "000000000033"
    finally:
        proc.send_signal(2)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "fleet stopped (1 frames in, 1 out)" in out


def test_meter_fleet_stops_on_a_sigterm_sent_the_moment_it_says_ready() -> None:
    """The README's example signals a fleet as soon as "ready" is printed.  Started from a parent
    that ignores SIGTERM (the setting is inherited), a signal that came before the fleet installed
    its own handler would be lost and the example's `wait` would never end."""
    import signal

    env = {**os.environ, "PREPAID645_MASTER_KEY": MASTER.hex()}
    proc = subprocess.Popen([sys.executable, "-m", "tools.meter_cli", "fleet", "--count", "5", "--port", "0"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert " ready " in line, line
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "fleet stopped (0 frames in, 0 out)" in out
