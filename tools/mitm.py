"""A scripted man in the middle: a TCP proxy between a head-end and a meter that captures,
drops, duplicates, replaces and injects DL/T 645 frames by rule.

It is the attacker of the security tests (and the lossy line of the storm tests): it sits on a
loopback port, the head-end is pointed at ``proxy.link`` instead of the meter's own port, and
every frame that crosses is cut out whole (``protocol.Deframer``), parsed, logged and offered
to the rules before it is passed on.

    proxy = MitmProxy(("127.0.0.1", meter_port))     # the real meter (`meter run`, a fleet bus)
    await proxy.start()                              # listens on 127.0.0.1, a free port
    link = proxy.link                                # "tcp://127.0.0.1:PORT": give it to the head-end
    proxy.drop(UP, function=0x03, di=0x070102FF)     # lose the next recharge request
    proxy.drop(DOWN, function=0x03, di=0x070102FF, times=None)   # ... or every recharge reply
    proxy.duplicate(UP, function=0x1C)               # send each control frame to the meter twice
    proxy.storm(drop=0.1, duplicate=0.1)             # lose and replay frames at random, seeded
    proxy.replace(DOWN, lambda seen: old_reply, function=0x03, di=0x078102FF)   # replay a reply
    proxy.answer(UP, lambda seen: forged, function=0x03, di=0x070102FF)   # answer in the meter's place
    proxy.seen                                       # every frame so far, as Seen records
    proxy.frames(UP, function=0x03, di=0x070000FF)   # the captured ones that match
    reply = await proxy.exchange(frame)              # inject: send to the meter, get its reply
    await proxy.inject(frame, UP)                    # or push a frame into the head-end's stream
    await proxy.close()

Directions: ``UP`` is head-end to meter, ``DOWN`` meter to head-end.

Rules (:class:`Rule`) are tried in the order they were added; the first that matches a frame
decides what happens to it, and a rule with ``times`` set is spent after that many frames
(``times=None``: for ever).  A rule matches on direction, function code, control byte, DI
(the first four plain data bytes, as an int: 0x070102FF), address, and any predicate
``where(frame)``; ``chance`` (with the proxy's seeded ``rng``) makes it fire at random, for a
storm.  Actions:

* ``"drop"``: the frame is lost;
* ``"duplicate"``: the frame is passed on, then sent again right after it (a replay);
* ``"replace"``: ``make(seen)`` returns the bytes to send instead (one frame, several, or
  ``b""`` for nothing): a replayed earlier reply, a forged one;
* ``"answer"``: the frame is lost and ``make(seen)`` goes back the way it came: the proxy
  answers in the meter's place (a forged reply to a request the meter never saw);
* ``"pass"``: passed on unchanged (a rule that only protects some frames from later rules).

Every frame is recorded in ``seen`` whether or not a rule touched it (``Seen.action`` says
what was done); ``keep=N`` keeps only the newest N, for a long storm.  ``exchange()`` opens the attacker's own connection to the meter (anyone on
the bus can talk to it), sends a frame and returns the meter's reply frame, or None after
``timeout``; nothing of it reaches the head-end.  ``inject(raw, UP)`` instead writes into a
head-end connection's stream to the meter, so the meter's answer travels back to the
head-end through the rules like any other frame.

For a synchronous test, :class:`ProxyThread` runs a proxy on its own event loop in a thread
(``with ProxyThread(target) as p: p.link; p.call(p.proxy.exchange(frame))``).

From a shell, a logging proxy with rules (each ``DIR:FN[:DI][:N]``, N times, default always)::

    python -m tools.mitm --target 127.0.0.1:8645 --listen 127.0.0.1:9645 \\
        --drop down:03:070102FF:1 --duplicate up:1C
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from protocol import Deframer, Frame, ProtocolError, parse_frame

__all__ = ["DOWN", "UP", "MitmProxy", "ProxyThread", "Rule", "Seen", "frame_di"]

UP = "up"  # head-end -> meter
DOWN = "down"  # meter -> head-end
_ACTIONS = ("drop", "duplicate", "replace", "answer", "pass")
_T = TypeVar("_T")


def frame_di(frame: Frame) -> int | None:
    """The DI a frame carries in its first four plain data bytes (03H, 11H, 12H, 14H), else None."""
    if frame.function in (0x03, 0x11, 0x12, 0x14) and len(frame.data) >= 4 and not frame.is_abnormal:
        return int.from_bytes(frame.data[:4], "little")
    return None


@dataclass
class Seen:
    """One frame that crossed the proxy (or was refused by the parser: ``frame`` None)."""

    direction: str
    raw: bytes
    frame: Frame | None
    at: float
    action: str = "pass"
    connection: int = 0

    @property
    def di(self) -> int | None:
        """The frame's DI (see :func:`frame_di`)."""
        return None if self.frame is None else frame_di(self.frame)


