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

from headend.store import api as _api
from headend.store import models as _models
from headend.store.api import *  # noqa: F403 - the package exports what api.py and models.py export
from headend.store.api import Store
from headend.store.models import *  # noqa: F403
from headend.store.models import InvalidInput

# one list of public names: each module's __all__, not a copy of them here
__all__ = ["open_store"]
__all__ += _api.__all__
__all__ += _models.__all__


def open_store(
    location: str | os.PathLike[str],
    *,
    migrate: bool = True,
    clock: Callable[[], float] = time.time,
    check: bool = False,
) -> Store:
    """Open the store at a path (or "sqlite:///path", or ":memory:"), migrating the schema by default.

    A new file is created mode 0600. With ``check``, a file that fails SQLite's quick integrity
    check is refused (StoreError) before anything is written to it."""
    loc = os.fspath(location)
    if loc.startswith(("postgres://", "postgresql://")):
        raise InvalidInput(
            f"{loc.split('://')[0]} is not supported yet: only SQLite files (a path or sqlite:///path) can be opened"
        )
    if loc.startswith("sqlite://"):
        loc = loc[len("sqlite://"):]
        if loc.startswith("/") and loc[1:2] == "/":  # sqlite:////abs/path style
            loc = loc[1:]
        elif loc.startswith("/"):
            loc = loc[1:] or ":memory:"
    from headend.store.sqlite import SQLiteBackend  # the one place that knows the engine

    store = Store(SQLiteBackend(loc, check=check), clock=clock)
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
    return store
