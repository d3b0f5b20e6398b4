"""Cost control with two head-ends on one PostgreSQL database: each collects only the remote meters
on the links of its own share (real TCP meters, a clock 600 times faster), the leader waits for
the other's collection, then rates every account."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timedelta, timezone

from headend.costctl.config import CostCtlConfig
from headend.costctl.decide import Rules
from headend.costctl.loop import LoopOptions, run_loop
from headend.frontends import Share
from headend.keys import KeyStore
from headend.serve import ServeOptions, build_worker
from headend.store import open_store
from headend.tariff.catalog import load_catalog
from tools.fleet import start_fleet

CST = timezone(timedelta(hours=8))
START = datetime(2026, 3, 4, 9, 50, tzinfo=CST).timestamp()  # first 15-minute boundary 10 sim minutes on
N = 12


def test_each_head_end_collects_its_share_and_the_leader_rates_every_account(pg_server, pg_template) -> None:
    url = pg_server.create_db(pg_template)
    master = os.urandom(32)
    meters = [f"{300 + i:012d}" for i in range(N)]

    async def go() -> tuple[list, list[set[str]], set[str], dict]:
        fleet = await start_fleet(meters, master=master, per_bus=1, mode="remote", start=int(START), speed=600,
                                  load_scale=300)
        stores = [open_store(url), open_store(url)]
        try:
            s0 = stores[0]
            s0.add_meters(({"address": m, "link": fleet.link_of(m), "customer": m, "mode": "remote"} for m in meters),
                          actor="test")
            s0.update_accounts(meters, actor="test", tariff="beijing-tou")
            owners = [s.take_lease(i + 1, "host", url, shared=True, ttl_s=60) for i, s in enumerate(stores)]
            shares = [Share(o) for o in owners]
            for _ in range(2):  # two heartbeats each: the links split between the two
                for i, (s, sh) in enumerate(zip(stores, shares)):
                    s.beat_lease(i + 1, "host", sh.update({o: v for o, (v, _) in s.live_leases().items()}))
            keys = KeyStore.in_memory(master)
            workers = [build_worker(s, keys, ServeOptions(), owner=o, share=sh)
                       for s, o, sh in zip(stores, owners, shares)]
            reports: list = []
            stop = asyncio.Event()

            def on_cycle(g: int, rep) -> None:
                reports.append(rep)
                if len(reports) == 2:
                    stop.set()

            options = LoopOptions(config=CostCtlConfig(interval_s=900, rules=Rules(notice_period_s=0),
                                                       collect_window_s=240),
                                  catalog=load_catalog(), start=START, speed=600, on_cycle=on_cycle)
            loops = [asyncio.create_task(run_loop(s, w.client, options, stop, share=sh))
                     for s, (_f, w), sh in zip(stores, workers, shares)]
            await asyncio.wait_for(stop.wait(), 120)
            await asyncio.gather(*loops)
            links = [{link.url for link in f.links()} for f, _w in workers]
            collected = s0.live_leases()
            for f, _w in workers:
                await f.close()
            return reports, links, {fleet.link_of(m) for m in meters}, collected
        finally:
            for s in stores:
                s.close()
            await fleet.close()

    reports, links, every, collected = asyncio.run(go())
    assert links[0] and links[1] and not links[0] & links[1] and links[0] | links[1] == every  # each read its own
    assert all(at is not None and at > START for _v, at in collected.values())  # both collected their share
    assert reports[1].rated == N and reports[1].charged_fen > 0  # the leader rated the other's accounts too
