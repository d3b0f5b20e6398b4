"""The remote cost-control loop `headend serve` runs: on every grid boundary, collect, then cycle.

The grid is ``[costctl] interval_s`` (daily by default; hourly or 15-minute possible) aligned to
local midnight, the same grid ``run_cycle`` rates on.  At each boundary ``g`` the loop

1. collects the energy register of every remote-cost-control meter.  On the daily grid it reads
   the meter's daily frozen readings (DIs 0506 00nn / 01nn: the register as it was at the
   meter's midnight, stored at that time, however late the read), so the reading is exact;
   a meter without them (older firmware refuses the DI) and the hourly / 15-minute grids read
   forward active energy (``00010000``) with :func:`headend.commands.collect.read_cycle`
   (concurrently, batched commits).  A live reading taken
   within ``collect_window_s`` after ``g`` is stored *at* ``g``: it is the register at the
   boundary to within the few seconds the read took, and since registers are cumulative the
   energy of those seconds is billed once, in the next interval.  A later reading (a meter that
   answered only after retries) keeps its real time, is reported off the grid by the cycle and
   not used, so that interval is rated with the next good reading instead (a gap, never lost);
2. runs :func:`headend.costctl.cycle.run_cycle` on a worker thread: rate in one batch, debit in
   one transaction, decide, record with reasons, queue notices and relay commands.  The relay
   commands go to the outbox, which serve's outbox worker carries out and confirms (status
   word 3).

The loop's clock is the wall clock, or for tests and demos a clock that starts at a given time
and runs ``speed`` times faster (simulated meters take the same ``--start``/``--speed``).
Boundaries missed while the head-end was busy or down are not replayed one by one: the next
cycle rates every complete interval it has readings for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable, Mapping

from headend.commands.collect import read_cycle
from headend.commands.meter_client import MeterClient, MeterRefused
from headend.commands.worker import target_of
from headend.costctl.config import CostCtlConfig
from headend.costctl.cycle import CycleReport, run_cycle
from headend.costctl.distributed import rating_engine
from headend.tariff.rating import Engine
from headend.costctl.rerate import ENERGY_DI
from headend.frontends import Share
from headend.store import Meter, Store, yuan
from headend.tariff.model import TariffBook
from headend.transports import LinkError

__all__ = ["LoopClock", "LoopOptions", "next_boundary", "run_loop"]

log = logging.getLogger(__name__)


class LoopClock:
    """Unix time for the loop: the wall clock, or one starting at ``start`` running ``speed`` x."""

    def __init__(self, start: float | None = None, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError(f"clock speed must be > 0, got {speed}")
        self.speed = speed
        self._t0 = time.monotonic()
        self._base = time.time() if start is None else float(start)

    def now(self) -> float:
        """The loop's current Unix time."""
        return self._base + (time.monotonic() - self._t0) * self.speed

    async def sleep_until(self, t: float, stop: asyncio.Event) -> bool:
        """Wait until the loop's time reaches ``t``; False if ``stop`` was set first."""
        while not stop.is_set():
            left = (t - self.now()) / self.speed
            if left <= 0:
                return True
            try:
                await asyncio.wait_for(stop.wait(), min(left, 60.0))
            except TimeoutError:
                pass
        return False


@dataclass(frozen=True)
class LoopOptions:
    """What `headend serve` needs to run cost control: the ``[costctl]`` settings and tariffs."""

    config: CostCtlConfig
    catalog: Mapping[str, TariffBook]
    start: float | None = None            # the loop clock's start (Unix s); None: wall clock
    speed: float = 1.0                    # how much faster than real time that clock runs
    actor: str = "costctl"
    concurrency: int = 2000               # meters read at once
    rating: str = "in-process"            # where accounts are rated (costctl.distributed.rating_engine)
    on_cycle: Callable[[int, CycleReport], None] | None = field(default=None, compare=False)


