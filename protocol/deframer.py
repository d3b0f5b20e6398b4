"""Sans-I/O stream deframer: feed any chunks of a byte stream, take out whole frames.

Theory of operation
-------------------
The buffer is scanned for a 68H; six bytes later there must be a second 68H, and then the
L byte says where the frame ends (12 + L bytes from the first 68H).  The end is never found by
searching for 16H: checksums, control bytes (16H = freeze) and data can all equal 16H.

* A candidate that is complete is accepted when its terminator is 16H and its checksum
  matches; otherwise only its first byte is dropped and the scan goes on, so a valid frame
  that starts inside a corrupt one (for example one whose L byte was hit by noise) is found.
* A candidate that is not complete yet is waited for, unless a complete, valid frame starts
  later in the buffer: then the candidate was junk (a corrupt L claiming more bytes than
  came) and the frame behind it is delivered without waiting for more traffic.
* FE wake-up bytes and line noise are skipped.  ``discarded`` counts every dropped byte that
  was not an FE.  The buffer never holds more than ``max_buffer`` bytes: on a babbling
  line the oldest bytes go first, after every complete frame in them has been taken out.

The deframer checks framing only (structure, L, checksum, terminator); ``parse_frame``
checks the rest (address digits) and names any fault.  Whole frames wait in a queue until
``next_frame``/``frames`` take them: drain after every ``feed``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

__all__ = ["Deframer"]

_START = 0x68
_END = 0x16
_MIN_FRAME = 12
_MAX_FRAME = 12 + 255


class Deframer:
    """Cuts DL/T 645 frames out of a byte stream; never touches a port."""

    def __init__(self, max_buffer: int = 1024) -> None:
        if max_buffer < _MAX_FRAME:
            raise ValueError(f"max_buffer must hold the longest frame ({_MAX_FRAME} bytes), got {max_buffer}")
        self._buf = bytearray()
        self._max = max_buffer
        self._ready: deque[bytes] = deque()
        self.discarded = 0

    def feed(self, chunk: bytes) -> None:
        """Add received bytes (any size, any split)."""
        room = self._max
        for k in range(0, len(chunk), room):
            self._buf += chunk[k : k + room]
            self._scan()
            excess = len(self._buf) - self._max
            if excess > 0:
                self._drop(excess)
                self._scan()

    def next_frame(self) -> bytes | None:
        """The next whole raw frame (FE stripped, checksum verified), or None if none is complete."""
        if self._ready:
            return self._ready.popleft()
        return None

    def frames(self) -> Iterator[bytes]:
        """Drain every complete frame."""
        while self._ready:
            yield self._ready.popleft()

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    def _drop(self, n: int) -> None:
        dropped = self._buf[:n]
        self.discarded += n - dropped.count(0xFE)
        del self._buf[:n]

    def _complete_at(self, p: int) -> int:
        """End of a complete, sound frame starting at p, else 0 (-1 if it may still be arriving)."""
        buf = self._buf
        n = len(buf)
        if n - p < _MIN_FRAME:
            return -1 if n - p < 8 or buf[p + 7] == _START else 0
        if buf[p + 7] != _START:
            return 0
        end = p + _MIN_FRAME + buf[p + 9]
        if end > n:
            return -1
        if buf[end - 1] == _END and sum(buf[p : end - 2]) & 0xFF == buf[end - 2]:
            return end
        return 0

    def _later_frame(self, p: int) -> int:
        """Start of the first complete, sound frame after p, or -1."""
        buf = self._buf
        q = buf.find(_START, p + 1)
        while q >= 0:
            if self._complete_at(q) > 0:
                return q
            q = buf.find(_START, q + 1)
        return -1

    def _scan(self) -> None:
        buf = self._buf
        while buf:
            p = buf.find(_START)
            if p < 0:
                self._drop(len(buf))
                return
            if p:
                self._drop(p)
            end = self._complete_at(0)
            if end > 0:
                self._ready.append(bytes(buf[:end]))
                del buf[:end]
            elif end < 0:
                later = self._later_frame(0)
                if later < 0:
                    return  # plausible start of a frame: wait for the rest
                self._drop(later)
            else:
                self._drop(1)  # not a frame here: step past this 68H only
