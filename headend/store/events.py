"""Meter events: what happened at a meter, stored once per meter record."""

from __future__ import annotations

from typing import Any

from headend.store.base import StoreBase
from headend.store.models import Event, dumps, loads


class Events(StoreBase):
    """Per-meter events."""

    def add_event(
        self,
        meter: str,
        kind: str,
        detail: Any = None,
        *,
        at: int | None = None,
        source: str = "headend",
        dedup: str | None = None,
    ) -> Event | None:
        """Record an event at a meter; with dedup (e.g. the meter's own record number) store it once.

        Returns the event, or None when one with the same (meter, dedup) was already stored.
        """
        at = self.now() if at is None else int(at)
        with self._tx() as tx:
            row = tx.one(
                "INSERT INTO events (meter, at, kind, detail, source, dedup) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING RETURNING id",
                (meter, at, kind, dumps(detail), source, dedup),
            )
        return None if row is None else Event(int(row[0]), meter, at, kind, detail, source)

    def events(self, meter: str, *, limit: int = 100, kind: str | None = None) -> list[Event]:
        """A meter's events, newest first."""
        where, params = self._where({"meter": meter, "kind": kind})
        with self._tx(write=False) as tx:
            rows = tx.all(f"SELECT id, meter, at, kind, detail, source FROM events{where}"
                          " ORDER BY at DESC, id DESC LIMIT ?", (*params, int(limit)))
        return [Event(r[0], r[1], r[2], r[3], loads(r[4]), r[5]) for r in rows]
