"""The servers bench_payment_floor drives: one process, two payments APIs on one SQLite store.

    python -m tools.bench.payment_floor_server DB      (PREPAID645_MASTER_KEY: the key store's master, hex)

prints one JSON line ``{"real": URL, "free": URL}`` and serves until SIGTERM or SIGINT.

* ``real`` is the payments API exactly as ``headend serve --api`` runs it (``start_api``).
* ``free`` is the same app on the same uvicorn set-up, but its service answers every store call from
  memory at once (``StoreFree``): no transaction, no nonce row, no payment rules, no rows.  A payment
  there still does everything else the real one does: the signature, the body, the JSON model, the
  group-commit round, the receipt.  So ``free`` is the most a payment could ever cost less than
  ``real`` by making its store work cheaper, and against the no-op it is the ceiling of the ratio.
* ``POST /bench/read`` on ``real``: the request read as a payment's is (its signature headers and
  its body, ``_Api.read``), then answered as the no-op is: what HTTP costs for a payment's bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from itertools import count
from typing import Any, ContextManager

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from headend.api.config import ApiConfig
from headend.api.problems import ApiProblem
from headend.api.server import start_api
from headend.api.service import ChannelKey, PaymentAsk, StorePayments, receipt
from headend.keys import KeyStore
from headend.store import Payment, open_store


class StoreFree(StorePayments):
    """StorePayments with every store call a payment makes answered from memory at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ids = count(1)
        self._days: dict[int, str] = {}
        self._channels: dict[str, ChannelKey | None] = {}

    def channel_for_key(self, key_id: str) -> ChannelKey | None:
        if key_id not in self._channels:  # read once, then from memory
            self._channels[key_id] = super().channel_for_key(key_id)
        return self._channels[key_id]

    @contextlib.contextmanager
    def transaction(self, *, row_locked: bool = False) -> Iterator[None]:
        yield

    def part(self) -> ContextManager[None]:
        return nullcontext()

    def use_nonces(self, nonces: Sequence[tuple[str, str, int]]) -> list[bool]:
        return [True] * len(nonces)

    def accept_many(self, asks: Sequence[PaymentAsk]) -> list[tuple[dict[str, Any], bool] | ApiProblem]:
        now = int(self._clock())
        day = self._days.get(now)
        if day is None:
            self._days = {now: time.strftime("%Y-%m-%d", time.localtime(now))}
            day = self._days[now]
        out: list[tuple[dict[str, Any], bool] | ApiProblem] = []
        for a in asks:
            r = a.request
            pay = Payment(next(self._ids), r.channel_id, r.txn_id, r.customer or "", r.meter, r.amount_fen, 0,
                          "credited", r.paid_at, now, credited_at=now, day=day, actor=a.actor, tender=r.tender)
            out.append((receipt(pay), True))
        return out


async def _serve(db: str) -> None:
    keys = KeyStore.in_memory(bytes.fromhex(os.environ["PREPAID645_MASTER_KEY"]))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with open_store(db) as real_store, open_store(db) as free_store:
        real = await start_api(real_store, ApiConfig(listen="tcp://127.0.0.1:0"), keys=keys)
        api = real.app.state.api

        async def read_only(request: Request) -> Response:
            await api.read(request)
            return Response(b'{"status":"ok"}', media_type="application/json")

        real.app.router.routes.insert(0, Route("/bench/read", read_only, methods=["POST"]))
        free = await start_api(free_store, ApiConfig(listen="tcp://127.0.0.1:0"), keys=keys,
                               payments=StoreFree(free_store, keys))
        print(json.dumps({"real": real.url, "free": free.url}), flush=True)
        await stop.wait()
        await real.stop()
        await free.stop()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tools.bench.payment_floor_server DB")
    asyncio.run(_serve(sys.argv[1]))
