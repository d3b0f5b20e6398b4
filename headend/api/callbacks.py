"""Result callbacks: tell a channel, at its URL, that its payment was confirmed on the meter.

Theory of operation.  A sweep asks the payments service for payments that reached a state worth
telling (confirmed on the meter) at channels that have a callback URL, and records one callback
per (payment, state) in the store; the unique key makes the sweep idempotent, so a restart or a
second sweep never creates a second callback for the same state.  The sender POSTs each due
callback, signed with the channel's own key exactly like a request to us (headend/api/signing.py),
with ``X-PP645-Callback-Id`` so the channel can recognise the one case where it may see a callback
twice: it answered 2xx and we died before recording that.  A 2xx marks the callback delivered and
it is never sent again; anything else (an error status, a refused connection, a timeout) waits
``callback_backoff_s[attempt]`` (the last entry repeats) and tries again, up to
``callback_max_attempts``, then it is marked failed and stays visible in the store.  Each sender
claims the callbacks it posts (their next attempt put a lease ahead), so two serves on one
database never post the same callback at once; an attempt is cut off at ``callback_timeout_s``
in all, well inside the lease.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import httpx

from headend.api.config import ApiConfig
from headend.api.service import ChannelKey
from headend.api.signing import sign_headers
from headend.store import Store
from headend.store.api_state import Callback

__all__ = ["CallbackSender", "HEADER_CALLBACK_ID"]

log = logging.getLogger(__name__)

HEADER_CALLBACK_ID = "X-PP645-Callback-Id"
_BATCH = 64
# a claimed callback is left to its sender this long past the attempt's own time limit (the
# outcome is recorded right after the attempt; this covers a loop or store that is slow to get there)
_LEASE_MARGIN_S = 30


class CallbackSender:
    """Creates and sends result callbacks until stopped.

    ``confirmed`` returns (payment id, channel id, state, receipt) for payments worth a callback;
    ``channel`` returns a channel's key and callback URL (None when it has gone).
    """

    def __init__(self, store: Store, config: ApiConfig, *,
                 confirmed: Callable[[], Iterable[tuple[int, str, str, dict[str, Any]]]],
                 channel: Callable[[str], ChannelKey | None],
                 clock: Callable[[], float] = time.time, transport: httpx.AsyncBaseTransport | None = None,
                 poll_s: float = 0.2) -> None:
        self._store = store
        self._config = config
        self._confirmed = confirmed
        self._channel = channel
        self._clock = clock
        self._poll_s = poll_s
        self._client = httpx.AsyncClient(timeout=config.callback_timeout_s, transport=transport,
                                         follow_redirects=False)

    def sweep(self) -> int:
        """Record a callback for every payment state not yet recorded; return how many are new."""
        rows = []
        for payment_id, channel_id, state, receipt in self._confirmed():
            ch = self._channel(channel_id)
            if ch is None or not ch.callback_url:
                continue
            rows.append((payment_id, channel_id, state, ch.callback_url,
                         {"event": "payment." + state, "payment": receipt}))
        return self._store.add_callbacks(rows, now=int(self._clock())) if rows else 0

    def _next_wait(self, attempts_done: int) -> float:
        steps = self._config.callback_backoff_s
        return steps[min(attempts_done, len(steps) - 1)]

    async def send(self, cb: Callback) -> bool:
        """One attempt at one callback; record the outcome; True if delivered."""
        ch = self._channel(cb.channel_id)
        error: str | None = None
        delivered = False
        if ch is None:
            error = f"channel {cb.channel_id} no longer exists"
        else:
            body = json.dumps(cb.body, separators=(",", ":"), sort_keys=True).encode()
            parts = urlsplit(cb.url)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            headers = sign_headers(ch.key_id, ch.secret, "POST", target, body, timestamp=int(self._clock()))
            headers.update({HEADER_CALLBACK_ID: str(cb.id), "Content-Type": "application/json"})
            try:
                # httpx's timeout is per phase (connect, write, read); the lease needs a bound on all of them
                resp = await asyncio.wait_for(self._client.post(cb.url, content=body, headers=headers),
                                              self._config.callback_timeout_s)
                delivered = 200 <= resp.status_code < 300
                if not delivered:
                    error = f"channel answered HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            except TimeoutError:
                error = f"no answer within {self._config.callback_timeout_s} s"
        now = int(self._clock())
        give_up = not delivered and cb.attempts + 1 >= self._config.callback_max_attempts
        self._store.callback_attempted(cb.id, delivered=delivered, error=error, give_up=give_up,
                                       next_at=None if delivered else now + int(self._next_wait(cb.attempts)))
        if give_up:
            log.warning("callback %d for payment %d to %s given up after %d attempts: %s", cb.id, cb.payment_id,
                        cb.url, cb.attempts + 1, error)
        return delivered

    async def run_once(self) -> int:
        """Sweep, then claim and attempt every due callback; return how many were delivered."""
        self.sweep()
        due = self._store.claim_callbacks(now=int(self._clock()), limit=_BATCH,
                                          lease_s=math.ceil(self._config.callback_timeout_s) + _LEASE_MARGIN_S)
        if not due:
            return 0
        done = await asyncio.gather(*(self.send(cb) for cb in due))
        return sum(done)

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set (a failing sweep is logged and tried again)."""
        try:
            while not stop.is_set():
                try:
                    await self.run_once()
                except Exception:  # noqa: BLE001 - keep serving; the store still holds every callback
                    log.exception("result callbacks: a round failed")
                try:
                    await asyncio.wait_for(stop.wait(), self._poll_s)
                except TimeoutError:
                    pass
        finally:
            await self._client.aclose()
