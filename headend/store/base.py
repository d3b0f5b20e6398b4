"""What every part of the store shares: the backend, the clock, transactions, small query helpers."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Self

from headend.store.backend import Backend, Tx
from headend.store.models import CHINA_UTC_OFFSET_S, Command, InvalidInput, TransactionLost


def _nonneg(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(f"{name} must be a whole number >= 0 (fen), got {value!r}")
    return value


class StoreBase:
    """The connection and clock under every part of `Store`."""

    # Business days (the ledger's daily close, same-day reversals) run on this local time.
    utc_offset_s: int = CHINA_UTC_OFFSET_S

    def __init__(self, backend: Backend, clock: Callable[[], float] = time.time) -> None:
        self._db = backend
        self._clock = clock

    def __repr__(self) -> str:
        return f"<Store {self._db.name}:{self._db.location}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def location(self) -> str:
        """Where the data lives (file path for SQLite)."""
        return self._db.location

    @property
    def address(self) -> str:
        """What opens another connection to the same database: the file path, or the server URL with
        its credentials (``location`` shows the URL without the password)."""
        return str(getattr(self._db, "url", self._db.location))

    def now(self) -> int:
        """The store's clock, integer Unix seconds (injectable for tests)."""
        return int(self._clock())

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def checkpoint_in_background(self) -> None:
        """For a long-running writer (`headend serve`): keep the engine's housekeeping (SQLite's
        WAL checkpoints) off its commits, where the engine can; a no-op elsewhere."""
        hook = getattr(self._db, "checkpoint_in_background", None)
        if hook is not None:
            hook()

    def checkpoint_every(self, pages: int) -> None:
        """Let the engine's log grow to about ``pages`` pages before it is copied back into the
        database (SQLite's WAL autocheckpoint; default 1,000), where the engine has such a log
        and no background checkpoints replace it; a no-op elsewhere.  A writer whose batches
        rewrite the same pages again and again (read cycles) sets it to what several of its
        batch sets dirty, so each page is copied back once for several rewrites."""
        hook = getattr(self._db, "checkpoint_every", None)
        if hook is not None:
            hook(pages)

    def migrate(self) -> int:
        """Apply pending schema migrations (idempotent); return the schema version."""
        return self._db.migrate()

    def schema_version(self) -> int:
        """The schema version of the open database."""
        return self._db.schema_version()

    def try_leader(self, role: str) -> bool:
        """Whether this process is the one doing ``role`` ("costctl") on this database: always on
        an SQLite file (one serve per file); on PostgreSQL the holder of an advisory lock, kept until
        this store closes or its process dies, when another head-end takes over."""
        return self._db.try_leader(role)

    @contextmanager
    def atomic(self, *, row_locked: bool = False) -> Iterator[None]:
        """Group several store calls into one transaction: all land, or none does.

        ``row_locked``: the calls inside lock what they read before they change it (taking payments
        does: ``headend.payments.accept_payments``), so on PostgreSQL the transaction runs beside
        other such ones (see headend/store/backend.py); calls that rely on being the only writer
        must not run inside one."""
        with self._db.transaction(row_locked=row_locked):
            yield

    @contextmanager
    def part(self) -> Iterator[None]:
        """A part of the open transaction that fails alone (a savepoint): an exception out of it
        undoes only the part's own writes, then goes on up; the transaction stays open."""
        with self._tx() as tx:
            tx.savepoint("part")
            try:
                yield
                # a write of the part still in flight fails here, inside the part, not in the next one
                tx.release("part")
            except BaseException as exc:
                try:
                    tx.execute("ROLLBACK TO SAVEPOINT part")
                    tx.execute("RELEASE SAVEPOINT part")
                except Exception as lost:  # the engine dropped the whole transaction (I/O error, disk full)
                    raise TransactionLost(f"a failed part ({exc!r}) could not be undone: {lost}") from lost
                raise

    @contextmanager
    def _tx(self, write: bool = True, *, row_locked: bool = False) -> Iterator[Tx]:
        with self._db.transaction(write, row_locked=row_locked) as tx:
            yield tx

    @staticmethod
    def _where(filters: dict[str, Any]) -> tuple[str, list[Any]]:
        parts, params = [], []
        for col, val in filters.items():
            if val is not None:
                parts.append(f"{col} = ?")
                params.append(val)
        return (" WHERE " + " AND ".join(parts) if parts else ""), params

    @staticmethod
    def _existing(tx: Tx, table: str, column: str, values: list[str]) -> set[str]:
        out: set[str] = set()
        for lo in range(0, len(values), 500):  # stay under every engine's parameter limit
            chunk = values[lo:lo + 500]
            out.update(r[0] for r in tx.all(f"SELECT {column} FROM {table} WHERE {column} IN"
                                            f" ({', '.join('?' for _ in chunk)})", chunk))
        return out

    def _command_moved(self, tx: Tx, cmd: Command) -> None:
        """Called inside the transaction that moved a command to a new status, with the command
        as it now is: parts whose records follow the outbox (payments, meter limits) extend it
        and call super()."""