@dataclass
class Rule:
    """What to do with the frames it matches; ``None`` fields match anything."""

    action: str
    direction: str | None = None
    function: int | None = None
    control: int | None = None
    di: int | None = None
    address: str | None = None
    where: Callable[[Frame], bool] | None = None
    make: Callable[[Seen], bytes | Iterable[bytes]] | None = None
    times: int | None = 1
    chance: float = 1.0
    hits: int = 0

    def __post_init__(self) -> None:
        if self.action not in _ACTIONS:
            raise ValueError(f"rule action {self.action!r} must be one of {', '.join(_ACTIONS)}")
        if self.direction not in (None, UP, DOWN):
            raise ValueError(f"rule direction {self.direction!r} must be {UP!r}, {DOWN!r} or None (both)")
        if self.action in ("replace", "answer") and self.make is None:
            raise ValueError(f"a {self.action} rule needs make(seen) -> the bytes to send")

    @property
    def spent(self) -> bool:
        """True once the rule has fired ``times`` times."""
        return self.times is not None and self.hits >= self.times

    def matches(self, direction: str, frame: Frame | None) -> bool:
        """True when this rule is for ``frame`` travelling ``direction`` (ignoring chance)."""
        if self.spent or (self.direction is not None and self.direction != direction):
            return False
        if frame is None:
            return self.function is None and self.control is None and self.di is None and self.address is None \
                and self.where is None
        if self.function is not None and frame.function != self.function:
            return False
        if self.control is not None and frame.control != self.control:
            return False
        if self.di is not None and frame_di(frame) != self.di:
            return False
        if self.address is not None and frame.address != self.address:
            return False
        return self.where is None or bool(self.where(frame))


class _Pair:
    """One head-end connection and the proxy's connection to the meter behind it."""

    def __init__(self, number: int, up_writer: asyncio.StreamWriter, down_writer: asyncio.StreamWriter) -> None:
        self.number = number
        self.to_meter = up_writer
        self.to_headend = down_writer


