"""`headend serve`: the comms front-end and the outbox worker, running until stopped.

One asyncio loop holds every link (opened on first use, reopened after a drop), listens for
dial-in meters on every ``listen://`` link in the registry (and any given with ``--listen``),
and works the command outbox continuously.  Unless ``--no-costctl`` (or ``[costctl] in_serve = false``) it
also runs remote cost control (``headend.costctl.loop``): readings collected on the cycle's
grid, rated, debited, decided; its trip and close commands go through the same outbox.  Unless
``--no-notices`` (or ``[notices] in_serve = false``) it sends customer notices (``headend.notices``).
With ``api.listen`` set it also serves the payments API (headend/api: FastAPI under uvicorn, on
the same loop) and sends its result callbacks.
Commands left "sent" by a previous run that died are put back in the queue at start-up;
recharges resume with the purchase count they recorded, so a restart never credits twice.

While it runs, serve holds a lease (a row in the database itself, its heartbeat renewed every few
seconds): a second serve on the same SQLite file from another host is refused, and the CLI can
tell "serve is not running" from "serve has not reached this command yet".  On a PostgreSQL
database several serves work side by side: the meter links are partitioned between them
(headend/frontends.py: each reads and commands only the meters of its share, and a dead serve's
share goes to the others once its lease lapses), each claims commands under its own lease, one
leads cost control (an advisory lock) after every serve has collected its share's readings, and
the commands of one that stops beating (killed) go back in line for the others.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from headend.api.config import ApiConfig
from headend.commands import DEFAULT_READ_DIS, MeterClient, MeterTarget, OutboxWorker
from headend.config import is_server_url
from headend.commands import worker as _outbox
from headend.commands.meter_client import CONTROL_VALIDITY
from headend.commands.collect import freeze_after_first_cycle, read_cycle
from headend.costctl.decide import Rules
from headend.costctl.loop import LoopOptions, run_loop
from headend.frontends import SLOTS, Share
from headend.keys import KeyStore
from headend.notices.config import NoticeConfig
from headend.store import Store, StoreError
from headend.store.outbox import LEASE_BEAT_MIN_S, LEASE_BEAT_S, LEASE_TTL_S, lease_owner
from headend.transports import FrontEnd, LinkSettings

__all__ = ["ServeOptions", "serve"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    """How `headend serve` runs."""

    link: LinkSettings = field(default_factory=LinkSettings)
    listen: tuple[str, ...] = ()
    concurrency: int = _outbox.CONCURRENCY
    poll_s: float = _outbox.POLL_S
    max_attempts: int = _outbox.MAX_ATTEMPTS
    retry_backoff_s: float = _outbox.RETRY_BACKOFF_S
    security_timeout: float = 5.0
    operator: int = 0
    collect_every_s: float = 0.0  # 0: no periodic read cycles
    collect_dis: tuple[int, ...] = DEFAULT_READ_DIS
    costctl: LoopOptions | None = None  # remote cost control: collect on the grid, rate, debit, act
    # the [costctl] trip rules for what the API decides outside the cycle (a reversal that undoes
    # a restore), also under --no-costctl; None: costctl's rules, else the defaults
    trip_rules: Rules | None = None
    # The head-end's time for meters (time sets, relay deadlines): the wall clock, or one that runs
    # `clock_speed` times faster for simulated meters at the same --speed (a time set is then as
    # good as its delay times the speed, hence the wider tolerance; a relay command stays valid
    # for the same real time, hence the longer validity)
    meter_clock: Callable[[], datetime] = datetime.now
    clock_speed: float = 1.0
    notices: NoticeConfig | None = None  # the customer-notice sender (headend.notices.service)
    api: ApiConfig | None = None  # the payments API, when api.listen is set
    console: bool = True  # the operator console at / on the API's listener
    # how long this serve's lease lasts without a heartbeat: after that, on a shared database, its
    # meters and commands go to the other serves
    lease_s: int = LEASE_TTL_S


def build_worker(store: Store, keys: KeyStore, options: ServeOptions,
                 owner: str | None = None, share: Share | None = None) -> tuple[FrontEnd, OutboxWorker]:
    """The front-end and worker `serve` runs (exposed for tests and tools)."""

    def known(url: str) -> list[str]:
        return [m.address for m in store.find_meters([("link", "=", url)])]

    def key_for(m: MeterTarget) -> bytes:
        return keys.meter_key(m.address, m.krn)

    frontend = FrontEnd(options.link, known_addresses=known)
    client = MeterClient(frontend, key_for, operator=options.operator, security_timeout=options.security_timeout,
                         meter_clock=options.meter_clock,
                         # valid for the same real time: the head-end's clock may run faster
                         control_validity=CONTROL_VALIDITY * max(options.clock_speed, 1.0))
    worker = OutboxWorker(
        store,
        client,
        concurrency=options.concurrency,
        poll_s=options.poll_s,
        max_attempts=options.max_attempts,
        retry_backoff_s=options.retry_backoff_s,
        time_tolerance_s=_outbox.TIME_TOLERANCE_S * max(options.clock_speed, 1.0),
        owner=owner,
        share=share,
    )
    return frontend, worker


async def serve(store: Store, keys: KeyStore, options: ServeOptions, stop: asyncio.Event, ready: asyncio.Event | None = None,
                api_urls: list[str] | None = None) -> None:
    """Run the front-end, the outbox worker (and the cost-control loop, the payments API) until ``stop`` is set.

    ``api_urls`` receives the payments API's address once it listens.
    Raises the store's Conflict, before anything is sent, if another serve holds the lease."""
    me = (os.getpid(), socket.gethostname())
    shared = is_server_url(store.location)  # several serves may work one PostgreSQL database
    store.take_lease(*me, store.location if shared else os.path.realpath(store.location), shared=shared,
                     ttl_s=options.lease_s)
    try:
        await _serve(store, keys, options, stop, ready, me, api_urls)
    finally:
        store.release_lease(*me)


