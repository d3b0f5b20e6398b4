"""The town into a head-end store in one step: accounts (name, phone, district, limits, tariff),
meters (link, mode, protected) and the grid (feeder, transformer area), all in one transaction.

Uses the store's own functions (``add_account``, ``add_meters``, ``import_grid``) inside
``store.atomic()``: 10,000 homes take a few seconds, and a failure leaves nothing behind.
"""

from __future__ import annotations

from typing import Any, Mapping

from tools.town.plan import Town

__all__ = ["LIMITS", "register_town"]

# warning levels and the cut line, in fen: the same for every household of the town
LIMITS = {"alarm1_fen": 3000, "alarm2_fen": 1000, "overdraft_fen": 500, "close_ok_fen": 0}
TARIFF = "beijing"


def register_town(store: Any, town: Town, links: Mapping[str, str], *, actor: str = "town",
                  limits: Mapping[str, int] = LIMITS, tariff: str = TARIFF) -> dict[str, int]:
    """Register every home of ``town`` (its meter reached at ``links[address]``); returns counts.

    All or nothing: a meter or customer already registered stops it with the store's Conflict."""
    missing = [h.address for h in town.homes if h.address not in links]
    if missing:
        raise ValueError(f"no link for {len(missing)} meters, e.g. {missing[0]}: serve the town first")
    with store.atomic():
        for h in town.homes:
            store.add_account(h.customer, actor=actor, name=h.name, phone=h.phone, district=h.district,
                              segment="commercial" if h.kind == "shop" else "residential",
                              protected=h.protected, tariff=tariff, **limits)
        store.add_meters(({"address": h.address, "link": links[h.address], "customer": h.customer,
                           "mode": h.mode, "protected": h.protected} for h in town.homes), actor=actor)
        store.import_grid(((h.address, h.feeder, h.area, int(h.protected)) for h in town.homes), actor=actor)
    return {"accounts": len(town.homes), "meters": len(town.homes), "buses": len(town.buses),
            "feeders": len(town.feeders), "remote": sum(h.mode == "remote" for h in town.homes)}
