"""Request/response matching on one DL/T 645 bus, with no I/O.

Theory of operation
-------------------
A bus is half duplex: the head-end asks, one addressed meter answers, and only then may the
next question go out.  :class:`LinkSession` is that rule as a state machine that never reads,
writes, sleeps or awaits; time is passed in (``now``, seconds from any monotonic clock).

* ``begin(request, now)`` returns the bytes to write (FE wake-up preamble + frame) and arms
  a reply deadline.  Anything still buffered from before is thrown away first: it can only be
  a late answer to an earlier question.
* ``feed(chunk, now)`` takes bytes from the line in any split.  Whole frames are cut out by the
  protocol deframer (noise and corrupt frames are skipped and counted); a frame that answers
  the outstanding request (a reply, same function, the addressed meter, and for reads and 03H
  the same DI) completes it and is returned as :class:`Reply`.  Every other frame is a stray
  (a late reply to a request already given up, another master's traffic, an echo) and is
  counted and dropped, and so is every whole frame that came in behind the answer (a doubled
  reply must not answer the next question).
* ``deadline`` is when the adapter must call ``on_deadline(now)``.  A missed reply deadline
  either schedules a retry after a back-off (``backoff * factor**n``, capped) or, with no
  retries left, ends the request with :class:`Failure`.  When the back-off ends,
  ``on_deadline`` returns the same bytes again: a retry is byte-identical, which is what the
  security sequence rule needs to answer it from the meter's cache.  A reply to an earlier
  attempt that arrives during the back-off still completes the request.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from protocol import Deframer, Frame, ProtocolError, build_frame, parse_frame
from protocol.cache import remember

__all__ = ["Failure", "LinkSession", "LinkStats", "LocalUsageError", "Reply", "Request", "address_matches",
           "backoff_delay"]


# Default link timing, the one place it is set (the transports' LinkSettings start from it):
# a reply within 2 s (spec: Td <= 500 ms plus the line time at 2400 bit/s), two re-sends backing
# off 0.2 s, 0.4 s ... up to 5 s, and the usual four FE wake-up bytes.
TIMEOUT_S = 2.0
RETRIES = 2
BACKOFF_S = 0.2
BACKOFF_FACTOR = 2.0
BACKOFF_MAX_S = 5.0


def backoff_delay(first: float, failures: int, cap: float, factor: float = BACKOFF_FACTOR) -> float:
    """The pause after the n-th failure in a row (n >= 1): first * factor**(n-1), at most cap.

    The one back-off of the head-end: a request's re-send on its link, a link's reconnect and a
    command's next try in the outbox all wait by it."""
    return min(first * factor ** max(failures - 1, 0), cap)
PREAMBLE = 4
_DI_CHECKED = frozenset({0x11, 0x12, 0x03})
# read frames kept per bus: far more than a bus carries (256 meters x a full register set)
_WIRE_CACHE_MAX = 1 << 16


class LocalUsageError(RuntimeError):
    """The head-end used the link wrongly (a second request while one is outstanding)."""


@dataclass(frozen=True, slots=True)
class Request:
    """One question to one meter (``address``), plain data; ``reply=False`` for broadcasts."""

    address: str
    control: int
    data: bytes = b""
    reply: bool = True
    timeout: float | None = None
    retries: int | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """The meter's answer to the outstanding request."""

    frame: Frame
    attempts: int
    elapsed: float


@dataclass(frozen=True, slots=True)
class Failure:
    """The request got no matching answer after every attempt."""

    reason: str
    attempts: int


@dataclass(slots=True)
class LinkStats:
    """Counters a link exposes for monitoring."""

    requests: int = 0
    replies: int = 0
    retries: int = 0
    failures: int = 0
    stray: int = 0
    bad_frames: int = 0


def address_matches(wanted: str, got: str) -> bool:
    """True if reply address ``got`` answers a request to ``wanted`` (AA bytes are wildcards)."""
    if wanted == got:
        return True
    if len(wanted) != 12 or len(got) != 12:
        return False
    for i in range(0, 12, 2):
        w = wanted[i : i + 2]
        if w.upper() != "AA" and w != got[i : i + 2]:
            return False
    return True


_IDLE, _WAITING, _BACKOFF = 0, 1, 2

# A frozen dataclass's __init__ sets each field through object.__setattr__; the per-reply hot
# path fills the slots directly instead (the same object, as protocol.frame does for Frame)
_new_reply = object.__new__
_set_frame = Reply.frame.__set__  # type: ignore[attr-defined]
_set_attempts = Reply.attempts.__set__  # type: ignore[attr-defined]
_set_elapsed = Reply.elapsed.__set__  # type: ignore[attr-defined]


@dataclass(slots=True)
class _Outstanding:
    request: Request
    wire: bytes
    started: float
    timeout: float
    retries_left: int
    attempts: int = 1
    di: bytes | None = None
    function: int = field(default=0)


