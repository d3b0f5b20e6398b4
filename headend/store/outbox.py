"""The command outbox: every command to a meter, queued, sent, unresolved, confirmed, failed,
rejected or cancelled (models.COMMAND_TRANSITIONS), and the lease of the `serve` working it."""

from __future__ import annotations

import time
from typing import Any, Collection, Iterable, Sequence

from headend.store.audit import Audit
from headend.store.base import Tx
from headend.store.models import (
    COMMAND_STATUSES,
    COMMAND_TRANSITIONS,
    FINAL_STATUSES,
    Command,
    Conflict,
    InvalidInput,
    NotFound,
    TransitionError,
    dumps,
    loads,
)

_COMMAND_COLS = (
    "id, meter, kind, params, status, attempts, last_error, reply, created_at, updated_at, idem_key, actor, not_before"
)


def _command(row: Sequence[Any]) -> Command:
    r = list(row)
    r[3] = loads(r[3])
    r[7] = loads(r[7])
    return Command(*r)


def _difference(cmd: Command, meter: str, kind: str, params: Any) -> str:
    """What differs between a stored command and a new request for it ("" if nothing)."""
    if cmd.meter != meter:
        return f"meter {cmd.meter}, not {meter}"
    if cmd.kind != kind:
        return f"kind {cmd.kind}, not {kind}"
    if cmd.params == params:
        return ""
    if isinstance(cmd.params, dict) and isinstance(params, dict):
        for k in sorted(set(cmd.params) | set(params)):
            if cmd.params.get(k) != params.get(k):
                return f"{k} {cmd.params.get(k)!r}, not {params.get(k)!r}"
    return f"params {cmd.params!r}, not {params!r}"


# How long a serve's heartbeat stays good: it renews every LEASE_BEAT_S, and one that missed
# a few beats (killed, host down) no longer counts as running.
LEASE_BEAT_S = 2
LEASE_TTL_S = 15
LEASE_BEAT_MIN_S = 0.5  # a shorter lease (tests) beats more often, never faster than this


def lease_owner(pid: int, host: str) -> str:
    """The name a serve's lease and its claimed commands carry."""
    return f"{host} pid {pid}"