class MitmProxy:
    """The proxy; see the module docstring for the whole API."""

    def __init__(self, target: tuple[str, int], *, host: str = "127.0.0.1", port: int = 0, seed: int = 645,
                 log: Callable[[Seen], None] | None = None, keep: int | None = None) -> None:
        self.target = target
        self.host = host
        self.port = port
        self.rules: list[Rule] = []
        self.seen: deque[Seen] = deque(maxlen=keep)  # keep=N: only the newest N (a long storm)
        self.rng = random.Random(seed)
        self.log = log
        self._server: asyncio.Server | None = None
        self._pairs: list[_Pair] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()
        self._count = 0

    # -- life -----------------------------------------------------------------------------
    async def start(self) -> int:
        """Listen; returns the port (the real one when 0 was asked for)."""
        self._changed = asyncio.Event()  # bound to the loop that runs the proxy
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def link(self) -> str:
        """The link URL a head-end uses to reach the meter through the proxy."""
        return f"tcp://{self.host}:{self.port}"

    async def close(self) -> None:
        """Stop listening and cut every connection."""
        if self._server is not None:
            self._server.close()
        for p in self._pairs:
            for w in (p.to_meter, p.to_headend):
                w.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> MitmProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def cut(self) -> None:
        """Close every head-end connection now (the head-end sees the link go down)."""
        for p in self._pairs:
            p.to_headend.close()
            p.to_meter.close()

    # -- rules ----------------------------------------------------------------------------
    def add(self, rule: Rule) -> Rule:
        """Append a rule (tried after the earlier ones); returns it (``rule.hits`` counts)."""
        self.rules.append(rule)
        return rule

    def drop(self, direction: str | None = None, **match: Any) -> Rule:
        """Lose matching frames (``times=1`` unless given)."""
        return self.add(Rule("drop", direction, **match))

    def duplicate(self, direction: str | None = None, **match: Any) -> Rule:
        """Pass matching frames on, then send each again (a replay right behind it)."""
        return self.add(Rule("duplicate", direction, **match))

    def replace(self, direction: str | None, make: Callable[[Seen], bytes | Iterable[bytes]], **match: Any) -> Rule:
        """Send ``make(seen)`` instead of each matching frame."""
        return self.add(Rule("replace", direction, make=make, **match))

    def answer(self, direction: str | None, make: Callable[[Seen], bytes | Iterable[bytes]], **match: Any) -> Rule:
        """Lose each matching frame and send ``make(seen)`` back to where it came from."""
        return self.add(Rule("answer", direction, make=make, **match))

    def storm(self, drop: float = 0.1, duplicate: float = 0.1, direction: str | None = None) -> list[Rule]:
        """A bad line for ever: each frame is lost with probability ``drop``, else sent twice with
        probability ``duplicate`` (seeded by ``seed``: the same storm each run). Returns the rules."""
        return [self.add(Rule("drop", direction, times=None, chance=drop)),
                self.add(Rule("duplicate", direction, times=None, chance=duplicate))]

    def clear(self) -> None:
        """Remove every rule."""
        self.rules.clear()

    # -- what was seen ------------------------------------------------------------------
    def frames(self, direction: str | None = None, *, function: int | None = None, di: int | None = None,
               control: int | None = None) -> list[Seen]:
        """The captured frames that match (parsed ones only), oldest first."""
        probe = Rule("pass", direction, function=function, di=di, control=control, times=None)
        return [s for s in self.seen if s.frame is not None and probe.matches(s.direction, s.frame)]

    async def wait_for(self, direction: str | None = None, *, count: int = 1, timeout: float = 10.0,
                       **match: Any) -> list[Seen]:
        """Wait until ``count`` matching frames were seen; returns them. TimeoutError after ``timeout``."""
        async with asyncio.timeout(timeout):
            while len(got := self.frames(direction, **match)) < count:
                self._changed.clear()
                await self._changed.wait()
        return got

    # -- the attacker's own traffic -----------------------------------------------------
    async def exchange(self, raw: bytes, timeout: float = 5.0) -> bytes | None:
        """Send ``raw`` to the meter on a connection of our own; its reply frame, or None."""
        reader, writer = await asyncio.open_connection(*self.target)
        d = Deframer()
        try:
            writer.write(raw)
            await writer.drain()
            async with asyncio.timeout(timeout):
                while (frame := d.next_frame()) is None:
                    chunk = await reader.read(4096)
                    if not chunk:
                        return None
                    d.feed(chunk)
            return frame
        except TimeoutError:
            return None
        finally:
            writer.close()

    async def send_only(self, raw: bytes) -> None:
        """Send ``raw`` to the meter on a connection of our own and expect nothing back."""
        _, writer = await asyncio.open_connection(*self.target)
        writer.write(raw)
        await writer.drain()
        writer.close()

    async def inject(self, raw: bytes, direction: str = UP) -> None:
        """Write ``raw`` into the newest head-end connection's stream (UP: to the meter)."""
        if not self._pairs:
            raise RuntimeError("no head-end is connected through the proxy yet; use exchange() to reach the meter")
        p = self._pairs[-1]
        w = p.to_meter if direction == UP else p.to_headend
        w.write(raw)
        await w.drain()

    # -- plumbing -------------------------------------------------------------------------
    def _track(self, coro: Coroutine[Any, Any, Any]) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            m_reader, m_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._count += 1
        pair = _Pair(self._count, m_writer, writer)
        self._pairs.append(pair)
        self._track(self._pump(reader, m_writer, writer, UP, pair))
        self._track(self._pump(m_reader, writer, m_writer, DOWN, pair))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, back: asyncio.StreamWriter,
                    direction: str, pair: _Pair) -> None:
        d = Deframer()
        try:
            while chunk := await reader.read(4096):
                d.feed(chunk)
                while (raw := d.next_frame()) is not None:
                    out = self._decide(direction, raw, pair.number)
                    for o in out[1]:
                        back.write(o)
                    for o in out[0]:
                        writer.write(o)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            if pair in self._pairs and direction == UP:
                self._pairs.remove(pair)

    def _decide(self, direction: str, raw: bytes, number: int) -> tuple[list[bytes], list[bytes]]:
        """(what goes on, what goes back) for one frame."""
        try:
            frame: Frame | None = parse_frame(raw)
        except ProtocolError:
            frame = None
        seen = Seen(direction, raw, frame, time.monotonic(), "pass", number)
        out = [raw]
        back: list[bytes] = []
        for rule in self.rules:
            if not rule.matches(direction, frame):
                continue
            if rule.chance < 1.0 and self.rng.random() >= rule.chance:
                continue
            rule.hits += 1
            seen.action = rule.action
            if rule.action == "drop":
                out = []
            elif rule.action == "duplicate":
                out = [raw, raw]
            elif rule.action in ("replace", "answer"):
                assert rule.make is not None
                made = rule.make(seen)
                made = [made] if isinstance(made, (bytes, bytearray)) else list(made)
                if rule.action == "replace":
                    out = made
                else:
                    out, back = [], made
            break
        self.seen.append(seen)
        self._changed.set()
        if self.log is not None:
            self.log(seen)
        return [bytes(o) for o in out if o], [bytes(o) for o in back if o]