async def _serve(store: Store, keys: KeyStore, options: ServeOptions, stop: asyncio.Event,
                 ready: asyncio.Event | None, me: tuple[int, str], api_urls: list[str] | None = None) -> None:
    share = None
    if is_server_url(store.location):  # the links are partitioned between the serves of the database
        share = Share(lease_owner(*me))
        store.beat_lease(*me, share.update({o: v for o, (v, _) in store.live_leases().items()}))
    frontend, worker = build_worker(store, keys, options, owner=lease_owner(*me), share=share)
    requeued = worker.recover()
    if requeued:
        log.warning("put %d command(s) left in flight by an earlier run back in the queue", requeued)
    listen = set(options.listen)
    listen.update(m.link for m in store.find_meters([("link", "like", "listen://%")]))
    for url in sorted(listen):
        port = await frontend.listen(url)
        log.info("listening for dial-in meters on %s (port %d)", url, port)
    api = None
    if options.api is not None and options.api.listen:
        from headend.api.server import start_api  # FastAPI loads only when the API is on

        api = await start_api(store, options.api, keys=keys, console=options.console,
                              outage_policy=options.notices.outages if options.notices is not None else None,
                              rules=options.trip_rules if options.trip_rules is not None
                              else options.costctl.config.rules if options.costctl is not None else None)
        if api_urls is not None:
            api_urls.append(api.url)
        # what start-up built (the app's routes and models, every imported library) lives as long
        # as serve: kept out of the collector's sight, a full collection no longer walks it all
        # (server CPU per API payment 0.83x in tools/bench/bench_payments.py's setting)
        gc.collect()
        gc.freeze()
    if ready is not None:
        ready.set()
    tasks = [asyncio.create_task(worker.run(stop)),
             asyncio.create_task(_heartbeat(store, me, stop, options.lease_s,
                                            worker if share is not None else None, share, frontend))]
    if options.collect_every_s > 0:
        tasks.append(asyncio.create_task(_collect(store, worker.client, options, stop, share)))
    if options.costctl is not None:
        tasks.append(asyncio.create_task(run_loop(store, worker.client, options.costctl, stop, share=share)))
    if options.notices is not None:
        from headend.notices.service import run_notices

        tasks.append(asyncio.create_task(run_notices(store, options.notices, stop)))
    if api is not None:
        tasks.append(asyncio.create_task(api.run_until(stop)))
    try:
        await asyncio.gather(*tasks)
    finally:
        if api is not None:
            await api.stop()
        await frontend.close()


