"""Counter shifts: a cashier's session at a business-hall channel, opened and closed (日结)."""

from __future__ import annotations

from typing import Any, Sequence

from headend.store.audit import Audit
from headend.store.models import Conflict, NotFound, Shift, TransitionError, dumps, loads

_SHIFT_COLS = "id, cashier, channel, state, opened_at, closed_at, expected, counted, differences"


def _shift(row: Sequence[Any]) -> Shift:
    r = list(row)
    r[6], r[7], r[8] = loads(r[6]), loads(r[7]), loads(r[8])
    return Shift(*r)


class Shifts(Audit):
    """One open shift per cashier; closing records expected and counted sums by tender."""

    def open_shift(self, cashier: str, channel: str, *, actor: str) -> Shift:
        """Open a shift for a cashier at a counter channel; Conflict if one is open already."""
        now = self.now()
        with self._tx() as tx:
            if self.current_shift(cashier) is not None:
                raise Conflict(f"cashier {cashier} already has an open shift: close it first (`headend counter close`)")
            row = tx.one("INSERT INTO shifts (cashier, channel, state, opened_at) VALUES (?, ?, 'open', ?) RETURNING id",
                         (cashier, channel, now))
            assert row is not None
            self.log_action(actor, "shift.open", cashier, {"shift": int(row[0]), "channel": channel})
            return self.get_shift(int(row[0]))

    def get_shift(self, shift_id: int) -> Shift:
        """A shift by id; NotFound if none."""
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {_SHIFT_COLS} FROM shifts WHERE id = ?", (int(shift_id),))
        if row is None:
            raise NotFound(f"no shift {shift_id}")
        return _shift(row)

    def current_shift(self, cashier: str) -> Shift | None:
        """The cashier's open shift, or None."""
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {_SHIFT_COLS} FROM shifts WHERE cashier = ? AND state = 'open'", (cashier,))
        return None if row is None else _shift(row)

    def list_shifts(self, *, cashier: str | None = None, state: str | None = None, limit: int = 50) -> list[Shift]:
        """Shifts, newest first, optionally of one cashier or in one state (open, closed)."""
        where, params = self._where({"cashier": cashier, "state": state})
        with self._tx(write=False) as tx:
            rows = tx.all(f"SELECT {_SHIFT_COLS} FROM shifts{where} ORDER BY id DESC LIMIT ?", (*params, int(limit)))
        return [_shift(r) for r in rows]

    def close_shift_record(self, shift_id: int, *, expected: Any, counted: Any, differences: Any, actor: str) -> Shift:
        """Close an open shift with its expected and counted sums and the differences (audited)."""
        with self._tx() as tx:
            n = tx.execute("UPDATE shifts SET state = 'closed', closed_at = ?, expected = ?, counted = ?,"
                           " differences = ? WHERE id = ? AND state = 'open'",
                           (self.now(), dumps(expected), dumps(counted), dumps(differences), int(shift_id)))
            shift = self.get_shift(shift_id)
            if n != 1:
                raise TransitionError(f"shift {shift_id} is already closed")
            self.log_action(actor, "shift.close", shift.cashier,
                            {"shift": shift.id, "expected": expected, "counted": counted, "differences": differences})
            return shift