class LinkSession:
    """One bus: one outstanding request, deadlines, retries with back-off, stray filtering."""

    def __init__(
        self,
        *,
        timeout: float = TIMEOUT_S,
        retries: int = RETRIES,
        backoff: float = BACKOFF_S,
        backoff_factor: float = BACKOFF_FACTOR,
        backoff_max: float = BACKOFF_MAX_S,
        preamble: int = PREAMBLE,
        max_buffer: int = 1024,
    ) -> None:
        if timeout <= 0 or retries < 0 or backoff < 0:
            raise ValueError("timeout must be > 0, retries and backoff >= 0")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.backoff_factor = backoff_factor
        self.backoff_max = backoff_max
        self.preamble = preamble
        self._max_buffer = max_buffer
        self._deframer = Deframer(max_buffer=max_buffer)
        self._discarded_before = 0
        # id(request) -> (request, wire, DI to match, function) of reads: collection cycles send the
        # same Request objects again and again; holding the request keeps its id from being reused
        self._wire_cache: OrderedDict[int, tuple[Request, bytes, bytes | None, int]] = OrderedDict()
        self._fed = False  # the deframer may hold bytes (the slow path ran since the last reset)
        self._state = _IDLE
        self._out: _Outstanding | None = None
        self._slot = _Outstanding(Request("", 0), b"", 0.0, 0.0, 0)  # one request at a time: reused
        self.deadline: float | None = None
        self.stats = LinkStats()

    @property
    def busy(self) -> bool:
        """True while a request waits for its answer (or for its retry)."""
        return self._state != _IDLE

    @property
    def discarded(self) -> int:
        """Bytes of line noise skipped by the deframer."""
        return self._discarded_before + self._deframer.discarded

    def begin(self, request: Request, now: float) -> bytes:
        """Start ``request``; returns the bytes to write now."""
        if self._state != _IDLE:
            raise LocalUsageError("a request is already outstanding on this bus; wait for it to finish")
        hit = self._wire_cache.get(id(request))
        if hit is None or hit[0] is not request:
            hit = self._prepare(request)
        wire = hit[1]
        self.stats.requests += 1
        if self._fed:
            self._fed = False
            if self._deframer.buffered:
                self._reset_buffer()
        if not request.reply:
            return wire
        out = self._slot
        out.request = request
        out.wire = wire
        out.started = now
        out.timeout = timeout = request.timeout if request.timeout is not None else self.timeout
        out.retries_left = request.retries if request.retries is not None else self.retries
        out.attempts = 1
        out.di = hit[2]
        out.function = hit[3]
        self._out = out
        self._state = _WAITING
        self.deadline = now + timeout
        return wire

    def _prepare(self, request: Request) -> tuple[Request, bytes, bytes | None, int]:
        wire = build_frame(request.address, request.control, request.data, preamble=self.preamble)
        di = request.data[:4] if request.control in _DI_CHECKED and len(request.data) >= 4 else None
        hit = (request, wire, di, request.control & 0x1F)
        if request.control == 0x11:  # reads: the same Request every cycle; commands are one-off objects
            # the oldest makes room: never a cold cache for a whole bus
            remember(self._wire_cache, id(request), hit, _WIRE_CACHE_MAX)
        return hit

    def cancel(self) -> None:
        """Drop the outstanding request (the link went down); later replies count as strays."""
        self._out = None
        self._state = _IDLE
        self.deadline = None

    def feed(self, chunk: bytes, now: float) -> Reply | None:
        """Bytes from the line; returns the :class:`Reply` once the answer is complete."""
        out = self._out
        if not self._fed and out is not None:
            # the usual case on TCP: the chunk is exactly one whole answer; parse_frame checks it
            # all (checksum, terminator, L), and anything else goes the deframer's careful way
            try:
                frame = parse_frame(chunk)
            except ProtocolError:
                pass
            else:
                # _answers, inlined: a reply, the same function, the addressed meter, the same DI
                c = frame.control
                if (c & 0x80 and c & 0x1F == out.function
                        and (frame.address == out.request.address or address_matches(out.request.address, frame.address))
                        and (out.di is None or c & 0x40 or frame.data[:4] == out.di)):
                    self._out = None
                    self._state = _IDLE
                    self.deadline = None
                    self.stats.replies += 1
                    reply = _new_reply(Reply)
                    _set_frame(reply, frame)
                    _set_attempts(reply, out.attempts)
                    _set_elapsed(reply, now - out.started)
                    return reply
                self.stats.stray += 1
                return None
        d = self._deframer
        d.feed(chunk)
        try:
            while (raw := d.next_frame()) is not None:
                try:
                    frame = parse_frame(raw)
                except ProtocolError:
                    self.stats.bad_frames += 1
                    continue
                out = self._out
                if out is None or not self._answers(out, frame):
                    self.stats.stray += 1
                    continue
                self._out = None
                self._state = _IDLE
                self.deadline = None
                self.stats.replies += 1
                for _ in d.frames():  # whole frames behind the answer answer nothing asked yet
                    self.stats.stray += 1
                return Reply(frame, out.attempts, now - out.started)
            return None
        finally:
            self._fed = d.buffered > 0

    def on_deadline(self, now: float) -> bytes | Failure | None:
        """Call when ``deadline`` has passed: bytes to re-send, a :class:`Failure`, or None (not yet)."""
        out = self._out
        if out is None or self.deadline is None or now < self.deadline:
            return None
        if self._state == _BACKOFF:
            out.attempts += 1
            self.stats.retries += 1
            self._state = _WAITING
            self.deadline = now + out.timeout
            return out.wire
        if out.retries_left <= 0:
            self.cancel()
            self.stats.failures += 1
            return Failure(f"no answer from meter {out.request.address} after {out.attempts} attempt(s)", out.attempts)
        out.retries_left -= 1
        pause = backoff_delay(self.backoff, out.attempts, self.backoff_max, self.backoff_factor)
        self._state = _BACKOFF
        self.deadline = now + pause
        if pause <= 0:
            return self.on_deadline(now)
        return None

    def _answers(self, out: _Outstanding, frame: Frame) -> bool:
        if not frame.is_reply or frame.function != out.function:
            return False
        if not address_matches(out.request.address, frame.address):
            return False
        if out.di is not None and not frame.is_abnormal and frame.data[:4] != out.di:
            return False
        return True

    def _reset_buffer(self) -> None:
        # bytes still buffered can only be the start of a late answer to an earlier question
        self._discarded_before += self._deframer.discarded + self._deframer.buffered
        self._deframer = Deframer(max_buffer=self._max_buffer)
        self._fed = False
