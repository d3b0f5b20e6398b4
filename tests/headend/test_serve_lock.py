"""One `headend serve` per database, whichever path names the file: a second serve on the same
file (through a symlink or a hard link) is refused with a message, before it touches the outbox."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.headend.headend_proc import ROOT, HeadEnd
from tools.proc import wait_for_line


@pytest.fixture
def he(tmp_path):
    h = HeadEnd(tmp_path)
    yield h
    h.stop_serve()


def _second_serve(he: HeadEnd, db: str) -> tuple[int, str]:
    """Start another serve on `db`; (exit code, output). One that starts working is stopped and
    reported as exit 0, which is what the test refuses."""
    env = {**os.environ, **he.env, "PREPAID645_DB": db}
    p = subprocess.Popen([sys.executable, "-m", "headend.cli.main", "serve"], cwd=str(ROOT), env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    serving = wait_for_line(p, "headend serve: working", seen, 60)
    if serving:  # the lock did not hold
        p.terminate()
    p.wait(60)
    return (0 if serving else p.returncode), "".join(seen)


@pytest.mark.parametrize("how", ["symlink", "hardlink", "sqlite-url"])
def test_a_second_serve_through_another_path_to_the_same_file_is_refused(he, tmp_path, how):
    he.start_serve()
    other = tmp_path / "elsewhere"
    other.mkdir()
    alias = other / "same.db"
    if how == "symlink":
        alias.symlink_to(he.db)
    elif how == "hardlink":
        os.link(he.db, alias)
    code, out = _second_serve(he, f"sqlite:///{he.db}" if how == "sqlite-url" else str(alias))
    assert code == 1, out
    assert "already working" in out
    if how != "hardlink":  # (through a hard link SQLite cannot even read the file: its WAL is by name)
        assert f"pid {he.serve_proc.pid}" in out and str(he.db.resolve()) in out
    assert he.serve_proc is not None and he.serve_proc.poll() is None  # the first one carries on


def test_serve_can_start_again_after_the_first_one_stopped(he):
    he.start_serve()
    assert he.stop_serve() == 0
    he.start_serve()


def test_a_serve_on_another_host_holding_the_lease_in_the_database_is_refused(he):
    import time

    from headend.store import open_store

    # the other host's heartbeat is stamped an hour ahead: fresh for the whole test, however slow
    with open_store(he.db, clock=lambda: time.time() + 3600) as other:
        other.take_lease(4242, "other-host", "/mnt/shared/headend.db")
    code, out, err = he.cli("serve")
    assert code == 1
    assert "pid 4242 on other-host" in err and "/mnt/shared/headend.db" in err
    with he.store() as s:
        assert s.serve_alive() is None or s.serve_alive()["host"] == "other-host"
