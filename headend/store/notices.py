"""Customer notices queued for the senders (SMS and others)."""

from __future__ import annotations

from typing import Any, Sequence

from headend.store.base import StoreBase
from headend.store.models import (
    NOTIFICATION_STATUSES,
    InvalidInput,
    NotFound,
    Notification,
    TransitionError,
    dumps,
    loads,
)

_NOTICE_COLS = (
    "id, customer, channel, kind, message, status, attempts, last_error, created_at, updated_at, idem_key, detail"
)


def _notice(row: Sequence[Any]) -> Notification:
    r = list(row)
    r[11] = loads(r[11])
    return Notification(*r)


class Notices(StoreBase):
    """Customer notices; each moves queued -> sent or failed."""

    def notify(
        self,
        customer: str,
        kind: str,
        message: str,
        *,
        channel: str = "sms",
        idem_key: str | None = None,
        detail: Any = None,
    ) -> Notification:
        """Queue a notice for a customer; with idem_key a repeat returns the first notice unchanged."""
        with self._tx() as tx:
            if idem_key is not None:
                row = tx.one(f"SELECT {_NOTICE_COLS} FROM notifications WHERE idem_key = ?", (idem_key,))
                if row is not None:
                    return _notice(row)
            now = self.now()
            row = tx.one(
                "INSERT INTO notifications (customer, channel, kind, message, status, attempts, created_at,"
                " updated_at, idem_key, detail) VALUES (?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?) RETURNING id",
                (customer, channel, kind, message, now, now, idem_key, dumps(detail)),
            )
            assert row is not None
            return Notification(int(row[0]), customer, channel, kind, message, "queued", 0, None, now, now,
                                idem_key, detail)

    def list_notifications(
        self, *, status: str | None = None, customer: str | None = None, channel: str | None = None, limit: int = 100
    ) -> list[Notification]:
        """Notices, oldest first (the order a sender should work them), optionally filtered."""
        where, params = self._where({"status": status, "customer": customer, "channel": channel})
        with self._tx(write=False) as tx:
            rows = tx.all(f"SELECT {_NOTICE_COLS} FROM notifications{where} ORDER BY id LIMIT ?",
                          (*params, int(limit)))
        return [_notice(r) for r in rows]

    def mark_notification(self, notice_id: int, status: str, *, error: str | None = None) -> Notification:
        """queued -> sent or failed (compare-and-set; counts an attempt); "queued" re-queues a failure."""
        if status not in NOTIFICATION_STATUSES:
            raise InvalidInput(f"notice status must be one of {', '.join(NOTIFICATION_STATUSES)}")
        expected = "failed" if status == "queued" else "queued"
        with self._tx() as tx:
            n = tx.execute(
                "UPDATE notifications SET status = ?, attempts = attempts + 1, last_error = ?, updated_at = ?"
                " WHERE id = ? AND status = ?",
                (status, error, self.now(), int(notice_id), expected),
            )
            row = tx.one(f"SELECT {_NOTICE_COLS} FROM notifications WHERE id = ?", (int(notice_id),))
            if row is None:
                raise NotFound(f"no notice {notice_id}")
            if n != 1:
                raise TransitionError(f"notice {notice_id} is {row[5]}, not {expected}")
            return _notice(row)
