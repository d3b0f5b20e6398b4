"""Serve the payments API with uvicorn on the caller's asyncio loop (inside `headend serve`, or a test).

    server = await start_api(store, ApiConfig(listen="tcp://127.0.0.1:0"))
    server.url                  # "http://127.0.0.1:PORT", the port really bound
    ...
    await server.stop()

The socket is bound here, before uvicorn starts, so port 0 works and the real port is known;
uvicorn does not install signal handlers (the owner of the loop decides when to stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

import uvicorn

from headend.api.app import create_app
from headend.api.callbacks import CallbackSender
from headend.api.service import StorePayments
from headend.api.config import ApiConfig, parse_api_url
from headend.keys import KeyStore
from headend.store import Store

if TYPE_CHECKING:  # the rules module loads numpy: only when a reversal decides
    from headend.costctl.decide import Rules

__all__ = ["ApiServer", "start_api"]

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # `headend serve` owns SIGINT/SIGTERM and stops us through stop()
        yield


def _http_impl() -> str:
    try:
        import httptools  # noqa: F401 - the C parser, several times faster than h11
    except ImportError:
        return "h11"
    return "httptools"


class ApiServer:
    """A running payments API: ``url``, ``port``, ``stop()``."""

    def __init__(self, server: _Server, sock: socket.socket, task: asyncio.Task[None],
                 callbacks: CallbackSender) -> None:
        self._server = server
        self._sock = sock
        self._task = task
        self.callbacks = callbacks
        self.host, self.port = sock.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"

    @property
    def app(self) -> Any:
        """The ASGI app served."""
        return self._server.config.app

    @property
    def task(self) -> asyncio.Task[None]:
        """The uvicorn task (done when the server stopped or failed)."""
        return self._task

    async def run_until(self, stop: asyncio.Event) -> None:
        """Send result callbacks until ``stop`` is set, then stop serving; raise if uvicorn failed first."""
        sender = asyncio.create_task(self.callbacks.run(stop))
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait([self._task, stopping], return_when=asyncio.FIRST_COMPLETED)
            if self._task.done() and not stop.is_set():
                self._task.result()
                raise RuntimeError("the payments API stopped by itself")
        finally:
            stopping.cancel()
            await self.stop()
            if not stop.is_set():
                sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def stop(self) -> None:
        """Finish requests in flight, close the socket, and return (again: nothing more)."""
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._sock.close()


async def start_api(store: Store, config: ApiConfig, *, keys: KeyStore,
                    clock: Callable[[], float] = time.time, console: bool = False,
                    outage_policy: Any = None, payments: StorePayments | None = None,
                    rules: Rules | None = None) -> ApiServer:
    """Bind ``config.listen`` and serve the API on the running loop until ``stop()``.

    ``keys`` opens the channels' sealed API secrets; ``console`` adds the operator console at ``/``
    (``outage_policy``: how far ahead its planned outages are announced). ``payments``: the service
    the endpoints use (by default StorePayments on ``store`` and ``keys``)."""
    if not config.listen:
        raise ValueError("the payments API needs a listen URL (tcp://HOST:PORT)")
    host, port = parse_api_url(config.listen)
    # proto named: asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and accepted
    # sockets inherit the listener's; with proto 0, Nagle held each response's body (uvicorn sends
    # head and body apart) for the client's delayed ACK, ~40 ms a request
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"payments API cannot listen on {config.listen}: {exc.strerror or exc}") from None
    sock.listen(1024)
    sock.setblocking(False)
    store.checkpoint_in_background()   # no request waits for a WAL checkpoint
    payments = payments or StorePayments(store, keys, clock=clock, rules=rules)
    app = create_app(store, config, clock=clock, port=payments, keys=keys)
    if console:
        from headend.console import add_console

        add_console(app, store, clock=clock, outage_policy=outage_policy)
    ucfg = uvicorn.Config(app, lifespan="off",
                          access_log=False, log_level="warning", http=_http_impl(), timeout_graceful_shutdown=5,
                          server_header=False, date_header=False)
    server = _Server(ucfg)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="payments-api")
    while not server.started:
        if task.done():
            sock.close()
            task.result()  # raises what stopped it
            raise OSError(f"payments API on {config.listen} stopped at start-up")
        await asyncio.sleep(0.01)
    callbacks = CallbackSender(store, config, confirmed=payments.confirmed_payments, channel=payments.channel,
                               clock=clock)
    api = ApiServer(server, sock, task, callbacks)
    log.info("payments API listening on %s", api.url)
    return api