class ProxyThread:
    """A :class:`MitmProxy` on its own event loop in a daemon thread, for synchronous code."""

    def __init__(self, target: tuple[str, int], **kw: Any) -> None:
        self.proxy = MitmProxy(target, **kw)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="mitm-proxy")

    def start(self) -> ProxyThread:
        """Start the thread and the proxy; returns self."""
        self._thread.start()
        self.call(self.proxy.start())
        return self

    @property
    def link(self) -> str:
        """The link URL through the proxy."""
        return self.proxy.link

    def call(self, coro: Coroutine[Any, Any, _T], timeout: float = 30.0) -> _T:
        """Run a coroutine on the proxy's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self) -> None:
        """Close the proxy and end the thread."""
        if self._thread.is_alive():
            self.call(self.proxy.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> ProxyThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.removeprefix("tcp://").rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} must look like 127.0.0.1:8645")
    return host, int(port)


def _rule(action: str, text: str) -> Rule:
    parts = text.split(":")
    if len(parts) < 2 or parts[0] not in (UP, DOWN, "both"):
        raise argparse.ArgumentTypeError(f"rule {text!r} must look like up:03[:070102FF][:N] (direction up, down or both)")
    try:
        fn = int(parts[1], 16)
        di = int(parts[2], 16) if len(parts) > 2 and parts[2] else None
        times = int(parts[3]) if len(parts) > 3 else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"rule {text!r}: function and DI are hex, N a count") from None
    return Rule(action, None if parts[0] == "both" else parts[0], function=fn, di=di, times=times)


def _print(seen: Seen) -> None:
    arrow = "->" if seen.direction == UP else "<-"
    print(f"{arrow} {seen.action:9} {seen.raw.hex(' ')}", flush=True)


async def _main(args: argparse.Namespace) -> None:
    proxy = MitmProxy(args.target, host=args.listen[0], port=args.listen[1], seed=args.seed,
                      log=None if args.quiet else _print)
    for r in args.drop:
        proxy.add(_rule("drop", r))
    for r in args.duplicate:
        proxy.add(_rule("duplicate", r))
    await proxy.start()
    print(f"mitm {proxy.link} -> tcp://{args.target[0]}:{args.target[1]}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await proxy.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m tools.mitm`: a logging proxy with drop/duplicate rules until Ctrl-C."""
    p = argparse.ArgumentParser(prog="python -m tools.mitm", description="A scripted man-in-the-middle TCP proxy for DL/T 645 frames.")
    p.add_argument("--target", type=_endpoint, required=True, help="the meter, host:port")
    p.add_argument("--listen", type=_endpoint, default=("127.0.0.1", 0), help="where to listen (default: a free port)")
    p.add_argument("--drop", action="append", default=[], metavar="DIR:FN[:DI][:N]", help="lose matching frames")
    p.add_argument("--duplicate", action="append", default=[], metavar="DIR:FN[:DI][:N]", help="send matching frames twice")
    p.add_argument("--seed", type=int, default=645)
    p.add_argument("--quiet", action="store_true", help="do not print each frame")
    args = p.parse_args(argv)
    try:
        asyncio.run(_main(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
