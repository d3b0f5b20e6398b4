"""What the payments API keeps: nonces of signed requests, and result callbacks to channels.

Nonces are stored, so neither a restarted `serve` nor a second process on the same file accepts a
replayed request, and checked in memory.  Each ``use_nonces`` call (one group-commit round of the
API) writes its fresh nonces as ONE row of ``api_nonce_rounds``, in insertion order: a row per
nonce under a unique key put each nonce on a random page of that key's index, a WAL page per
nonce at every commit (~18% of a payment's store work).  Before it checks, a call reads the rows
written since the last one it read (its own and any other process's), so the check is against
every nonce committed before its transaction; in a write transaction that is exact, as nothing
else writes meanwhile: SQLite has one writer at a time, and on PostgreSQL the call holds a lock
(``Tx.lock``) until its transaction ends, so the rounds' nonce checks take turns and ids commit in
order.  Only rows of finished transactions are learnt (a row of the open transaction is checked
against but not kept: its transaction may still roll back, or a part of it), so a refused or
failed request's nonce is not remembered unless its row committed.  A nonce is kept until its
request's timestamp could no longer pass the clock-skew window (``keep_until``, a row's latest);
older rows are purged in passing, and forgotten in memory at the same time.  The memory holds
every nonce of the window, ~130 bytes each: at 1,000 signed requests a second and the default
300 s skew (a nonce kept up to ~600 s), about 80 MB.

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
_PURGE_EVERY = 1000  # use_nonces calls between purges of expired nonces
# on PostgreSQL, held by a use_nonces call until its transaction ends (on SQLite the one write lock is)
_NONCE_LOCK = "api_nonce_rounds"


class _NonceMemory:
    """The nonces of the committed rows of ``api_nonce_rounds`` up to ``upto``, in memory (one
    store's; see the module docstring)."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}  # "channel\tnonce" -> keep_until
        self.upto = 0  # every row up to this id is in ``seen`` (or was purged)
        self.mine: dict[int, int] = {}  # rows this store wrote -> the backend serial of their transaction
        self.calls = 0  # use_nonces calls since the last purge

    def learn(self, rows: list[tuple[Any, ...]], serial: int) -> set[str]:
        """Take in the rows read after ``upto`` (in id order) up to the first one written in the
        open transaction (``serial``); return the nonces of that one and the rest, which count for
        this check only."""
        pending: set[str] = set()
        for row_id, keep, text in rows:
            row_id = int(row_id)
            if pending or self.mine.get(row_id) == serial:
                pending.update(text.split("\n"))
                continue
            self.mine.pop(row_id, None)
            self.seen.update(dict.fromkeys(text.split("\n"), int(keep)))
            self.upto = row_id
        return pending

    def forget(self, now: int) -> None:
        """Drop the nonces kept until before ``now`` (their rows are purged)."""
        self.seen = {k: t for k, t in self.seen.items() if t >= now}
        self.mine = {i: s for i, s in self.mine.items() if i > self.upto}


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
        """Record many requests' nonces, each (channel_id, nonce, keep_until), together (one row):
        for each, False if its channel used it before, an earlier one of these included."""
        for channel_id, nonce, _ in nonces:
            if not channel_id or not nonce:
                raise InvalidInput("a nonce needs its channel and its value")
            if "\t" in channel_id or "\n" in channel_id or "\n" in nonce:
                raise InvalidInput("a nonce and its channel are one line each, and a channel id has no tab")
        mem = self._nonce_memory()
        with self._tx() as tx:
            tx.lock([_NONCE_LOCK])
            serial = self._db.serial
            # rows whose nonces all expired need no reading (a restart after a busy day reads only the live ones)
            pending = mem.learn(tx.all("SELECT id, keep_until, nonces FROM api_nonce_rounds WHERE id > ?"
                                       " AND keep_until >= ? ORDER BY id", (mem.upto, self.now())), serial)
            out: list[bool] = []
            fresh: list[str] = []
            keep = 0
            for channel_id, nonce, keep_until in nonces:
                key = f"{channel_id}\t{nonce}"
                ok = key not in mem.seen and key not in pending
                out.append(ok)
                if ok:
                    pending.add(key)
                    fresh.append(key)
                    keep = max(keep, int(keep_until))
            if fresh:
                row = tx.one("INSERT INTO api_nonce_rounds (keep_until, nonces) VALUES (?, ?) RETURNING id",
                             (keep, "\n".join(fresh)))
                assert row is not None
                mem.mine[int(row[0])] = serial
            mem.calls += 1
            if mem.calls >= _PURGE_EVERY:
                mem.calls = 0
                self._purge_nonces(tx, self.now())
        return out

    def purge_nonces(self, now: int | None = None) -> int:
        """Forget nonces whose requests could no longer pass the window; return how many."""
        with self._tx() as tx:
            return self._purge_nonces(tx, self.now() if now is None else now)

    def _purge_nonces(self, tx: Any, now: int) -> int:
        gone = sum(len(r[0].split("\n")) for r in tx.all("SELECT nonces FROM api_nonce_rounds WHERE keep_until < ?",
                                                          (int(now),)))
        if gone:
            tx.execute("DELETE FROM api_nonce_rounds WHERE keep_until < ?", (int(now),))
        self._nonce_memory().forget(int(now))
        return gone

    def _nonce_memory(self) -> "_NonceMemory":
        mem: _NonceMemory | None = getattr(self, "_nonces", None)
        if mem is None:
            mem = self._nonces = _NonceMemory()
        return mem

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

    def claim_callbacks(self, *, lease_s: int, now: int | None = None, limit: int = 100) -> list[Callback]:
        """Take due pending callbacks for one sender, oldest first: each one's next attempt is put
        ``lease_s`` ahead, so no other sender (a second serve on the same database) takes it while
        this one posts it; ``callback_attempted`` then records the outcome. A sender that dies
        holding one leaves it to be taken again once the lease has passed."""
        at = self.now() if now is None else int(now)
        with self._tx() as tx:
            rows = tx.all("SELECT id FROM api_callbacks WHERE status = 'pending' AND next_at <= ?"
                          " ORDER BY next_at, id LIMIT ?" + tx.skip_locked, (at, int(limit)))
            taken = [cid for (cid,) in rows
                     if tx.execute("UPDATE api_callbacks SET next_at = ?, updated_at = ? WHERE id = ?"
                                   " AND status = 'pending' AND next_at <= ?",
                                   (at + int(lease_s), at, cid, at)) == 1]
            if not taken:
                return []
            among, values = tx.one_of("id", taken)
            found = tx.all(f"SELECT {_CALLBACK_COLS} FROM api_callbacks WHERE {among} ORDER BY id", values)
        order = {cid: i for i, cid in enumerate(taken)}
        return sorted((_callback(r) for r in found), key=lambda cb: order[cb.id])

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
