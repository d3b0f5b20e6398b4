"""The ``[costctl]`` config section: cycle length, tariff file, trip rules.

```toml
[costctl]
interval_s = 86400          # daily frozen readings (3600 or 900 possible)
snap_s = 300                # a reading this close to a boundary counts as the boundary's (0: exact)
tariffs = "tariffs.toml"    # relative to the config file; built-in tariffs are always there
utc_offset_h = 8
trips = true
notice_period_h = 24
night = "20:00-08:00"       # no trips in this window ("" for none)
no_trip_weekdays = []       # 0 = Sunday .. 6 = Saturday
holidays = ["2025-10-01"]
in_serve = true             # run the cycle inside `headend serve` (serve --no-costctl turns it off)
collect_window_s = 300      # a grid reading taken this long after its boundary still counts as on time
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from headend.costctl.decide import Rules
from headend.tariff.model import hhmm

__all__ = ["CostCtlConfig", "costctl_config", "KNOWN_KEYS"]

_KNOWN = {"interval_s", "snap_s", "tariffs", "utc_offset_h", "trips", "notice_period_h", "night", "no_trip_weekdays",
          "holidays", "in_serve", "collect_window_s"}
KNOWN_KEYS = frozenset(_KNOWN)  # every key of [costctl] this reader takes (prepaid645.example.toml shows each)


@dataclass(frozen=True)
class CostCtlConfig:
    """Settings of the remote cost-control cycle."""

    interval_s: int = 86400
    tariffs: Path | None = None
    utc_offset_s: int = 8 * 3600
    rules: Rules = field(default_factory=Rules)
    snap_s: int = 0
    in_serve: bool = True
    collect_window_s: int = 300


def costctl_config(section: Mapping[str, Any], base: Path | None = None) -> CostCtlConfig:
    """Parse the ``[costctl]`` section; ValueError names the bad key and what it should be."""
    unknown = set(section) - _KNOWN
    if unknown:
        raise ValueError(f"[costctl]: unknown key(s) {sorted(unknown)}; known: {sorted(_KNOWN)}")
    night = str(section.get("night", "20:00-08:00"))
    if night:
        a, sep, b = night.partition("-")
        if not sep:
            raise ValueError(f"[costctl] night = {night!r}: write HH:MM-HH:MM, or \"\" for no night rule")
        start, end = hhmm(a) % 1440, hhmm(b) % 1440
    else:
        start = end = 0
    holidays = []
    for h in section.get("holidays", []):
        try:
            y, m, d = (int(x) for x in str(h).split("-"))
        except ValueError:
            raise ValueError(f"[costctl] holiday {h!r}: write YYYY-MM-DD") from None
        holidays.append((y, m, d))
    rules = Rules(trips=bool(section.get("trips", True)),
                  notice_period_s=int(round(float(section.get("notice_period_h", 24)) * 3600)),
                  night_start_min=start, night_end_min=end,
                  no_trip_weekdays=tuple(int(w) for w in section.get("no_trip_weekdays", [])),
                  holidays=tuple(holidays))
    tariffs = section.get("tariffs")
    path = None
    if tariffs:
        path = Path(tariffs)
        if not path.is_absolute() and base is not None:
            path = base / path
    interval = int(section.get("interval_s", 86400))
    if interval <= 0 or 86400 % interval:
        raise ValueError(f"[costctl] interval_s = {interval}: must divide a day (86400, 3600, 900, ...)")
    snap = int(section.get("snap_s", 0))
    if not 0 <= snap < interval // 2:
        raise ValueError(f"[costctl] snap_s = {snap}: must be 0 .. {interval // 2 - 1} (under half an interval)")
    window = int(section.get("collect_window_s", min(300, interval // 2 - 1)))
    if not 0 <= window < interval // 2:
        raise ValueError(f"[costctl] collect_window_s = {window}: must be 0 .. {interval // 2 - 1} (under half an interval)")
    return CostCtlConfig(interval, path, int(round(float(section.get("utc_offset_h", 8)) * 3600)), rules, snap,
                         bool(section.get("in_serve", True)), window)
