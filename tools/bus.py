"""Many simulated meters in one asyncio process: real `meter.core.Meter` cores behind TCP ports.

Each *bus* is one listening TCP port with one or more meters on it, the way an RS-485 bus sits
behind a serial server: every frame that arrives is offered to every meter on the bus and only
the addressed one answers.  Faults for tests: ``drop`` (swallow the next N replies),
``garbage`` (answer with noise).  Used by the head-end tests, the demo and the benchmark fleet.

    python -m tools.bus --count 1000 --per-bus 1 --master-hex 00..  # prints one JSON line with the links

The master key given here is a test key for simulated meters only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))

from meter import clock  # noqa: E402
from meter.core import Meter  # noqa: E402
from meter.store import RamFlash  # noqa: E402

from headend.link.security import derive_meter_key  # noqa: E402

__all__ = ["Bus", "Fleet", "meter_now", "make_meter"]


_NOW = [0, 0]  # host second, meter time: a fleet asks thousands of times a second


def meter_now() -> int:
    """Host local time as meter time (seconds since 2000-01-01 local)."""
    s = int(time.time())
    if s != _NOW[0]:
        t = time.localtime(s)
        _NOW[0], _NOW[1] = s, clock.from_fields(t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)
    return _NOW[1]


def make_meter(master: bytes, address: str, *, mode: str = "local", krn: int = 0, key: bytes | None = None) -> Meter:
    """A fresh meter core keyed from ``master`` (or an explicit ``key``), state in RAM."""
    cfg = {
        "address": address,
        "key": key if key is not None else derive_meter_key(master, address, krn),
        "krn": krn,
        "mode": mode,
    }
    return Meter(cfg, RamFlash(16384), meter_now(), os.urandom)


@dataclass
class Fault:
    """Faults of one meter on a bus: lose its next ``drop`` replies, or answer noise."""

    drop: int = 0
    drop_kind: str = "all"
    garbage: bool = False


def _whole_frame(chunk: bytes) -> bytes | None:
    """The frame if ``chunk`` is exactly one (after FE), by its L byte; else None."""
    p = 0
    n = len(chunk)
    while p < n and chunk[p] == 0xFE:
        p += 1
    if n - p >= 12 and chunk[p] == 0x68 and chunk[p + 7] == 0x68 and n == p + 12 + chunk[p + 9] and chunk[-1] == 0x16:
        return chunk[p:] if p else chunk
    return None


def _noise() -> bytes:
    return b"\x68\x01\x02\x68\x91\x05" + os.urandom(12) + b"\x16"


@dataclass
class Bus:
    """One TCP port with meters on it."""

    meters: list[Meter]
    drop: int = 0
    drop_kind: str = "all"  # "all" replies, or only "recharge" replies
    garbage: bool = False
    server: asyncio.Server | None = None
    frames_in: int = 0
    faults: dict[str, Fault] = field(default_factory=dict)
    connections: list[asyncio.Transport] = field(default_factory=list)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def on_bytes(self, chunk: bytes) -> list[bytes]:
        now = meter_now()
        out: list[bytes] = []
        self.frames_in += 1
        whole = _whole_frame(chunk)
        for m in self.meters:
            d = m.deframer
            if whole is not None and d.s == d.e:
                # the usual TCP case: one whole frame and nothing half-received; skip the scan
                r = m.handle(whole, now)
                replies = [r] if r is not None else []
            else:
                replies = m.feed(chunk, now)
            if not replies:
                continue
            f = self.faults.get(_addr(m)) if self.faults else None
            if f is not None:
                if f.drop > 0 and (f.drop_kind == "all" or _is_recharge(chunk)):
                    f.drop -= 1
                    continue
                if f.garbage:
                    replies = [_noise()]
            out += replies
        if not out:
            return out
        if self.drop > 0 and (self.drop_kind == "all" or _is_recharge(chunk)):
            self.drop -= 1
            return []
        if self.garbage:
            return [_noise()]
        return out

    def close_connections(self) -> None:
        """Hang up on every connected head-end (a dropped link)."""
        for t in self.connections:
            t.close()
        self.connections.clear()


_RECHARGE_DIS = {bytes((b + 0x33) & 0xFF for b in (0xFF, k, 0x01, 0x07)) for k in (0x01, 0x02)}  # open account, recharge


def _is_recharge(chunk: bytes) -> bool:
    # an 03H frame whose DI (after +33H) is 07 01 01 FF or 07 01 02 FF: 68 A0..A5 68 03 L DI...
    i = chunk.find(b"\x68")
    return i >= 0 and len(chunk) >= i + 14 and chunk[i + 8] == 0x03 and bytes(chunk[i + 10 : i + 14]) in _RECHARGE_DIS


class _BusProtocol(asyncio.Protocol):
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.bus.connections.append(self.transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        for reply in self.bus.on_bytes(data):
            assert self.transport is not None
            self.transport.write(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport in self.bus.connections:
            self.bus.connections.remove(self.transport)  # type: ignore[arg-type]


class Fleet:
    """Meters grouped into buses, each bus on its own loopback port."""

    def __init__(self, master: bytes, addresses: list[str], *, per_bus: int = 1, mode: str = "local", host: str = "127.0.0.1") -> None:
        self.master = master
        self.host = host
        self.meters: dict[str, Meter] = {a: make_meter(master, a, mode=mode) for a in addresses}
        self.buses = [Bus([self.meters[a] for a in addresses[i : i + per_bus]]) for i in range(0, len(addresses), per_bus)]
        self._bus_of = {id(m): b for b in self.buses for m in b.meters}

    async def start(self) -> None:
        """Open every bus's listening port."""
        loop = asyncio.get_running_loop()
        for bus in self.buses:
            bus.server = await loop.create_server(lambda bus=bus: _BusProtocol(bus), self.host, 0, backlog=4096)

    def link_of(self, address: str) -> str:
        """The link URL that reaches meter ``address``."""
        return self._bus_of[id(self.meters[address])].url

    def bus_of(self, address: str) -> Bus:
        """The bus meter ``address`` sits on."""
        return self._bus_of[id(self.meters[address])]

    def fault(self, address: str) -> Fault:
        """The fault settings of one meter (created on first use)."""
        return self.bus_of(address).faults.setdefault(address, Fault())

    def layout(self) -> list[dict]:
        """[{"link": url, "meters": [addresses]}] for every bus."""
        return [{"link": b.url, "meters": [_addr(m) for m in b.meters]} for b in self.buses]

    async def close(self) -> None:
        """Close every port and connection."""
        for bus in self.buses:
            if bus.server is not None:
                bus.server.close()
            bus.close_connections()


