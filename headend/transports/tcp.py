"""TCP dial-out: the head-end connects to a meter, a serial server or a DTU."""

from __future__ import annotations

import asyncio
import socket
from typing import Callable

from headend.transports.base import LinkUnreachable, OnData, OnLost

__all__ = ["StreamProtocol", "open_tcp"]


class StreamProtocol(asyncio.Protocol):
    """Hands every received chunk to ``on_data``; tells ``on_lost`` once when the socket closes."""

    def __init__(self, on_data: OnData, on_lost: OnLost) -> None:
        self._on_data = on_data
        self._on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self._write: Callable[[bytes], None] | None = None  # the transport's, while it is open
        # each chunk goes straight to on_data: the transport calls it with no hop through here
        self.data_received = on_data  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._write = transport.write  # type: ignore[attr-defined]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:  # small request/reply frames: do not let Nagle hold them back
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        self._on_data(data)

    def eof_received(self) -> None:
        self._write = None  # the transport closes itself next (returning None says so)

    def connection_lost(self, exc: Exception | None) -> None:
        self._write = None
        self._on_lost(exc)

    def write(self, data: bytes) -> None:
        w = self._write
        if w is not None:  # nothing goes out once the connection is closing or gone
            w(data)

    def close(self) -> None:
        self._write = None
        if self.transport is not None:
            self.transport.close()


async def open_tcp(host: str, port: int, on_data: OnData, on_lost: OnLost, *, timeout: float = 5.0) -> StreamProtocol:
    """Dial ``host:port``; raises :class:`LinkUnreachable` with the reason if that fails."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            _, proto = await loop.create_connection(lambda: StreamProtocol(on_data, on_lost), host, port)
    except TimeoutError:
        raise LinkUnreachable(f"tcp://{host}:{port}: no connection within {timeout:g} s; is the meter or DTU on line?") from None
    except ConnectionRefusedError:
        raise LinkUnreachable(f"tcp://{host}:{port}: connection refused; nothing listens there: check the address and that the meter or DTU is up") from None
    except socket.gaierror as exc:
        raise LinkUnreachable(f"tcp://{host}:{port}: unknown host ({exc.strerror}); check the link URL") from None
    except OSError as exc:
        raise LinkUnreachable(f"tcp://{host}:{port}: {exc.strerror or exc}; check the address and that the meter listens") from None
    return proto
