"""A refused identity authentication says what to check: the key store and KRN only when the
meter's security word says the proof failed; a meter without DL/T 645 security is named as such."""

from __future__ import annotations

import asyncio

import pytest

from headend.commands import MeterClient, MeterRefused, MeterTarget
from headend.keys import KeyStore
from headend.transports import FrontEnd, LinkSettings
from protocol import Deframer, build_frame, parse_frame

ADDR = "000000000007"


async def _meter_answering_03h_with(data: bytes) -> asyncio.base_events.Server:
    """A DL/T 645 meter on loopback that answers every 03H with an abnormal reply carrying `data`."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cut = Deframer()
        while chunk := await reader.read(256):
            cut.feed(chunk)
            while (raw := cut.next_frame()) is not None:
                if parse_frame(raw).control == 0x03:
                    writer.write(build_frame(ADDR, 0xC3, data))
                    await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


@pytest.mark.parametrize("data, says, hint", [
    (b"\x04", "it has no DL/T 645 security", False),        # an ERR byte: no security at all
    (b"\x08\x00", "identity authentication", True),          # SERR auth-failed: wrong key or KRN
    (b"\x00\x01", "identity authentication", False),         # SERR suspended: no key would help
])
def test_authentication_refusal_hints_only_where_it_helps(data: bytes, says: str, hint: bool) -> None:
    async def main() -> str:
        server = await _meter_answering_03h_with(data)
        port = server.sockets[0].getsockname()[1]
        frontend = FrontEnd(LinkSettings(timeout=2.0, retries=0))
        keys = KeyStore.in_memory(bytes(range(32)))
        client = MeterClient(frontend, lambda m: keys.meter_key(m.address, m.krn))
        try:
            with pytest.raises(MeterRefused) as refused:
                await client.control(MeterTarget(ADDR, f"tcp://127.0.0.1:{port}"), "trip")
            return str(refused.value)
        finally:
            await frontend.close()
            server.close()

    text = asyncio.run(main())
    assert says in text
    assert ("check the key store and the meter's KRN" in text) is hint
