"""The remote cost-control loop `headend serve` runs: on every grid boundary, collect, then cycle.

The grid is ``[costctl] interval_s`` (daily by default; hourly or 15-minute possible) aligned to
local midnight, the same grid ``run_cycle`` rates on.  At each boundary ``g`` the loop

1. reads forward active energy (``00010000``) from every remote-cost-control meter with
   :func:`headend.commands.collect.read_cycle` (concurrently, batched commits).  A reading taken
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
from typing import Callable, Mapping

from headend.commands.collect import read_cycle
from headend.commands.meter_client import MeterClient
from headend.costctl.config import CostCtlConfig
from headend.costctl.cycle import CycleReport, run_cycle
from headend.costctl.rerate import ENERGY_DI
from headend.store import Store
from headend.tariff.model import TariffBook

__all__ = ["LoopClock", "LoopOptions", "next_boundary", "run_loop"]

log = logging.getLogger("headend.costctl")


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
    on_cycle: Callable[[int, CycleReport], None] | None = field(default=None, compare=False)


def next_boundary(t: float, interval_s: int, utc_offset_s: int) -> int:
    """The first grid boundary strictly after Unix time ``t`` (grid aligned to local midnight)."""
    phase = (-utc_offset_s) % interval_s
    return int((int(t) - phase) // interval_s + 1) * interval_s + phase


async def collect_grid(store: Store, client: MeterClient, boundary: int, clock: LoopClock, window_s: int,
                       concurrency: int = 2000) -> tuple[int, int, dict[str, str]]:
    """Read every remote meter's energy register for the grid boundary; (meters, stored, failed)."""
    meters = store.find_meters([("mode", "=", "remote")])

    def stamp() -> float:
        t = clock.now()
        return boundary if t - boundary <= window_s else t

    res = await read_cycle(client, store, meters, [int(ENERGY_DI, 16)], concurrency=concurrency, clock=stamp)
    return res.meters, res.stored, res.failed


async def run_loop(store: Store, client: MeterClient, options: LoopOptions, stop: asyncio.Event) -> None:
    """Collect and run a cycle at every grid boundary until ``stop`` is set (see module doc)."""
    cc = options.config
    clock = LoopClock(options.start, options.speed)
    g = next_boundary(clock.now(), cc.interval_s, cc.utc_offset_s)
    log.info("cost control: %d s grid, next boundary at %d", cc.interval_s, g)
    while await clock.sleep_until(g, stop):
        if clock.now() - g > cc.collect_window_s:
            # boundaries passed while a cycle ran long or the host slept: a reading now would be
            # off the grid, so wait for the next one (that cycle rates everything missed)
            nxt = next_boundary(clock.now(), cc.interval_s, cc.utc_offset_s)
            log.warning("cost control: grid boundary %d passed %.0f s ago; next collection at %d",
                        g, clock.now() - g, nxt)
            g = nxt
            continue
        try:
            meters, stored, failed = await collect_grid(store, client, g, clock, cc.collect_window_s,
                                                        options.concurrency)
            if failed:
                log.warning("cost control: %d of %d meters not read at %d, e.g. %s", len(failed), meters, g,
                            next(iter(failed.items())))
            rep = await asyncio.to_thread(run_cycle, store, options.catalog, int(clock.now()), rules=cc.rules,
                                          interval_s=cc.interval_s, utc_offset_s=cc.utc_offset_s,
                                          actor=options.actor, snap_s=cc.snap_s)
        except Exception:  # one bad cycle must not stop cost control: the next boundary tries again
            log.exception("cost control: the cycle at %d failed", g)
        else:
            log.info("cost control at %d: %d readings, %d of %d accounts rated, %d fen charged, actions %s,"
                     " %d problem(s), %d conflict(s)", g, stored, rep.rated, rep.accounts, rep.charged_fen,
                     rep.actions, len(rep.problems), len(rep.conflicts))
            for line in rep.problems[:20] + rep.skipped[:20]:
                log.debug("cost control: %s", line)
            if options.on_cycle is not None:
                options.on_cycle(g, rep)
        g += cc.interval_s
