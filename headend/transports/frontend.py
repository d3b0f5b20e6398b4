"""The asyncio comms front-end: links (buses) and the requests that travel over them.

A :class:`Link` is one bus: one connection (TCP, serial, or a meter/DTU that dialled in), one
:class:`~headend.link.session.LinkSession`, and a lock so exactly one request is on the bus at
a time.  Everything time-driven runs from loop callbacks (data arrival, ``call_at`` for the
session's deadline), so a request costs one future and no extra task.  Links open lazily and
reopen after a drop; many links run at once and never wait on each other.

:class:`FrontEnd` owns every link, keyed by URL, and the listening ports that dial-in meters
connect to.  A dial-in connection is identified by reading the meter's address (13H); the
meter is then reached on that connection until it drops.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Awaitable, Callable

from headend.link import session as _defaults
from headend.link.session import Failure, LinkSession, Reply, Request, backoff_delay
from headend.transports.base import (
    Connection,
    LinkDown,
    LinkError,
    LinkSpec,
    LinkUnreachable,
    OnData,
    OnLost,
    parse_link_url,
)
from headend.transports.serial import open_serial
from headend.transports.tcp import StreamProtocol, open_tcp

__all__ = ["FrontEnd", "Job", "Link", "LinkSettings", "NoAnswer"]


class NoAnswer(LinkError):
    """The meter did not answer after every retry; the message names the meter and link."""


@dataclass(frozen=True)
class LinkSettings:
    """Timing of a link; one frozen value per front-end."""

    timeout: float = _defaults.TIMEOUT_S
    retries: int = _defaults.RETRIES
    backoff: float = _defaults.BACKOFF_S
    backoff_factor: float = _defaults.BACKOFF_FACTOR
    backoff_max: float = _defaults.BACKOFF_MAX_S
    preamble: int = _defaults.PREAMBLE
    connect_timeout: float = 5.0
    reconnect_backoff: float = 0.5
    reconnect_backoff_max: float = 30.0


Opener = Callable[[OnData, OnLost], Awaitable[Connection]]
Done = Callable[[Reply | None, BaseException | None], None]


class Job:
    """One queued request and whom to tell how it ended (exactly once).

    ``Link.submit`` makes one per request; a caller that sends many requests one after another
    (a read cycle) may subclass it and hand the same object to ``Link.submit_job`` again from
    its ``done``, once the link has called it, with the next ``request``."""

    __slots__ = ("request", "done", "resent")

    def __init__(self, request: Request, done: Done) -> None:
        self.request = request
        self.done = done
        self.resent = False


class _Token:
    """Identifies one opened connection, so a late "lost" from an old one changes nothing."""

    __slots__ = ("dead",)

    def __init__(self) -> None:
        self.dead = False


class Link:
    """One bus: queues requests (one on the bus at a time), drives the sans-I/O session from
    loop callbacks, reconnects after a drop.

    ``submit(request, done)`` is the callback form: ``done(reply, error)`` runs on the loop as
    soon as the answer is cut out of the byte stream, and the next queued request goes out in
    the same callback, with no task switch in between (collection cycles use it).
    ``await request(...)`` is the same with a future.
    """

    def __init__(self, url: str, settings: LinkSettings, opener: Opener | None = None) -> None:
        self.url = url
        self.settings = settings
        s = settings
        self.session = LinkSession(
            timeout=s.timeout,
            retries=s.retries,
            backoff=s.backoff,
            backoff_factor=s.backoff_factor,
            backoff_max=s.backoff_max,
            preamble=s.preamble,
        )
        self._opener = opener
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: Connection | None = None
        self._token: _Token | None = None
        self._queue: deque[Job] = deque()
        self._current: Job | None = None
        self._opening: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._next_open = 0.0
        self._open_failures = 0
        self.reconnects = 0
        self._opened_once = False
        self.closed = False

    # -- connection ---------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._conn is not None

    def attach(self, conn: Connection) -> None:
        """Use an already open connection (a meter that dialled in)."""
        self._conn = conn

    async def _ensure_open(self) -> Connection:
        if self._conn is not None:
            return self._conn
        if self.closed:
            raise LinkDown(f"{self.url}: link closed")
        if self._opener is None:
            raise LinkUnreachable(f"{self.url}: no meter has dialled in on this link; wait for it to connect")
        loop = asyncio.get_running_loop()
        pause = self._next_open - loop.time()
        if pause > 0:  # back off after failed opens so a dead link is not hammered
            await asyncio.sleep(pause)
        token = _Token()

        def lost(exc: Exception | None) -> None:
            token.dead = True
            if self._token is token:
                self.on_lost(exc)

        try:
            conn = await self._opener(self.on_data, lost)
            if token.dead:
                raise LinkUnreachable(f"{self.url}: the connection closed as soon as it opened")
        except LinkUnreachable:
            self._open_failures += 1
            s = self.settings
            self._next_open = loop.time() + backoff_delay(s.reconnect_backoff, self._open_failures, s.reconnect_backoff_max)
            raise
        if self._opened_once:
            self.reconnects += 1
        self._opened_once = True
        self._open_failures = 0
        self._token = token
        self._conn = conn
        return conn

    async def _open(self) -> None:
        try:
            await self._ensure_open()
        except LinkError as exc:
            jobs = list(self._queue)
            self._queue.clear()
            for job in jobs:
                job.done(None, exc)
        finally:
            self._opening = None
        self._next()

    def on_data(self, chunk: bytes) -> None:
        """Bytes from the connection (called by the transport)."""
        loop = self._loop or self._bind_loop()
        reply = self.session.feed(chunk, loop.time())
        if reply is not None:
            # the timer stays armed: when it fires it finds no deadline (or a later one) and
            # re-arms only then, so a busy link costs one timer per timeout, not one per request
            job, self._current = self._current, None
            if job is not None:
                job.done(reply, None)
            self._next()

    def on_lost(self, exc: Exception | None) -> None:
        """The connection went away (called by the transport)."""
        self._conn = None
        self._token = None
        self.session.cancel()
        job, self._current = self._current, None
        if job is not None:
            if not job.resent and self._opener is not None and not self.closed:
                job.resent = True  # reopen once and send the identical frame again
                self._queue.appendleft(job)
            else:
                job.done(None, LinkDown(f"{self.url}: link dropped ({exc or 'closed by the other end'})"))
        self._next()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        dl = self.session.deadline
        if dl is None:
            return
        if self._timer is not None:
            if self._timer_at <= dl:
                return  # an earlier wake-up is due anyway; it re-arms for this deadline
            self._timer.cancel()
        self._timer_at = dl
        self._timer = asyncio.get_running_loop().call_at(dl, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        dl = self.session.deadline
        if dl is None:
            return
        now = asyncio.get_running_loop().time()
        if now < dl:
            self._arm()
            return
        out = self.session.on_deadline(now)
        if isinstance(out, Failure):
            job, self._current = self._current, None
            if job is not None:
                job.done(None, NoAnswer(f"{out.reason} on {self.url}"))
            self._next()
            return
        if isinstance(out, bytes) and self._conn is not None:
            self._conn.write(out)
        self._arm()

    # -- requests -----------------------------------------------------------------------
    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        self._loop = loop = asyncio.get_running_loop()
        return loop

    def _next(self) -> None:
        """Put the next queued request on the bus if the bus is free."""
        queue = self._queue
        while self._current is None and queue:
            if self.closed:
                jobs = list(queue)
                queue.clear()
                for job in jobs:
                    job.done(None, LinkDown(f"{self.url}: link closed"))
                return
            conn = self._conn
            loop = self._loop or self._bind_loop()
            if conn is None:
                if self._opening is None:
                    self._opening = loop.create_task(self._open())
                return
            job = queue.popleft()
            wire = self.session.begin(job.request, loop.time())
            if not job.request.reply:
                conn.write(wire)
                job.done(None, None)
                continue
            self._current = job
            conn.write(wire)
            if self._timer is None or self._timer_at > self.session.deadline:  # type: ignore[operator]
                self._arm()

    def submit(self, req: Request, done: Done) -> Job:
        """Queue ``req``; ``done(reply, error)`` is called exactly once, on the loop."""
        job = Job(req, done)
        self._queue.append(job)
        if self._current is None:
            self._next()
        return job

    def submit_job(self, job: Job) -> None:
        """Queue ``job`` (a :class:`Job` not queued or outstanding now); as :meth:`submit`."""
        job.resent = False
        self._queue.append(job)
        if self._current is None:
            self._next()

    def _withdraw(self, job: Job) -> None:
        if job is self._current:
            self.session.cancel()
            self._current = None
            self._next()
        else:
            try:
                self._queue.remove(job)
            except ValueError:
                pass

    async def request(self, req: Request) -> Reply | None:
        """Send ``req`` and return the meter's reply (None for broadcasts).

        Raises :class:`LinkUnreachable` if the link cannot be opened, :class:`NoAnswer` when
        every retry went unanswered.  A drop mid-request reopens the link once and re-sends the
        identical frame.
        """
        fut: asyncio.Future[Reply | None] = asyncio.get_running_loop().create_future()

        def done(reply: Reply | None, exc: BaseException | None) -> None:
            if not fut.done():
                if exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(reply)

        job = self.submit(req, done)
        try:
            return await fut
        except asyncio.CancelledError:
            self._withdraw(job)
            raise

    async def close(self) -> None:
        """Close the connection; queued and later requests fail."""
        self.closed = True
        self._cancel_timer()
        conn, self._conn = self._conn, None
        self._token = None
        if conn is not None:
            conn.close()
        self.session.cancel()
        job, self._current = self._current, None
        if job is not None:
            job.done(None, LinkDown(f"{self.url}: link closed"))
        self._next()


async def _open_dialout(spec: LinkSpec, timeout: float, on_data: OnData, on_lost: OnLost) -> Connection:
    if spec.kind == "tcp":
        return await open_tcp(spec.host, spec.port, on_data, on_lost, timeout=timeout)
    if spec.kind == "serial":
        return await open_serial(spec, on_data, on_lost, timeout=timeout)
    raise LinkUnreachable(f"{spec.url}: cannot dial a {spec.kind} link")


class _DialIn:
    """One listening port: accepts meters/DTUs and learns which meter is behind each connection."""

    def __init__(self, frontend: FrontEnd, spec: LinkSpec) -> None:
        self.frontend = frontend
        self.spec = spec
        self.by_address: dict[str, Link] = {}
        self.arrived = asyncio.Condition()
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.server = await loop.create_server(self._protocol, self.spec.host, self.spec.port)
        except OSError as exc:
            raise LinkUnreachable(f"{self.spec.url}: cannot listen: {exc.strerror or exc}") from None

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    def _protocol(self) -> asyncio.Protocol:
        link = Link(f"{self.spec.url} (dial-in)", self.frontend.settings)
        proto = StreamProtocol(link.on_data, lambda exc: self._gone(link, exc))
        link.attach(proto)
        asyncio.get_running_loop().create_task(self._identify(link))
        return proto

    def _gone(self, link: Link, exc: Exception | None) -> None:
        link.on_lost(exc)
        for addr, lk in list(self.by_address.items()):
            if lk is link:
                del self.by_address[addr]

    async def _identify(self, link: Link) -> None:
        found: list[str] = []
        try:
            reply = await link.request(Request("AAAAAAAAAAAA", 0x13))
            if reply is not None and not reply.frame.is_abnormal:
                found.append(reply.frame.address)
        except LinkError:
            pass
        if not found:  # a DTU with a bus behind it: several meters would collide on 13H
            for address in self.frontend.known_addresses(self.spec.url):
                try:
                    reply = await link.request(Request(address, 0x11, (0x04000401).to_bytes(4, "little"), retries=0))
                    if reply is not None:
                        found.append(reply.frame.address)
                except LinkDown:
                    return
                except LinkError:
                    continue
        async with self.arrived:
            for addr in found:
                self.by_address[addr] = link
            self.arrived.notify_all()

    async def link_for(self, address: str, timeout: float) -> Link:
        async with self.arrived:
            try:
                await asyncio.wait_for(self.arrived.wait_for(lambda: address in self.by_address), timeout)
            except TimeoutError:
                raise LinkUnreachable(
                    f"{self.spec.url}: meter {address} has not dialled in within {timeout:g} s"
                ) from None
            return self.by_address[address]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for link in set(self.by_address.values()):
            await link.close()


class FrontEnd:
    """Every link of the head-end, opened on first use and kept for reuse."""

    def __init__(self, settings: LinkSettings | None = None, known_addresses: Callable[[str], list[str]] | None = None) -> None:
        self.settings = settings or LinkSettings()
        self._links: dict[str, Link] = {}
        self._dialin: dict[str, _DialIn] = {}
        self._known = known_addresses or (lambda url: [])

    def known_addresses(self, url: str) -> list[str]:
        """Meter addresses registered on link ``url`` (used to identify dial-in buses)."""
        return self._known(url)

    async def listen(self, url: str) -> int:
        """Start accepting dial-in meters on ``listen://host:port``; returns the bound port."""
        spec = parse_link_url(url)
        if spec.kind != "listen":
            raise ValueError(f"{url}: only listen:// links accept dial-in meters")
        if url not in self._dialin:
            hub = _DialIn(self, spec)
            await hub.start()
            self._dialin[url] = hub
        return self._dialin[url].port

    async def link_for(self, url: str, address: str) -> Link:
        """The link that reaches meter ``address`` over link URL ``url``."""
        link = self._links.get(url)
        if link is not None:
            return link
        spec = parse_link_url(url)
        if spec.kind == "listen":
            if url not in self._dialin:
                await self.listen(url)
            return await self._dialin[url].link_for(address, self.settings.connect_timeout)
        timeout = self.settings.connect_timeout
        link = Link(url, self.settings, lambda on_data, on_lost: _open_dialout(spec, timeout, on_data, on_lost))
        self._links[url] = link
        return link

    def link_nowait(self, url: str) -> Link | None:
        """The dial-out link for ``url`` (created if new), or None for dial-in links."""
        link = self._links.get(url)
        if link is None:
            spec = parse_link_url(url)
            if spec.kind == "listen":
                return None
            timeout = self.settings.connect_timeout
            link = Link(url, self.settings, lambda on_data, on_lost: _open_dialout(spec, timeout, on_data, on_lost))
            self._links[url] = link
        return link

    async def request(self, url: str, req: Request) -> Reply | None:
        """Send one request to ``req.address`` over link ``url``."""
        link = self._links.get(url)
        if link is None:
            link = await self.link_for(url, req.address)
        return await link.request(req)

    def links(self) -> list[Link]:
        """Every dial-out link opened so far."""
        return list(self._links.values())

    async def release(self, url: str) -> None:
        """Close and forget the dial-out link ``url`` (another head-end works it now: a serial
        server often takes one client at a time)."""
        link = self._links.pop(url, None)
        if link is not None:
            await link.close()

    async def close(self) -> None:
        """Close every link and listening port."""
        for link in self._links.values():
            await link.close()
        for hub in self._dialin.values():
            await hub.close()
        self._links.clear()
        self._dialin.clear()
