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

from headend.commands.meter_client import MeterClient, MeterRefused
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
    """Read ``dis`` from every meter (one after another per meter, all meters at once); store
    each value; report failures per meter."""
    meters = list(meters)
    result = CycleResult(meters=len(meters))
    pending: list[tuple] = []
    sem = asyncio.Semaphore(concurrency)
    t0 = time.perf_counter()

    writes: list[asyncio.Future[int]] = []

    def flush() -> None:
        # the batch is written on a worker thread (the store is thread-safe) so the loop keeps
        # the buses busy meanwhile; the cycle ends only when every batch is committed
        if pending:
            rows = pending[:]
            pending.clear()
            writes.append(asyncio.ensure_future(asyncio.to_thread(store.add_readings, rows)))
            result.stored += len(rows)

    async def one(m: Meter) -> None:
        target = target_of(m)
        async with sem:
            try:
                at = int(clock())
                for di in dis:
                    rv = await client.read(target, di)
                    pending.append(reading_row(m.address, rv, at))
            except (MeterRefused, LinkError) as exc:
                result.failed[m.address] = str(exc)
        if len(pending) >= batch:
            flush()

    await asyncio.gather(*(one(m) for m in meters))
    flush()
    if writes:
        await asyncio.gather(*writes)
    result.seconds = time.perf_counter() - t0
    return result
