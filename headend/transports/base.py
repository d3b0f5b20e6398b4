"""Byte pipes the comms front-end talks through, and link URLs.

A *connection* only moves bytes: it calls ``on_data(chunk)`` for whatever arrives and
``on_lost(exc)`` once when it goes away, and offers ``write(data)`` and ``close()``.  All
protocol knowledge lives in :mod:`headend.link`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "Connection",
    "LinkDown",
    "LinkError",
    "LinkSpec",
    "LinkUnreachable",
    "OnData",
    "OnLost",
    "parse_link_url",
]

OnData = Callable[[bytes], None]
OnLost = Callable[[Exception | None], None]


class LinkError(ConnectionError):
    """A link-level failure: the message names the link and what to check."""


class LinkUnreachable(LinkError):
    """The link could not be opened (nothing listening, no such serial device, refused)."""


class LinkDown(LinkError):
    """An open link went away while a request was outstanding."""


class Connection(Protocol):
    """An open byte pipe."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class LinkSpec:
    """A parsed link URL: ``kind`` is "tcp", "serial" or "listen"."""

    url: str
    kind: str
    host: str = ""
    port: int = 0
    device: str = ""  # serial: device path or a pyserial URL (socket://, rfc2217://, loop:// ...)
    baudrate: int = 2400
    parity: str = "E"
    bytesize: int = 8
    stopbits: float = 1


_PARITIES = {"N": "N", "E": "E", "O": "O", "M": "M", "S": "S", "NONE": "N", "EVEN": "E", "ODD": "O"}
_PYSERIAL_SCHEMES = {"socket", "rfc2217", "loop", "spy", "hwgrep", "alt", "cp2110"}


def _serial_opts(query: str, url: str) -> dict:
    opts: dict = {}
    q = {k.lower(): v[-1] for k, v in parse_qs(query).items()}
    try:
        if "baud" in q or "baudrate" in q:
            opts["baudrate"] = int(q.get("baud") or q["baudrate"])
        if "parity" in q:
            opts["parity"] = _PARITIES[q["parity"].upper()]
        if "bytesize" in q or "databits" in q:
            opts["bytesize"] = int(q.get("bytesize") or q["databits"])
        if "stopbits" in q:
            opts["stopbits"] = float(q["stopbits"])
    except (KeyError, ValueError):
        raise ValueError(
            f"link {url!r}: bad serial options; use e.g. serial:///dev/ttyUSB0?baud=2400&parity=E"
        ) from None
    return opts


def parse_link_url(url: str) -> LinkSpec:
    """Parse a link URL: tcp://host:port, listen://host:port, serial:///dev/x?baud=2400&parity=E,
    a bare device path, or any pyserial URL (socket://, rfc2217://, loop:// ...)."""
    url = url.strip()
    if url.startswith("/"):
        return LinkSpec(url=url, kind="serial", device=url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("tcp", "listen"):
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise ValueError(f"link {url!r}: write it as {scheme}://HOST:PORT")
        return LinkSpec(url=url, kind=scheme, host=parts.hostname, port=port)
    if scheme == "serial":
        device = parts.path or parts.netloc
        if not device:
            raise ValueError(f"link {url!r}: name the device, e.g. serial:///dev/ttyUSB0?baud=2400&parity=E")
        return LinkSpec(url=url, kind="serial", device=device, **_serial_opts(parts.query, url))
    if scheme in _PYSERIAL_SCHEMES:
        # pyserial understands its own query options (e.g. ?logging=debug); take ours out.
        q = parse_qs(parts.query, keep_blank_values=True)
        ours = {k: v for k, v in q.items() if k.lower() in ("baud", "baudrate", "parity", "bytesize", "databits", "stopbits")}
        rest = "&".join(f"{k}={v[-1]}" if v[-1] else k for k, v in q.items() if k not in ours)
        device = parts._replace(query=rest).geturl()
        opts = _serial_opts("&".join(f"{k}={v[-1]}" for k, v in ours.items()), url)
        return LinkSpec(url=url, kind="serial", device=device, **opts)
    raise ValueError(
        f"link {url!r}: unknown scheme; use tcp://HOST:PORT, listen://HOST:PORT, "
        "serial:///dev/ttyUSB0?baud=2400&parity=E or a pyserial URL (socket://, rfc2217://)"
    )
