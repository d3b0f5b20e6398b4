"""Serial links through pyserial: local ports (/dev/ttyUSB0, ptys) and pyserial URLs.

pyserial is blocking, so each open port gets one reader thread that hands chunks to the
event loop with ``call_soon_threadsafe``; writes go through a one-thread executor so they keep
their order without blocking the loop while a frame drains at 2400 baud.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import serial

from headend.transports.base import LinkSpec, LinkUnreachable, OnData, OnLost

__all__ = ["SerialConnection", "open_serial"]


class SerialConnection:
    """An open pyserial port feeding the event loop."""

    def __init__(self, port: serial.Serial, loop: asyncio.AbstractEventLoop, on_data: OnData, on_lost: OnLost) -> None:
        self._port = port
        self._loop = loop
        self._on_data = on_data
        self._on_lost = on_lost
        self._closing = False
        self._lost_sent = False
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serial-write")
        self._thread = threading.Thread(target=self._read_loop, name=f"serial-read {port.port}", daemon=True)
        self._thread.start()

    def _read_loop(self) -> None:
        exc: Exception | None = None
        try:
            while not self._closing:
                chunk = self._port.read(self._port.in_waiting or 1)
                if chunk:
                    self._loop.call_soon_threadsafe(self._on_data, chunk)
        except Exception as e:  # the port vanished (USB pulled, pty closed): report it as lost
            exc = e
        if not self._closing:
            self._loop.call_soon_threadsafe(self._lost, exc or ConnectionError("serial port closed"))

    def _lost(self, exc: Exception | None) -> None:
        if not self._lost_sent:
            self._lost_sent = True
            self._on_lost(exc)

    def _write(self, data: bytes) -> None:
        try:
            self._port.write(data)
            self._port.flush()
        except Exception as exc:
            if not self._closing:
                self._loop.call_soon_threadsafe(self._lost, exc)

    def write(self, data: bytes) -> None:
        if not self._closing:
            self._writer.submit(self._write, data)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._writer.shutdown(wait=False)
        try:
            self._port.cancel_read()
        except Exception:
            pass
        try:
            self._port.close()
        except Exception:
            pass
        self._lost(None)


def _open_port(spec: LinkSpec) -> serial.Serial:
    return serial.serial_for_url(
        spec.device,
        baudrate=spec.baudrate,
        parity=spec.parity,
        bytesize=spec.bytesize,
        stopbits=spec.stopbits,
        timeout=0.05,
    )


async def open_serial(spec: LinkSpec, on_data: OnData, on_lost: OnLost, *, timeout: float = 5.0) -> SerialConnection:
    """Open the port or pyserial URL of ``spec``; raises :class:`LinkUnreachable` if it cannot."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            port = await asyncio.to_thread(_open_port, spec)
    except TimeoutError:
        raise LinkUnreachable(f"{spec.url}: the port did not open within {timeout:g} s") from None
    except (serial.SerialException, OSError, ValueError) as exc:
        raise LinkUnreachable(f"{spec.url}: cannot open: {exc}; check the device name and permissions") from None
    return SerialConnection(port, loop, on_data, on_lost)
