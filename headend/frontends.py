"""Links partitioned between the `headend serve` processes on one PostgreSQL database (sans-I/O).

Theory of operation.  Every meter link (a bus, or one meter's own gateway) falls in one of
SLOTS slots, ``slot_of(link)``, a hash kept in the meter's row (``meters.link_slot``).  Slots are
spread over the serves whose lease beats by rendezvous hashing (each slot goes to the live serve
with the highest ``hash(serve, slot)``), so when a serve joins or leaves only its own share of
slots moves.  A link, not a meter, is the unit: one master per RS-485 bus.

Each serve records in its lease row the live set it works by (its *view*).  A serve works slot s
only when its own view gives s to it and no other live serve's recorded view gives s to that
serve.  On a change of the live set a serve first stops starting work on the slots it loses,
waits for what it has in flight there (``hold``), and only then records the new view; the
serve gaining those slots sees the old claim until then.  So two serves never work one link at
once: handing over costs at most a heartbeat or two and the end of the work in flight.  A serve
killed outright stops beating; once its lease lapses it is no longer live and its slots go to
the others at their next heartbeat (its commands left "sent" are requeued as before).  A serve
that cannot beat for half its lease fences itself (works nothing, forgets its view) before the
others can take its slots.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import Counter
from typing import Iterable, Mapping

__all__ = ["SLOTS", "Share", "owner_of", "slot_of", "slots_of", "view_text"]

SLOTS = 1024


def _h(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@functools.lru_cache(maxsize=1 << 20)  # a read cycle asks it for every meter: hash each link once
def slot_of(link: str) -> int:
    """The slot of a meter link: the unit that moves between serves (stable across processes)."""
    return _h(link) % SLOTS


def owner_of(slot: int, owners: Iterable[str]) -> str | None:
    """The serve (lease owner) that slot goes to among ``owners`` (rendezvous hashing)."""
    return max(owners, key=lambda o: (_h(f"{o}\n{slot}"), o), default=None)


def slots_of(owner: str, owners: Iterable[str]) -> frozenset[int]:
    """Every slot that ``owners`` give to ``owner``."""
    live = sorted(set(owners))
    return frozenset(s for s in range(SLOTS) if owner_of(s, live) == owner) if owner in live else frozenset()


def view_text(owners: Iterable[str]) -> str:
    """A view (a live set) as recorded in a lease row."""
    return json.dumps(sorted(set(owners)))


def _view(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    try:
        got = json.loads(text)
    except ValueError:
        return ()
    return tuple(got) if isinstance(got, list) else ()


class Share:
    """One serve's share of the links: which slots it may work now (``slots``), and what it holds.

    Feed it the live leases on every heartbeat (:meth:`update`); record the view it returns.
    ``hold`` / ``release`` count work in flight per slot (a command, a read cycle)."""

    def __init__(self, me: str) -> None:
        self.me = me
        self.view: tuple[str, ...] = ()          # the live set recorded in my lease row
        self.slots: frozenset[int] = frozenset()  # what I may start work on now
        self._held: Counter[int] = Counter()
        self._cache: dict[tuple[str, ...], frozenset[int]] = {}

    def _mine(self, owner: str, view: tuple[str, ...]) -> frozenset[int]:
        key = (owner, *view)
        got = self._cache.get(key)
        if got is None:
            if len(self._cache) > 64:
                self._cache.clear()
            got = self._cache[key] = slots_of(owner, view)
        return got

    def update(self, leases: Mapping[str, str | None]) -> str:
        """``leases``: every live serve (its owner name) -> the view its row records.  Returns the
        view to record in my row now (my current one while work on slots I lose is in flight)."""
        live = tuple(sorted(leases))
        if self.me not in live:
            return self.fence()
        target = self._mine(self.me, live)
        keep = target & self._mine(self.me, self.view)
        lost = self._mine(self.me, self.view) - target
        if not any(self._held[s] for s in lost):
            self.view, keep = live, target   # nothing of the lost slots in flight: hand them over
        taken: set[int] = set()
        for owner, text in leases.items():
            if owner != self.me:
                taken |= self._mine(owner, _view(text))
        self.slots = frozenset(keep - taken)
        return view_text(self.view) if self.view else ""

    def fence(self) -> str:
        """Work nothing and forget the view (the lease may have lapsed: others may take my slots)."""
        self.view, self.slots = (), frozenset()
        return ""

    def covers(self, link: str) -> bool:
        """Whether work on ``link`` may start now."""
        return slot_of(link) in self.slots

    def busy(self, link: str) -> bool:
        """Whether work on ``link`` is in flight."""
        return self._held[slot_of(link)] > 0

    def hold(self, links: Iterable[str]) -> list[int]:
        """Count work in flight on each of ``links`` (all covered now); pass the result to release."""
        slots = [slot_of(x) for x in links]
        self._held.update(slots)
        return slots

    def hold_slots(self, slots: Iterable[int]) -> list[int]:
        """As :meth:`hold`, by slot."""
        got = list(slots)
        self._held.update(got)
        return got

    def release(self, slots: Iterable[int]) -> None:
        """The work counted by :meth:`hold` is over."""
        self._held.subtract(slots)
        self._held += Counter()  # drop the zeros
