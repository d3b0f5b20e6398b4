"""The payments API for tests: uvicorn on loopback in its own thread and loop, on a real SQLite file."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any, Callable

from headend.api.config import ApiConfig
from headend.keys import KeyStore
from headend.store import open_store


class LiveApi:
    """``with LiveApi(db, keys) as api: httpx.get(api.url + "/v1/health")``; the store it serves is its own
    connection, so the test's store is a second process-like view of the same file."""

    def __init__(self, db: Path, keys: KeyStore, config: ApiConfig | None = None,
                 clock: Callable[[], float] = time.time, callbacks: bool = False, rules: Any = None) -> None:
        self.db = db
        self.rules = rules          # cost control's trip rules (serve passes the [costctl] ones)
        self.keys = keys
        self.config = config or ApiConfig(listen="tcp://127.0.0.1:0")
        self.clock = clock
        self.callbacks = callbacks
        self.url = ""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="live-api", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            from headend.api.server import start_api

            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            store = open_store(self.db, clock=self.clock)
            try:
                server = await start_api(store, self.config, keys=self.keys, clock=self.clock, rules=self.rules)
                self.server = server
                self.url = server.url
                self._ready.set()
                if self.callbacks:
                    await server.run_until(self._stop)
                else:
                    await self._stop.wait()
                    await server.stop()
            finally:
                store.close()

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self._error = exc
            self._ready.set()

    def __enter__(self) -> "LiveApi":
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the payments API did not start in 30 s")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def add_api_channel(store, keys: KeyStore, channel_id: str, kind: str = "online_banking", *,
                    secret: bytes | None = None, **kw: Any) -> tuple[str, bytes]:
    """A channel with API credentials (its secret sealed as the head-end seals it); (key id, secret)."""
    import os

    key_id = f"{channel_id}-k1"
    secret = secret or os.urandom(32).hex().encode()
    store.add_channel(channel_id, kind, actor="test", key_id=key_id,
                      secret=keys.seal(f"channel:{channel_id}:{key_id}", secret), **kw)
    return key_id, secret


class FleetThread:
    """Simulated meters (tools.fleet, load off so balances are exact) served from their own thread
    and loop, a port each, as meters on their own gateways would be."""

    def __init__(self, addresses: list[str], *, master: bytes, mode: str = "local") -> None:
        self.addresses = addresses
        self._kw = dict(master=master, per_bus=1, load=False, mode=mode)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fleet", daemon=True)

    def _run(self) -> None:
        from tools.fleet import start_fleet

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.fleet = await start_fleet(self.addresses, **self._kw)
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await self.fleet.close()

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self._error = exc
            self._ready.set()

    def start(self) -> "FleetThread":
        self._thread.start()
        if not self._ready.wait(60) or self._error is not None:
            raise RuntimeError(f"the fleet did not start: {self._error!r}")
        return self

    def link_of(self, address: str) -> str:
        return self.fleet.link_of(address)

    def fault(self, address: str):
        return self.fleet.fault(address)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
