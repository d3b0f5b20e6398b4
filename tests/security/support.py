"""The attack bench: a real `meter run` process, the scripted man in the middle (tools.mitm) in
front of it, and the real head-end (front-end, meter client, and where needed the outbox worker
on a SQLite file) talking to the meter through the proxy."""

from __future__ import annotations

import asyncio
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from headend.commands import MeterClient
from headend.commands.meter_client import MeterTarget
from headend.link.security import SecuritySession
from headend.transports import FrontEnd, LinkSettings
from protocol import build_frame, parse_frame
from protocol.frame import Frame
from tools.mitm import MitmProxy
from tools.sim.launch import RunningMeter, start_meter

ADDR = "000000000001"
KEY = bytes(range(0x10, 0x20))
CUSTOMER = "000000000042"
START = "2026-03-02T10:00"  # a Monday morning: far from midnight, so no day boundary interferes
LINK = LinkSettings(timeout=2.0, retries=1, backoff=0.05, connect_timeout=2.0, reconnect_backoff=0.05)


@contextmanager
def running_meter(tmp_path: Path) -> Iterator[RunningMeter]:
    """`meter run` with a fixed 0 W load (exact balances) at a fixed meter time."""
    m = start_meter(ADDR, KEY.hex(), str(tmp_path / "meter.state"),
                    extra=("--start", START, "--load-w", "0", "--mode", "local"))
    try:
        yield m
    finally:
        m.stop()


class Rig:
    """The proxy in front of the meter and the head-end's client behind it."""

    def __init__(self, meter: RunningMeter) -> None:
        assert meter.tcp is not None
        self.meter = meter
        self.proxy = MitmProxy(meter.tcp)

    async def __aenter__(self) -> Rig:
        await self.proxy.start()
        self.frontend = FrontEnd(LINK)
        self.client = MeterClient(self.frontend, lambda m: KEY)
        self.target = MeterTarget(ADDR, self.proxy.link)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.frontend.close()
        await self.proxy.close()

    async def attack(self, control: int, data: bytes, address: str = ADDR) -> Frame | None:
        """What the meter answers a keyless frame sent on the attacker's own connection."""
        raw = await self.proxy.exchange(build_frame(address, control, data), timeout=3.0)
        return None if raw is None else parse_frame(raw)


class Station:
    """A key holder speaking to the meter on its own connection with the head-end's own
    SecuritySession (for the commands the meter client has no call for)."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.s = SecuritySession(ADDR, KEY, rand=os.urandom)

    async def ask(self, control: int, data: bytes) -> Frame:
        reply = await self.rig.attack(control, data)
        assert reply is not None, "the meter did not answer"
        return reply

    async def authenticate(self) -> None:
        r = await self.ask(0x03, self.s.challenge_request())
        assert r.control == 0x83, r
        r = await self.ask(0x03, self.s.auth_request(r.data))
        assert r.control == 0x83, r
        self.s.accept_auth_reply(r.data, asyncio.get_running_loop().time())

    async def set_validity(self, minutes: int) -> Frame:
        data, seq = self.s.set_validity_request(minutes)
        r = await self.ask(0x03, data)
        if r.control == 0x83:
            self.s.confirm(seq)
        return r

    async def status(self) -> Frame:
        data, seq = self.s.status_request()
        r = await self.ask(0x03, data)
        if r.control == 0x83:
            self.s.check_reply(r.control, r.data, 0x078102FF, seq)
            self.s.confirm(seq)
        return r
