"""Many simulated meters in one asyncio process, for head-end tests, demos and benchmarks.

Each meter is the real firmware core (`meter.core.Meter`) with its own key and state; what this
module adds is asyncio TCP serving, an optional load model and faults.  Meters sit on *buses*:
a bus is one listening TCP port, the way an RS-485 line sits behind a serial server.  Every frame
that arrives on a bus is offered to the meters it is for (the addressed one; every meter for a
wildcard or broadcast) and the replies go back on that connection; a broadcast gets no answer,
a wildcard read one from each matching meter (on a real bus those would collide).  Layouts,
exactly one of:

* ``port=P``: one bus for all meters on port P (0 = any free port);
* ``port_base=B``: a port each, meter i on B + i, like meters behind their own TCP gateways;
* ``per_bus=N``: buses of N meters each, every bus on a free port (``per_bus=1``: a free port
  per meter);
* ``groups=[[addresses], ...]``: the meters of each bus given, every bus on a free port (a town:
  tools/town/plan.py).

    fleet = await start_fleet(["000000000001", "000000000002"], master=master_key, port=0)
    fleet.port                        # the bus port (the real one when 0 was asked for)
    fleet.link_of("000000000001")     # "tcp://127.0.0.1:PORT", the link URL that reaches it
    fleet.meters["000000000002"]      # the core itself (status(), add_energy(), ...)
    fleet.press_button("000000000001")
    fleet.fault("000000000002").drop = 2   # lose its next two replies (see Fault; also .delay_s, .garbage)
    fleet.power_loss("000000000002", 5)    # no supply for 5 s, then back from its saved state, clock behind
    fleet.bus_fault(0, garbage_s=60)       # the whole bus answers noise for a minute (down_s=: a flapping link)
    await fleet.close()

``serve_fleet(...)`` does the same and serves until cancelled.  ``load=True`` (the default) runs
the residential load model every ``tick_s`` so energy flows and money is spent; tests that
assert exact balances pass ``load=False``.  :class:`LossyProxy` is a separate lossy TCP hop in
front of any meter (the demo's lost recharge replies).

From a shell (prints one JSON line ``{"buses": [{"link": url, "meters": [...]}, ...]}``, then
serves until SIGINT/SIGTERM)::

    PREPAID645_MASTER_KEY=00.. python -m tools.fleet --count 1000 --per-bus 1   # --drop, --garbage, --load

The master key (``--master-file FILE`` or ``$PREPAID645_MASTER_KEY``, hex; never an argument,
which every user can read) is a test key for simulated meters only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from tools.sim import FIRMWARE

if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))

from hal.flash import open_state  # noqa: E402 - firmware/ must be on sys.path first
from hal.load import Energy, LoadModel  # noqa: E402
from hal.sim import SimClock, _Pulses, frames_of  # noqa: E402
from meter.app import MeterApp  # noqa: E402
from meter.codec import Deframer  # noqa: E402
from meter.core import Meter  # noqa: E402
from meter.desktop import RamFlash  # noqa: E402

from headend.keys import derive_meter_key  # noqa: E402 - the head-end's own derivation
from protocol.errors import ProtocolError  # noqa: E402
from protocol.frame import address_to_wire, parse_frame  # noqa: E402
from protocol.payloads.security import OPEN_ACCOUNT, RECHARGE  # noqa: E402
from tools.key_input import ENV_MASTER_KEY, KeyInputError, refuse_on_argv, secret_hex  # noqa: E402

__all__ = ["Bus", "Fault", "Fleet", "LossyProxy", "fleet_addresses", "serve_fleet", "start_fleet"]

FLASH_SIZE = 16384  # a fully programmed meter's two state records fit


def fleet_addresses(n: int, first: int = 1) -> list[str]:
    """n consecutive 12-digit addresses starting at ``first``."""
    return [f"{i:012d}" for i in range(first, first + n)]


def _is_recharge(frame: bytes) -> bool:
    """Whether ``frame`` asks a meter to open its account or take a recharge (03H 070101FF/070102FF)."""
    try:
        f = parse_frame(frame)
    except ProtocolError:
        return False
    return f.function == 0x03 and int.from_bytes(f.data[:4], "little") in (OPEN_ACCOUNT, RECHARGE)


def _noise() -> bytes:
    return b"\x68\x01\x02\x68\x91\x05" + os.urandom(12) + b"\x16"


@dataclass
class Fault:
    """Faults of one meter: lose its next ``drop`` replies (all of them, or with
    ``drop_kind="recharge"`` only its recharge replies), answer noise (``garbage``), answer
    ``delay_s`` seconds late, or say nothing at all while its power is off (``down``, see
    :meth:`Fleet.power_loss`)."""

    drop: int = 0
    drop_kind: str = "all"
    garbage: bool = False
    delay_s: float = 0.0
    down: bool = False


@dataclass
class Bus:
    """One TCP port with meters on it.  ``drop``/``drop_kind``/``garbage`` are faults of the
    whole bus (after each meter's own :class:`Fault`)."""

    fleet: Fleet
    addresses: list[str]
    drop: int = 0
    drop_kind: str = "all"  # "all" replies, or only "recharge" replies
    garbage: bool = False
    down: bool = False  # a flapping link: connections are hung up on at once while set
    server: asyncio.Server | None = None
    faults: dict[str, Fault] = field(default_factory=dict)
    connections: list[asyncio.Transport] = field(default_factory=list)
    _by_wire: dict[bytes, tuple[str, Meter]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_wire = {address_to_wire(a): (a, self.fleet.meters[a]) for a in self.addresses}

    @property
    def meters(self) -> list[Meter]:
        """The cores on this bus, in address order."""
        return [self.fleet.meters[a] for a in self.addresses]

    @property
    def port(self) -> int:
        assert self.server is not None, "the bus is not serving yet: await fleet.start() first"
        return self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"tcp://{self.fleet.host}:{self.port}"

    def handle(self, frame: bytes, write: Callable[[Any], None]) -> None:
        """One whole frame off the line: ``write`` the replies of the meters it is for.

        A reply may be a view into its meter's transmit buffer, valid until that meter's next
        frame: ``write`` must copy or send it at once (an asyncio transport does)."""
        fleet = self.fleet
        fleet.frames_in += 1
        now = fleet.clock.now()
        one = self._by_wire.get(frame[1:7])
        if one is not None and not self.faults and not self.drop and not self.garbage:
            r = one[1].handle_view(frame, now)  # the usual case: one addressed meter, no faults
            if r is not None:
                fleet.frames_out += 1
                write(r)
            return
        targets = (one,) if one is not None else self._by_wire.values()
        out = []
        for address, m in targets:
            f = self.faults.get(address)
            if f is not None and f.down:
                continue  # no power: the frame never reached a working meter
            r = m.handle_view(frame, now)
            if r is None:
                continue
            if f is not None:
                if f.drop > 0 and (f.drop_kind == "all" or _is_recharge(frame)):
                    f.drop -= 1
                    fleet.dropped += 1
                    continue
                if f.garbage:
                    r = _noise()
                if f.delay_s > 0:
                    reply = bytes(r)  # the view is only valid until the meter's next frame
                    asyncio.get_running_loop().call_later(f.delay_s, _late_write, write, reply)
                    fleet.frames_out += 1
                    continue
            out.append(r)
        if not out:
            return
        if self.drop > 0 and (self.drop_kind == "all" or _is_recharge(frame)):
            self.drop -= 1
            fleet.dropped += 1
            return
        if self.garbage:
            out = [_noise()]
        fleet.frames_out += len(out)
        for r in out:
            write(r)

    def rewire(self, address: str) -> None:
        """Look the meter's core up again (after a restart made a new one)."""
        self._by_wire[address_to_wire(address)] = (address, self.fleet.meters[address])

    def close_connections(self) -> None:
        """Hang up on every connected head-end (a dropped link)."""
        for t in self.connections:
            t.close()
        self.connections.clear()


def _late_write(write: Callable[[Any], None], reply: bytes) -> None:
    try:
        write(reply)
    except (OSError, RuntimeError):
        pass  # the connection went away while the reply waited


class _BusProtocol(asyncio.Protocol):
    """One connection to a bus: its own framing (two masters never splice each other's bytes)."""

    __slots__ = ("bus", "transport", "frames", "partial", "write")

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.frames = Deframer(512)
        self.partial = False  # bytes of an unfinished frame wait in self.frames

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.write = transport.write  # type: ignore[attr-defined]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:  # a reply is one small frame: do not let Nagle hold it back
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        if self.bus.down:
            transport.close()  # the link is down: the serial server hangs up at once
            return
        self.bus.connections.append(self.transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if not self.partial:
            # the usual TCP case: exactly one frame (after FE wake-up bytes), nothing half-received
            # (only the framing is looked at here: the core checks the checksum itself)
            f = data.lstrip(b"\xfe")
            n = len(f)
            if n >= 12 and f[0] == 0x68 and f[7] == 0x68 and n == 12 + f[9] and f[-1] == 0x16:
                self.bus.handle(f, self.write)
                return
        for frame in frames_of(self.frames, data):
            self.bus.handle(frame, self.write)
        self.partial = self.frames.e > self.frames.s  # what the Deframer still holds

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport in self.bus.connections:
            self.bus.connections.remove(self.transport)  # type: ignore[arg-type]


class Fleet:
    """The meters (``meters``: address -> core), their buses and their clock.

    Build it, then ``await start()`` (or use :func:`start_fleet`, which does both)."""

    def __init__(self, addresses: Iterable[str], *, master: bytes | None = None,
                 key_for: Callable[[str], bytes] | None = None, host: str = "127.0.0.1",
                 port: int | None = None, port_base: int | None = None, per_bus: int | None = None,
                 groups: list[list[str]] | None = None, modes: dict[str, str] | None = None,
                 state_dir: str | None = None, mode: str = "local", bench: bool = False, speed: int = 1,
                 start: int | None = None, load: bool = True, load_scale: int = 100, noise: int = 20,
                 loads: dict[str, Any] | None = None, tick_s: float = 1.0) -> None:
        if sum(x is not None for x in (port, port_base, per_bus, groups)) != 1:
            raise ValueError("give exactly one of port (one bus for all meters), port_base (a port each, "
                             "counting up), per_bus (buses of that many meters, each on a free port) or "
                             "groups (the addresses of each bus, each on a free port)")
        if per_bus is not None and per_bus < 1:
            raise ValueError(f"per_bus must be 1 or more, got {per_bus}")
        if key_for is None:
            if master is None:
                raise ValueError("give master= or key_for=: there is no default meter key")
            key_for = lambda a: derive_meter_key(master, a, 0)  # noqa: E731
        addresses = list(addresses)
        if groups is not None and sorted(a for g in groups for a in g) != sorted(addresses):
            raise ValueError("groups must hold every address exactly once")
        self.host = host
        self.clock = SimClock(start, speed)
        self.meters: dict[str, Meter] = {}
        self.flashes: dict[str, Any] = {}
        self.configs: dict[str, dict] = {}
        for address in addresses:
            cfg = {"address": address, "key": key_for(address), "krn": 0,
                   "mode": (modes or {}).get(address, mode), "bench": bench}
            self.configs[address] = cfg
            if state_dir:
                flash = open_state(str(Path(state_dir) / f"meter-{address}.state"), FLASH_SIZE, sync=False)
            else:
                flash = RamFlash(FLASH_SIZE)
            self.flashes[address] = flash
            self.meters[address] = Meter(cfg, flash, self.clock.now(), os.urandom)
        if loads is not None:
            self.loads = dict(loads) if load else {}
        else:
            self.loads = {a: LoadModel(scale_pct=load_scale, noise_pct=noise, seed=i + 1)
                          for i, a in enumerate(addresses)} if load else {}
        self._load_on = load
        self._own_loads = dict(self.loads)
        if groups is not None:
            self.buses = [Bus(self, list(g)) for g in groups]
        else:
            size = len(addresses) if port is not None else 1 if port_base is not None else per_bus
            assert size is not None
            self.buses = [Bus(self, addresses[i:i + size]) for i in range(0, len(addresses), size)]
        self._bus_of = {a: b for b in self.buses for a in b.addresses}
        self._listen = ([port] if port is not None else
                        [port_base + i for i in range(len(addresses))] if port_base is not None else
                        [0] * len(self.buses))
        self.port: int | None = None  # the bus port of the one-bus layout (port=)
        self.ports: dict[str, int] = {}  # every meter's port
        self.frames_in = 0
        self.frames_out = 0
        self.dropped = 0  # replies lost to a drop fault
        self.restarts = 0  # meters back from a power loss
        self.down: set[str] = set()  # meters without power now
        self.tick_s = tick_s
        self._tasks: list[asyncio.Task] = []
        self._one_bus = port is not None

    async def start(self) -> None:
        """Open every bus's listening port (and start the load model, if any)."""
        loop = asyncio.get_running_loop()
        for bus, p in zip(self.buses, self._listen):
            bus.server = await loop.create_server(lambda bus=bus: _BusProtocol(bus), self.host, p, backlog=4096)
            for a in bus.addresses:
                self.ports[a] = bus.port
        if self._one_bus:
            self.port = self.buses[0].port
        if self.loads:
            self._tasks.append(asyncio.create_task(self._run_load()))

    def link_of(self, address: str) -> str:
        """The link URL that reaches meter ``address``."""
        return self._bus_of[address].url

    def bus_of(self, address: str) -> Bus:
        """The bus meter ``address`` sits on."""
        return self._bus_of[address]

    def fault(self, address: str) -> Fault:
        """The fault settings of one meter (created on first use)."""
        return self.bus_of(address).faults.setdefault(address, Fault())

    def layout(self) -> list[dict]:
        """[{"link": url, "meters": [addresses]}] for every bus."""
        return [{"link": b.url, "meters": list(b.addresses)} for b in self.buses]

    def power_loss(self, address: str, down_s: float, behind_s: int | None = None) -> None:
        """Cut the meter's supply for ``down_s`` real seconds: it hears nothing and meters nothing,
        and what it had not saved is lost.  Then it starts again from its saved state (a new core
        on the same flash) with its clock ``behind_s`` meter seconds behind (default: the meter
        time the outage lasted, as a board whose RTC stopped), until the head-end sets it."""
        f = self.fault(address)
        if f.down:
            return
        f.down = True
        self.down.add(address)
        lost = self.clock.now()
        loop = asyncio.get_running_loop()
        loop.call_later(down_s, self._power_back, address, lost, behind_s)

    def _power_back(self, address: str, lost: int, behind_s: int | None) -> None:
        flash = self.flashes[address]
        now = self.clock.now()
        core = Meter(self.configs[address], flash, now, os.urandom)
        core.offset -= (now - lost) if behind_s is None else behind_s
        self.meters[address] = core
        self.bus_of(address).rewire(address)
        self.fault(address).down = False
        self.down.discard(address)
        self.restarts += 1

    def bus_fault(self, index: int, *, garbage_s: float = 0.0, down_s: float = 0.0) -> Bus:
        """Bus ``index`` answers noise for ``garbage_s`` seconds, or its link is down (every
        connection hung up on, new ones too) for ``down_s`` seconds."""
        bus = self.buses[index]
        loop = asyncio.get_running_loop()
        if garbage_s > 0:
            bus.garbage = True
            loop.call_later(garbage_s, setattr, bus, "garbage", False)
        if down_s > 0:
            bus.down = True
            bus.close_connections()
            loop.call_later(down_s, setattr, bus, "down", False)
        return bus

    def set_load(self, address: str, watts: int | None) -> None:
        """Draw a fixed ``watts`` on this meter from now on; None: its own load model again."""
        if not self._load_on:
            raise ValueError("this fleet runs without a load (load=False): nothing to set")
        if watts is None:
            self.loads[address] = self._own_loads[address]
        else:
            self.loads[address] = LoadModel(fixed_w=watts)

    def press_button(self, address: str) -> None:
        """The customer's >= 3 s press on one meter."""
        self.meters[address].button(self.clock.now())

    def status(self, address: str) -> dict[str, Any]:
        """The core's status dict, with the contact."""
        m = self.meters[address]
        return dict(m.status(), contact="open" if m.relay_open else "closed")

    async def _run_load(self) -> None:
        energy = {a: Energy() for a in self.loads}
        power = {a: 0 for a in self.loads}
        pulses = {a: _Pulses() for a in self.loads}
        # the firmware's glue (energy in, a tick a second); no relay object: the contact is the
        # core's relay_open, read where the load is drawn
        apps = {a: MeterApp(self.meters[a], pulses[a], 1000) for a in self.loads}
        last = self.clock.ms()
        while True:
            await asyncio.sleep(self.tick_s)
            ms = self.clock.ms()
            dms, last = ms - last, ms
            now = ms // 1000
            meters, down = self.meters, self.down
            for a, load in self.loads.items():
                if a in down:
                    energy[a] = Energy()  # the pulses of the outage never happened
                    continue
                m = meters[a]
                if m is not apps[a].meter:  # restarted after a power loss: a new core
                    apps[a] = MeterApp(m, pulses[a], 1000)
                w = 0 if m.relay_open else load.power_w(now)
                pulses[a].n += energy[a].add(w, dms)
                apps[a].step(now, ms)
                if w != power[a] or m.power_w != w:
                    power[a] = w
                    m.set_power(w)  # the model's exact power, not the 10 s estimate

    async def close(self) -> None:
        """Stop the load, close every port and connection and the state files."""
        for t in self._tasks:
            t.cancel()
        for bus in self.buses:
            if bus.server is not None:
                bus.server.close()
            bus.close_connections()
            if bus.server is not None:
                await bus.server.wait_closed()
        for m in self.meters.values():
            m.persist()  # a clean stop keeps the energy the save policy had not saved yet
        for flash in self.flashes.values():
            if hasattr(flash, "close"):
                flash.close()


async def start_fleet(addresses: Iterable[str], **kw: Any) -> Fleet:
    """Build the meters and start serving; ``kw`` as for :class:`Fleet`: give ``port`` (one bus
    port, 0 = any), ``port_base`` or ``per_bus``.

    Keys come from ``key_for(address)`` or are derived from ``master`` like the head-end does.
    State lives in ``state_dir`` (one file per meter, kept across runs) or in RAM when None.
    """
    fleet = Fleet(addresses, **kw)
    try:
        await fleet.start()
    except BaseException:
        await fleet.close()
        raise
    return fleet


async def serve_fleet(addresses: Iterable[str], **kw: Any) -> None:
    """start_fleet(...), then serve until cancelled; closes the state files on the way out."""
    fleet = await start_fleet(addresses, **kw)
    try:
        await asyncio.Event().wait()
    finally:
        await fleet.close()


class LossyProxy:
    """A TCP hop in front of a meter that loses the meter's next ``drop_recharge`` recharge
    replies (the meter executes the recharge; the head-end never hears it did): the scripted
    man in the middle (tools.mitm) with one drop rule, on a thread of its own."""

    def __init__(self, host: str, port: int, drop_recharge: int = 1) -> None:
        from tools.mitm import DOWN, UP, ProxyThread

        self._hop = ProxyThread((host, port), keep=64)
        seen = self._hop.proxy.seen

        def answers_recharge(frame: Any) -> bool:
            last_up = next((s for s in reversed(seen) if s.direction == UP), None)
            return last_up is not None and last_up.di in (0x070101FF, 0x070102FF)

        self._rule = self._hop.proxy.drop(DOWN, function=0x03, where=answers_recharge, times=drop_recharge)
        self.port = 0

    @property
    def dropped(self) -> int:
        """Recharge replies lost so far."""
        return self._rule.hits

    def start(self) -> int:
        """Run the proxy in a background thread; returns the port it listens on."""
        self._hop.start()
        self.port = self._hop.proxy.port
        return self.port

    def stop(self) -> None:
        """Stop the proxy and its thread."""
        self._hop.stop()


async def _serve(args: argparse.Namespace) -> None:
    fleet = Fleet(fleet_addresses(args.count, args.first), master=args.master,
                  per_bus=None if args.port is not None else args.per_bus, port=args.port,
                  mode=args.mode, load=args.load, speed=args.speed)
    for spec in args.drop:
        address, _, n = spec.partition("=")
        kind, _, n = n.rpartition(":")
        fleet.fault(address).drop = int(n or 1)
        fleet.fault(address).drop_kind = kind or "all"
    for address in args.garbage:
        fleet.fault(address).garbage = True
    await fleet.start()
    # a thousand cores are thousands of long-lived objects: keep them out of every collection
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # only once a SIGTERM is heard: whoever waits for this line may signal at once
    print(json.dumps({"buses": fleet.layout()}), flush=True)
    await stop.wait()
    await fleet.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.fleet", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--count", type=int, default=3, help="number of meters")
    p.add_argument("--first", type=int, default=1, help="address of the first meter (as a number)")
    p.add_argument("--per-bus", type=int, default=1, help="meters per TCP port (each on a free port)")
    p.add_argument("--port", type=int, help="instead: one bus for all meters on this port (0: any)")
    p.add_argument("--mode", choices=("local", "remote"), default="local")
    p.add_argument("--master-file", metavar="FILE",
                   help=f"file holding the test master key (64 hex digits) the meter keys derive from "
                        f"(or set ${ENV_MASTER_KEY})")
    refuse_on_argv(p, "--master-hex", f"--master-file FILE or ${ENV_MASTER_KEY}", "--master-key-hex")
    p.add_argument("--load", action="store_true", help="run the load model (energy flows, money is spent)")
    p.add_argument("--speed", type=int, default=1, help="clock acceleration factor")
    p.add_argument("--drop", action="append", default=[], metavar="ADDRESS=[recharge:]N",
                   help="swallow that meter's next N replies (only its recharge replies with recharge:)")
    p.add_argument("--garbage", action="append", default=[], metavar="ADDRESS",
                   help="that meter answers with noise")
    args = p.parse_args(argv)
    try:
        text = secret_hex(file=args.master_file, env=ENV_MASTER_KEY, what="master key", prompt=False)
    except KeyInputError as e:
        p.error(str(e))
    if not text:
        p.error(f"give the master key the simulated meters' keys derive from: --master-file FILE or ${ENV_MASTER_KEY}")
    try:
        args.master = bytes.fromhex(text)
    except ValueError:
        p.error("the master key must be hex digits")
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
