"""The store suite on both engines: `store_db` gives each test a fresh database location, once on
an SQLite file and once on a PostgreSQL server that the tests start themselves (tools/pg_server.py:
initdb + pg_ctl in a temporary folder, as the `postgres` user when run as root)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from tools.pg_server import PgServer, PgUnavailable


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server per test process, stopped at the end."""
    try:
        server = PgServer()
    except PgUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI and missing: {exc}")
        pytest.skip(f"POSTGRESQL TESTS SKIPPED: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_template(pg_server: PgServer) -> str:
    """A migrated database that each test's database is copied from (migrating is its own test)."""
    from headend.store import open_store

    name = "store_template"
    open_store(pg_server.create_db(name=name)).close()
    pg_server.sql(f"ALTER DATABASE {name} IS_TEMPLATE true")
    return name


@pytest.fixture(params=["sqlite", "postgresql"])
def store_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store location on each engine: an SQLite file path or a postgresql:// URL."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    server: PgServer = request.getfixturevalue("pg_server")
    return server.create_db(request.getfixturevalue("pg_template"))


def raw_sql(location: str, sql: str, params: tuple = ()) -> None:
    """Change a store's database behind its back (what a damaged or tampered database looks like),
    on either engine, through the engine's own driver."""
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location, autocommit=True) as conn:
            conn.execute(sql.replace("?", "%s"), params)
        return
    import sqlite3

    raw = sqlite3.connect(location)
    try:
        raw.execute(sql, params)
        raw.commit()
    finally:
        raw.close()
