"""Operators and roles: argon2 hashes, login, role checks, and the actor recorded for every action."""

from __future__ import annotations

import pytest

from headend.cli.main import main
from headend.operators import AuthError, authenticate, hash_password, verify_password
from headend.store import InvalidInput, open_store
from tests.headend.payments_support import REMOTE_CUST, REMOTE_METER, T0, assert_books_balance, money_store
from tests.headend.store_support import Clock


def test_passwords_are_argon2_hashes_never_kept_in_the_clear(tmp_path):
    h = hash_password("long enough pw")
    assert h.startswith("$argon2id$") and "long enough pw" not in h
    assert verify_password(h, "long enough pw") and not verify_password(h, "long enough pX")
    assert not verify_password("not a hash", "x")
    with pytest.raises(AuthError, match="8 characters"):
        hash_password("short")
    with open_store(str(tmp_path / "o.db")) as s:
        with pytest.raises(InvalidInput, match="hash"):
            s.add_operator("eve", "admin", "plain password", actor="t")
        op = s.add_operator("ann", "auditor", h, actor="t", full_name="Ann")
        assert "pw_hash" not in op.to_dict()


def test_authenticate_checks_password_role_and_enabled(tmp_path):
    with open_store(str(tmp_path / "o.db"), clock=Clock(T0)) as s:
        s.add_operator("carol", "cashier", hash_password("cashier-pw"), actor="root")
        assert authenticate(s, "carol", "cashier-pw", "counter").name == "carol"
        with pytest.raises(AuthError, match="needs one of admin, operator"):
            authenticate(s, "carol", "cashier-pw", "recharge")
        with pytest.raises(AuthError, match="wrong name or password"):
            authenticate(s, "carol", "nope-nope", "counter")
        with pytest.raises(AuthError, match="wrong name or password"):
            authenticate(s, "nobody", "cashier-pw", "counter")
        s.update_operator("carol", actor="root", enabled=False)
        with pytest.raises(AuthError):
            authenticate(s, "carol", "cashier-pw", "counter")
        refused = [a for a in s.audit_entries(limit=50) if a.action == "operator.login_refused"]
        assert [a.target for a in refused] == ["carol", "nobody", "carol"]
        changed = s.audit_entries(action="operator.update")[0]
        assert changed.actor == "root" and changed.detail == {"enabled": [True, 0]}


def test_operator_commands_and_who_did_it(tmp_path, monkeypatch, capsys):
    db = str(tmp_path / "ops.db")
    money_store(db).close()
    monkeypatch.setenv("PREPAID645_DB", db)
    monkeypatch.delenv("PREPAID645_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)

    def run(*argv, actor=None, password=None, new=None):
        for env, v in (("PREPAID645_OPERATOR_PASSWORD", password), ("PREPAID645_NEW_PASSWORD", new)):
            if v is not None:
                monkeypatch.setenv(env, v)
        code = main([*argv, *(("--actor", actor) if actor else ())])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, _, err = run("operator", "add", "olga", "--role", "operator", new="operator-pw", actor="x")
    assert code == 2 and "first operator must be an admin" in err
    assert run("operator", "add", "root", "--role", "admin", new="admin-pw-1", actor="installer")[0] == 0
    code, _, err = run("operator", "add", "olga", "--role", "operator", new="operator-pw")
    assert code == 2 and "log in" in err                      # operators exist: who is acting?
    assert run("operator", "add", "olga", "--role", "operator", new="operator-pw", actor="root",
               password="admin-pw-1")[0] == 0
    code, out, _ = run("operator", "list")
    assert "olga" in out and "argon2" not in out
    code, _, err = run("recharge", REMOTE_METER, "9", "--wait", "0", actor="olga", password="wrong-pw!")
    assert code == 2
    code, out, err = run("recharge", REMOTE_METER, "9", "--wait", "0", actor="olga", password="operator-pw")
    assert code == 0, err
    assert run("operator", "passwd", "olga", actor="olga", password="operator-pw", new="operator-pw-2")[0] == 0
    code, _, err = run("operator", "disable", "root", actor="olga", password="operator-pw-2")
    assert code == 2 and "needs one of admin" in err
    assert run("operator", "disable", "olga", actor="root", password="admin-pw-1")[0] == 0
    code, _, err = run("recharge", REMOTE_METER, "9", "--wait", "0", actor="olga", password="operator-pw-2")
    assert code == 2 and "disabled" in err
    with open_store(db) as s:
        [p] = s.list_payments()
        assert p.actor == "olga" and s.ledger(REMOTE_CUST)[0].actor == "olga"
        assert s.audit_entries(action="payment.accept")[0].actor == "olga"
        assert s.audit_entries(action="operator.add")[0].actor == "root"
        assert_books_balance(s)