def _addr(m: Meter) -> str:
    return "".join(f"{b:02X}" for b in reversed(bytes(m.addr)))


def fleet_addresses(n: int, first: int = 1) -> list[str]:
    """n consecutive 12-digit addresses starting at ``first``."""
    return [f"{i:012d}" for i in range(first, first + n)]


class LossyProxy:
    """A TCP hop in front of a meter that loses the meter's next ``drop_recharge`` recharge
    replies (the meter executes the recharge; the head-end never hears it did)."""

    def __init__(self, host: str, port: int, drop_recharge: int = 1) -> None:
        self.target = (host, port)
        self.drop_recharge = drop_recharge
        self.dropped = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread = None
        self.port = 0

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            m_reader, m_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        last_was_recharge = [False]

        async def up() -> None:
            while chunk := await reader.read(4096):
                last_was_recharge[0] = _is_recharge(chunk.lstrip(b"\xfe"))
                m_writer.write(chunk)
            m_writer.close()

        async def down() -> None:
            while chunk := await m_reader.read(4096):
                if last_was_recharge[0] and self.drop_recharge > 0:
                    self.drop_recharge -= 1
                    self.dropped += 1
                    continue
                writer.write(chunk)
            writer.close()

        await asyncio.gather(up(), down(), return_exceptions=True)

    def start(self) -> int:
        """Run the proxy in a background thread; returns the port it listens on."""
        import threading

        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop

            async def go() -> None:
                self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
                self.port = self._server.sockets[0].getsockname()[1]
                ready.set()
                await self._server.serve_forever()

            try:
                loop.run_until_complete(go())
            except (asyncio.CancelledError, RuntimeError):
                pass

        self._thread = threading.Thread(target=run, daemon=True, name="lossy-proxy")
        self._thread.start()
        ready.wait(10)
        return self.port

    def stop(self) -> None:
        """Stop the proxy and its thread."""
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
            for task in asyncio.all_tasks(self._loop):
                self._loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(5)


class _Echo(asyncio.Protocol):
    """Plain asyncio: send every chunk straight back (the round-trip ceiling of the benchmark)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


async def _serve_echo(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(_Echo, "127.0.0.1", 0, backlog=4096) for _ in range(args.count)]
    links = [f"tcp://127.0.0.1:{s.sockets[0].getsockname()[1]}" for s in servers]
    print(json.dumps({"echo": links}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        s.close()


async def _serve(args: argparse.Namespace) -> None:
    if args.echo:
        await _serve_echo(args)
        return
    master = bytes.fromhex(args.master_hex)
    fleet = Fleet(master, fleet_addresses(args.count, args.first), per_bus=args.per_bus, mode=args.mode)
    for spec in args.drop:
        address, _, n = spec.partition("=")
        kind, _, n = n.rpartition(":")
        fleet.fault(address).drop = int(n or 1)
        fleet.fault(address).drop_kind = kind or "all"
    for address in args.garbage:
        fleet.fault(address).garbage = True
    await fleet.start()
    print(json.dumps({"buses": fleet.layout()}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await fleet.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bus", description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=3, help="number of meters")
    p.add_argument("--first", type=int, default=1, help="address of the first meter (as a number)")
    p.add_argument("--per-bus", type=int, default=1, help="meters per TCP port")
    p.add_argument("--mode", choices=("local", "remote"), default="local")
    p.add_argument("--echo", action="store_true", help="no meters: COUNT ports that echo bytes back (benchmark ceiling)")
    p.add_argument("--master-hex", help="test master key (64 hex digits) the meter keys derive from")
    p.add_argument("--drop", action="append", default=[], metavar="ADDRESS=[recharge:]N",
                   help="swallow that meter's next N replies (only its recharge replies with recharge:)")
    p.add_argument("--garbage", action="append", default=[], metavar="ADDRESS",
                   help="that meter answers with noise")
    args = p.parse_args(argv)
    if not args.echo and not args.master_hex:
        p.error("--master-hex is required: the simulated meters' keys derive from it")
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
