"""Named tariff books for the head-end: built-in fixtures plus a TOML file.

An account names its tariff (``Account.tariff``); the catalog maps that name to all of its
versions.  File format (one ``[[tariff]]`` table per version; versions of one name form a book)::

    [[tariff]]
    name = "beijing"
    version = 2
    effective = "2026-01-01T00:00"        # local time, from which this version applies
    prices = [4883, 4883, 4883, 4883]       # sharp, peak, flat, valley: 0.0001 yuan/kWh
    day_tables = [[["00:00", 3], ["08:00", 2], ["22:00", 3]]]   # [HH:MM, slot] switch points
    zones = [[1, 1, 0]]                     # (month, day, day table) season starts
    weekend_days = [0, 6]                   # optional, with weekend_table
    weekend_table = 0
    holidays = [["2026-10-01", 0]]          # optional
    daily_fen = 0
    [tariff.ladder]
    thresholds_wh = [2880000, 4800000]
    increments = [0, 500, 3000]
    settlements = [[1, 1, 0]]               # (month or 0 = monthly, day, hour)

Every value goes through the model's validation; an error names the file, the entry and the field.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Mapping

from headend.tariff.model import (DayTable, Ladder, Tariff, TariffBook, TariffError, beijing, beijing_tou, hhmm,
                                  meter_time, zhejiang)

__all__ = ["BUILTIN", "load_catalog", "tariff_from_dict"]


def _builtin() -> dict[str, TariffBook]:
    return {
        "beijing": TariffBook((beijing(),)),
        "beijing-tou": TariffBook((beijing_tou(),)),
        "zhejiang": TariffBook((zhejiang(tou=False),)),
        "zhejiang-tou": TariffBook((zhejiang(),)),
    }


BUILTIN: Mapping[str, TariffBook] = _builtin()


def _when(text: str) -> int:
    date, _, clock = str(text).partition("T")
    try:
        y, mo, d = (int(x) for x in date.split("-"))
    except ValueError:
        raise TariffError(f"date {text!r}: write YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None
    minute = hhmm(clock) if clock else 0
    return meter_time(y, mo, d) + minute * 60


def tariff_from_dict(d: Mapping[str, Any]) -> Tariff:
    """One tariff version from a parsed TOML table (see module doc)."""
    known = {"name", "version", "effective", "prices", "day_tables", "zones", "weekend_days", "weekend_table",
             "holidays", "daily_fen", "ladder"}
    unknown = set(d) - known
    if unknown:
        raise TariffError(f"unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
    for need in ("name", "version", "effective", "prices"):
        if need not in d:
            raise TariffError(f"missing field {need!r}")
    tables = tuple(DayTable(tuple((hhmm(m) if isinstance(m, str) else int(m), int(s)) for m, s in t))
                   for t in d.get("day_tables", [[["00:00", 2]]]))
    ladder = None
    if "ladder" in d:
        lad = d["ladder"]
        ladder = Ladder(tuple(lad.get("thresholds_wh", ())), tuple(lad.get("increments", (0,))),
                        tuple(tuple(p) for p in lad.get("settlements", [[1, 1, 0]])))
    holidays = []
    for day, table in d.get("holidays", []):
        y, mo, dd = (int(x) for x in str(day).split("-"))
        holidays.append(((y, mo, dd), int(table)))
    return Tariff(
        name=str(d["name"]), version=int(d["version"]), effective=_when(d["effective"]),
        prices=tuple(int(p) for p in d["prices"]),  # type: ignore[arg-type]  # length checked by Tariff
        day_tables=tables,
        zones=tuple(tuple(int(v) for v in z) for z in d.get("zones", [[1, 1, 0]])),  # type: ignore[arg-type]
        weekend_days=tuple(int(w) for w in d.get("weekend_days", ())), weekend_table=d.get("weekend_table"),
        holidays=tuple(holidays), ladder=ladder, daily_fen=int(d.get("daily_fen", 0)),
    )


def load_catalog(path: str | Path | None = None) -> dict[str, TariffBook]:
    """Built-in books, plus (replacing same-named ones) every book defined in ``path``."""
    books = dict(BUILTIN)
    if path is None:
        return books
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise TariffError(f"tariff file {p} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise TariffError(f"tariff file {p}: {exc}") from None
    by_name: dict[str, list[Tariff]] = {}
    for i, entry in enumerate(data.get("tariff", [])):
        try:
            t = tariff_from_dict(entry)
        except (TariffError, ValueError, TypeError) as exc:
            raise TariffError(f"tariff file {p}, entry {i + 1} ({entry.get('name', '?')}): {exc}") from None
        by_name.setdefault(t.name, []).append(t)
    for name, versions in by_name.items():
        try:
            books[name] = TariffBook(tuple(versions))
        except TariffError as exc:
            raise TariffError(f"tariff file {p}, tariff {name!r}: {exc}") from None
    return books
