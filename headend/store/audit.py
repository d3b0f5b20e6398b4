"""The audit log: who did what, when, to what."""

from __future__ import annotations

from typing import Any, Iterable

from headend.store.base import StoreBase
from headend.store.models import AuditEntry, InvalidInput, dumps, loads


class Audit(StoreBase):
    """Audit rows; written in the same transaction as the change they record."""

    def log_action(self, actor: str, action: str, target: str | None = None, detail: Any = None) -> AuditEntry:
        """Append an audit row (who, when, what, on what). Use inside `atomic()` with the change itself."""
        if not actor:
            raise InvalidInput("every audited action needs an actor (operator name or service)")
        at = self.now()
        with self._tx() as tx:
            row = tx.one(
                "INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?) RETURNING id",
                (at, actor, action, target, dumps(detail)),
            )
        assert row is not None
        return AuditEntry(int(row[0]), at, actor, action, target, detail)

    def log_actions(self, rows: Iterable[tuple[str, str, str | None, Any]]) -> int:
        """Append many audit rows (actor, action, target, detail) in one transaction; return how many."""
        at = self.now()
        data = []
        for actor, action, target, detail in rows:
            if not actor:
                raise InvalidInput("every audited action needs an actor (operator name or service)")
            data.append((at, actor, action, target, dumps(detail)))
        with self._tx() as tx:
            tx.insert_rows("INSERT INTO audit (at, actor, action, target, detail) VALUES ", "(?, ?, ?, ?, ?)", data)
        return len(data)

    def audit_entries(
        self, *, actor: str | None = None, target: str | None = None, action: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """Newest audit rows first, optionally filtered by actor, target or action."""
        where, params = self._where({"actor": actor, "target": target, "action": action})
        with self._tx(write=False) as tx:
            rows = tx.all(
                f"SELECT id, at, actor, action, target, detail FROM audit{where} ORDER BY id DESC LIMIT ?",
                (*params, int(limit)),
            )
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], loads(r[5])) for r in rows]
