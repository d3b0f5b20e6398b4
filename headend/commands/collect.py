"""Read cycles: read the same data items from many meters at once and store every reading.

Reads change nothing at a meter, so a cycle does not go through the outbox one command per
meter; it reads every meter concurrently (each bus still one request at a time: the link's
lock sees to that) and writes the readings in batches, one transaction per batch.  The
remote cost-control loop collects its readings this way.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from headend.commands.meter_client import MeterClient, MeterRefused, ReadValue
from headend.commands.worker import reading_row, target_of
from headend.store import Meter, Store
from headend.transports import LinkError

__all__ = ["CycleResult", "read_cycle"]


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
    batch: int = 500,
    clock: Callable[[], float] = time.time,
) -> CycleResult:
    """Read ``dis`` from every meter (one after another per meter, up to ``concurrency`` meters
    at once); store each value; report failures per meter.

    Plain reads run from loop callbacks: each reply is decoded and the meter's next read goes
    out in the same callback, with no task per read.  Block reads and dial-in links take the
    async path.  Readings are committed in batches on a worker thread (the store is thread-safe)
    so the buses keep going meanwhile; the cycle ends when every batch is committed.
    """
    todo = iter(list(meters))
    result = CycleResult()
    pending: list[tuple] = []
    writes: list[asyncio.Future[int]] = []
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    slow_tasks: set[asyncio.Task[None]] = set()
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
            _Reader(m).step(0)

    class _Reader:
        __slots__ = ("m", "target", "at")

        def __init__(self, m: Meter) -> None:
            self.m = m
            self.target = target_of(m)
            self.at = int(clock())

        def step(self, i: int) -> None:
            if i >= len(dis):
                meter_done()
            elif not client.read_nowait(self.target, dis[i], lambda rv, exc: self.got(i, rv, exc)):
                task = loop.create_task(self.slow(i))
                slow_tasks.add(task)
                task.add_done_callback(slow_tasks.discard)

        def got(self, i: int, rv: ReadValue | None, exc: BaseException | None) -> None:
            try:
                if exc is not None or rv is None:
                    result.failed[self.m.address] = str(exc)
                    meter_done()
                    return
                pending.append(reading_row(self.m.address, rv, self.at))
                if len(pending) >= batch:
                    flush()
                self.step(i + 1)
            except Exception as e:  # a callback must never raise into the transport
                result.failed[self.m.address] = f"{type(e).__name__}: {e}"
                meter_done()

        async def slow(self, i: int) -> None:
            try:
                rv = await client.read(self.target, dis[i])
            except (MeterRefused, LinkError) as exc:
                self.got(i, None, exc)
            else:
                self.got(i, rv, None)

    start_next()
    if active:
        await finished
    flush()
    if writes:
        await asyncio.gather(*writes)
    result.seconds = time.perf_counter() - t0
    return result
