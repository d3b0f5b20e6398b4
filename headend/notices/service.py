"""The notice sender as `headend serve` runs it: a loop beside the outbox worker.

Every ``interval_s`` (in a worker thread, since the store and the gateways block): queue the
notices of the payments taken since the last round and those local-cost-control meters' readings
call for, queue the clock re-sync of meters after an outage, then send due notices in batches
until none is left.  With ``receipt_listen`` set, the
delivery-receipt endpoint runs beside it for as long as the loop does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from headend.grid.outages import resync_after_outages
from headend.notices.config import NoticeConfig, make_gateway
from headend.notices.events import notify_payments, watch_local
from headend.notices.receipts import ReceiptServer
from headend.notices.sender import NoticeSender, PassReport
from headend.notices.templates import load_templates
from headend.store import Store

__all__ = ["run_notices", "build_sender", "notice_tick"]

log = logging.getLogger(__name__)


def build_sender(store: Store, cfg: NoticeConfig, *, receipt_url: str | None = None) -> NoticeSender:
    """The sender the configuration describes (templates are checked here: a bad one stops the start)."""
    catalog = load_templates(cfg.templates, utc_offset_s=cfg.policy.utc_offset_s)
    return NoticeSender(store, make_gateway(cfg, store.location, receipt_url=receipt_url), catalog, cfg.policy)


def notice_tick(store: Store, sender: NoticeSender, now: int, *, actor: str = "notices",
                watch: bool = True) -> PassReport:
    """One round: queue the notices of the payments taken since the last round, watch local
    meters (unless ``watch`` is False), re-sync clocks after outages, send every due notice; totals."""
    notify_payments(store)
    if watch:
        watch_local(store)
    synced = resync_after_outages(store, now, actor=actor)
    if synced:
        log.info("queued a time sync for %d meter(s) after an outage", synced)
    total = PassReport()
    while True:
        rep = sender.run_once(now)
        for f in ("claimed", "sent", "failed", "retried", "waiting", "messages"):
            setattr(total, f, getattr(total, f) + getattr(rep, f))
        total.flagged += rep.flagged
        total.lost += rep.lost
        if rep.claimed < sender.policy.batch:
            return total


async def run_notices(store: Store, cfg: NoticeConfig, stop: asyncio.Event,
                      clock: Callable[[], float] = time.time) -> None:
    """Send notices until ``stop`` is set."""
    receipts = None
    url = None
    if cfg.receipt_listen:
        host, _, port = cfg.receipt_listen.rpartition(":")
        receipts = ReceiptServer(store, host or "127.0.0.1", int(port), cfg.receipt_token).start()
        url = f"{cfg.receipt_url.rstrip('/')}/receipts/{cfg.receipt_token}" if cfg.receipt_url else receipts.url
        log.info("delivery receipts on %s", cfg.receipt_listen)
    sender = build_sender(store, cfg, receipt_url=url)
    loop = asyncio.get_running_loop()
    watched = -cfg.watch_every_s
    try:
        while not stop.is_set():
            try:
                # the watcher reads every local meter's latest state: not on every short round
                watch = loop.time() - watched >= cfg.watch_every_s
                if watch:
                    watched = loop.time()
                rep = await asyncio.to_thread(notice_tick, store, sender, int(clock()), watch=watch)
                if rep.claimed:
                    log.info("notices: %d sent, %d failed, %d retried, %d waiting", rep.sent, rep.failed, rep.retried,
                             rep.waiting)
            except Exception:       # a bad pass must not stop serve; the notices stay queued
                log.exception("notice pass failed; the notices stay queued and are tried again")
            try:
                await asyncio.wait_for(stop.wait(), cfg.interval_s)
            except TimeoutError:
                pass
    finally:
        if receipts is not None:
            receipts.close()