def next_boundary(t: float, interval_s: int, utc_offset_s: int) -> int:
    """The first grid boundary strictly after Unix time ``t`` (grid aligned to local midnight)."""
    phase = (-utc_offset_s) % interval_s
    return int((int(t) - phase) // interval_s + 1) * interval_s + phase


FREEZE_TIME = 0x05060000         # | n: time of the n-th last daily freeze (YYMMDDhhmm, meter local)
FREEZE_ENERGY = 0x05060100       # | n: forward active energy at it (total, T1..T4, kWh)


async def collect_frozen(store: Store, client: MeterClient, meters: list[Meter], utc_offset_s: int, *,
                         depth: int = 2, concurrency: int = 2000) -> tuple[int, list[Meter], dict[str, str]]:
    """Read each meter's last ``depth`` daily freezes and store each as the energy register at its
    freeze time; returns (readings stored, meters without daily freezes, meters that failed).

    The freeze time is read again after the energy: a freeze taken between the two reads would
    pair yesterday's time with today's energy, so a changed time is read once more.  Reading two
    freezes covers a meter whose clock had not reached midnight yet (today's freeze is then the
    next day's second) and a day missed by the head-end; a freeze already stored is kept as it was.
    """
    tz = timezone(timedelta(seconds=utc_offset_s))
    rows: list[tuple[str, str, int, int]] = []
    unsupported: list[Meter] = []
    failed: dict[str, str] = {}

    async def frozen(t: Any, n: int) -> tuple[datetime, int] | None:
        for _attempt in range(2):
            when = (await client.read(t, FREEZE_TIME | n)).value
            if when is None:          # fewer than n freezes taken yet
                return None
            energy = (await client.read(t, FREEZE_ENERGY | n)).value
            if (await client.read(t, FREEZE_TIME | n)).value == when:
                total = energy[0] if isinstance(energy, (list, tuple)) else energy
                return when, int(Decimal(total) * 1000)
        raise LinkError(f"meter {t.address}: its daily freeze moved twice while being read; try again")

    async def one(m: Meter) -> None:
        t = target_of(m)
        try:
            for n in range(1, depth + 1):
                got = await frozen(t, n)
                if got is None:
                    break
                when, wh = got
                rows.append((m.address, ENERGY_DI, wh, int(when.replace(tzinfo=tz).timestamp())))
        except MeterRefused as exc:
            if "no_data" in exc.flags:
                unsupported.append(m)      # firmware without daily freezes: read the register
            else:
                failed[m.address] = str(exc)
        except (LinkError, ValueError) as exc:
            failed[m.address] = str(exc)

    todo = iter(meters)

    async def reader() -> None:       # a fixed pool: no task per meter, however large the fleet
        for m in todo:
            await one(m)

    await asyncio.gather(*(reader() for _ in range(max(1, min(concurrency, len(meters))))))
    stored = await asyncio.to_thread(store.add_readings, rows) if rows else 0
    return stored, unsupported, failed


async def collect_grid(store: Store, client: MeterClient, boundary: int, clock: LoopClock, cc: CostCtlConfig,
                       concurrency: int = 2000, share: Share | None = None) -> tuple[int, int, dict[str, str]]:
    """Collect every remote meter's energy for the grid boundary; (meters, readings stored, failed).

    On the daily grid the meters' daily frozen readings are used (exact at midnight, however late
    the head-end reads them); meters without them, and shorter grids, read the live register.
    With ``share`` (several serves on one database) only the meters on this serve's links.
    """
    meters = store.find_meters([("mode", "=", "remote")])
    if share is None:
        return await _collect_grid(store, client, meters, boundary, clock, cc, concurrency)
    meters = [m for m in meters if share.covers(m.link)]
    held = share.hold(m.link for m in meters)
    try:
        return await _collect_grid(store, client, meters, boundary, clock, cc, concurrency)
    finally:
        share.release(held)


async def _collect_grid(store: Store, client: MeterClient, meters: list[Meter], boundary: int, clock: LoopClock,
                        cc: CostCtlConfig, concurrency: int) -> tuple[int, int, dict[str, str]]:
    live, stored, failed = meters, 0, {}
    if cc.interval_s == 86400:
        stored, live, failed = await collect_frozen(store, client, meters, cc.utc_offset_s, concurrency=concurrency)

    def stamp() -> float:
        t = clock.now()
        return boundary if t - boundary <= cc.collect_window_s else t

    if live:
        res = await read_cycle(client, store, live, [int(ENERGY_DI, 16)], concurrency=concurrency, clock=stamp)
        stored += res.stored
        failed.update(res.failed)
    return len(meters), stored, failed


async def run_loop(store: Store, client: MeterClient, options: LoopOptions, stop: asyncio.Event,
                   share: Share | None = None) -> None:
    """Collect and run a cycle at every grid boundary until ``stop`` is set (see module doc).

    With ``share`` (several serves on one PostgreSQL database, the links partitioned between
    them) every serve collects the meters of its own share at each boundary and records that in
    its lease; the leader waits (up to PEERS_WAIT_S) for every live serve that collects, then runs
    the cycle.  A meter not collected in time is rated at the next cycle (a gap, never lost)."""
    cc = options.config
    clock = LoopClock(options.start, options.speed)
    g = next_boundary(clock.now(), cc.interval_s, cc.utc_offset_s)
    log.info("cost control: %d s grid, next boundary at %d", cc.interval_s, g)
    if share is not None:
        await asyncio.to_thread(store.mark_collected, share.me, 0)  # this serve collects its share
    engine = await asyncio.to_thread(rating_engine, options.rating)
    try:
        await _cycles(store, client, options, stop, clock, g, engine, share)
    finally:
        getattr(engine, "close", lambda: None)()


PEERS_WAIT_S = 120.0  # real seconds the leader waits for the other serves' collections


async def _peers_collected(store: Store, boundary: int, stop: asyncio.Event) -> list[str]:
    """Wait until every live serve that collects has collected ``boundary``; the ones that did not in time."""
    deadline = asyncio.get_running_loop().time() + PEERS_WAIT_S
    while True:
        leases = await asyncio.to_thread(store.live_leases)
        late = sorted(o for o, (_, at) in leases.items() if at is not None and at < boundary)
        if not late or stop.is_set() or asyncio.get_running_loop().time() >= deadline:
            return late
        try:
            await asyncio.wait_for(stop.wait(), 0.2)
        except TimeoutError:
            pass


async def _cycles(store: Store, client: MeterClient, options: LoopOptions, stop: asyncio.Event, clock: LoopClock,
                  g: int, engine: Engine, share: Share | None = None) -> None:
    cc = options.config
    while await clock.sleep_until(g, stop):
        if clock.now() - g > cc.collect_window_s:
            # boundaries passed while a cycle ran long or the host slept: a reading now would be
            # off the grid, so wait for the next one (that cycle rates everything missed)
            nxt = next_boundary(clock.now(), cc.interval_s, cc.utc_offset_s)
            log.warning("cost control: grid boundary %d passed %.0f s ago; next collection at %d",
                        g, clock.now() - g, nxt)
            g = nxt
            continue
        # several head-ends on one PostgreSQL database: one leads cost control (an advisory lock
        # that passes on when its process ends); each collects the meters of its share
        leader = store.try_leader("costctl")
        if not leader and share is None:
            g += cc.interval_s
            continue
        try:
            meters, stored, failed = await collect_grid(store, client, g, clock, cc, options.concurrency, share)
            if failed:
                log.warning("cost control: %d of %d meters not read at %d, e.g. %s", len(failed), meters, g,
                            next(iter(failed.items())))
            if share is not None:
                await asyncio.to_thread(store.mark_collected, share.me, g)
                if not leader:
                    g += cc.interval_s
                    continue
                late = await _peers_collected(store, g, stop)
                if late:
                    log.warning("cost control: %s did not collect their meters for %d in %.0f s; those are"
                                " rated at the next cycle", ", ".join(late), g, PEERS_WAIT_S)
            rep = await asyncio.to_thread(run_cycle, store, options.catalog, int(clock.now()), rules=cc.rules,
                                          interval_s=cc.interval_s, utc_offset_s=cc.utc_offset_s,
                                          actor=options.actor, snap_s=cc.snap_s, engine=engine)
        except Exception:  # one bad cycle must not stop cost control: the next boundary tries again
            log.exception("cost control: the cycle at %d failed", g)
        else:
            when = datetime.fromtimestamp(g, timezone(timedelta(seconds=cc.utc_offset_s))).strftime("%Y-%m-%d %H:%M")
            acts = ", ".join(f"{n} {a}" for a, n in sorted(rep.actions.items())) or "none"
            log.info("cost control at %s: %d readings, %d of %d accounts rated, %s yuan charged, actions: %s;"
                     " %d problem(s), %d conflict(s)", when, stored, rep.rated, rep.accounts, yuan(rep.charged_fen),
                     acts, len(rep.problems), len(rep.conflicts))
            for line in rep.problems[:20] + rep.skipped[:20]:
                log.debug("cost control: %s", line)
            if options.on_cycle is not None:
                options.on_cycle(g, rep)
        g += cc.interval_s
