"""Head-end persistent state: `open_store(path)` returns a migrated, ready `Store`.

    from headend.store import open_store, Reading
    store = open_store("prepaid645.db")               # SQLite file, WAL, schema migrated
    cmd = store.enqueue("000000000001", "trip", {}, actor="alice")
    [cmd] = store.claim_next(limit=1)                  # queued -> sent (one in flight per meter)
    store.confirm(cmd.id, reply={"status3": "0x0040"})
    store.add_readings([("000000000001", "00010000", 123456, 1764000000)])

See api.py for the transaction rules and the module of each concern, models.py for the records
and errors.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from headend import config as _config
from headend.store import api as _api
from headend.store import models as _models
from headend.store.api import *  # noqa: F403 - the package exports what api.py and models.py export
from headend.store.api import Store
from headend.store.backend import Backend
from headend.store.models import *  # noqa: F403
from headend.store.models import InvalidInput

# one list of public names: each module's __all__, not a copy of them here
__all__ = ["open_store", "sqlite_path"]
__all__ += _api.__all__
__all__ += _models.__all__


def sqlite_path(location: str) -> str | None:
    """The SQLite file a store location names (a path, "sqlite:///PATH", ":memory:"), or None for
    a PostgreSQL server's URL; InvalidInput for any other URL."""
    try:
        return _config.sqlite_path(location)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def open_store(
    location: str | os.PathLike[str],
    *,
    migrate: bool = True,
    clock: Callable[[], float] = time.time,
    check: bool = False,
) -> Store:
    """Open the store at a path (or "sqlite:///path", ":memory:", or a PostgreSQL server's
    "postgresql://user[:password]@host[:port]/dbname"), migrating the schema by default.

    A new file is created mode 0600. With ``check``, a file that fails SQLite's quick integrity
    check is refused (StoreError) before anything is written to it. An unreachable server or a
    wrong URL is a StoreError naming the URL (without its password)."""
    loc = os.fspath(location)
    backend: Backend
    path = sqlite_path(loc)
    if path is None:
        from headend.store.postgres import PostgresBackend  # psycopg is loaded only for a server URL

        backend = PostgresBackend(loc)
    else:
        loc = path
        from headend.store.sqlite import SQLiteBackend  # the one place that knows the engine

        backend = SQLiteBackend(loc, check=check)
    store = Store(backend, clock=clock)
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
    return store
