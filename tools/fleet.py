"""Many simulated meters in one process, for head-end tests and benchmarks (1,000 meters is fine).

Each meter is the real firmware core (meter.core.Meter) with its own load model and state; what
this module adds is asyncio TCP serving. Two layouts:

* one port for all (`port=`): a multi-drop bus as an RS-485 line would be. Every frame reaches
  every meter; the one it is addressed to answers (a broadcast gets no answer; a wildcard read
  gets an answer from each matching meter, as on a real bus where that would collide).
* one port per meter (`port_base=`): meter i listens on port_base + i, like meters behind
  their own TCP gateways.

    fleet = await start_fleet(["000000000001", "000000000002"], master=master_key, port=0)
    fleet.port                      # the bus port (the real one when 0 was asked for)
    fleet.press_button("000000000001")
    fleet.status("000000000002")    # the core's status dict
    await fleet.close()

`serve_fleet(...)` does the same and serves until cancelled.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from tools.sim import FIRMWARE

if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))

from hal.flash import open_state  # noqa: E402 - firmware/ must be on sys.path first
from hal.load import Energy, LoadModel  # noqa: E402
from hal.sim import Frames, SimClock  # noqa: E402
from meter.core import Meter  # noqa: E402
from meter.store import RamFlash  # noqa: E402

from headend.link.security import derive_meter_key  # noqa: E402 - the head-end's own derivation


def _wire(address: str) -> bytes:
    return bytes(int(address[i:i + 2], 16) for i in range(10, -1, -2))  # BCD digits read as hex = BCD bytes


@dataclass
class FleetMeter:
    """One meter of the fleet: the core, its flash, its load."""

    address: str
    meter: Any
    flash: Any
    load: LoadModel
    energy: Energy = field(default_factory=Energy)
    power_w: int = 0


@dataclass
class Fleet:
    meters: dict[str, FleetMeter]
    clock: SimClock
    port: int | None = None
    ports: dict[str, int] = field(default_factory=dict)
    frames_in: int = 0
    frames_out: int = 0
    _servers: list[asyncio.base_events.Server] = field(default_factory=list)
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _by_wire: dict[bytes, FleetMeter] = field(default_factory=dict)

    def press_button(self, address: str) -> None:
        """The customer's >= 3 s press on one meter."""
        self.meters[address].meter.button(self.clock.now())

    def status(self, address: str) -> dict[str, Any]:
        fm = self.meters[address]
        return dict(fm.meter.status(), contact="open" if fm.meter.relay_open else "closed")

    def handle(self, frame: bytes) -> list[bytes]:
        """One frame off the bus: the replies of the meters it is for."""
        self.frames_in += 1
        now = self.clock.now()
        one = self._by_wire.get(bytes(frame[1:7]))
        targets: Iterable[FleetMeter] = (one,) if one is not None else self.meters.values()
        out = []
        for fm in targets:
            reply = fm.meter.handle(frame, now)
            if reply:
                out.append(reply)
        self.frames_out += len(out)
        return out

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for s in self._servers:
            s.close()
            await s.wait_closed()
        for fm in self.meters.values():
            if hasattr(fm.flash, "close"):
                fm.flash.close()


async def _serve(fleet: Fleet, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 only: FleetMeter | None) -> None:
    frames = Frames()
    now = fleet.clock.now
    try:
        while chunk := await reader.read(4096):
            for frame in frames.feed(chunk):
                if only is None:
                    replies = fleet.handle(frame)
                else:
                    fleet.frames_in += 1
                    r = only.meter.handle(frame, now())
                    replies = [r] if r else []
                    fleet.frames_out += len(replies)
                for r in replies:
                    writer.write(r)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _run_load(fleet: Fleet, every_s: float) -> None:
    last = fleet.clock.ms()
    while True:
        await asyncio.sleep(every_s)
        ms = fleet.clock.ms()
        dms, last = ms - last, ms
        now = ms // 1000
        for fm in fleet.meters.values():
            m = fm.meter
            w = 0 if m.relay_open else fm.load.power_w(now)
            if w != fm.power_w:
                fm.power_w = w
                m.set_power(w)
            wh = fm.energy.add(w, dms)
            if wh:
                m.add_energy(wh, now)
            m.tick(now)


async def start_fleet(addresses: Iterable[str], *, master: bytes | None = None,
                      key_for: Callable[[str], bytes] | None = None, host: str = "127.0.0.1",
                      port: int | None = None, port_base: int | None = None, state_dir: str | None = None,
                      mode: str = "local", bench: bool = False, speed: int = 1, start: int | None = None,
                      load_scale: int = 100, noise: int = 20, tick_s: float = 1.0) -> Fleet:
    """Build the meters and start serving; give `port` (one bus port, 0 = any) or `port_base`.

    Keys come from `key_for(address)` or are derived from `master` like the head-end does.
    State lives in `state_dir` (one file per meter, kept across runs) or in RAM when None.
    """
    if (port is None) == (port_base is None):
        raise ValueError("give exactly one of port (one bus for all meters) or port_base (a port each)")
    if key_for is None:
        if master is None:
            raise ValueError("give master= or key_for=: there is no default meter key")
        key_for = lambda a: derive_meter_key(master, a, 0)  # noqa: E731
    clock = SimClock(start, speed)
    meters: dict[str, FleetMeter] = {}
    for i, address in enumerate(addresses):
        cfg = {"address": address, "key": key_for(address), "krn": 0, "mode": mode, "bench": bench}
        if state_dir:
            flash = open_state(str(Path(state_dir) / f"meter-{address}.state"), 16384, sync=False)
        else:
            flash = RamFlash(16384)
        meters[address] = FleetMeter(address, Meter(cfg, flash, clock.now(), os.urandom), flash,
                                     LoadModel(scale_pct=load_scale, noise_pct=noise, seed=i + 1))
    fleet = Fleet(meters, clock)
    fleet._by_wire = {_wire(a): fm for a, fm in meters.items()}
    if port is not None:
        srv = await asyncio.start_server(lambda r, w: _serve(fleet, r, w, None), host, port)
        fleet._servers.append(srv)
        fleet.port = srv.sockets[0].getsockname()[1]
    else:
        assert port_base is not None
        for i, (address, fm) in enumerate(meters.items()):
            srv = await asyncio.start_server(lambda r, w, fm=fm: _serve(fleet, r, w, fm), host, port_base + i)
            fleet._servers.append(srv)
            fleet.ports[address] = port_base + i
    fleet._tasks.append(asyncio.create_task(_run_load(fleet, tick_s)))
    return fleet


async def serve_fleet(addresses: Iterable[str], **kw: Any) -> None:
    """start_fleet(...), then serve until cancelled; closes the state files on the way out."""
    fleet = await start_fleet(addresses, **kw)
    try:
        await asyncio.Event().wait()
    finally:
        await fleet.close()
