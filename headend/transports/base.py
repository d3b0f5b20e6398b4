"""Byte pipes the comms front-end talks through, and link URLs.

A *connection* only moves bytes: it calls ``on_data(chunk)`` for whatever arrives and
``on_lost(exc)`` once when it goes away, and offers ``write(data)`` and ``close()``.  All
protocol knowledge lives in :mod:`headend.link`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol
from urllib.parse import SplitResult, parse_qs, urlsplit

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


_PARITIES = {"N": "N", "E": "E", "O": "O", "NONE": "N", "EVEN": "E", "ODD": "O"}
_PYSERIAL_SCHEMES = {"socket", "rfc2217", "loop", "spy", "hwgrep", "alt", "cp2110"}
_NETWORK_SCHEMES = ("socket", "rfc2217")  # pyserial URLs that name a host and port
# The line settings a meter image accepts (firmware/hal/config.py): a link that asks for others
# could never talk to one of our meters.
BAUD_MIN, BAUD_MAX = 300, 115200
_EXAMPLE = "serial:///dev/ttyUSB0?baud=2400&parity=E"


def _serial_opts(query: str, url: str) -> dict:
    opts: dict = {}
    q = {k.lower(): v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    known = {"baud", "baudrate", "parity", "bytesize", "databits", "stopbits"}
    unknown = sorted(set(q) - known)
    if unknown:
        raise ValueError(f"link {url!r}: unknown serial option(s) {', '.join(unknown)}; "
                         f"known: baud, parity, bytesize, stopbits (e.g. {_EXAMPLE})")

    def number(key: str, kind: type, allowed: str) -> int | float:
        text = q[key]
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"link {url!r}: {key}={text!r} is not a number; {key} is {allowed}") from None

    if "baud" in q or "baudrate" in q:
        key = "baud" if "baud" in q else "baudrate"
        baud = int(number(key, int, f"{BAUD_MIN}..{BAUD_MAX}"))
        if not BAUD_MIN <= baud <= BAUD_MAX:
            raise ValueError(f"link {url!r}: {key}={baud} is outside {BAUD_MIN}..{BAUD_MAX}")
        opts["baudrate"] = baud
    if "parity" in q:
        parity = _PARITIES.get(q["parity"].upper())
        if parity is None:
            raise ValueError(f"link {url!r}: parity={q['parity']!r}; parity is E (even, DL/T 645's), O (odd) or N (none)")
        opts["parity"] = parity
    if "bytesize" in q or "databits" in q:
        key = "bytesize" if "bytesize" in q else "databits"
        size = int(number(key, int, "5..8"))
        if not 5 <= size <= 8:
            raise ValueError(f"link {url!r}: {key}={size} is outside 5..8")
        opts["bytesize"] = size
    if "stopbits" in q:
        stop = float(number("stopbits", float, "1, 1.5 or 2"))
        if stop not in (1, 1.5, 2):
            raise ValueError(f"link {url!r}: stopbits={q['stopbits']} must be 1, 1.5 or 2")
        opts["stopbits"] = stop
    return opts


def _host_port(url: str, scheme: str, parts: SplitResult, *, port_zero: bool = False) -> tuple[str, int]:
    lowest = 0 if port_zero else 1
    form = f"write it as {scheme}://HOST:PORT"
    if not parts.hostname:
        raise ValueError(f"link {url!r}: no host; {form}")
    try:
        port = parts.port
    except ValueError:
        raw = parts.netloc.rpartition(":")[2]
        if raw.isdigit():
            raise ValueError(f"link {url!r}: port {raw} is outside {lowest}..65535") from None
        raise ValueError(f"link {url!r}: port {raw!r} is not a number; {form}") from None
    if port is None:
        raise ValueError(f"link {url!r}: no port; {form}")
    if port < lowest:
        raise ValueError(f"link {url!r}: port {port} is outside {lowest}..65535")
    return parts.hostname, port


def parse_link_url(url: str) -> LinkSpec:
    """Parse a link URL: tcp://host:port, listen://host:port, serial:///dev/x?baud=2400&parity=E,
    a bare device path, or any pyserial URL (socket://, rfc2217://, loop:// ...)."""
    url = url.strip()
    if url.startswith("/"):
        return LinkSpec(url=url, kind="serial", device=url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("tcp", "listen"):
        # listen://HOST:0 lets the system pick a port (tests, demos); a meter cannot be dialled on 0
        host, port = _host_port(url, scheme, parts, port_zero=scheme == "listen")
        return LinkSpec(url=url, kind=scheme, host=host, port=port)
    if scheme == "serial":
        device = parts.path or parts.netloc
        if not device:
            raise ValueError(f"link {url!r}: name the device, e.g. {_EXAMPLE}")
        return LinkSpec(url=url, kind="serial", device=device, **_serial_opts(parts.query, url))
    if scheme in _NETWORK_SCHEMES:
        _host_port(url, scheme, parts)
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
