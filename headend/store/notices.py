"""Customer notices: the queue the senders work, delivery records, receipts, contact flags, watch state.

Rules that make "never delivered twice" hold:

* A queued notice is taken by compare-and-set on its lease (``lease_owner``/``lease_until``):
  two senders never hold the same notice.  A lease left by a sender that died expires; the next
  claim marks the notice *in doubt*, and the sender asks the gateway about its keys first.
* Each (notice, phone) has at most one delivery row, keyed by the idempotency key the gateway
  saw; a phone with a final delivery is never sent to again.
* A sender's results land in one transaction and only while it still holds the lease.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from headend.store.audit import Audit
from headend.store.base import Tx
from headend.store.models import (
    DELIVERY_STATES,
    NOTIFICATION_STATUSES,
    Delivery,
    InvalidInput,
    NotFound,
    Notification,
    TransitionError,
    dumps,
    loads,
    split_phones,
)

__all__ = ["Notices", "NOTICE_COLS", "notice_from_row"]

NOTICE_COLS = (
    "id, customer, channel, kind, message, status, attempts, last_error, created_at, updated_at, idem_key, detail,"
    " not_before, priority, sent_at, sent_text"
)
_DELIVERY_COLS = "notice_id, phone, key, provider, provider_id, state, error, sent_at, receipt_at"


def notice_from_row(row: Sequence[Any], in_doubt: bool = False) -> Notification:
    """A Notification from a row of NOTICE_COLS."""
    r = list(row)
    r[11] = loads(r[11])
    return Notification(*r, in_doubt=in_doubt)


def _chunks(values: list[Any], n: int = 500) -> Iterable[list[Any]]:
    for lo in range(0, len(values), n):  # stay under every engine's parameter limit
        yield values[lo:lo + n]


def withdraw_queued(tx: Tx, key: str, reason: str, now: int, *, prefix: bool = False) -> int:
    """Fail, in ``tx``, the queued notices keyed ``key`` (``prefix``: whose key starts with it)
    that no sender holds: what they would say is no longer true. How many."""
    match, value = ("LIKE", key.replace("%", "") + "%") if prefix else ("=", key)
    return tx.execute("UPDATE notifications SET status = 'failed', last_error = ?, updated_at = ?"
                      f" WHERE idem_key {match} ? AND status = 'queued' AND (lease_until IS NULL OR lease_until <= ?)",
                      (reason, now, value, now))


class Notices(Audit):
    """Customer notices; each moves queued -> sent or failed, by a sender holding its lease."""

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
                row = tx.one(f"SELECT {NOTICE_COLS} FROM notifications WHERE idem_key = ?", (idem_key,))
                if row is not None:
                    return notice_from_row(row)
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
            rows = tx.all(f"SELECT {NOTICE_COLS} FROM notifications{where} ORDER BY id LIMIT ?",
                          (*params, int(limit)))
        return [notice_from_row(r) for r in rows]

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
            row = tx.one(f"SELECT {NOTICE_COLS} FROM notifications WHERE id = ?", (int(notice_id),))
            if row is None:
                raise NotFound(f"no notice {notice_id}")
            if n != 1:
                raise TransitionError(f"notice {notice_id} is {row[5]}, not {expected}")
            return notice_from_row(row)

    def queue_notices(self, rows: Iterable[Sequence[Any]]) -> int:
        """Queue many notices in one transaction; return how many were new.

        Each row is (customer, kind, message, idem_key, detail, not_before, priority); a row whose
        idem_key is already queued (or sent) is left out: a repeat cannot notify twice."""
        now = self.now()
        data = [(c, k, m, now, now, key, dumps(d), int(nb), int(p)) for c, k, m, key, d, nb, p in rows]
        with self._tx() as tx:
            return len(tx.insert_rows(
                "INSERT INTO notifications (customer, channel, kind, message, status, attempts, created_at,"
                " updated_at, idem_key, detail, not_before, priority) VALUES ",
                "(?, 'sms', ?, ?, 'queued', 0, ?, ?, ?, ?, ?, ?)", data, " ON CONFLICT DO NOTHING RETURNING id"))

    def claim_notices(self, owner: str, *, now: int | None = None, limit: int = 100,
                      lease_s: int = 300) -> list[Notification]:
        """Take up to ``limit`` due queued notices for ``owner`` (highest priority, then oldest first).

        Compare-and-set on the lease: a notice another sender holds (lease not expired) is never
        taken.  A notice whose earlier lease expired comes back with ``in_doubt=True``: its sender
        may have handed it to the gateway before it died."""
        now = self.now() if now is None else int(now)
        # row_locked: the rows taken are locked (SKIP LOCKED) and the lease is set compare-and-set,
        # so on PostgreSQL a claim runs beside the payments being taken instead of waiting for them
        with self._tx(row_locked=True) as tx:
            rows = tx.all(
                f"SELECT {NOTICE_COLS}, lease_owner FROM notifications WHERE status = 'queued' AND not_before <= ?"
                " AND (lease_until IS NULL OR lease_until <= ?) ORDER BY priority DESC, id LIMIT ?" + tx.skip_locked,
                (now, now, int(limit)))
            if not rows:
                return []
            until = now + int(lease_s)
            ids = [r[0] for r in rows]
            # the write transaction holds the database's write lock from the SELECT on, and the
            # conditions are checked again by the UPDATE: a row another sender leased is not taken
            among, values = tx.one_of("id", ids)
            n = tx.execute(f"UPDATE notifications SET lease_owner = ?, lease_until = ? WHERE {among} AND status = 'queued'"
                           " AND (lease_until IS NULL OR lease_until <= ?)", (owner, until, *values, now))
            if n != len(ids):
                mine = {i for (i,) in tx.all(f"SELECT id FROM notifications WHERE {among}"
                                             " AND lease_owner = ? AND lease_until = ?", (*values, owner, until))}
                rows = [r for r in rows if r[0] in mine]
            return [notice_from_row(r[:-1], in_doubt=r[-1] is not None) for r in rows]

    def notice_deliveries(self, notice_ids: Iterable[int]) -> dict[int, list[Delivery]]:
        """The delivery rows of some notices, by notice id (every id present)."""
        ids = sorted({int(i) for i in notice_ids})
        out: dict[int, list[Delivery]] = {i: [] for i in ids}
        with self._tx(write=False) as tx:
            for chunk in _chunks(ids):
                for r in tx.all(f"SELECT {_DELIVERY_COLS} FROM notice_deliveries WHERE notice_id IN"
                                f" ({', '.join('?' for _ in chunk)}) ORDER BY notice_id, phone", chunk):
                    out[r[0]].append(Delivery(*r))
        return out

    def record_notice_results(self, owner: str, results: Iterable[Mapping[str, Any]], *,
                              now: int | None = None) -> list[int]:
        """Record what a sender did with the notices it claimed, in one transaction.

        Each result: ``id``, ``status`` (sent / failed / queued), ``error``, ``not_before`` (queued),
        ``attempted`` (a send was tried: counts an attempt), ``text`` (what went out), and
        ``deliveries``: [(phone, key, provider, provider_id, state, error)].  A result whose lease
        ``owner`` no longer holds is skipped and its id returned.  ``now`` (default: the store's
        clock) is the send time recorded, the one the rate limit counts from."""
        now = self.now() if now is None else int(now)
        results = list(results)
        updates, dels = [], []
        for res in results:
            nid = int(res["id"])
            status = res["status"]
            if status not in ("sent", "failed", "queued"):
                raise InvalidInput(f"notice {nid}: result status must be sent, failed or queued, got {status!r}")
            updates.append((nid, status, 1 if res.get("attempted") else 0, res.get("error"),
                            int(res.get("not_before") or 0), res.get("text")))
            for phone, key, provider, pid, state, error in res.get("deliveries") or ():
                if state not in DELIVERY_STATES:
                    raise InvalidInput(f"notice {nid}: delivery state must be one of {', '.join(DELIVERY_STATES)}")
                dels.append((nid, phone, key, provider, pid, state, error, now, now if state == "delivered" else None))
        with self._tx(row_locked=True) as tx:   # each row changed compare-and-set on its lease (as claims)
            ids = [u[0] for u in updates]
            held = set(ids)
            if ids:
                # which of them this sender still holds (a lease that ran out may have been taken)
                held = set()
                for chunk in _chunks(ids):
                    among, values = tx.one_of("id", chunk)
                    held.update(i for (i,) in tx.all(f"SELECT id FROM notifications WHERE {among} AND lease_owner = ?"
                                                     " AND status = 'queued'", (*values, owner)))
            # one statement for them all; a notice's first result only (the one that ends its lease)
            first = list({u[0]: u for u in reversed(updates) if u[0] in held}.values())[::-1]
            for table, params in tx.tables_of("r", (("nid", "bigint"), ("st", "text"), ("tried", "bigint"),
                                                    ("err", "text"), ("nb", "bigint"), ("txt", "text")), first, others=3):
                tx.write("UPDATE notifications SET status = r.st, attempts = attempts + r.tried, last_error = r.err,"
                         " not_before = r.nb, sent_at = CASE WHEN r.st = 'sent' THEN ? ELSE sent_at END,"
                         " sent_text = COALESCE(r.txt, sent_text), lease_owner = NULL, lease_until = NULL, updated_at = ?"
                         f" FROM {table} WHERE notifications.id = r.nid AND notifications.lease_owner = ?"
                         " AND notifications.status = 'queued'", (now, now, *params, owner))
            tx.insert_rows("INSERT INTO notice_deliveries (notice_id, phone, key, provider, provider_id, state, error,"
                           " sent_at, receipt_at) VALUES ", "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [d for d in dels if d[0] in held], " ON CONFLICT DO NOTHING")
        return [i for i in ids if i not in held]

    def notice_receipt(self, provider_id: str, state: str, *, error: str | None = None,
                       provider: str | None = None) -> Delivery | None:
        """Record a delivery receipt for a provider's message id; None if no delivery has that id.

        A receipt only moves an accepted delivery on (to delivered or undelivered); a repeated or
        late receipt for a final delivery changes nothing."""
        if state not in ("delivered", "undelivered"):
            raise InvalidInput(f"a receipt says delivered or undelivered, got {state!r}")
        now = self.now()
        with self._tx() as tx:
            where = "provider_id = ?" + (" AND provider = ?" if provider else "")
            params: tuple[Any, ...] = (provider_id, provider) if provider else (provider_id,)
            tx.execute(f"UPDATE notice_deliveries SET state = ?, error = ?, receipt_at = ? WHERE {where}"
                       " AND state = 'accepted'", (state, error, now, *params))
            row = tx.one(f"SELECT {_DELIVERY_COLS} FROM notice_deliveries WHERE {where}", params)
        return None if row is None else Delivery(*row)

    def notices_sent_since(self, customers: Iterable[str], since: int) -> dict[str, list[int]]:
        """Send times (ascending) of each customer's notices sent after ``since``."""
        custs = sorted(set(customers))
        out: dict[str, list[int]] = {c: [] for c in custs}
        with self._tx(write=False) as tx:
            for chunk in _chunks(custs):
                for c, t in tx.all(f"SELECT customer, sent_at FROM notifications WHERE customer IN"
                                   f" ({', '.join('?' for _ in chunk)}) AND sent_at > ? ORDER BY sent_at",
                                   (*chunk, int(since))):
                    out[c].append(int(t))
        return out

    def customer_contacts(self, customers: Iterable[str]) -> dict[str, tuple[list[str], str | None]]:
        """Each customer's phones (as written, in order) and language (None: the default)."""
        custs = sorted(set(customers))
        out: dict[str, tuple[list[str], str | None]] = {}
        with self._tx(write=False) as tx:
            for chunk in _chunks(custs):
                for c, phone, phones, lang in tx.all(f"SELECT customer, phone, phones, language FROM accounts WHERE"
                                                     f" customer IN ({', '.join('?' for _ in chunk)})", chunk):
                    out[c] = (loads(phones) or split_phones(phone), lang or None)
        return out

    def flag_contact(self, customer: str, reason: str, *, phone: str | None = None, actor: str = "notices") -> bool:
        """Flag an account whose contact details cannot be used; True only the first time (report it then)."""
        now = self.now()
        with self._tx() as tx:
            new = tx.execute("INSERT INTO contact_flags (customer, phone, reason, at) VALUES (?, ?, ?, ?)"
                             " ON CONFLICT DO NOTHING", (customer, phone or "", reason, now)) == 1
            if new:
                self.log_action(actor, "customer.contact_flagged", customer, {"phone": phone, "reason": reason})
        return new

    def flagged_phones(self, customers: Iterable[str]) -> dict[str, str]:
        """The flagged phone of each flagged customer among these."""
        custs = sorted(set(customers))
        out: dict[str, str] = {}
        with self._tx(write=False) as tx:
            for chunk in _chunks(custs):
                out.update(tx.all(f"SELECT customer, phone FROM contact_flags WHERE customer IN"
                                  f" ({', '.join('?' for _ in chunk)})", chunk))
        return out

    def contact_flags(self) -> list[tuple[str, str, str, int]]:
        """Flagged accounts: (customer, phone, reason, at), by customer."""
        with self._tx(write=False) as tx:
            rows = tx.all("SELECT customer, phone, reason, at FROM contact_flags ORDER BY customer")
        return [(str(c), str(p), str(r), int(t)) for c, p, r, t in rows]

    def clear_contact_flag(self, customer: str, *, actor: str) -> bool:
        """Clear an account's contact flag (after its phone was corrected); True if there was one."""
        with self._tx() as tx:
            n = tx.execute("DELETE FROM contact_flags WHERE customer = ?", (customer,))
            if n:
                self.log_action(actor, "customer.contact_flag_cleared", customer, None)
        return bool(n)

    def get_notification(self, notice_id: int) -> Notification:
        """One notice by id; NotFound if there is none."""
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {NOTICE_COLS} FROM notifications WHERE id = ?", (int(notice_id),))
        if row is None:
            raise NotFound(f"no notice {notice_id}: see `headend notices list`")
        return notice_from_row(row)

    def notice_by_key(self, idem_key: str) -> Notification | None:
        """The notice queued with this event key, or None."""
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {NOTICE_COLS} FROM notifications WHERE idem_key = ?", (idem_key,))
        return None if row is None else notice_from_row(row)

    def find_notices(self, *, status: str | None = None, customer: str | None = None, kind: str | None = None,
                     since: int | None = None, until: int | None = None, provider_id: str | None = None,
                     limit: int = 100, newest_first: bool = True) -> list[Notification]:
        """Notices matching every filter given (created_at in [since, until)), newest first by default."""
        parts, params = [], []
        for col, val in (("status", status), ("customer", customer), ("kind", kind)):
            if val is not None:
                parts.append(f"{col} = ?")
                params.append(val)
        if since is not None:
            parts.append("created_at >= ?")
            params.append(int(since))
        if until is not None:
            parts.append("created_at < ?")
            params.append(int(until))
        if provider_id is not None:
            parts.append("id IN (SELECT notice_id FROM notice_deliveries WHERE provider_id = ?)")
            params.append(provider_id)
        where = " WHERE " + " AND ".join(parts) if parts else ""
        order = "DESC" if newest_first else ""
        with self._tx(write=False) as tx:
            rows = tx.all(f"SELECT {NOTICE_COLS} FROM notifications{where} ORDER BY id {order} LIMIT ?",
                          (*params, int(limit)))
        return [notice_from_row(r) for r in rows]

    def resend_notice(self, notice_id: int, *, actor: str, now: int | None = None) -> Notification:
        """Queue a failed notice again (audited): its phones that never got it are tried anew.

        A sent notice is not re-queued (that would be a second delivery of one event): a
        TransitionError says so."""
        now = self.now() if now is None else int(now)
        with self._tx() as tx:
            n = self.get_notification(notice_id)
            if n.status != "failed":
                raise TransitionError(f"notice {notice_id} is {n.status}: only a failed notice can be sent again"
                                      + (" (it was delivered once already)" if n.status == "sent" else ""))
            # deliveries that failed for good are dropped so their phones are tried again; a
            # delivered or accepted phone keeps its row and is not sent to twice
            tx.execute("DELETE FROM notice_deliveries WHERE notice_id = ? AND state IN"
                       " ('bad_number', 'rejected', 'undelivered')", (n.id,))
            tx.execute("UPDATE notifications SET status = 'queued', not_before = ?, last_error = ?, updated_at = ?,"
                       " lease_owner = NULL, lease_until = NULL WHERE id = ? AND status = 'failed'",
                       (now, f"resent by {actor}", now, n.id))
            self.log_action(actor, "notice.resend", n.customer, {"notice": n.id, "kind": n.kind})
            return self.get_notification(notice_id)

    # ------------------------------------------------------------------ the watcher's state
    def watch_rows(self) -> list[tuple[Any, ...]]:
        """For every local-cost-control meter, what the head-end last learned of it and what the
        watcher saw last: (address, customer, alarm1_fen, alarm2_fen, watched level, watched relay,
        watched seen_at, meter balance_fen, meter relay, meter last_seen, latest remaining-money
        reading (value, read_at), latest status word 3 reading (value, read_at))."""
        latest = ("(SELECT {col} FROM readings r WHERE r.meter = m.address AND r.di = '{di}'"
                  " ORDER BY r.read_at DESC LIMIT 1)")
        cols = ", ".join(latest.format(col=col, di=di) for di in ("00900200", "04000503")
                         for col in ("value", "read_at"))
        with self._tx(write=False) as tx:
            return tx.all(
                "SELECT m.address, m.customer, a.alarm1_fen, a.alarm2_fen, w.level, w.relay, w.seen_at,"
                f" m.balance_fen, m.relay, m.last_seen, {cols} FROM meters m"
                " JOIN accounts a ON a.customer = m.customer LEFT JOIN notice_watch w ON w.meter = m.address"
                " WHERE m.mode = 'local' ORDER BY m.address")

    def set_watch(self, rows: Iterable[Sequence[Any]]) -> int:
        """Store the watcher's view of meters: (meter, level, relay, seen_at)."""
        with self._tx() as tx:
            return tx.executemany(
                "INSERT INTO notice_watch (meter, level, relay, seen_at) VALUES (?, ?, ?, ?) ON CONFLICT (meter)"
                " DO UPDATE SET level = excluded.level, relay = excluded.relay, seen_at = excluded.seen_at",
                [tuple(r) for r in rows])

    def mark(self, name: str) -> int:
        """A named high-water mark (0 if never set)."""
        with self._tx(write=False) as tx:
            row = tx.one("SELECT value FROM notice_marks WHERE name = ?", (name,))
        return 0 if row is None else int(row[0])

    def set_mark(self, name: str, value: int) -> None:
        """Move a named high-water mark."""
        with self._tx() as tx:
            tx.execute("INSERT INTO notice_marks (name, value) VALUES (?, ?) ON CONFLICT (name)"
                       " DO UPDATE SET value = excluded.value", (name, int(value)))

    def payments_to_notify(self, after: int, *, settled_at: int,
                           limit: int = 5000) -> tuple[list[tuple[Any, ...]], int]:
        """Payments with id > ``after`` whose "payment received" notice (key ``pay:CHANNEL:TXN``)
        is not queued yet, oldest first: (id, customer, channel, channel name, txn_id, amount_fen,
        the account's balance after it, its journal row's detail); and the mark to resume from.
        A voucher is none of them: its customer carries the money to the meter as a token (the vend
        hands it over), and its journal row's balance is one the money has already left. Nor is a
        reversed payment: the money it would tell of is gone.

        The mark passes only payments that can no longer appear below it: on an engine whose
        writers take turns (SQLite) ids are committed in order, so every id read; where payments
        commit side by side (PostgreSQL) a smaller id may commit after a larger one, so only up to
        the last payment accepted before ``settled_at`` (the ones after it are looked at again,
        and skipped while their notice stands)."""
        with self._tx(write=False) as tx:
            rows = tx.all(
                "SELECT p.id, p.customer, p.channel, c.name, p.txn_id, p.amount_fen, l.balance_after, l.detail"
                " FROM payments p JOIN channels c ON c.id = p.channel"
                " JOIN ledger l ON l.payment_id = p.id AND l.kind = 'payment'"
                " WHERE p.id > ? AND NOT EXISTS (SELECT 1 FROM notifications n"
                " WHERE n.idem_key = 'pay:' || p.channel || ':' || p.txn_id)"
                " AND NOT EXISTS (SELECT 1 FROM vouchers v WHERE v.payment_id = p.id)"
                " AND p.state <> 'reversed' ORDER BY p.id LIMIT ?",
                (int(after), int(limit)))
            if tx.ids_in_commit_order:
                top = tx.one("SELECT MAX(id) FROM payments")
            else:
                top = tx.one("SELECT MAX(id) FROM payments WHERE id > ? AND accepted_at < ?",
                             (int(after), int(settled_at)))
        mark = max(int(after), int(top[0]) if top and top[0] is not None else 0)
        if len(rows) >= limit:   # the rest next time
            mark = min(mark, int(rows[-1][0]))
        return [(*r[:7], loads(r[7])) for r in rows], mark

    def events_after(self, event_id: int, kinds: Sequence[str], *, limit: int = 1000) -> list[tuple[Any, ...]]:
        """Events with id > event_id of the given kinds, oldest first: (id, meter, customer, at, kind, detail)."""
        marks = ", ".join("?" for _ in kinds)
        with self._tx(write=False) as tx:
            rows = tx.all(f"SELECT e.id, e.meter, m.customer, e.at, e.kind, e.detail FROM events e JOIN meters m"
                          f" ON m.address = e.meter WHERE e.id > ? AND e.kind IN ({marks}) ORDER BY e.id LIMIT ?",
                          (int(event_id), *kinds, int(limit)))
        return [(*r[:5], loads(r[5])) for r in rows]
