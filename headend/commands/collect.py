"""Read cycles: read the same data items from many meters at once and store every reading.

Reads change nothing at a meter, so a cycle does not go through the outbox one command per
meter; it reads every meter concurrently (each bus still one request at a time: the link's
queue sees to that) and writes the readings in batches, one transaction per batch.  The
remote cost-control loop collects its readings this way.

The per-read path is the head-end's hottest, so it is kept short: each meter of a cycle is one
:class:`~headend.transports.Job` that the link calls back with the reply, the reply's value is
decoded and turned into its store row there, and the meter's next read goes out in the same
callback (no task, future or closure per read; the read requests are built once and reused
across cycles).  Every check still runs: the link session matches function, address and DI
and parse_frame the checksum; the reply becomes a value or a refusal through the same
:class:`~headend.commands.meter_client.ReadItem` as every other read.
"""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from headend.commands.meter_client import MeterClient, MeterRefused, ReadItem, read_item, read_request
from headend.commands.worker import target_of
from headend.link.session import Reply
from headend.store import Meter, Store
from headend.transports import Job, LinkError

__all__ = ["CycleResult", "batch_size", "freeze_after_first_cycle", "read_cycle", "wal_pages"]

# Readings are stored by meter (the table's key starts with the meter), and replies arrive one
# bus after another (the first meter of every bus, then the second ...), so a batch's rows land
# on pages spread over the whole table: a batch rewrites about min(rows, the table's pages)
# pages.  Rows per transaction in proportion to the cycle keep the pages rewritten per reading
# the same whatever the fleet's size; two batches a cycle is what the floor gives a 1,000-meter
# fleet, so wider fleets get the same (with eight a cycle, storing a reading at 20,000 meters
# cost a median 1.35x and 1.49x what it did at 1,000 in two interleaved runs of 11 rounds, rows
# in bus order, with two 1.05x; tools/bench/bench_store.py measures the batches of now).  The
# cap keeps each commit short (the store is held while it runs).
BATCH_MIN = 500
BATCH_MAX = 20_000
BATCH_SHARE = 2  # a cycle commits in about this many batches


