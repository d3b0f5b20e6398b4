"""Same-run ratios measured the one honest way on a shared machine: interleaved.

A best-of-5 of A beside a best-of-5 of B taken minutes apart compares two moods of
the machine, not A and B.  ``interleaved`` runs A, B, A, B ... and keeps the ratio of
each adjacent pair, so a slow minute slows both sides of the same ratio; the figure
is the median of those ratios, reported with its spread (lowest and highest pair).

    r = interleaved(lambda: kernel(batch), lambda: stream_read(batch), rounds=7,
                    work_a=n, work_b=n)          # rates: work per second
    report("kernel / stream read bandwidth", r.a, "readings/s", baseline=r.b)
    print(r.describe())

``a`` and ``b`` are the medians of each side's rates, ``ratio`` the median of the
per-pair ratios (not a/b), ``low``/``high`` the spread of the pair ratios.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Interleaved:
    a: float          # median rate of A (work_a per second)
    b: float          # median rate of B
    ratio: float      # median over pairs of rate_a / rate_b
    low: float        # smallest pair ratio
    high: float       # largest pair ratio
    rounds: int

    def describe(self) -> str:
        return (f"{self.ratio:.2f}x (median of {self.rounds} interleaved pairs, "
                f"spread {self.low:.2f}-{self.high:.2f})")


def _rate(fn: Callable[[], object], work: float) -> float:
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    return work / dt if dt > 0 else float("inf")


def interleaved(a: Callable[[], object], b: Callable[[], object], *, rounds: int = 7,
                work_a: float = 1.0, work_b: float = 1.0, warmup: bool = True) -> Interleaved:
    """Run ``a`` and ``b`` alternately ``rounds`` times; return rates and the median pair ratio.

    ``work_a``/``work_b`` is how much work one call does (rates are work per second).
    Callables that time themselves (a fixed window, say) go to ``interleaved_values``.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if warmup:
        a()
        b()
    ra: list[float] = []
    rb: list[float] = []
    for i in range(rounds):
        # Alternate which side goes first so neither always follows the other's cache state.
        if i % 2 == 0:
            ra.append(_rate(a, work_a))
            rb.append(_rate(b, work_b))
        else:
            rb.append(_rate(b, work_b))
            ra.append(_rate(a, work_a))
    return _summary(ra, rb, rounds)


def _summary(ra: list[float], rb: list[float], rounds: int) -> Interleaved:
    ratios = [x / y for x, y in zip(ra, rb) if y]
    return Interleaved(statistics.median(ra), statistics.median(rb), statistics.median(ratios),
                       min(ratios), max(ratios), rounds)


def interleaved_values(a: Callable[[], float], b: Callable[[], float], *, rounds: int = 7) -> Interleaved:
    """Like ``interleaved`` for callables that measure themselves and return a rate each."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    ra: list[float] = []
    rb: list[float] = []
    for i in range(rounds):
        if i % 2 == 0:
            ra.append(a())
            rb.append(b())
        else:
            rb.append(b())
            ra.append(a())
    return _summary(ra, rb, rounds)


async def interleaved_values_async(a: Callable[[], Awaitable[float]], b: Callable[[], Awaitable[float]], *,
                                   rounds: int = 7) -> Interleaved:
    """``interleaved_values`` for coroutines (measurements that run on the event loop)."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    ra: list[float] = []
    rb: list[float] = []
    for i in range(rounds):
        if i % 2 == 0:
            ra.append(await a())
            rb.append(await b())
        else:
            rb.append(await b())
            ra.append(await a())
    return _summary(ra, rb, rounds)


def interleaved_group(sides: Sequence[Callable[[], float]], *, rounds: int = 7) -> list[Interleaved]:
    """Several measurements, each run once per round with the order rotating every round (A, B, C;
    B, C, A; ...): each side's values against the first side's of the same round.

    Each callable measures itself and returns a value (a rate, or a cost such as CPU per read);
    entry ``i`` of the result has ``a`` = side i's median, ``b`` = the first side's, and the
    median and spread of the per-round ratios side i / first side (entry 0 is 1.0 throughout).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if not sides:
        raise ValueError("need at least one side to measure")
    values: list[list[float]] = [[] for _ in sides]
    for r in range(rounds):
        for k in range(len(sides)):
            i = (r + k) % len(sides)
            values[i].append(sides[i]())
    return [_summary(v, values[0], rounds) for v in values]


def paired(ra: Sequence[float], rb: Sequence[float]) -> Interleaved:
    """Two sides' values taken in the same rounds (kept by the caller), summed up as the functions
    above do: the medians of each, and the median and spread of the per-round ratios a / b."""
    if not ra or len(ra) != len(rb):
        raise ValueError(f"need as many values of each side, at least one: got {len(ra)} and {len(rb)}")
    return _summary(list(ra), list(rb), len(ra))
