"""`headend store migrate --to postgresql://...`: an SQLite head-end moved to a real PostgreSQL server,
every row with its ids, checked; a target that holds data or cannot be reached is refused."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from headend.payments import accept_payment
from headend.store import Reading, open_store
from tests.headend.payments_support import LOCAL_CUST, REMOTE_CUST, T0, confirm_recharge, money_store
from tests.headend.store_support import Clock

ROOT = Path(__file__).resolve().parents[2]


def headend(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREPAID645_")}
    return subprocess.run([sys.executable, "-m", "headend.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


@pytest.fixture
def sqlite_head_end(tmp_path: Path) -> str:
    """An SQLite head-end that has lived a little: payments (one to a meter, confirmed), readings,
    an event, a command, a bank batch's bytes, audit rows."""
    path = str(tmp_path / "old.db")
    s = money_store(path, Clock(T0))
    p = accept_payment(s, channel_id="agent", txn_id="A1", amount_fen=5000, paid_at=T0, customer=LOCAL_CUST,
                       actor="a")
    confirm_recharge(s, p.command_id)
    accept_payment(s, channel_id="counter", txn_id="C1", amount_fen=700, paid_at=T0, customer=REMOTE_CUST, actor="b")
    s.add_readings([Reading("000000000002", "00010000", 123456, T0 - 900), Reading("000000000002", "00010000",
                                                                                  123999, T0)])
    s.add_event("000000000002", "relay", {"to": "open"}, dedup="r1")
    s.enqueue("000000000002", "read", {"dis": ["00900200"]}, actor="c")
    s.close()
    raw = sqlite3.connect(path)  # the one table with bytes (bank batches)
    raw.execute("INSERT INTO bank_batches (bank, day, rows, total_fen, content, created_at, actor)"
                " VALUES ('icbc', '2025-12-05', 0, 0, ?, 0, 'x')", (b"\x00\xff GBK \xd5\xc5",))
    raw.commit()
    raw.close()
    return path


def _rows(conn, table: str) -> list[tuple]:
    return sorted((tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                   for r in conn.execute(f"SELECT * FROM {table}").fetchall()), key=repr)


def test_an_sqlite_head_end_moves_to_postgresql_with_every_row_and_id(sqlite_head_end, pg_server) -> None:
    url = pg_server.create_db()
    r = headend("store", "migrate", "--db", sqlite_head_end, "--to", url, "--json", "--actor", "ops")
    assert r.returncode == 0, r.stderr
    counts = json.loads(r.stdout)["rows"]
    assert counts["payments"] == 2 and counts["readings"] == 2 and counts["bank_batches"] == 1
    raw = sqlite3.connect(sqlite_head_end)
    tables = [t for (t,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                        " AND name NOT IN ('schema_version', 'serve_leases', 'sqlite_sequence')")]
    with psycopg.connect(url) as pg:
        for table in tables:
            if table == "audit":
                continue  # the target has one more: the move itself
            assert _rows(pg, table) == _rows(raw, table), table
        assert len(_rows(pg, "audit")) == len(_rows(raw, "audit")) + 1
    raw.close()
    s = open_store(url, clock=Clock(T0))
    try:
        assert s.check_ledger() == []
        assert s.get_account(REMOTE_CUST).balance_fen == 700
        # new rows are numbered after the copied ones, and the copied idempotency keys still hold
        p = accept_payment(s, channel_id="agent", txn_id="A2", amount_fen=100, paid_at=T0, customer=REMOTE_CUST,
                           actor="a")
        assert p.id == 3
        again = accept_payment(s, channel_id="counter", txn_id="C1", amount_fen=700, paid_at=T0,
                               customer=REMOTE_CUST, actor="b")
        assert again.id == 2 and s.get_account(REMOTE_CUST).balance_fen == 800
    finally:
        s.close()


def test_a_target_with_data_or_out_of_reach_is_refused_and_nothing_changes(sqlite_head_end, pg_server,
                                                                           tmp_path) -> None:
    url = pg_server.create_db()
    assert headend("store", "migrate", "--db", sqlite_head_end, "--to", url).returncode == 0
    r = headend("store", "migrate", "--db", sqlite_head_end, "--to", url)
    assert r.returncode == 2 and "already holds data" in r.stderr
    with psycopg.connect(url) as pg:
        assert pg.execute("SELECT COUNT(*) FROM payments").fetchone() == (2,)
    r = headend("store", "migrate", "--db", sqlite_head_end, "--to", f"postgresql://x:pw@/db?host={tmp_path}&port=1")
    assert r.returncode != 0 and "cannot connect to the database" in r.stderr and "pw@" not in r.stderr


def test_the_cli_works_on_postgresql_through_db(pg_server, pg_template) -> None:
    url = pg_server.create_db(pg_template)
    r = headend("meter", "add", "--db", url, "000000000001", "--link", "tcp://127.0.0.1:9001", "--customer",
                "000000000042", "--actor", "alice")
    assert r.returncode == 0, r.stderr
    r = headend("meter", "list", "--db", url, "--json")
    assert r.returncode == 0, r.stderr
    assert [m["address"] for m in json.loads(r.stdout)] == ["000000000001"]
