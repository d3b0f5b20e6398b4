"""A third-party DL/T 645-2007 master (the `dlt645` package from PyPI, 3.2.0) reads the simulated
meter over TCP and over the pty: address, energy, date and time.

Its quirks (shared/spec/dlt645.md §9) show here: it keeps the address as the bytes on the wire,
so the 12-digit string it prints and takes is the address with its byte pairs reversed."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from dlt645 import MeterClientService

from tools.sim.launch import start_meter

ADDR = "123456789012"
WIRE = "129078563412"  # the same address as dlt645 3.2.0 writes it: byte pairs low first
KEY = "00112233445566778899aabbccddeeff"


@pytest.fixture
def meter(tmp_path: Path):  # type: ignore[no-untyped-def]
    # real time (the master's date and time are compared with the host's); 3600 W: 1 Wh a second
    m = start_meter(ADDR, KEY, str(tmp_path / "m.state"), pty=True, speed=1,
                    extra=("--load-w", "3600", "--noise", "0"))
    yield m
    m.stop()


def _check(client: MeterClientService, m) -> None:  # type: ignore[no-untyped-def]
    a = client.read_address()
    assert a is not None and a.value == WIRE
    before = m.command("status")["energy_wh"]
    e = client.read_00(0x00010000)
    after = m.command("status")["energy_wh"]
    assert e is not None and e.unit == "kWh"
    assert before // 10 <= round(e.value * 100) <= after // 10
    host = dt.datetime.now()
    d = client.read_04(0x04000101)  # YYMMDDWW
    t = client.read_04(0x04000102)  # hhmmss
    assert d is not None and t is not None
    seen = dt.datetime.strptime(d.value[:6] + t.value, "%y%m%d%H%M%S")
    assert abs((seen - host).total_seconds()) < 5
    assert int(d.value[6:]) == (host.isoweekday() % 7)  # DL/T 645 week: 0 = Sunday


def test_dlt645_master_reads_over_tcp(meter) -> None:  # type: ignore[no-untyped-def]
    client = MeterClientService.new_tcp_client(meter.tcp[0], meter.tcp[1], timeout=5)
    try:
        time.sleep(1.2)  # a second of 3.6 kW: energy to read
        _check(client, meter)
        client.set_address(WIRE)  # and addressed directly, not only through read_address
        assert client.read_00(0x00000000) is not None
        client.set_address("210987654321")  # another meter's address: no answer
        assert client.read_00(0x00010000) is None
    finally:
        client.disconnect()


def test_dlt645_master_reads_over_pty(meter) -> None:  # type: ignore[no-untyped-def]
    # parity N: a pty moves bytes, not line characters, and some kernels refuse PARENB on a pty
    client = MeterClientService.new_rtu_client(port=meter.pty, baudrate=2400, databits=8, stopbits=1,
                                               parity="N", timeout=3)
    try:
        assert client.connect()
        _check(client, meter)
    finally:
        client.disconnect()
