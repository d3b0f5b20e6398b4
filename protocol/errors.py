"""The one error type the protocol package raises for bad bytes or bad values."""

from __future__ import annotations

__all__ = ["ProtocolError"]


class ProtocolError(ValueError):
    """A frame, payload or value that does not follow the wire format.

    ``reason`` is a short machine-readable code ("checksum", "terminator", "length",
    "start", "bcd", "address", "truncated", "unknown-di", "value", "control",
    "preamble", "payload"); ``str(err)`` names the fault and what to do about it.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):  # keep .reason across pickling (multiprocessing, xdist)
        return (type(self), (self.reason, self.args[0]))
