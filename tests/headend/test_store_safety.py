"""The database file itself: created readable by its owner only (with its WAL and shared-memory
files), and a damaged file is refused when opened with the check, before anything is written."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from headend.store import StoreError, open_store


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_a_new_database_and_its_wal_and_shm_files_are_0600(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    s = open_store(db)
    s.add_meter("000000000001", link="tcp://127.0.0.1:9", customer="000000000042", actor="t")
    files = [db, tmp_path / "h.db-wal", tmp_path / "h.db-shm"]
    assert all(f.exists() for f in files)
    assert [_mode(f) for f in files] == [0o600] * 3
    s.close()


def test_a_damaged_database_is_refused_with_a_clear_message_and_not_written(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    s = open_store(db)
    for i in range(1, 400):
        s.add_meter(f"{i:012d}", link="tcp://127.0.0.1:9", customer="000000000042", actor="t")
    s.close()  # the WAL is checkpointed into the file
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    for off in range(3 * page, 6 * page):  # whole table/index pages, not the header page
        data[off] = 0xA5
    db.write_bytes(bytes(data))
    before = db.read_bytes()
    with pytest.raises(StoreError, match=r"h\.db failed its integrity check") as got:
        open_store(db, check=True)
    assert "restore it from a backup" in str(got.value)
    assert db.read_bytes() == before


def test_the_cli_refuses_a_damaged_database(tmp_path: Path) -> None:
    from tests.headend.headend_proc import HeadEnd

    he = HeadEnd(tmp_path)
    assert he.cli("customer", "add", "000000000042")[0] == 0
    for i in range(1, 400):
        assert he.cli("meter", "add", f"{i:012d}", "--link", "tcp://127.0.0.1:9", "--customer", "000000000042")[0] == 0
    data = bytearray(he.db.read_bytes())
    data[3 * 4096:6 * 4096] = b"\xa5" * (3 * 4096)
    he.db.write_bytes(bytes(data))
    code, out, err = he.cli("trip", "000000000001", "--wait", "0")
    assert code == 1 and "failed its integrity check" in err and "Traceback" not in err


def test_checkpoints_in_the_background_leave_commits_alone_and_still_reach_the_file(tmp_path):
    import os
    import time as _time

    from headend.store import open_store

    db = tmp_path / "ck.db"
    s = open_store(str(db))
    s._db.checkpoint_in_background(every_s=0.05)
    with s._tx(write=False) as tx:
        assert tx.one("PRAGMA wal_autocheckpoint") == (0,)   # no commit checkpoints by itself
    before = os.path.getsize(db)
    with s.atomic():
        for i in range(3000):
            s.add_account(f"{700000000000 + i:012d}", actor="t", name="x" * 200)
    deadline = _time.monotonic() + 60
    while os.path.getsize(db) <= before and _time.monotonic() < deadline:
        _time.sleep(0.05)
    assert os.path.getsize(db) > before          # the accounts reached the database file
    thread = s._db._checkpointer[1]
    s.close()
    assert not thread.is_alive()
