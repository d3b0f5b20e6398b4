"""`serve` with the payments API on: in this process, what start-up built is kept out of the
garbage collector's full passes, and the API answers; as `headend serve`, asked to profile itself,
it writes where its CPU went when it stops."""

from __future__ import annotations

import asyncio
import gc
import os
import pstats

import httpx

from headend.api.config import ApiConfig
from headend.keys import KeyStore
from headend.serve import ServeOptions, serve
from headend.store import open_store
from tests.api.serve_procs import start_serve, stop_serves
from tests.headend.headend_proc import HeadEnd


def test_serve_freezes_what_start_up_built_and_serves_the_api(tmp_path):
    store = open_store(tmp_path / "s.db")
    keys = KeyStore.in_memory(os.urandom(32))
    options = ServeOptions(api=ApiConfig(listen="tcp://127.0.0.1:0"), console=False)
    gc.unfreeze()
    seen: dict[str, object] = {}

    async def main() -> None:
        stop, ready, urls = asyncio.Event(), asyncio.Event(), []
        task = asyncio.create_task(serve(store, keys, options, stop, ready, urls))
        await asyncio.wait_for(ready.wait(), 60)
        seen["frozen"] = gc.get_freeze_count()
        async with httpx.AsyncClient(base_url=urls[0], timeout=30) as c:
            seen["health"] = (await c.get("/v1/health")).json()
        stop.set()
        await asyncio.wait_for(task, 60)

    try:
        asyncio.run(main())
    finally:
        gc.unfreeze()  # this test process goes on collecting as before
        store.close()
    assert seen["health"] == {"status": "ok"}
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 10_000  # the app, its models, the libraries


def test_a_serve_asked_to_profile_itself_writes_where_its_cpu_went_when_it_stops(tmp_path):
    he = HeadEnd(tmp_path)
    out = tmp_path / "serve.prof"
    proc, url = start_serve({**he.env, "PREPAID645_SERVE_PROFILE": str(out)})
    try:
        for _ in range(3):
            assert httpx.get(url + "/v1/health", timeout=30).json() == {"status": "ok"}
    finally:
        stop_serves([proc])
    assert proc.returncode == 0
    calls = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
    assert [f for f in calls if f[2] == "health" and f[0].endswith("app.py")], "the health endpoint is in the profile"