class Outbox(Audit):
    """Commands to meters; status moves only along COMMAND_TRANSITIONS, by compare-and-set."""

    def enqueue(
        self,
        meter: str,
        kind: str,
        params: Any = None,
        *,
        actor: str,
        idem_key: str | None = None,
        not_before: int = 0,
    ) -> Command:
        """Put a command in the outbox (status queued) with its audit row, atomically.

        With idem_key, a second enqueue with the same key and the same meter, kind and params
        returns the first command and writes nothing: a retried request cannot queue twice.  The
        same key with anything different is refused (Conflict naming the field), since it would
        otherwise quietly stand for another payment.  If the first command ended failed,
        rejected or cancelled - which for a recharge means no money moved - it goes back in the
        queue (audited), so the same payment id can still be credited.
        params must be JSON-serialisable.
        """
        if not kind:
            raise InvalidInput("a command needs a kind (read, recharge, trip, ...)")
        try:
            params_json = dumps(params)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"{kind} parameters must be JSON data (numbers, text, lists, dicts): {exc}") from None
        params = loads(params_json)  # hand back exactly what a later read returns (tuples become lists)
        with self._tx() as tx:
            if idem_key is not None:
                row = tx.one(f"SELECT {_COMMAND_COLS} FROM commands WHERE idem_key = ?", (idem_key,))
                if row is not None:
                    cmd = _command(row)
                    differs = _difference(cmd, meter, kind, params)
                    if differs:
                        raise Conflict(f"idempotency key {idem_key!r} belongs to command {cmd.id} with {differs}: "
                                       "a different command needs its own key")
                    if cmd.status in ("failed", "rejected", "cancelled"):
                        return self._requeue(tx, cmd, actor, f"the same request again (idempotency key {idem_key!r})")
                    return cmd
            if not tx.one("SELECT 1 FROM meters WHERE address = ?", (meter,)):
                raise NotFound(f"meter {meter} is not registered: add it with `headend meter add {meter} ...`")
            return self._insert_commands(tx, [(meter, kind, params, idem_key, int(not_before))], actor=actor)[0]

    def _insert_commands(self, tx: Tx, rows: Sequence[tuple[str, str, Any, str | None, int]], *,
                         actor: str) -> list[Command]:
        """Queue new commands (meter, kind, params, idem_key, not_before) with their audit rows, in
        the caller's transaction: the one way a command enters the outbox (``enqueue`` checks the
        key and the meter first; a payment batch already knows both are new and known)."""
        now = self.now()
        insert = ("INSERT INTO commands (meter, kind, params, status, attempts, created_at, updated_at, idem_key,"
                  " actor, not_before) VALUES (?, ?, ?, 'queued', 0, ?, ?, ?, ?, ?)")
        values = [(meter, kind, dumps(params), now, now, idem_key, actor, not_before)
                  for meter, kind, params, idem_key, not_before in rows]
        keys = [r[3] for r in rows]
        if len(rows) >= 50 and None not in keys and len(set(keys)) == len(keys):
            # a big batch of keyed commands: one statement, the ids read back by their keys
            tx.executemany(insert, values)
            ids: dict[Any, int] = {}
            for lo in range(0, len(keys), 500):
                chunk = keys[lo:lo + 500]
                ids.update((k, int(i)) for i, k in tx.all(
                    f"SELECT id, idem_key FROM commands WHERE idem_key IN ({', '.join('?' for _ in chunk)})", chunk))
            got = [ids[k] for k in keys]
        else:
            sent = [tx.submit(f"{insert} RETURNING id", v) for v in values]   # out together
            got = [int(r.one()[0]) for r in sent]  # type: ignore[index]
        out = [Command(i, meter, kind, params, "queued", 0, None, None, now, now, idem_key, actor, not_before)
               for i, (meter, kind, params, idem_key, not_before) in zip(got, rows)]
        self.log_actions((actor, f"command.{c.kind}", c.meter, {"command": c.id, "params": c.params}) for c in out)
        return out

    def enqueue_many(
        self, meters: Iterable[str], kind: str, params: Any = None, *, actor: str, idem_prefix: str | None = None
    ) -> list[Command]:
        """Queue the same command for many meters in one transaction (all or none), each audited.

        With idem_prefix, each command's key is f"{idem_prefix}:{address}".
        """
        with self._tx():
            return [
                self.enqueue(m, kind, params, actor=actor,
                             idem_key=None if idem_prefix is None else f"{idem_prefix}:{m}")
                for m in meters
            ]

    def get_command(self, command_id: int) -> Command:
        """One outbox entry by id; NotFound if there is none."""
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {_COMMAND_COLS} FROM commands WHERE id = ?", (int(command_id),))
        if row is None:
            raise NotFound(f"no command {command_id} in the outbox")
        return _command(row)

    def get_commands(self, command_ids: Iterable[int]) -> list[Command]:
        """Several outbox entries by id, in id order (ids that do not exist are left out)."""
        ids = sorted({int(i) for i in command_ids})
        out: list[Command] = []
        with self._tx(write=False) as tx:
            for lo in range(0, len(ids), 500):  # stay under every engine's parameter limit
                chunk = ids[lo:lo + 500]
                marks = ", ".join("?" for _ in chunk)
                out += [_command(r) for r in tx.all(f"SELECT {_COMMAND_COLS} FROM commands WHERE id IN ({marks})"
                                                    " ORDER BY id", chunk)]
        return out

    def list_commands(
        self,
        *,
        status: str | None = None,
        meter: str | None = None,
        kind: str | None = None,
        customer: str | None = None,
        limit: int = 100,
    ) -> list[Command]:
        """Outbox entries, newest first, optionally filtered (customer: commands to that customer's meters)."""
        if status is not None and status not in COMMAND_STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(COMMAND_STATUSES)}, got {status!r}")
        where, params = self._where({"status": status, "meter": meter, "kind": kind})
        if customer is not None:
            where += (" AND" if where else " WHERE") + " meter IN (SELECT address FROM meters WHERE customer = ?)"
            params.append(customer)
        with self._tx(write=False) as tx:
            rows = tx.all(f"SELECT {_COMMAND_COLS} FROM commands{where} ORDER BY id DESC LIMIT ?",
                          (*params, int(limit)))
        return [_command(r) for r in rows]

    def count_commands(self) -> dict[str, int]:
        """Number of outbox entries per status (every status present, 0 if none)."""
        with self._tx(write=False) as tx:
            rows = tx.all("SELECT status, COUNT(*) FROM commands GROUP BY status")
        out: dict[str, int] = dict.fromkeys(COMMAND_STATUSES, 0)
        out.update({s: int(n) for s, n in rows})
        return out

    def transition(
        self,
        command_id: int,
        to: str,
        *,
        expected: str | Sequence[str],
        reply: Any = None,
        error: str | None = None,
        not_before: int | None = None,
    ) -> Command:
        """Move a command to status `to` only if its status is still `expected` (compare-and-set).

        Moving to "sent" counts an attempt. reply / error / not_before are stored when given.
        Raises TransitionError if the move is not allowed or the status changed meanwhile.
        """
        exp = (expected,) if isinstance(expected, str) else tuple(expected)
        for e in exp:
            if to not in COMMAND_TRANSITIONS.get(e, ()):
                raise TransitionError(f"a command cannot go from {e} to {to}")
        sets = ["status = ?", "updated_at = ?"]
        params: list[Any] = [to, self.now()]
        if to == "sent":
            sets.append("attempts = attempts + 1")
        if reply is not None:
            sets.append("reply = ?")
            params.append(dumps(reply))
        if error is not None:
            sets.append("last_error = ?")
            params.append(error)
        if not_before is not None:
            sets.append("not_before = ?")
            params.append(int(not_before))
        marks = ", ".join("?" for _ in exp)
        with self._tx() as tx:
            n = tx.execute(f"UPDATE commands SET {', '.join(sets)} WHERE id = ? AND status IN ({marks})",
                           (*params, int(command_id), *exp))
            cmd = self.get_command(command_id)  # NotFound if it never existed
            if n != 1:
                raise TransitionError(
                    f"command {command_id} is {cmd.status}, not {' or '.join(exp)}: someone else moved it first"
                )
            self._command_moved(tx, cmd)
            return cmd

    def note_progress(self, command_id: int, reply: Any) -> Command:
        """Store what a command in flight has done so far (a recharge's chosen purchase count,
        written before its frame goes out) while it stays "sent".

        Not an attempt: ``attempts`` counts the times a worker took the command on (claim_next),
        so a command its meter carried out on the first try keeps attempts == 1.
        Raises TransitionError if the command is no longer in flight.
        """
        with self._tx() as tx:
            n = tx.execute("UPDATE commands SET reply = ?, updated_at = ? WHERE id = ? AND status = 'sent'",
                           (dumps(reply), self.now(), int(command_id)))
            cmd = self.get_command(command_id)  # NotFound if it never existed
            if n != 1:
                raise TransitionError(f"command {command_id} is {cmd.status}, not sent: someone else moved it first")
            return cmd

    def mark_sent(self, command_id: int) -> Command:
        """queued -> sent, or sent -> sent for a resend; counts an attempt."""
        return self.transition(command_id, "sent", expected=("queued", "sent"))

    def confirm(self, command_id: int, reply: Any = None) -> Command:
        """sent -> confirmed, storing the meter's reply."""
        return self.transition(command_id, "confirmed", expected="sent", reply=reply)

    def fail(self, command_id: int, error: str, reply: Any = None) -> Command:
        """queued/sent -> failed, with the reason (and the meter's refusal, if any)."""
        return self.transition(command_id, "failed", expected=("queued", "sent"), error=error, reply=reply)

    def retry_later(self, command_id: int, error: str, not_before: int) -> Command:
        """sent -> queued again, not to be sent before not_before (Unix s); keeps attempts."""
        return self.transition(command_id, "queued", expected="sent", error=error, not_before=not_before)

    def unresolve(self, command_id: int, error: str, not_before: int, reply: Any = None) -> Command:
        """sent -> unresolved: a recharge that may have reached the meter; checked again from not_before."""
        return self.transition(command_id, "unresolved", expected="sent", error=error, not_before=not_before,
                               reply=reply)

    def reject(self, command_id: int, error: str, reply: Any = None) -> Command:
        """queued/sent -> rejected: it can never succeed as written; the reason says why."""
        return self.transition(command_id, "rejected", expected=("queued", "sent"), error=error, reply=reply)

    def cancel(self, command_id: int, *, actor: str) -> Command:
        """An operator takes a queued command out of the queue (audited).

        Only a command nothing was sent for yet: a recharge that may have reached its meter is
        settled by the meter's purchase count, never cancelled."""
        with self._tx() as tx:
            cmd = self.get_command(command_id)
            if cmd.status != "queued" or (cmd.kind == "recharge" and cmd.reply):
                why = ("its recharge frame may already have reached the meter; `headend serve` settles it from "
                       "the meter's purchase count" if cmd.status in ("queued", "sent", "unresolved")
                       else "it is already final")
                raise TransitionError(f"command {cmd.id} ({cmd.kind} on {cmd.meter}) is {cmd.status} and cannot be "
                                      f"cancelled: {why}")
            n = tx.execute("UPDATE commands SET status = 'cancelled', updated_at = ?, last_error = ?"
                           " WHERE id = ? AND status = 'queued'",
                           (self.now(), f"cancelled by {actor}", cmd.id))
            if n != 1:
                raise TransitionError(f"command {cmd.id} was moved meanwhile; nothing cancelled")
            self.log_action(actor, "command.cancel", cmd.meter, {"command": cmd.id, "kind": cmd.kind})
            cmd = self.get_command(cmd.id)
            self._command_moved(tx, cmd)
            return cmd

    def retry(self, command_id: int, *, actor: str) -> Command:
        """An operator puts a failed, rejected or cancelled command back in the queue, or has an
        unresolved or waiting one tried now (audited)."""
        with self._tx() as tx:
            cmd = self.get_command(command_id)
            if cmd.status in ("queued", "unresolved"):
                tx.execute("UPDATE commands SET not_before = 0, updated_at = ? WHERE id = ?", (self.now(), cmd.id))
                self.log_action(actor, "command.retry", cmd.meter, {"command": cmd.id, "kind": cmd.kind,
                                                                    "status": cmd.status})
                return self.get_command(cmd.id)
            if cmd.status not in ("failed", "rejected", "cancelled"):
                raise TransitionError(f"command {cmd.id} ({cmd.kind} on {cmd.meter}) is {cmd.status}: "
                                      "only a failed, rejected, cancelled, queued or unresolved command can be retried")
            return self._requeue(tx, cmd, actor, "retried by an operator")

    def _requeue(self, tx: Any, cmd: Command, actor: str, why: str) -> Command:
        # A final command that moved nothing starts afresh: no progress kept (a recharge
        # chooses its purchase count anew), attempts from zero.
        n = tx.execute("UPDATE commands SET status = 'queued', attempts = 0, reply = NULL, not_before = 0,"
                       " updated_at = ?, last_error = ? WHERE id = ? AND status = ?",
                       (self.now(), f"requeued: {why} (was {cmd.status}: {cmd.last_error or ''})", cmd.id, cmd.status))
        if n != 1:
            raise TransitionError(f"command {cmd.id} was moved meanwhile; nothing requeued")
        self.log_action(actor, "command.requeue", cmd.meter, {"command": cmd.id, "kind": cmd.kind,
                                                              "was": cmd.status, "why": why})
        cmd = self.get_command(cmd.id)
        self._command_moved(tx, cmd)
        return cmd

    def claim_next(self, *, limit: int = 1, link: str | None = None, now: int | None = None,
                   owner: str | None = None, slots: Collection[int] | None = None) -> list[Command]:
        """Atomically take up to `limit` due queued or unresolved commands and mark them sent (oldest first).

        At most one command per meter is in flight: a meter with a command "sent" is skipped.
        A meter's commands run in order (its oldest waiting one first), except reads, which never
        wait behind another waiting command: a meter whose recharge waits for a lock to lift can
        still be read.  Restrict to meters on one link with `link`.  ``owner`` (a serve's lease
        owner) is recorded on each claimed command: only a lapsed owner's commands are requeued.
        ``slots``: only meters whose link falls in these slots (this serve's share of the links,
        headend/frontends.py; None: every meter).
        """
        if slots is not None and not slots:
            return []
        now = self.now() if now is None else now
        sql = (
            "SELECT c.id, c.meter FROM commands c JOIN meters m ON m.address = c.meter"
            " WHERE c.status IN ('queued', 'unresolved') AND c.not_before <= ?"
            " AND (c.kind = 'read' OR c.id = (SELECT MIN(q.id) FROM commands q WHERE q.meter = c.meter"
            " AND q.status IN ('queued', 'unresolved') AND q.kind != 'read'))"
            " AND NOT EXISTS (SELECT 1 FROM commands s WHERE s.meter = c.meter AND s.status = 'sent')"
        )
        params: list[Any] = [now]
        if link is not None:
            sql += " AND m.link = ?"
            params.append(link)
        with self._tx(write=False) as tx:
            # nothing due: no write transaction (on PostgreSQL each takes the write lock, which waits
            # for every payment being taken by any serve, and they for it)
            if tx.one("SELECT 1 FROM commands WHERE status IN ('queued', 'unresolved') AND not_before <= ? LIMIT 1",
                      (now,)) is None:
                return []
        with self._tx() as tx:
            if slots is not None:  # a serve's share is a few hundred slots: one array parameter on PostgreSQL
                among, values = tx.one_of("m.link_slot", sorted(slots))
                sql += f" AND {among}"
                params.extend(values)
            sql += " ORDER BY c.id LIMIT ?"
            params.append(int(limit))
            rows = tx.all(sql + tx.skip_locked.replace("UPDATE", "UPDATE OF c"), params)
            out, taken = [], set()
            for cid, meter in rows:
                if meter in taken:
                    continue  # one in flight per meter, also within one claim
                if tx.execute("UPDATE commands SET status = 'sent', attempts = attempts + 1, updated_at = ?,"
                              " claimed_by = ? WHERE id = ? AND status IN ('queued', 'unresolved')",
                              (self.now(), owner, cid)) == 1:
                    taken.add(meter)
                    out.append(self.get_command(cid))
            return out

    def requeue_stale(self, older_than_s: int, *, now: int | None = None) -> int:
        """Put commands left "sent" for longer than older_than_s (a crashed worker) back in line:
        recharges whose purchase count was already chosen (their frame may have gone out) as
        unresolved, everything else queued.  A command claimed by a serve whose lease still beats
        is never taken from it (several serves on one PostgreSQL database)."""
        now = self.now() if now is None else now
        with self._tx() as tx:
            return tx.execute(
                "UPDATE commands SET status = CASE WHEN kind = 'recharge' AND reply IS NOT NULL"
                " THEN 'unresolved' ELSE 'queued' END, updated_at = ?,"
                " last_error = 'requeued: no outcome recorded by the worker that sent it' "
                " WHERE status = 'sent' AND updated_at <= ? AND (claimed_by IS NULL OR claimed_by NOT IN"
                " (SELECT owner FROM serve_leases WHERE beat_at + ttl_s > ?))",
                (now, now - int(older_than_s), now),
            )

    def next_due(self) -> int | None:
        """When the earliest queued or unresolved command may be tried (Unix s), or None if none waits."""
        with self._tx(write=False) as tx:
            row = tx.one("SELECT MIN(not_before) FROM commands WHERE status IN ('queued', 'unresolved')")
        return None if row is None or row[0] is None else int(row[0])

    def confirmed_recharges(self, meter: str, *, above_count: int) -> list[Command]:
        """A meter's confirmed recharges whose purchase count is above `above_count`, by count
        (what a meter restored from an older record has lost)."""
        with self._tx(write=False) as tx:
            rows = tx.all(f"SELECT {_COMMAND_COLS} FROM commands WHERE meter = ? AND kind = 'recharge'"
                          " AND status = 'confirmed' ORDER BY id", (meter,))
        got = [_command(r) for r in rows]
        lost = [c for c in got if isinstance(c.reply, dict) and int(c.reply.get("purchase_count") or 0) > above_count]
        return sorted(lost, key=lambda c: int(c.reply["purchase_count"]))

    # ----------------------------------------------------------------- the serve lease
    def take_lease(self, pid: int, host: str, path: str, *, shared: bool = False, ttl_s: int = LEASE_TTL_S) -> str:
        """Record this serve as one working the outbox; return its owner name (what its claims carry).

        Not ``shared`` (an SQLite file): one serve per database; Conflict naming the other if one on
        another host still beats (on one host the caller's lock on the file decides: a lease left
        by a serve that was killed there is taken over at once).  ``shared`` (PostgreSQL): serves
        work side by side, each with its own lease; lapsed leases are cleared.  ``ttl_s``: how long
        the lease stays good without a heartbeat (kept in the row: every reader judges it alike)."""
        if int(ttl_s) < 2 * LEASE_BEAT_MIN_S:
            raise InvalidInput(f"a serve's lease must last at least {2 * LEASE_BEAT_MIN_S} s, got {ttl_s}")
        now = self.now()
        owner = lease_owner(pid, host)
        with self._tx() as tx:
            tx.execute("DELETE FROM serve_leases WHERE owner = ? OR beat_at + ttl_s <= ?", (owner, now))
            if not shared:
                row = tx.one("SELECT pid, host, path, started_at, beat_at FROM serve_leases WHERE host != ?"
                             " ORDER BY beat_at DESC LIMIT 1", (host,))
                if row is not None:
                    raise Conflict(f"another `headend serve` (pid {row[0]} on {row[1]}, working {row[2]}, heartbeat "
                                   f"{now - int(row[4])} s ago) is already working this database; stop it first "
                                   "(one serve per database)")
                tx.execute("DELETE FROM serve_leases")
            tx.execute("INSERT INTO serve_leases (owner, pid, host, path, started_at, beat_at, ttl_s)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?)", (owner, pid, host, path, now, now, int(ttl_s)))
        return owner

    def beat_lease(self, pid: int, host: str, view: str | None = None) -> bool:
        """Renew this serve's heartbeat (and record the ``view`` it works by, headend/frontends.py);
        False if the lease is no longer its own."""
        with self._tx() as tx:
            if view is None:
                return tx.execute("UPDATE serve_leases SET beat_at = ? WHERE owner = ?",
                                  (self.now(), lease_owner(pid, host))) == 1
            return tx.execute("UPDATE serve_leases SET beat_at = ?, view = ? WHERE owner = ?",
                              (self.now(), view, lease_owner(pid, host))) == 1

    def release_lease(self, pid: int, host: str) -> None:
        """This serve stops: its lease goes (others on a shared database go on)."""
        with self._tx() as tx:
            tx.execute("DELETE FROM serve_leases WHERE owner = ?", (lease_owner(pid, host),))

    def live_leases(self) -> dict[str, tuple[str | None, int | None]]:
        """Every serve whose lease beats: owner -> (the view it works by, the last cost-control
        boundary it collected, None if it does not collect)."""
        with self._tx(write=False) as tx:
            rows = tx.all("SELECT owner, view, collected_at FROM serve_leases WHERE beat_at + ttl_s > ?", (self.now(),))
        return {o: (v, None if c is None else int(c)) for o, v, c in rows}

    def mark_collected(self, owner: str, boundary: int) -> None:
        """The serve ``owner`` has collected its share of the meters for the cost-control
        ``boundary`` (0: it collects, nothing yet)."""
        with self._tx() as tx:
            tx.execute("UPDATE serve_leases SET collected_at = ? WHERE owner = ?", (int(boundary), owner))

    def serve_alive(self) -> dict[str, Any] | None:
        """A serve working the outbox (pid, host, path, started_at, beat_at; the latest heartbeat),
        or None if none beats."""
        with self._tx(write=False) as tx:
            row = tx.one("SELECT pid, host, path, started_at, beat_at FROM serve_leases WHERE beat_at + ttl_s > ?"
                         " ORDER BY beat_at DESC LIMIT 1", (self.now(),))
        return None if row is None else dict(zip(("pid", "host", "path", "started_at", "beat_at"), row))

    def serves_alive(self) -> int:
        """How many serves beat now (several only on a shared PostgreSQL database)."""
        with self._tx(write=False) as tx:
            row = tx.one("SELECT COUNT(*) FROM serve_leases WHERE beat_at + ttl_s > ?", (self.now(),))
        return int(row[0]) if row else 0

    def wait_final(self, command_id: int, timeout: float, poll: float = 0.05) -> Command:
        """Poll until a command is final, or timeout seconds pass; return its last state."""
        deadline = time.monotonic() + timeout
        while True:
            cmd = self.get_command(command_id)
            if cmd.status in FINAL_STATUSES or time.monotonic() >= deadline:
                return cmd
            time.sleep(poll)
