"""Moving a head-end's data to another store (`headend store migrate --to postgresql://...`).

Both stores are at the newest schema (opening them migrates), so their tables and columns are the
same; every row is copied with its ids, table by table in the order the tables were made (a row's
references already exist when it lands), all in one transaction on the target: a failed move
leaves the target empty. The target must be empty; afterwards each table's row count is compared
and the journal checked against the balances on the target.
"""

from __future__ import annotations

from typing import Callable

from headend.store.api import Store
from headend.store.models import Conflict, StoreError

__all__ = ["copy_store"]

# kept by the source only: which serve works it now, and the schema's own history (made by migrate)
_NOT_COPIED = {"schema_version", "serve_leases"}
_PAGE = 20_000


def copy_store(source: Store, target: Store, *, progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Copy every row of ``source`` into the empty ``target``; return the rows copied per table.

    Raises Conflict if the target holds data or the two schemas differ, StoreError if the copy
    does not check out (nothing is kept on the target then)."""
    src_db, dst_db = source._db, target._db
    if source.schema_version() != target.schema_version():
        raise Conflict(f"schema versions differ ({source.schema_version()} at {source.location},"
                       f" {target.schema_version()} at {target.location}): upgrade prepaid645 and open both once")
    tables = {t: cols for t, cols in src_db.table_columns().items() if t not in _NOT_COPIED}
    theirs = dst_db.table_columns()
    for table, cols in tables.items():
        if sorted(theirs.get(table, [])) != sorted(cols):
            raise Conflict(f"table {table} differs between {source.location} and {target.location}")
    counts: dict[str, int] = {}
    with dst_db.transaction() as out, src_db.transaction(write=False) as src:
        busy = [t for t in tables if out.one(f"SELECT 1 FROM {t} LIMIT 1")]
        if busy:
            raise Conflict(f"{target.location} already holds data (in {', '.join(busy[:5])}): a head-end moves"
                           " into an empty database only")
        for table, cols in tables.items():
            names = ", ".join(cols)
            insert = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' for _ in cols)})"
            n = 0
            for page in src.pages(f"SELECT {names} FROM {table}", size=_PAGE):
                out.executemany(insert, page)
                n += len(page)
                if progress is not None:
                    progress(table, n)
            counts[table] = n
        for table, n in counts.items():
            got = out.one(f"SELECT COUNT(*) FROM {table}")
            if got is None or int(got[0]) != n:
                raise StoreError(f"copy of {table} does not check out ({got and got[0]} rows, {n} read): nothing"
                                 " was kept on the target")
    dst_db.reset_identities()  # new rows on the target are numbered after the copied ones
    problems = target.check_ledger()
    if problems:
        raise StoreError(f"the journal on {target.location} does not match its balances after the copy:"
                         f" {'; '.join(problems[:3])}")
    return counts
