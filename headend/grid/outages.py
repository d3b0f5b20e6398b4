"""Planned outages: who is told, when, in what order; changes, cancellations, the hotline text, clocks after.

* **Plan**: every customer with a meter under the feeder or area gets an ``outage_planned``
  notice, due ``lead_s`` before the start (``important_lead_s`` for important and protected
  customers, with a higher priority so they are sent first); a plan made later than that is
  sent at once.  The customers reached are fixed when the outage is planned.
* **Change** (new times or reason): customers already told get an ``outage_changed`` notice now;
  those whose notice is still waiting get the new plan instead, at its lead time.
* **Cancel**: customers already told get ``outage_cancelled``; waiting notices are withdrawn.
* **Announce**: the hotline's text for every outage in progress (area, cause, restore time).
* **After**: once an outage has ended, a time sync is queued through the outbox for every meter
  it cut (their clocks may have stopped with the supply), once per outage.

Notice keys are ``outage:<id>:v<version>:<kind>:<customer>``: a re-run queues nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from headend.notices.templates import BUILTIN, Catalog, LANGUAGES
from headend.store import Outage, Store

__all__ = ["OutagePolicy", "plan_outage", "change_outage", "cancel_outage", "announce", "resync_after_outages"]

_TEXT = Catalog(BUILTIN)


@dataclass(frozen=True)
class OutagePolicy:
    """How far ahead customers hear of a planned outage (the ``[notices]`` section's outage keys)."""

    lead_s: int = 24 * 3600
    important_lead_s: int = 72 * 3600
    important_priority: int = 10

    def __post_init__(self) -> None:
        if self.lead_s < 0 or self.important_lead_s < 0:
            raise ValueError("outage lead times must be >= 0")


def _areas(store: Store, o: Outage) -> dict[str, str]:
    """Each reached customer's own area name (the text a customer recognises)."""
    out: dict[str, str] = {}
    for _m, c, _f, area, _imp in store.grid_meters(feeder=o.feeder, area=o.area):
        out.setdefault(c, area)
    return out


def _rows(store: Store, o: Outage, kind: str, customers: list[tuple[str, bool]], *, now: int,
          policy: OutagePolicy, at_lead: bool) -> list[tuple[Any, ...]]:
    areas = _areas(store, o)
    rows = []
    for c, important in customers:
        detail = {"customer": c, "outage": o.id, "area": areas.get(c) or o.area or f"feeder {o.feeder}",
                  "start_at": o.start_at, "end_at": o.end_at, "reason": o.reason}
        lead = policy.important_lead_s if important else policy.lead_s
        due = max(now, o.start_at - lead) if at_lead else now
        rows.append((c, kind, _TEXT.render(kind, "en", detail), f"outage:{o.id}:v{o.version}:{kind}:{c}", detail, due,
                     policy.important_priority if important else 0))
    return rows


def plan_outage(store: Store, *, feeder: str | None = None, area: str | None = None, start_at: int, end_at: int,
                reason: str, actor: str, now: int, policy: OutagePolicy = OutagePolicy()) -> tuple[Outage, int]:
    """Record a planned outage and queue its notices (important customers first); return it and how many."""
    with store.atomic():
        o, customers = store.plan_outage(feeder=feeder, area=area, start_at=start_at, end_at=end_at, reason=reason,
                                         actor=actor)
        n = store.queue_notices(_rows(store, o, "outage_planned", customers, now=now, policy=policy, at_lead=True))
    return o, n


def change_outage(store: Store, outage_id: int, *, actor: str, now: int, start_at: int | None = None,
                  end_at: int | None = None, reason: str | None = None,
                  policy: OutagePolicy = OutagePolicy()) -> tuple[Outage, int]:
    """Change a planned outage and tell its customers; return it and how many notices were queued."""
    with store.atomic():
        o = store.change_outage(outage_id, actor=actor, start_at=start_at, end_at=end_at, reason=reason)
        told = store.outage_notices_sent(f"outage:{o.id}:")
        store.withdraw_notices(f"outage:{o.id}:", f"superseded by the outage's change to version {o.version}")
        customers = store.outage_customers(o.id)
        rows = _rows(store, o, "outage_changed", [c for c in customers if c[0] in told], now=now, policy=policy,
                     at_lead=False)
        rows += _rows(store, o, "outage_planned", [c for c in customers if c[0] not in told], now=now, policy=policy,
                      at_lead=True)
        n = store.queue_notices(rows)
    return o, n


def cancel_outage(store: Store, outage_id: int, *, actor: str, now: int,
                  policy: OutagePolicy = OutagePolicy()) -> tuple[Outage, int]:
    """Cancel a planned outage: customers already told hear it is off, waiting notices are withdrawn."""
    with store.atomic():
        o = store.cancel_outage(outage_id, actor=actor)
        told = store.outage_notices_sent(f"outage:{o.id}:")
        store.withdraw_notices(f"outage:{o.id}:", "the outage was cancelled before this notice was due")
        customers = [c for c in store.outage_customers(o.id) if c[0] in told]
        n = store.queue_notices(_rows(store, o, "outage_cancelled", customers, now=now, policy=policy, at_lead=False))
    return o, n


def announce(store: Store, now: int, catalog: Catalog | None = None,
             languages: tuple[str, ...] = LANGUAGES) -> list[tuple[Outage, dict[str, str]]]:
    """The hotline announcement (per language) of every planned outage in progress at ``now``."""
    cat = catalog or _TEXT
    out = []
    for o in store.list_outages(status="planned", active_at=now):
        areas = sorted(set(_areas(store, o).values()))
        place = o.area if o.area is not None else "、".join(areas) if areas else f"feeder {o.feeder}"
        detail = {"area": place, "reason": o.reason, "start_at": o.start_at, "end_at": o.end_at}
        texts = {}
        for lang in languages:
            d = dict(detail, area=place if lang == "zh" or o.area is not None else ", ".join(areas) or place)
            texts[lang] = cat.render("outage_announce", lang, d)
        out.append((o, texts))
    return out


def resync_after_outages(store: Store, now: int, *, actor: str = "notices") -> int:
    """Queue a time sync for every meter of each outage that has ended (once per outage); return how many."""
    queued = 0
    for o in store.list_outages(status="planned", ended_by=now, unsynced=True):
        with store.atomic():
            if not store.set_outage_synced(o.id, now):
                continue                # another worker took this outage
            meters = store.outage_meters(o.id)
            queued += len(store.enqueue_many(meters, "sync_time", {}, actor=actor, idem_prefix=f"outage:{o.id}:sync"))
    return queued
