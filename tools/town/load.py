"""Each household's demand: its daily shape, the season, per-minute noise, its own size.

The daily shapes are the meter simulator's residential profile (firmware/hal/load.py) and two
shifted ones: early risers and late households.  The season multiplies the profile (heating in
winter, air conditioning in summer); heavy users and shops are a few times the profile, empty
flats a fridge's worth.  Integers throughout, deterministic from the household's seed.
"""

from __future__ import annotations

import time

import tools.fleet  # noqa: F401 - puts firmware/ on sys.path for hal.load
from hal.load import RESIDENTIAL_W, LoadModel  # noqa: E402
from tools.town.plan import Home  # noqa: E402

__all__ = ["HouseholdLoad", "SHAPE_W", "season_pct"]

SHAPE_W = {
    "evening": RESIDENTIAL_W,
    "early": RESIDENTIAL_W[1:] + RESIDENTIAL_W[:1],          # everything an hour earlier
    "late": RESIDENTIAL_W[-2:] + RESIDENTIAL_W[:-2],         # two hours later
}
# percent of the profile by month (January first): heating, spring, air conditioning, autumn
SEASON_PCT = (140, 130, 105, 90, 95, 115, 140, 145, 110, 90, 110, 135)


def season_pct(t: int) -> int:
    """The season's factor in percent at meter time t (the local wall clock as seconds, as the
    meter simulator counts it)."""
    return SEASON_PCT[time.gmtime(t).tm_mon - 1]


class HouseholdLoad:
    """power_w(t) at meter time t for one home, the interface tools.fleet's load loop draws from."""

    __slots__ = ("model", "_day", "_season")

    def __init__(self, home: Home, noise_pct: int = 20) -> None:
        self.model = LoadModel(SHAPE_W[home.shape], scale_pct=home.scale_pct, noise_pct=noise_pct, seed=home.seed)
        self._day = -1
        self._season = 100

    def power_w(self, t: int) -> int:
        day = t // 86400
        if day != self._day:  # the month changes at most once a day
            self._day = day
            self._season = season_pct(t)
        return self.model.power_w(t) * self._season // 100
