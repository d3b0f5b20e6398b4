"""Who lives where: a town of N meters, generated the same way every time from a seed.

Every meter has a customer (name, phone, district), a place in the grid (a transformer area on
a feeder) and a seat on a bus: an RS-485 line of ``bus_min``..``bus_max`` meters behind one
serial server (one TCP port), or, for a few meters (``solo_share``), a TCP link of its own (a
meter with its own GPRS/4G module).  A bus sits in one transformer area; an area may have
several buses; a feeder feeds a few areas; a district holds a few feeders.

    town = plan_town(10_000, seed=7)
    town.homes[0].address, town.homes[0].customer, town.homes[0].feeder
    town.buses            # [[addresses of bus 0], ...]; a bus of one is a meter on its own link
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["DISTRICTS", "Home", "Town", "plan_town"]

DISTRICTS = ("Haidian", "Chaoyang", "Dongcheng", "Xicheng", "Fengtai", "Shijingshan", "Tongzhou", "Changping")
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
_GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂"
# household kinds: share (per mille), load scale range (percent of the residential profile)
KINDS = (("family", 600, (80, 150)), ("single", 300, (40, 80)), ("heavy", 40, (300, 500)),
         ("empty", 40, (2, 5)), ("shop", 20, (150, 250)))
SHAPES = ("evening", "early", "late")  # daily shapes (tools/town/load.py)


@dataclass(frozen=True)
class Home:
    """One meter and the household behind it."""

    address: str
    customer: str
    name: str
    phone: str
    district: str
    feeder: str
    area: str
    bus: int          # index into Town.buses
    own_link: bool    # on a TCP link of its own (its bus holds only it)
    mode: str         # "local" (the meter keeps the money) or "remote" (the head-end does)
    protected: bool   # never cut (medical equipment at home)
    kind: str         # family, single, heavy, empty, shop
    shape: str        # daily shape of its demand
    scale_pct: int    # its demand against the residential profile
    seed: int         # its load noise


@dataclass
class Town:
    homes: list[Home]
    buses: list[list[str]]   # the addresses on each bus; one address: a meter on its own link
    seed: int

    def home(self, address: str) -> Home:
        """The household behind a meter."""
        return self._by_address[address]

    def __post_init__(self) -> None:
        self._by_address = {h.address: h for h in self.homes}

    @property
    def feeders(self) -> list[str]:
        return sorted({h.feeder for h in self.homes})


def _kind(pick: int) -> tuple[str, int, int]:
    for kind, share, (lo, hi) in KINDS:
        if pick < share:
            return kind, lo, hi
        pick -= share
    raise AssertionError("pick is below the shares' total")


def plan_town(n: int, *, seed: int = 1, first: int = 1, remote_share: float = 0.3, solo_share: float = 0.02,
              protected_share: float = 0.01, bus_min: int = 32, bus_max: int | None = None,
              areas_per_feeder: int | None = None) -> Town:
    """A town of ``n`` meters with addresses counting up from ``first``; the same seed gives the
    same town.  ``bus_max`` defaults to 256, less for small towns so they still have a few buses;
    a small town gets an area per bus and a feeder per area or two, so it still has a few feeders."""
    if n < 1:
        raise ValueError(f"a town needs at least one meter, got {n}")
    if first < 1 or first + n > 10**11:
        raise ValueError(f"addresses {first}..{first + n - 1} do not fit the town's numbering (1..99999999999)")
    if bus_max is None:
        bus_max = max(bus_min, min(256, n // 4))
    if not 1 <= bus_min <= bus_max:
        raise ValueError(f"bus sizes must be 1 <= min <= max, got {bus_min}..{bus_max}")
    for name, v in (("remote_share", remote_share), ("solo_share", solo_share), ("protected_share", protected_share)):
        if not 0 <= v <= 1:
            raise ValueError(f"{name} must be between 0 and 1, got {v}")
    rng = random.Random(seed)
    addresses = [f"{i:012d}" for i in range(first, first + n)]
    solo = set(rng.sample(addresses, int(n * solo_share))) if n > 1 else set()
    on_bus = [a for a in addresses if a not in solo]
    buses: list[list[str]] = []
    i = 0
    while i < len(on_bus):
        size, left = rng.randint(bus_min, bus_max), len(on_bus) - i
        if left <= bus_max and left - size < bus_min:  # never a short bus at the end: take the rest
            size = left
        elif left - size < bus_min:
            size = left - bus_min
        buses.append(on_bus[i:i + size])
        i += size
    # areas: one to three buses each; feeders: areas_per_feeder areas; districts: two feeders each
    area_of_bus, areas = [], 0
    b = 0
    small = len(buses) <= 12
    while b < len(buses):
        k = 1 if small else rng.randint(1, 3)
        area_of_bus += [areas] * min(k, len(buses) - b)
        b += k
        areas += 1
    area_of_bus = area_of_bus[:len(buses)]
    if areas_per_feeder is None:
        areas_per_feeder = max(1, min(3, areas // 4))

    def place(area: int) -> tuple[str, str, str]:
        feeder = area // areas_per_feeder
        return (DISTRICTS[(feeder // 2) % len(DISTRICTS)], f"F{feeder + 1:02d}",
                f"Area {feeder + 1:02d}-{area % areas_per_feeder + 1}")

    shared = len(buses)
    buses += [[a] for a in addresses if a in solo]
    bus_of = {a: k for k, bus in enumerate(buses) for a in bus}
    homes = []
    kinds_total = sum(k[1] for k in KINDS)
    for j, a in enumerate(addresses):
        k = bus_of[a]
        if k >= shared:  # a meter on its own link stands in a random area (a detached house, a shop)
            district, feeder, area = place(rng.randrange(max(areas, 1)))
        else:
            district, feeder, area = place(area_of_bus[k])
        kind, lo, hi = _kind(rng.randrange(kinds_total))
        mode = "remote" if rng.random() < remote_share else "local"
        homes.append(Home(
            address=a, customer=f"{int(a) + 800000000000:012d}",
            name=rng.choice(_SURNAMES) + rng.choice(_GIVEN) + (rng.choice(_GIVEN) if rng.random() < 0.6 else ""),
            phone=f"13{rng.randrange(10)}{rng.randrange(10**8):08d}", district=district, feeder=feeder, area=area,
            bus=k, own_link=k >= shared, mode=mode,
            protected=mode == "remote" and rng.random() < protected_share / max(remote_share, 1e-9),
            kind=kind, shape=rng.choice(SHAPES), scale_pct=rng.randint(lo, hi), seed=seed * 1_000_003 + j + 1))
    return Town(homes, buses, seed)