def batch_size(reads: int) -> int:
    """Rows per transaction for a cycle of ``reads`` readings."""
    return min(max(reads // BATCH_SHARE, BATCH_MIN), BATCH_MAX)


# For the same reason the WAL may hold about a cycle's readings in pages before SQLite copies it
# back (Store.checkpoint_every): at its default of 1,000 pages a 1,000-meter fleet's pages were
# rewritten by about four cycles per checkpoint and copied back once, a 20,000-meter fleet's
# copied back after about one batch (storing a reading: 1.24x the CPU at 20,000 meters as at
# 1,000; tools/bench/bench_store.py).  Capped, so the WAL stays under 256 MB (4 KB pages).
WAL_PAGES_MIN = 1000
WAL_PAGES_MAX = 65_536


def wal_pages(reads: int) -> int:
    """WAL pages between checkpoints for cycles of ``reads`` readings."""
    return min(max(reads, WAL_PAGES_MIN), WAL_PAGES_MAX)


def freeze_after_first_cycle() -> None:
    """Call once, after a long-running head-end's first read cycle: what that cycle built to stay
    (a link per bus, each meter's read requests) is kept out of the cyclic garbage collector's
    full passes from then on.

    Every cycle's registry rows, readers and readings live through it and make full collections
    due; each then walked all of that link state too, so the collector's CPU per read grew with
    the fleet (tools/bench/bench_headend.py: 0.4 us at 1,000 meters, 1.9 us at 20,000).  Frozen
    objects are never collected: link state dropped later (a serve's share handed over) is freed
    by reference counting, and any cycles in it stay, once.
    """
    gc.collect()
    gc.freeze()


@dataclass
class CycleResult:
    """What a read cycle did: how many values were stored and which meters failed, and why."""

    meters: int = 0
    stored: int = 0
    seconds: float = 0.0
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def reads_per_s(self) -> float:
        """Meter reads (one per meter and item) per second of cycle time."""
        return self.stored / self.seconds if self.seconds else 0.0


async def read_cycle(
    client: MeterClient,
    store: Store,
    meters: Iterable[Meter],
    dis: list[int],
    *,
    concurrency: int = 2000,
    batch: int | None = None,
    clock: Callable[[], float] = time.time,
) -> CycleResult:
    """Read ``dis`` from every meter (one after another per meter, up to ``concurrency`` meters
    at once); store each value; report failures per meter.

    Plain reads run from loop callbacks: each reply is decoded and the meter's next read goes
    out in the same callback, with no task per read.  Block reads and dial-in links take the
    async path.  Readings are committed in batches (``batch`` rows; by default
    :func:`batch_size` of the cycle) on a worker thread (the store is thread-safe) so the buses
    keep going meanwhile; the cycle ends when every batch is committed.
    """
    items = [read_item(di) for di in dis]
    n_items = len(items)
    every = list(meters)
    if batch is None:
        batch = batch_size(len(every) * n_items)
    store.checkpoint_every(wal_pages(len(every) * n_items))
    todo = iter(every)
    result = CycleResult()
    pending: list[tuple] = []
    writes: list[asyncio.Future[int]] = []
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    slow_tasks: set[asyncio.Task[None]] = set()
    frontend = client.frontend
    active = 0
    t0 = time.perf_counter()

    def flush() -> None:
        if pending:
            rows = pending[:]
            pending.clear()
            writes.append(asyncio.ensure_future(asyncio.to_thread(store.add_readings, rows)))
            result.stored += len(rows)

    def meter_done() -> None:
        nonlocal active
        active -= 1
        start_next()
        if active == 0 and not finished.done():
            finished.set_result(None)

    def start_next() -> None:
        nonlocal active
        while active < concurrency:
            m = next(todo, None)
            if m is None:
                return
            active += 1
            result.meters += 1
            _Reader(m).step()

    class _Reader(Job):
        """One meter's reads of the cycle; the link calls ``done`` with each reply."""

        __slots__ = ("m", "address", "at", "link", "i")

        def __init__(self, m: Meter) -> None:
            self.m = m
            self.address = m.address
            self.at = int(clock())
            self.link = frontend.link_nowait(m.link)  # None: a dial-in link, the async path
            self.i = 0
            self.resent = False

        def step(self) -> None:
            while self.i < n_items:
                it = items[self.i]
                if self.link is None or it.block:
                    task = loop.create_task(self.slow(it))
                    slow_tasks.add(task)
                    task.add_done_callback(slow_tasks.discard)
                    return
                self.request = read_request(self.address, it)
                self.link.submit_job(self)
                return
            meter_done()

        def done(self, reply: Reply | None, exc: BaseException | None) -> None:  # type: ignore[override]
            it = items[self.i]
            try:
                if exc is not None or reply is None:
                    return self.fail(str(exc))
                try:
                    value = it.value(self.address, reply.frame)
                except MeterRefused as e:
                    return self.fail(str(e))
                pending.append(it.row(self.address, value, self.at))
                if len(pending) >= batch:
                    flush()
                self.i += 1
                self.step()
            except Exception as e:  # a callback must never raise into the transport
                self.fail(f"{type(e).__name__}: {e}")

        def fail(self, why: str) -> None:
            result.failed[self.address] = why
            meter_done()

        async def slow(self, it: ReadItem) -> None:
            try:
                rv = await client.read(target_of(self.m), it.di)
            except (MeterRefused, LinkError) as exc:
                self.fail(str(exc))
                return
            except Exception as e:  # a value that does not decode, or worse: named, never a hang
                self.fail(f"{type(e).__name__}: {e}")
                return
            try:
                pending.append(it.row(self.address, rv.value, self.at))
                if len(pending) >= batch:
                    flush()
                self.i += 1
                self.step()
            except Exception as e:
                self.fail(f"{type(e).__name__}: {e}")

    start_next()
    if active:
        await finished
    flush()
    if writes:
        await asyncio.gather(*writes)
    result.seconds = time.perf_counter() - t0
    return result
