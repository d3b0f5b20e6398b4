"""The store's grid topology (meters under transformer areas and feeders) and planned outages."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from headend.store.audit import Audit
from headend.store.notices import withdraw_queued
from headend.store.models import Conflict, InvalidInput, NotFound, Outage, TransitionError, check_address

__all__ = ["GridStore"]

_OUTAGE_COLS = "id, feeder, area, start_at, end_at, reason, status, version, actor, created_at, updated_at, synced_at"


def _name(value: Any, what: str, row: int) -> str:
    v = str(value or "").strip()
    if not v or len(v) > 64:
        raise InvalidInput(f"grid row {row}: {what} must be a name of 1 to 64 characters, got {value!r}")
    return v


class GridStore(Audit):
    """Meters under transformer areas and feeders, and the planned outages on them."""

    # ------------------------------------------------------------------ topology
    def import_grid(self, rows: Iterable[Sequence[Any]], *, actor: str) -> int:
        """Place meters under areas and feeders: rows (meter, feeder, area, important 0/1), all or none.

        A meter already placed moves to its new place.  An unknown meter or an area that would
        sit on two feeders is an error naming the row, and nothing changes."""
        data, seen = [], {}
        for i, r in enumerate(rows, 1):
            if len(r) != 4:
                raise InvalidInput(f"grid row {i}: need meter, feeder, area, important; got {list(r)!r}")
            try:
                meter = check_address(str(r[0]))
            except InvalidInput as exc:
                raise InvalidInput(f"grid row {i}: {exc}") from None
            imp = str(r[3]).strip().lower()
            if imp not in ("0", "1", "", "true", "false", "yes", "no"):
                raise InvalidInput(f"grid row {i}: important must be 0 or 1, got {r[3]!r}")
            if meter in seen:
                raise Conflict(f"grid row {i}: meter {meter} is also in row {seen[meter]}")
            seen[meter] = i
            data.append((meter, _name(r[1], "feeder", i), _name(r[2], "area", i), int(imp in ("1", "true", "yes"))))
        with self._tx() as tx:
            known: set[str] = set()
            metres = [d[0] for d in data]
            for lo in range(0, len(metres), 500):
                chunk = metres[lo:lo + 500]
                known.update(x for (x,) in tx.all(f"SELECT address FROM meters WHERE address IN"
                                                  f" ({', '.join('?' for _ in chunk)})", chunk))
            for i, d in enumerate(data, 1):
                if d[0] not in known:
                    raise NotFound(f"grid row {i}: meter {d[0]} is not registered (add it with `headend meter add`)")
            tx.executemany(
                "INSERT INTO grid_meters (meter, feeder, area, important) VALUES (?, ?, ?, ?) ON CONFLICT (meter)"
                " DO UPDATE SET feeder = excluded.feeder, area = excluded.area, important = excluded.important", data)
            two = tx.one("SELECT area, MIN(feeder), MAX(feeder) FROM grid_meters GROUP BY area"
                         " HAVING COUNT(DISTINCT feeder) > 1")
            if two:
                raise Conflict(f"area {two[0]} would sit on two feeders ({two[1]} and {two[2]}): an area is fed by"
                               " one feeder (nothing was imported)")
            self.log_action(actor, "grid.import", None, {"meters": len(data)})
        return len(data)

    def grid_summary(self) -> list[tuple[str, str, int, int, int]]:
        """(feeder, area, meters, customers, important customers) for every area, by feeder and area."""
        with self._tx(write=False) as tx:
            return tx.all(  # type: ignore[return-value]
                "SELECT g.feeder, g.area, COUNT(*), COUNT(DISTINCT m.customer),"
                " COUNT(DISTINCT CASE WHEN g.important = 1 OR a.important = 1 OR m.protected = 1 OR a.protected = 1"
                " THEN m.customer END)"
                " FROM grid_meters g JOIN meters m ON m.address = g.meter JOIN accounts a ON a.customer = m.customer"
                " GROUP BY g.feeder, g.area ORDER BY g.feeder, g.area")

    def grid_meters(self, *, feeder: str | None = None,
                    area: str | None = None) -> list[tuple[str, str, str, str, bool]]:
        """(meter, customer, feeder, area, important-or-protected) under a feeder or area (or all), by meter."""
        sql = ("SELECT g.meter, m.customer, g.feeder, g.area, CASE WHEN g.important = 1 OR a.important = 1"
               " OR m.protected = 1 OR a.protected = 1 THEN 1 ELSE 0 END FROM grid_meters g"
               " JOIN meters m ON m.address = g.meter JOIN accounts a ON a.customer = m.customer")
        params: list[Any] = []
        if feeder is not None:
            sql += " WHERE g.feeder = ?"
            params.append(feeder)
        elif area is not None:
            sql += " WHERE g.area = ?"
            params.append(area)
        with self._tx(write=False) as tx:
            return [(r[0], r[1], r[2], r[3], bool(r[4])) for r in tx.all(sql + " ORDER BY g.meter", params)]

    # ------------------------------------------------------------------ outages
    def plan_outage(self, *, feeder: str | None = None, area: str | None = None, start_at: int, end_at: int,
                    reason: str, actor: str) -> tuple[Outage, list[tuple[str, bool]]]:
        """Record a planned outage and the customers it reaches; return it with (customer, important)
        pairs, important (or protected) customers first."""
        if (feeder is None) == (area is None):
            raise InvalidInput("an outage is on one feeder or one transformer area: give exactly one")
        if int(end_at) <= int(start_at):
            raise InvalidInput(f"the outage must end after it starts (from {start_at}, to {end_at})")
        if not str(reason).strip():
            raise InvalidInput("give the outage's reason (customers and the hotline are told it)")
        meters = self.grid_meters(feeder=feeder, area=area)
        if not meters:
            raise NotFound(f"no meters under {'feeder ' + str(feeder) if feeder is not None else 'area ' + str(area)}:"
                           " import the grid first (`headend grid import FILE.csv`)")
        now = self.now()
        customers: dict[str, bool] = {}
        for _m, c, _f, _a, imp in meters:
            customers[c] = customers.get(c, False) or imp
        with self._tx() as tx:
            row = tx.one(
                "INSERT INTO outages (feeder, area, start_at, end_at, reason, status, version, actor, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, 'planned', 1, ?, ?, ?) RETURNING id",
                (feeder, area, int(start_at), int(end_at), str(reason).strip(), actor, now, now))
            assert row is not None
            oid = int(row[0])
            tx.executemany("INSERT INTO outage_customers (outage, customer, important) VALUES (?, ?, ?)",
                           [(oid, c, int(i)) for c, i in customers.items()])
            tx.executemany("INSERT INTO outage_meters (outage, meter) VALUES (?, ?)", [(oid, m[0]) for m in meters])
            self.log_action(actor, "outage.plan", f"outage:{oid}",
                            {"feeder": feeder, "area": area, "start_at": int(start_at), "end_at": int(end_at),
                             "reason": reason, "customers": len(customers), "meters": len(meters)})
            out = self.get_outage(oid)
        return out, self.outage_customers(oid)

    def get_outage(self, outage_id: int) -> Outage:
        """One outage; NotFound if there is none."""
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {_OUTAGE_COLS} FROM outages WHERE id = ?", (int(outage_id),))
        if row is None:
            raise NotFound(f"no outage {outage_id}: see `headend outage list`")
        return Outage(*row)

    def list_outages(self, *, status: str | None = None, active_at: int | None = None,
                     ended_by: int | None = None, unsynced: bool = False) -> list[Outage]:
        """Outages by start time: optionally of one status, in progress at a time, ended by a time,
        or not yet followed by a clock re-sync."""
        parts, params = [], []
        if status is not None:
            parts.append("status = ?")
            params.append(status)
        if active_at is not None:
            parts.append("start_at <= ? AND end_at > ?")
            params += [int(active_at), int(active_at)]
        if ended_by is not None:
            parts.append("end_at <= ?")
            params.append(int(ended_by))
        if unsynced:
            parts.append("synced_at IS NULL")
        where = " WHERE " + " AND ".join(parts) if parts else ""
        with self._tx(write=False) as tx:
            return [Outage(*r) for r in tx.all(f"SELECT {_OUTAGE_COLS} FROM outages{where} ORDER BY start_at, id",
                                               params)]

    def outage_customers(self, outage_id: int) -> list[tuple[str, bool]]:
        """(customer, important) reached by an outage, important first, then by customer number."""
        with self._tx(write=False) as tx:
            return [(c, bool(i)) for c, i in tx.all(
                "SELECT customer, important FROM outage_customers WHERE outage = ? ORDER BY important DESC, customer",
                (int(outage_id),))]

    def outage_meters(self, outage_id: int) -> list[str]:
        """The meters an outage cuts, by address."""
        with self._tx(write=False) as tx:
            return [m for (m,) in tx.all("SELECT meter FROM outage_meters WHERE outage = ? ORDER BY meter",
                                         (int(outage_id),))]

    def change_outage(self, outage_id: int, *, actor: str, start_at: int | None = None, end_at: int | None = None,
                      reason: str | None = None) -> Outage:
        """Move or re-word a planned outage (version + 1, audited); TransitionError if cancelled."""
        with self._tx() as tx:
            o = self.get_outage(outage_id)
            if o.status != "planned":
                raise TransitionError(f"outage {o.id} is {o.status}: it cannot be changed")
            s = o.start_at if start_at is None else int(start_at)
            e = o.end_at if end_at is None else int(end_at)
            r = o.reason if reason is None or not reason.strip() else reason.strip()
            if e <= s:
                raise InvalidInput(f"the outage must end after it starts (from {s}, to {e})")
            if (s, e, r) == (o.start_at, o.end_at, o.reason):
                raise InvalidInput(f"outage {o.id}: nothing to change (give --from, --to or --reason)")
            tx.execute("UPDATE outages SET start_at = ?, end_at = ?, reason = ?, version = version + 1, updated_at = ?"
                       " WHERE id = ? AND version = ?", (s, e, r, self.now(), o.id, o.version))
            self.log_action(actor, "outage.change", f"outage:{o.id}",
                            {"start_at": [o.start_at, s], "end_at": [o.end_at, e], "reason": [o.reason, r]})
            return self.get_outage(o.id)

    def cancel_outage(self, outage_id: int, *, actor: str) -> Outage:
        """Cancel a planned outage (audited); TransitionError if it is cancelled already."""
        with self._tx() as tx:
            o = self.get_outage(outage_id)
            if o.status != "planned":
                raise TransitionError(f"outage {o.id} is {o.status} already")
            tx.execute("UPDATE outages SET status = 'cancelled', version = version + 1, updated_at = ? WHERE id = ?",
                       (self.now(), o.id))
            self.log_action(actor, "outage.cancel", f"outage:{o.id}", None)
            return self.get_outage(o.id)

    def set_outage_synced(self, outage_id: int, at: int) -> bool:
        """Mark an outage's clock re-sync as queued; False if another worker did it first."""
        with self._tx() as tx:
            return tx.execute("UPDATE outages SET synced_at = ? WHERE id = ? AND synced_at IS NULL",
                              (int(at), int(outage_id))) == 1

    def outage_notices_sent(self, prefix: str) -> set[str]:
        """Customers with a sent notice whose idempotency key starts with ``prefix``."""
        with self._tx(write=False) as tx:
            return {c for (c,) in tx.all("SELECT DISTINCT customer FROM notifications WHERE idem_key LIKE ?"
                                         " AND status = 'sent'", (prefix.replace("%", "") + "%",))}

    def withdraw_notices(self, prefix: str, reason: str) -> int:
        """Fail the queued notices whose key starts with ``prefix`` and that no sender holds (superseded)."""
        with self._tx() as tx:
            return withdraw_queued(tx, prefix, reason, self.now(), prefix=True)
