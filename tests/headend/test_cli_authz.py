"""Every state-changing CLI command goes through the operator login once an operator exists: no
login or a role that may not is refused (exit 2, audited, nothing changed); a login that may is
the actor of what the command records. Commands reached over real SQLite files, no doubles."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from headend.cli.main import main
from headend.grid.outages import plan_outage
from headend.keys import KeyStore
from headend.notices import notify_event
from headend.operators import hash_password
from headend.store import open_store
from tests.headend.payments_support import LOCAL_CUST, LOCAL_METER, REMOTE_CUST, REMOTE_METER, T0, money_store

PASSWORDS = {"root": "admin-pass-1", "olga": "operator-pass", "carol": "cashier-pass"}
KEY_PASSPHRASE = "key passphrase 1"
DAY = 86400
RATED_DAY = T0 - 5 * DAY                 # 2025-11-30 10:00 China time: a day with readings and a charge
OUTAGE_AT = "2025-12-06T08:00", "2025-12-06T12:00"
NEW_METER = "000000000077"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A head-end with meters, a grid, readings and a charge, an outage, a failed notice and a
    flagged account, a key file, and three operators (admin root, operator olga, cashier carol);
    built once because argon2 hashes are slow on purpose."""
    d = tmp_path_factory.mktemp("authz")
    (d / "p.toml").write_text('[notices]\nquiet = ""\nlanguage = "en"\n')
    KeyStore.create(d / "k.key", KEY_PASSPHRASE)
    with money_store(str(d / "h.db")) as s:
        s.update_account(REMOTE_CUST, actor="setup", tariff="beijing", phone="not-a-phone")
        s.update_account(LOCAL_CUST, actor="setup", phone="13800138000")
        s.add_readings((REMOTE_METER, "00010000", 5_000_000 + 1000 * h, RATED_DAY - 2 * 3600 + 3600 * h)
                       for h in range(30))
        s.charge_accounts("day-authz", [(REMOTE_CUST, 1, 0, 0)], actor="setup")
        s.import_grid([(LOCAL_METER, "F1", "A1", "0"), (REMOTE_METER, "F1", "A2", "0")], actor="setup")
        plan_outage(s, feeder="F1", start_at=T0 + DAY, end_at=T0 + DAY + 3600, reason="cable work", actor="setup",
                    now=T0)
        notify_event(s, REMOTE_CUST, "payment_received", {"amount_fen": 100, "balance_fen": 100, "channel": "counter"},
                     "pay:authz-1")
    cfg = ["--db", str(d / "h.db"), "--config", str(d / "p.toml")]
    assert main(["notices", "send", *cfg, "--at", str(T0)]) == 0          # a failed notice and a flagged account
    with open_store(str(d / "h.db")) as s:
        failed = s.find_notices(status="failed", customer=REMOTE_CUST)[0].id
        (d / "failed_notice").write_text(str(failed))
        notify_event(s, LOCAL_CUST, "payment_received", {"amount_fen": 100, "balance_fen": 100, "channel": "counter"},
                     "pay:authz-2")                                            # and one due, for `notices send`
        s.enqueue(LOCAL_METER, "trip", {}, actor="setup")                     # command 1, queued
        for name, role in (("root", "admin"), ("olga", "operator"), ("carol", "cashier")):
            s.add_operator(name, role, hash_password(PASSWORDS[name]), actor="setup")
    con = sqlite3.connect(d / "h.db")   # the CLI run above may still hold the file: copies need it whole
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    (d / "grid.csv").write_text(f"meter,feeder,area\n{LOCAL_METER},F2,A3\n")
    (d / "meters.csv").write_text(f"address,link,customer\n{NEW_METER},tcp://127.0.0.1:9077,000000000177\n")
    return d


# (name, command line, who may, who may not); {d}: the test's directory, {failed}: a failed notice
CASES: list[tuple[str, list[str], str, str]] = [
    ("trip", ["trip", REMOTE_METER, "--wait", "0"], "olga", "carol"),
    ("sync-time", ["sync-time", REMOTE_METER, "--wait", "0"], "olga", "carol"),
    ("commands cancel", ["commands", "cancel", "1"], "olga", "carol"),
    ("meter add", ["meter", "add", NEW_METER, "--link", "tcp://127.0.0.1:9077", "--customer", "000000000177"],
     "olga", "carol"),
    ("meter import", ["meter", "import", "{d}/meters.csv"], "olga", "carol"),
    ("meter set", ["meter", "set", LOCAL_METER, "--link", "tcp://127.0.0.1:9099"], "olga", "carol"),
    ("customer add", ["customer", "add", "000000000199", "--name", "Zhao"], "olga", "carol"),
    ("customer set", ["customer", "set", LOCAL_CUST, "--name", "Zhang San"], "olga", "carol"),
    ("grid import", ["grid", "import", "{d}/grid.csv"], "olga", "carol"),
    ("outage plan", ["outage", "plan", "--feeder", "F1", "--from", OUTAGE_AT[0], "--to", OUTAGE_AT[1],
                     "--reason", "transformer", "--at", str(T0)], "olga", "carol"),
    ("outage change", ["outage", "change", "1", "--reason", "transformer swap", "--at", str(T0)], "olga", "carol"),
    ("outage cancel", ["outage", "cancel", "1", "--at", str(T0)], "olga", "carol"),
    ("notices resend", ["notices", "resend", "{failed}"], "olga", "carol"),
    # after the outage: the round queues the clock re-syncs, as the acting operator
    ("notices send", ["notices", "send", "--at", str(T0 + DAY + 7200)], "olga", "carol"),
    ("notices flags --clear", ["notices", "flags", "--clear", REMOTE_CUST], "olga", "carol"),
    ("rate --apply", ["rate", "--from", "2025-11-30", "--to", "2025-12-01", "--apply"], "olga", "carol"),
    ("costctl run", ["costctl", "run", "--at", str(T0)], "olga", "carol"),
    ("keys init", ["keys", "init", "--key-file", "{d}/new.key"], "root", "olga"),
    ("keys passwd", ["keys", "passwd"], "root", "olga"),
    ("keys rotate", ["keys", "rotate"], "root", "olga"),
    ("store migrate", ["store", "migrate", "--to", "{d}/moved.db"], "root", "olga"),
]


