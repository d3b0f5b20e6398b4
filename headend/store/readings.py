"""Meter readings: one row per (meter, DI, time)."""

from __future__ import annotations

from itertools import islice
from typing import Any, Iterable, Iterator, Sequence

from headend.store.base import StoreBase
from headend.store.models import InvalidInput, Reading, check_di

_VALUE_TYPES = {int, type(None)}


class Readings(StoreBase):
    """Stored readings and the bulk queries rating runs on."""

    def add_readings(self, readings: Iterable[Reading | Sequence[Any]]) -> int:
        """Store many readings in one transaction; return how many were new.

        Each item is a Reading or a tuple (meter, di, value, read_at[, text]). A reading already
        stored for the same (meter, di, read_at) is kept as it was: re-reading stores once.
        """
        now = self.now()
        dis: dict[str, str] = {}  # the few DIs of a batch, checked and normalised once each

        def one(r: Reading | Sequence[Any]) -> tuple[Any, ...]:
            if isinstance(r, Reading):
                row = (r.meter, r.di, r.read_at, r.value, r.text, now)
            else:
                try:
                    row = (r[0], r[1], r[3], r[2], r[4] if len(r) > 4 else None, now)
                except (IndexError, TypeError):
                    raise InvalidInput(f"a reading is (meter, di, value, read_at[, text]), got {r!r}") from None
            if type(row[2]) is not int or not (row[3] is None or type(row[3]) is int):
                # money and energy are integers: a float or text here is a decoding bug upstream
                raise InvalidInput(f"reading {r!r}: read_at must be int seconds and value an int or None")
            di = dis.get(row[1])
            if di is None:
                di = dis[row[1]] = check_di(row[1])
            return row if di is row[1] else (row[0], di, *row[2:])

        def rows() -> Iterator[tuple[Any, ...]]:
            # a read cycle's batch is (meter, di, value, read_at, text) tuples as ReadItem.row makes
            # them: checked a chunk at a time (the types and DIs of a chunk as sets) and the rows
            # made by one comprehension, a third of the CPU of checking and building row by row;
            # a chunk with anything else in it goes row by row
            it = iter(readings)
            part: list[Any]
            while part := list(islice(it, 4096)):
                if ({type(r) for r in part} == {tuple} and {len(r) for r in part} == {5}
                        and {type(r[3]) for r in part} == {int} and {type(r[2]) for r in part} <= _VALUE_TYPES
                        and all(check_di(d) == d for d in {r[1] for r in part})):
                    yield from [(m, d, at, v, t, now) for m, d, v, at, t in part]
                else:
                    yield from map(one, part)

        with self._tx() as tx:
            # many rows a statement where the engine does that best (a read cycle stores a fleet's readings)
            return tx.insert_many("INSERT INTO readings (meter, di, read_at, value, text, stored_at) VALUES ",
                                  "(?, ?, ?, ?, ?, ?)", rows(), " ON CONFLICT DO NOTHING")

    def readings(
        self,
        meter: str,
        di: str | None = None,
        *,
        since: int | None = None,
        until: int | None = None,
        limit: int | None = None,
    ) -> list[Reading]:
        """A meter's readings in time order (since <= read_at < until), optionally one DI only."""
        parts: list[str] = ["meter = ?"]
        params: list[Any] = [meter]
        if di is not None:
            parts.append("di = ?")
            params.append(check_di(di))
        if since is not None:
            parts.append("read_at >= ?")
            params.append(int(since))
        if until is not None:
            parts.append("read_at < ?")
            params.append(int(until))
        sql = f"SELECT meter, di, value, read_at, text FROM readings WHERE {' AND '.join(parts)} ORDER BY read_at, di"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._tx(write=False) as tx:
            return [Reading(*r) for r in tx.all(sql, params)]

    def latest_reading(self, meter: str, di: str) -> Reading | None:
        """The newest reading of one DI at one meter, or None."""
        with self._tx(write=False) as tx:
            r = tx.one("SELECT meter, di, value, read_at, text FROM readings WHERE meter = ? AND di = ?"
                       " ORDER BY read_at DESC LIMIT 1", (meter, check_di(di)))
        return None if r is None else Reading(*r)

    def readings_for_di(self, di: str, *, since: int, until: int) -> list[tuple[str, int | None, int]]:
        """(meter, value, read_at) of one DI for every meter in [since, until), by meter then time."""
        with self._tx(write=False) as tx:
            return tx.all(
                "SELECT meter, value, read_at FROM readings WHERE di = ? AND read_at >= ? AND read_at < ?"
                " ORDER BY meter, read_at",
                (check_di(di), int(since), int(until)),
            )  # type: ignore[return-value]

    def readings_between(self, di: str, *, since: int, until: int) -> list[tuple[int, int, int]]:
        """(meter address as a number, value, read_at) of one DI for every meter in [since, until),
        values that are numbers only, in no particular order: the bulk input of a rating cycle."""
        with self._tx(write=False) as tx:
            return tx.all(  # type: ignore[return-value]
                "SELECT CAST(meter AS BIGINT), value, read_at FROM readings WHERE di = ? AND read_at >= ?"
                " AND read_at < ? AND value IS NOT NULL",
                (check_di(di), int(since), int(until)),
            )

    def readings_between_columns(self, di: str, *, since: int, until: int,
                                 meters: tuple[int, int] | None = None) -> list[Any]:
        """The rows of :meth:`readings_between` as three int64 arrays (meter, value, read_at), from
        one read (``Tx.columns``): a cycle over a large fleet makes no Python value per reading.
        ``meters`` (lo, hi): only the meters whose address, as a number, is lo <= address < hi (a
        partition of the fleet)."""
        sql = ("SELECT CAST(meter AS BIGINT), value, read_at FROM readings WHERE di = ? AND read_at >= ?"
               " AND read_at < ? AND value IS NOT NULL")
        params: list[Any] = [check_di(di), int(since), int(until)]
        if meters is not None:
            # addresses are 12 decimal digits: as text they sort as their numbers do
            sql += " AND meter >= ? AND meter < ?"
            params += [f"{int(meters[0]):012d}", f"{int(meters[1]):012d}" if meters[1] < 10**12 else "~"]
        with self._tx(write=False) as tx:
            return tx.columns(sql, "iii", params)
