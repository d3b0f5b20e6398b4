"""The plain-asyncio ceiling of a read cycle: the least work a master can do per read.

One ``asyncio.Protocol`` connection per bus; each meter of the bus is asked in turn (a bus is
half duplex: one request at a time) from the loop's own callbacks, the next request written as
soon as the last byte of the previous reply has arrived.  Requests are built once; replies are
only counted by their length, never cut out, checked, decoded or stored.  Every bus runs at
once and a cycle ends when each bus has asked all its meters, as a head-end read cycle does, so
the two can be run against the same far end (the same fleet process, the same meter cores)
and interleaved: the head-end's read cycles (tools/bench/bench_headend.py) and the load run's
(tools/loadrun.py) are measured against it.

    rate = await ceiling_cycles(buses, seconds=1.0, dis=[0x00010000])   # reads/s over whole cycles
"""

from __future__ import annotations

import asyncio
import socket
import time

from protocol import build_frame
from protocol import di as registry

__all__ = ["BusCycle", "ceiling_cycles", "open_buses", "read_reply_length"]


def read_reply_length(address: str, di: int) -> int:
    """Bytes of a meter's normal reply to an 11H read of ``di`` (no FE preamble: meters send none)."""
    item = registry.lookup(di)
    if item is None or item.length is None:
        raise ValueError(f"DI {di:08X} has no fixed value length: the ceiling counts replies by their length")
    return len(build_frame(address, 0x91, di.to_bytes(4, "little") + bytes(item.length), preamble=0))


class BusCycle(asyncio.Protocol):
    """One bus's requests, asked in turn from ``data_received``: reply ``i`` is complete when
    ``lengths[i]`` more bytes have come, and request ``i + 1`` goes out in the same callback."""

    def __init__(self, requests: list[bytes], lengths: list[int]) -> None:
        if len(requests) != len(lengths) or not requests:
            raise ValueError("one expected reply length per request, and at least one request")
        self.requests, self.lengths = requests, lengths
        self.got = 0
        self.i = 0
        self.need = lengths[0]
        self.done: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:  # as the head-end's own TCP links do: no Nagle delay on small frames
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def cycle(self) -> asyncio.Future[None]:
        """Ask every request once, in turn; the future is done when the last reply is in."""
        assert self.transport is not None
        self.done = asyncio.get_running_loop().create_future()
        self.i, self.got, self.need = 0, 0, self.lengths[0]
        self.transport.write(self.requests[0])
        return self.done

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        if self.got < self.need:
            return
        self.got -= self.need
        self.i += 1
        if self.i < len(self.requests):
            self.need = self.lengths[self.i]
            self.transport.write(self.requests[self.i])  # type: ignore[union-attr]
        elif self.done is not None and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError(f"a bus hung up during the ceiling's cycle: {exc}"))


async def open_buses(buses: list[dict], dis: list[int], *, echo: bool = False) -> list[BusCycle]:
    """One connection per bus (``{"link": "tcp://host:port", "meters": [addresses]}``), each
    meter's reads of ``dis`` prepared in order; ``echo``: the far end sends every request
    straight back, so a reply is as long as its request."""
    loop = asyncio.get_running_loop()
    conns = []
    for bus in buses:
        host, port = bus["link"].removeprefix("tcp://").rsplit(":", 1)
        reqs = [build_frame(a, 0x11, di.to_bytes(4, "little"), preamble=4) for a in bus["meters"] for di in dis]
        lens = [len(r) for r in reqs] if echo else [read_reply_length(a, di) for a in bus["meters"] for di in dis]
        _, proto = await loop.create_connection(lambda reqs=reqs, lens=lens: BusCycle(reqs, lens), host, int(port))
        conns.append(proto)
    return conns


async def ceiling_cycles(buses: list[dict], seconds: float, dis: list[int], *, echo: bool = False,
                         conns: list[BusCycle] | None = None) -> float:
    """Reads/s over whole cycles (every bus at once, each meter's ``dis`` in turn), cycles run back
    to back for at least ``seconds`` (and at least one).  ``conns`` from :func:`open_buses` are
    reused and left open; without them the buses are opened first and closed after."""
    own = conns is None
    if conns is None:
        conns = await open_buses(buses, dis, echo=echo)
    reads = 0
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds or reads == 0:
            await asyncio.gather(*(c.cycle() for c in conns))
            reads += sum(len(c.requests) for c in conns)
        return reads / (time.perf_counter() - t0)
    finally:
        if own:
            for c in conns:
                if c.transport is not None:
                    c.transport.close()
