"""The plain-asyncio ceiling (tools/bench/ceiling.py) really does what a read cycle does: every
meter of a bus asked once per cycle, in turn, each request only after the whole previous reply,
all buses at once; here against the real simulated meters and against a far end that splits
its replies and sends them byte by byte."""

from __future__ import annotations

import asyncio
import os

import pytest

from protocol import build_frame, parse_frame
from tools.bench.ceiling import BusCycle, ceiling_cycles, open_buses, read_reply_length
from tools.fleet import fleet_addresses, start_fleet

ENERGY = 0x00010000
MONEY = 0x00900200


class _SplitBus(asyncio.Protocol):
    """A bus whose meters answer every read with its real reply length, in one-byte chunks, and
    that records each request and whether one arrived while an answer was still going out."""

    def __init__(self, log: list[tuple[str, int]], overlaps: list[bytes]) -> None:
        self.log, self.overlaps = log, overlaps
        self.sending = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.sending:
            self.overlaps.append(data)
        f = parse_frame(data)
        di = int.from_bytes(f.data[:4], "little")
        self.log.append((f.address, di))
        reply = b"\x00" * read_reply_length(f.address, di)
        self.sending = True
        for i in range(len(reply) - 1):
            self.transport.write(reply[i:i + 1])  # type: ignore[attr-defined]
        # the last byte a little later: a client that asked again before it would be seen doing so
        asyncio.get_running_loop().call_later(0.02, self._last, reply[-1:])

    def _last(self, byte: bytes) -> None:
        self.sending = False
        self.transport.write(byte)  # type: ignore[attr-defined]


def test_each_meter_asked_once_per_cycle_in_turn_with_replies_in_pieces() -> None:
    async def main() -> tuple[list, list, float]:
        log: list[tuple[str, int]] = []
        overlaps: list[bytes] = []
        loop = asyncio.get_running_loop()
        servers = [await loop.create_server(lambda: _SplitBus(log, overlaps), "127.0.0.1", 0) for _ in range(2)]
        buses = [{"link": f"tcp://127.0.0.1:{s.sockets[0].getsockname()[1]}", "meters": m}
                 for s, m in zip(servers, (["000000000001", "000000000002"], ["000000000003"]))]
        rate = await ceiling_cycles(buses, 0.0, [ENERGY, MONEY])   # no window: exactly one cycle
        for s in servers:
            s.close()
        return log, overlaps, rate

    log, overlaps, rate = asyncio.run(main())
    assert not overlaps  # never a second request on a bus before the whole reply was in
    assert [x for x in log if x[0] != "000000000003"] == [
        ("000000000001", ENERGY), ("000000000001", MONEY), ("000000000002", ENERGY), ("000000000002", MONEY)]
    assert [x for x in log if x[0] == "000000000003"] == [("000000000003", ENERGY), ("000000000003", MONEY)]
    assert rate > 0


def test_against_the_real_meter_cores_the_reply_lengths_match() -> None:
    async def main() -> list[int]:
        fleet = await start_fleet(fleet_addresses(6), master=os.urandom(32), per_bus=3, load=False)
        try:
            conns = await open_buses(fleet.layout(), [ENERGY, MONEY])
            for _ in range(3):   # a wrong reply length would hang a cycle or cut the next reply short
                await asyncio.wait_for(asyncio.gather(*(c.cycle() for c in conns)), 60)
            left = [c.got for c in conns]
            for c in conns:
                c.transport.close()  # type: ignore[union-attr]
            return left
        finally:
            await fleet.close()

    assert asyncio.run(main()) == [0, 0]   # every reply taken whole, nothing left over


def test_echo_far_end_counts_the_request_itself() -> None:
    req = build_frame("000000000001", 0x11, ENERGY.to_bytes(4, "little"), preamble=4)

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)  # type: ignore[attr-defined]

    async def main() -> list[int]:
        server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)
        bus = {"link": f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}", "meters": ["000000000001"]}
        conns = await open_buses([bus], [ENERGY], echo=True)
        await asyncio.wait_for(conns[0].cycle(), 60)
        conns[0].transport.close()  # type: ignore[union-attr]
        server.close()
        return conns[0].lengths

    assert asyncio.run(main()) == [len(req)]


def test_bad_use_is_named() -> None:
    with pytest.raises(ValueError, match="one expected reply length per request"):
        BusCycle([b"x"], [])
    with pytest.raises(ValueError, match="no fixed value length"):
        read_reply_length("000000000001", 0x0001FF00)
