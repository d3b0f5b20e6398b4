"""What the payments API keeps: nonces of signed requests, and result callbacks to channels.

Nonces are stored, not held in memory, so neither a restarted `serve` nor a second process on
the same file accepts a replayed request.  A nonce is kept until its request's timestamp could
no longer pass the clock-skew window (``keep_until``); older ones are purged in passing.

A result callback is one row per (payment, state): created once however often the sweep sees the
payment, sent until the channel answers 2xx, then ``delivered`` and never sent again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from headend.store.models import InvalidInput, NotFound, Payment, dumps, loads
from headend.store.payments import Payments

__all__ = ["ApiState", "Callback", "CALLBACK_STATUSES"]

CALLBACK_STATUSES = ("pending", "delivered", "failed")
_CALLBACK_COLS = ("id, payment_id, channel_id, state, url, body, status, attempts, next_at, last_error, created_at,"
                  " updated_at, delivered_at")
_PURGE_EVERY = 1000  # nonce inserts between purges of expired nonces


@dataclass(frozen=True)
class Callback:
    """One result callback to a channel (``body`` is the JSON that is sent)."""

    id: int
    payment_id: int
    channel_id: str
    state: str
    url: str
    body: Any
    status: str
    attempts: int
    next_at: int
    last_error: str | None
    created_at: int
    updated_at: int
    delivered_at: int | None


def _callback(row: Any) -> Callback:
    r = list(row)
    r[5] = loads(r[5])
    return Callback(*r)


class ApiState(Payments):
    """Nonces and result callbacks of the payments API."""

    def use_nonce(self, channel_id: str, nonce: str, *, keep_until: int) -> bool:
        """Record a request's nonce for a channel; False if that channel used it before (a replay)."""
        return self.use_nonces([(channel_id, nonce, keep_until)])[0]

    def use_nonces(self, nonces: Sequence[tuple[str, str, int]]) -> list[bool]:
        """Record many requests' nonces, each (channel_id, nonce, keep_until), together
        (``Tx.insert_rows``): for each, False if its channel used it before, an earlier one of these included."""
        for channel_id, nonce, _ in nonces:
            if not channel_id or not nonce:
                raise InvalidInput("a nonce needs its channel and its value")
        first: dict[tuple[str, str], int] = {}
        for i, (channel_id, nonce, _) in enumerate(nonces):
            first.setdefault((channel_id, nonce), i)
        rows = [(c, n, int(nonces[i][2])) for (c, n), i in first.items()]
        fresh: set[tuple[str, str]] = set()
        with self._tx() as tx:
            fresh.update((c, n) for c, n in tx.insert_rows(
                "INSERT INTO api_nonces (channel_id, nonce, keep_until) VALUES ", "(?, ?, ?)", rows,
                " ON CONFLICT DO NOTHING RETURNING channel_id, nonce"))
            self._nonces_since_purge = getattr(self, "_nonces_since_purge", 0) + len(rows)
            if self._nonces_since_purge >= _PURGE_EVERY:
                self._nonces_since_purge = 0
                tx.execute("DELETE FROM api_nonces WHERE keep_until < ?", (self.now(),))
        return [first[(c, n)] == i and (c, n) in fresh for i, (c, n, _) in enumerate(nonces)]

    def purge_nonces(self, now: int | None = None) -> int:
        """Forget nonces whose requests could no longer pass the window; return how many."""
        with self._tx() as tx:
            return tx.execute("DELETE FROM api_nonces WHERE keep_until < ?", (self.now() if now is None else now,))

    # ----------------------------------------------------------------- result callbacks
    def confirmed_for_callbacks(self, *, since: int, limit: int = 500) -> list[Payment]:
        """Payments confirmed on the meter at or after ``since`` at channels with a callback URL,
        that have no callback for that state yet (oldest first)."""
        with self._tx(write=False) as tx:
            ids = [int(r[0]) for r in tx.all(
                "SELECT p.id FROM payments p JOIN channels c ON c.id = p.channel"
                " WHERE p.confirmed_at >= ? AND p.state = 'confirmed_on_meter' AND c.callback_url IS NOT NULL"
                " AND NOT EXISTS (SELECT 1 FROM api_callbacks k WHERE k.payment_id = p.id AND k.state = p.state)"
                " ORDER BY p.confirmed_at, p.id LIMIT ?", (int(since), int(limit)))]
            return [self.get_payment(i) for i in ids]

    def add_callbacks(self, rows: Iterable[tuple[int, str, str, str, Any]], *, now: int | None = None) -> int:
        """Create callbacks (payment id, channel, state, url, body) not created before; return how many are new."""
        at = self.now() if now is None else int(now)
        n = 0
        with self._tx() as tx:
            for payment_id, channel_id, state, url, body in rows:
                n += tx.execute(
                    "INSERT INTO api_callbacks (payment_id, channel_id, state, url, body, status, attempts, next_at,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (int(payment_id), channel_id, state, url, dumps(body), at, at, at))
        return n

    def due_callbacks(self, *, now: int | None = None, limit: int = 100) -> list[Callback]:
        """Pending callbacks whose next attempt is due, oldest first."""
        at = self.now() if now is None else int(now)
        with self._tx(write=False) as tx:
            rows = tx.all(f"SELECT {_CALLBACK_COLS} FROM api_callbacks WHERE status = 'pending' AND next_at <= ?"
                          " ORDER BY next_at, id LIMIT ?", (at, int(limit)))
        return [_callback(r) for r in rows]

    def callback_attempted(self, callback_id: int, *, delivered: bool, error: str | None = None,
                           next_at: int | None = None, give_up: bool = False) -> Callback:
        """Record one attempt: delivered, or failed with the next try at ``next_at`` (or given up)."""
        at = self.now()
        status = "delivered" if delivered else ("failed" if give_up else "pending")
        with self._tx() as tx:
            n = tx.execute(
                "UPDATE api_callbacks SET attempts = attempts + 1, status = ?, last_error = ?, next_at = ?,"
                " updated_at = ?, delivered_at = ? WHERE id = ? AND status = 'pending'",
                (status, None if delivered else error, at if next_at is None else int(next_at), at,
                 at if delivered else None, int(callback_id)))
            row = tx.one(f"SELECT {_CALLBACK_COLS} FROM api_callbacks WHERE id = ?", (int(callback_id),))
        if row is None:
            raise NotFound(f"no callback {callback_id}")
        if n != 1:
            raise InvalidInput(f"callback {callback_id} is {row[6]} already; only a pending one is attempted")
        return _callback(row)

    def callbacks(self, *, payment_id: int | None = None, channel_id: str | None = None,
                  limit: int = 100) -> list[Callback]:
        """Callbacks, newest first, optionally of one payment or channel."""
        where, params = self._where({"payment_id": payment_id, "channel_id": channel_id})
        with self._tx(write=False) as tx:
            rows = tx.all(f"SELECT {_CALLBACK_COLS} FROM api_callbacks{where} ORDER BY id DESC LIMIT ?",
                          (*params, int(limit)))
        return [_callback(r) for r in rows]
