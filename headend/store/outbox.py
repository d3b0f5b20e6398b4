"""The command outbox: every command to a meter, queued, sent, confirmed or failed."""

from __future__ import annotations

import time
from typing import Any, Iterable, Sequence

from headend.store.audit import Audit
from headend.store.models import (
    COMMAND_STATUSES,
    COMMAND_TRANSITIONS,
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

        With idem_key, a second enqueue with the same key returns the first command unchanged
        (whatever its status) and writes nothing: a retried request cannot queue twice.
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
                    if cmd.meter != meter or cmd.kind != kind:
                        raise Conflict(f"idempotency key {idem_key!r} belongs to command {cmd.id} "
                                       f"({cmd.kind} on {cmd.meter})")
                    return cmd
            if not tx.one("SELECT 1 FROM meters WHERE address = ?", (meter,)):
                raise NotFound(f"meter {meter} is not registered: add it with `headend meter add {meter} ...`")
            now = self.now()
            row = tx.one(
                "INSERT INTO commands (meter, kind, params, status, attempts, created_at, updated_at, idem_key,"
                " actor, not_before) VALUES (?, ?, ?, 'queued', 0, ?, ?, ?, ?, ?) RETURNING id",
                (meter, kind, params_json, now, now, idem_key, actor, int(not_before)),
            )
            assert row is not None
            self.log_action(actor, f"command.{kind}", meter, {"command": row[0], "params": params})
            return Command(int(row[0]), meter, kind, params, "queued", 0, None, None, now, now, idem_key, actor,
                           int(not_before))

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
        limit: int = 100,
    ) -> list[Command]:
        """Outbox entries, newest first, optionally filtered."""
        if status is not None and status not in COMMAND_STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(COMMAND_STATUSES)}, got {status!r}")
        where, params = self._where({"status": status, "meter": meter, "kind": kind})
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

    def claim_next(self, *, limit: int = 1, link: str | None = None, now: int | None = None) -> list[Command]:
        """Atomically take up to `limit` due queued commands and mark them sent (oldest first).

        At most one command per meter is in flight: a meter with a command "sent" is skipped, and
        only each meter's oldest queued command is eligible, so a meter's commands run in order.
        Restrict to meters on one link with `link`.
        """
        now = self.now() if now is None else now
        sql = (
            "SELECT c.id FROM commands c JOIN meters m ON m.address = c.meter"
            " WHERE c.status = 'queued' AND c.not_before <= ?"
            " AND c.id = (SELECT MIN(q.id) FROM commands q WHERE q.meter = c.meter AND q.status = 'queued')"
            " AND NOT EXISTS (SELECT 1 FROM commands s WHERE s.meter = c.meter AND s.status = 'sent')"
        )
        params: list[Any] = [now]
        if link is not None:
            sql += " AND m.link = ?"
            params.append(link)
        sql += " ORDER BY c.id LIMIT ?"
        params.append(int(limit))
        with self._tx() as tx:
            ids = [r[0] for r in tx.all(sql, params)]
            out = []
            for cid in ids:
                if tx.execute("UPDATE commands SET status = 'sent', attempts = attempts + 1, updated_at = ?"
                              " WHERE id = ? AND status = 'queued'", (self.now(), cid)) == 1:
                    out.append(self.get_command(cid))
            return out

    def requeue_stale(self, older_than_s: int, *, now: int | None = None) -> int:
        """Put commands left "sent" for longer than older_than_s (a crashed worker) back to queued."""
        now = self.now() if now is None else now
        with self._tx() as tx:
            return tx.execute(
                "UPDATE commands SET status = 'queued', updated_at = ?,"
                " last_error = 'requeued: no outcome recorded by the worker that sent it' "
                " WHERE status = 'sent' AND updated_at <= ?",
                (now, now - int(older_than_s)),
            )

    def wait_final(self, command_id: int, timeout: float, poll: float = 0.05) -> Command:
        """Poll until a command is confirmed or failed, or timeout seconds pass; return its last state."""
        deadline = time.monotonic() + timeout
        while True:
            cmd = self.get_command(command_id)
            if cmd.status in ("confirmed", "failed") or time.monotonic() >= deadline:
                return cmd
            time.sleep(poll)
