"""The small interface between the store's logic and a database engine.

The store's modules (`headend/store/*.py`) speak only portable SQL through this interface: `?`
placeholders (a PostgreSQL backend rewrites them to `%s`), `INSERT ... ON CONFLICT DO NOTHING`,
`RETURNING`, no engine-specific functions. Everything engine-specific (connection set-up, pragmas, DDL and
migrations, transaction start) lives in one backend module: `headend/store/sqlite.py` or
`headend/store/postgres.py` (which renders sqlite.py's migrations for PostgreSQL). Where a query
must differ by engine, the difference is a small hook here (`Tx.skip_locked`, `Tx.for_update`,
`Tx.ids_in_commit_order`, `Tx.lock`, `Tx.one_of`, `Tx.tables_of`, `Backend.try_leader`).

Write transactions are one at a time by default: the store's logic may read, decide, then write.
A write transaction opened with ``row_locked=True`` promises instead that the code in it locks
what it reads before it changes it (`Tx.for_update` on the rows, `Tx.lock` on keys such as a
payment's transaction id); an engine with row locks (PostgreSQL) then runs such transactions
side by side, and keeps each of them apart from every other write transaction.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Collection, Iterable, Iterator, Protocol, Sequence

__all__ = ["Backend", "Fetched", "Rows", "Tx"]


class Rows(Protocol):
    """The rows of a submitted query (``Tx.submit``), read once."""

    def all(self) -> list[tuple[Any, ...]]:
        """Every row (waiting for them if they are still on their way)."""
        ...

    def one(self) -> tuple[Any, ...] | None:
        """The first row, or None."""
        ...


class Fetched:
    """``Rows`` already read (an engine that runs a submitted query at once)."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self._rows = rows

    def all(self) -> list[tuple[Any, ...]]:
        """Every row."""
        return self._rows

    def one(self) -> tuple[Any, ...] | None:
        """The first row, or None."""
        return self._rows[0] if self._rows else None


class Tx(Protocol):
    """An open transaction. Every statement runs inside it; it commits or rolls back as a whole."""

    # appended to a claim's SELECT: on an engine with row locks, rows another process is claiming
    # are passed over instead of waited for ("" where the engine has one writer at a time)
    skip_locked: str

    # appended to a SELECT of rows this transaction goes on to change: on an engine with row locks
    # another writer of them waits until this transaction ends ("" with one writer at a time)
    for_update: str

    # whether rows' ids are committed in the order they were taken (one writer at a time), so a
    # reader that saw id N will never see a smaller id appear later (a cursor over new rows)
    ids_in_commit_order: bool

    # an expression of the accounts table that finds one row fastest, for a bulk writer that read
    # it in the same cycle: SQLite's rowid (its own key: no look-up in the customer index), the
    # customer where the engine has no row number; a write by it also checks the customer, as a
    # rowid may be renumbered (VACUUM) between the read and the write
    account_key: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Run one statement for each parameter row; return the total number of rows changed."""
        ...

    def lock(self, keys: Sequence[str]) -> None:
        """Hold a lock on each key (any text) until the transaction ends: another transaction locking
        one of them waits for this one (nothing to do with one writer at a time)."""
        ...

    def write(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement whose outcome the caller does not read (no rows, no count). An engine
        may send it with the next statement whose result is read, or with the commit (PostgreSQL
        pipelines it: no round trip of its own); if it fails, the transaction fails there."""
        ...

    def write_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """``write`` once for each parameter row."""
        ...

    def insert_many(self, head: str, row: str, rows: Iterable[Sequence[Any]], tail: str = "") -> int:
        """``head + row + tail`` (``INSERT ... VALUES``, the row's ``(?, ...)``, then e.g. ``ON
        CONFLICT DO NOTHING``, no ``RETURNING``) for every parameter row, in order, as the engine
        appends many rows best; return rows inserted.  Multi-row VALUES on SQLite (a half to a
        third less time than a statement per row), ``unnest`` arrays on PostgreSQL (``insert_rows``' statement, 10,000 rows each)."""
        ...

    def submit(self, sql: str, params: Sequence[Any] = ()) -> "Rows":
        """Send a query now and read its rows later (``Rows.all``, ``Rows.one``): queries submitted
        one after another go out together where the engine pipelines them (PostgreSQL: one round
        trip for all of them and the writes before them)."""
        ...

    def insert_rows(self, head: str, row: str, rows: Sequence[Sequence[Any]], tail: str = "") -> list[tuple[Any, ...]]:
        """``head + row + tail`` (``INSERT ... VALUES``, the row's ``(?, ...)``, then e.g. ``ON
        CONFLICT ...`` and ``RETURNING ...``) for every parameter row, as the engine does it best;
        every returned row, in no promised order: multi-row VALUES, as many rows a statement as the
        engine takes well (``row_chunks``; PostgreSQL's driver parses a statement of over 50
        parameters anew every time)."""
        ...

    def one_of(self, expr: str, values: Collection[Any]) -> tuple[str, list[Any]]:
        """``expr IN (values)`` written as this engine runs it best, and its parameters: one ``?``
        per value on SQLite; one array parameter on PostgreSQL (``expr = ANY(?)``: the same
        statement text however many values, so it is parsed and planned once, not per call)."""
        ...

    def tables_of(self, name: str, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]],
                  others: int = 0) -> Iterator[tuple[str, list[Any]]]:
        """The parameter rows as tables to join (``UPDATE t SET ... FROM <table> WHERE ...``), each
        named ``name``, with ``columns`` (name, SQL type), and their parameters: one statement's
        worth each, for a statement with ``others`` parameters besides the table's. On PostgreSQL
        one table of an array parameter per column (one statement text however many rows); on
        SQLite ``VALUES`` of as many rows as keep a statement under its 999 parameters. No rows,
        no table."""
        ...

    def savepoint(self, name: str) -> None:
        """Mark a savepoint (``ROLLBACK TO SAVEPOINT name`` undoes what follows). Statements sent
        earlier and not yet answered are waited for first, so that their failure is raised here and
        not after the savepoint; the savepoint itself may then go out with the next statement."""
        ...

    def release(self, name: str) -> None:
        """Forget a savepoint, keeping what followed it. If statements sent since the last answer
        are still in flight this waits for them, so that a failure among them is raised here,
        before the savepoint is gone; otherwise the release may go out with the next statement."""
        ...

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a query and return every row."""
        ...

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """Run a query and return its first row, or None."""
        ...

    def pages(self, sql: str, params: Sequence[Any] = (), size: int = 50_000) -> Iterator[list[tuple[Any, ...]]]:
        """Run a query and yield its rows in lists of up to ``size`` (large results, bounded memory)."""
        ...

    def columns(self, sql: str, kinds: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run a query and return its columns, not its rows: per ``kinds`` letter, "i" an integer
        column as an int64 array (NULL as -1), "t" a text column as a list of str (NULL as None).
        For a bulk reader of a million rows: where the engine can, it packs each column itself, so
        no Python value is made per value."""
        ...