def beat_interval(lease_s: float) -> float:
    """How often a serve with a lease of ``lease_s`` renews it (a few beats per lease)."""
    return min(float(LEASE_BEAT_S), max(LEASE_BEAT_MIN_S, lease_s / 4))


async def _heartbeat(store: Store, me: tuple[int, str], stop: asyncio.Event, lease_s: int,
                     sweeper: OutboxWorker | None = None, share: Share | None = None,
                     frontend: FrontEnd | None = None) -> None:
    """Renew the lease while serving; losing it (another host took a lapsed lease) stops this serve.

    Several serves on one PostgreSQL database: each beat also recomputes this serve's ``share`` of
    the links from the live leases and records the view it works by (headend/frontends.py), and
    closes the links it handed over; a serve that cannot beat for half its lease works nothing
    until it can.  Every lease period ``sweeper`` puts the commands of a serve whose lease lapsed
    (killed) back in line for the living."""
    loop = asyncio.get_running_loop()
    every = beat_interval(lease_s)
    last_ok = loop.time()
    beats = 0
    while not stop.is_set():
        beats += 1
        if sweeper is not None and beats % max(1, int(lease_s // every)) == 0:
            n = await asyncio.to_thread(sweeper.recover)
            if n:
                log.warning("put %d command(s) of a serve that stopped beating back in the queue", n)
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass
        if stop.is_set():
            break
        try:
            view = None
            if share is not None:
                leases = await asyncio.to_thread(store.live_leases)
                before = share.slots
                view = share.update({o: v for o, (v, _) in leases.items()})
                if share.slots != before:
                    log.info("this serve now works %d of the links' %d slots (%d serves live)",
                             len(share.slots), SLOTS, len(leases))
            mine = await asyncio.to_thread(store.beat_lease, *me, view)
        except StoreError as exc:
            if share is not None and loop.time() - last_ok > lease_s / 2 and share.slots:
                share.fence()  # the others may take my links soon: stop before they can
                log.error("cannot renew the lease (%s): working no meters until the database answers", exc)
            else:
                log.warning("cannot renew the lease: %s", exc)
            continue
        if not mine:
            log.error("another serve took over the database's lease; stopping so that only one works the outbox")
            stop.set()
            break
        last_ok = loop.time()
        if share is not None and frontend is not None:
            for link in frontend.links():
                if not share.covers(link.url) and not share.busy(link.url):
                    await frontend.release(link.url)


async def _collect(store: Store, client: MeterClient, options: ServeOptions, stop: asyncio.Event,
                   share: Share | None = None) -> None:
    """Read every registered meter (of this serve's ``share``) every ``collect_every_s`` and store the readings."""
    loop = asyncio.get_running_loop()
    first = True
    while not stop.is_set():
        started = loop.time()
        meters = store.find_meters()
        held: list[int] = []
        if share is not None:
            meters = [m for m in meters if share.covers(m.link)]
            held = share.hold(m.link for m in meters)
        try:
            res = await read_cycle(client, store, meters, list(options.collect_dis))
        finally:
            if share is not None:
                share.release(held)
        if res.failed:
            log.warning("read cycle: %d of %d meters failed, e.g. %s", len(res.failed), res.meters,
                        next(iter(res.failed.values())))
        log.info("read cycle: %d values from %d meters in %.2f s", res.stored, res.meters, res.seconds)
        if first:
            freeze_after_first_cycle()
            first = False
        try:
            await asyncio.wait_for(stop.wait(), max(options.collect_every_s - (loop.time() - started), 0.0))
        except TimeoutError:
            pass