def _rows(db: Path) -> tuple[dict[str, list[Any]], list[tuple[Any, ...]]]:
    """Every table's rows but the audit log's (and its id sequence), and the audit log."""
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        rows = {t: con.execute(f'SELECT * FROM "{t}"').fetchall()
                for t in tables if t not in ("audit", "sqlite_sequence")}
        audit = con.execute("SELECT id, actor, action, target FROM audit ORDER BY id").fetchall()
    finally:
        con.close()
    return rows, audit


def _files(d: Path) -> dict[str, bytes | None]:
    """The files beside the store (a new database, a new key file) and the key files' bytes."""
    return {p.name: p.read_bytes() if p.suffix == ".key" else None
            for p in d.iterdir() if not p.name.startswith("h.db")}


@pytest.fixture
def head_end(template, tmp_path, monkeypatch, capsys):
    """A copy of the template head-end and a runner: run(argv, actor, password) -> (code, out, err)."""
    for f in ("h.db", "k.key", "p.toml", "grid.csv", "meters.csv"):
        shutil.copy(template / f, tmp_path / f)
    monkeypatch.setenv("PREPAID645_DB", str(tmp_path / "h.db"))
    monkeypatch.setenv("PREPAID645_CONFIG", str(tmp_path / "p.toml"))
    monkeypatch.setenv("PREPAID645_KEY_FILE", str(tmp_path / "k.key"))
    monkeypatch.setenv("PREPAID645_KEY_PASSPHRASE", KEY_PASSPHRASE)
    monkeypatch.setenv("PREPAID645_NEW_KEY_PASSPHRASE", "key passphrase 2")
    for env in ("PREPAID645_OPERATOR", "PREPAID645_OPERATOR_PASSWORD"):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.chdir(tmp_path)
    failed = (template / "failed_notice").read_text()

    def run(argv: list[str], actor: str | None = None, password: str | None = None) -> tuple[int, str, str]:
        if password is not None:
            monkeypatch.setenv("PREPAID645_OPERATOR_PASSWORD", password)
        argv = [a.replace("{d}", str(tmp_path)).replace("{failed}", failed) for a in argv]
        code = main(argv + (["--actor", actor] if actor else []))
        out = capsys.readouterr()
        return code, out.out, out.err

    return tmp_path, run


@pytest.mark.parametrize("argv,may,may_not", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_without_a_login_or_for_a_role_that_may_not(head_end, argv, may, may_not):
    d, run = head_end
    rows, audit = _rows(d / "h.db")
    files = _files(d)
    for who, password, said, logged in (
        (None, None, "log in: give --actor NAME", "operator.login_refused"),
        (may, None, "no password", "operator.login_refused"),
        (may, "wrong-password", "wrong name or password", "operator.login_refused"),
        (may_not, PASSWORDS[may_not], f"operator {may_not} is", "operator.not_allowed"),
    ):
        code, out, err = run(argv, who, password)
        assert code == 2, (who, out, err)
        assert said in err, (who, err)
        rows_now, audit_now = _rows(d / "h.db")
        assert rows_now == rows, f"{argv} as {who} changed the store"
        [new] = audit_now[len(audit):]
        assert new[2] == logged and new[3] == who, new
        audit = audit_now
        assert _files(d) == files, f"{argv} as {who} changed a key or database file"


@pytest.mark.parametrize("argv,may,may_not", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_login_that_may_is_the_actor_of_what_it_records(head_end, argv, may, may_not):
    d, run = head_end
    _, audit = _rows(d / "h.db")
    code, out, err = run(argv, may, PASSWORDS[may])
    assert code in (0, 3), (out, err)                  # 3: a meter command queued, no serve running
    db = d / "moved.db" if argv[:2] == ["store", "migrate"] else d / "h.db"
    new = _rows(db)[1][len(audit):]
    assert new, f"{argv} recorded nothing"
    assert {a[1] for a in new} == {may}, new