class Backend(Protocol):
    """A database engine the store can run on."""

    name: str
    location: str
    # how many outermost transactions this backend has opened: a transaction is told apart from
    # the one before it by this number (the nonces' memory: headend/store/api_state.py)
    serial: int

    def transaction(self, write: bool = True, *, row_locked: bool = False) -> AbstractContextManager[Tx]:
        """Open a transaction (nested calls join the outer one); commit on success, roll back on error.
        ``row_locked``: see the module docstring."""
        ...

    def migrate(self) -> int:
        """Bring the schema to the newest version (idempotent, safe with concurrent callers); return it."""
        ...

    def schema_version(self) -> int:
        """The schema version currently applied."""
        ...

    def table_columns(self) -> dict[str, list[str]]:
        """Every table of the schema with its columns, tables in the order they were made (a table
        comes after those it references), columns in their order."""
        ...

    def reset_identities(self) -> None:
        """After rows were copied in with their ids, let new rows be numbered after them."""
        ...

    def try_leader(self, role: str) -> bool:
        """Whether this process is (now) the one doing ``role`` on this database (cost control):
        held until the connection closes."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


def values_statements(head: str, row: str, rows: Sequence[Sequence[Any]], tail: str,
                      max_params: int) -> Iterator[tuple[str, list[Any]]]:
    """``head + row, row, ... + tail`` and its parameters for every piece of ``rows`` (multi-row
    ``INSERT ... VALUES``): as many rows a statement as keep it within ``max_params`` parameters,
    at most 32, in the few lengths of ``row_chunks``."""
    most = 32
    while most > 1 and most * row.count("?") > max_params:
        most //= 2
    for chunk in row_chunks(rows, most):
        yield f"{head}{', '.join([row] * len(chunk))}{tail}", [v for r in chunk for v in r]


def row_chunks(rows: Sequence[Any], most: int) -> Iterator[Sequence[Any]]:
    """``rows`` in pieces each a power of two long, at most ``most`` (a power of two), largest
    first: multi-row statements of a few texts only, which the engine keeps compiled."""
    lo = 0
    while lo < len(rows):
        n = min(most, 1 << ((len(rows) - lo).bit_length() - 1))
        yield rows[lo:lo + n]
        lo += n


def columns_of_rows(pages: Iterable[list[tuple[Any, ...]]], kinds: str) -> list[Any]:
    """``Tx.columns`` from a query's rows (``Tx.pages``), for an engine that does not pack columns."""
    import numpy as np

    from headend.store.models import StoreError

    ints: list[list[Any]] = [[] for _ in kinds]
    texts: list[list[Any]] = [[] for _ in kinds]
    # a text repeated down a column (a tariff, a state) is kept once, not once a row; a column
    # found to be mostly distinct values (a customer) is taken as it comes
    shared: list[dict[Any, Any] | None] = [{} for _ in kinds]
    for page in pages:
        for k, (kind, col) in enumerate(zip(kinds, zip(*page))):
            if kind == "i":
                try:
                    ints[k].append(np.array([-1 if v is None else v for v in col] if None in col else col,
                                            dtype=np.int64))
                except (TypeError, ValueError) as exc:
                    raise StoreError(f"column {k} of a query is not all integers ({exc}): columns(kinds) says"
                                     " which are text") from exc
            elif (seen := shared[k]) is not None:
                texts[k].extend([seen.setdefault(v, v) for v in col])
                if len(seen) > 4096:
                    shared[k] = None
            else:
                texts[k].extend(col)
    return [(np.concatenate(ints[k]) if ints[k] else np.zeros(0, dtype=np.int64)) if kind == "i" else texts[k]
            for k, kind in enumerate(kinds)]
