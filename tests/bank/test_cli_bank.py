"""`headend bank ...` through the real CLI entry point on a real SQLite file and key file:
agreement add/show/remove, export once (the same bytes again), import once, a bad file refused."""

from __future__ import annotations

import json

import pytest

from headend.bank import load_profile
from headend.cli.main import main
from headend.store import open_store
from tests.bank.support import bank_answer
from tests.headend.payments_support import assert_books_balance

PASS = "correct horse battery"
CUST, METER = "000000000101", "000000000001"


@pytest.fixture
def db(tmp_path, monkeypatch):
    path = str(tmp_path / "cli.db")
    monkeypatch.setenv("PREPAID645_DB", path)
    monkeypatch.delenv("PREPAID645_CONFIG", raising=False)
    monkeypatch.delenv("PREPAID645_OPERATOR", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREPAID645_KEY_PASSPHRASE", PASS)
    monkeypatch.setenv("USER", "alice")
    with open_store(path) as s:
        s.add_account(CUST, actor="t", name="张三")
        s.add_meter(METER, link="tcp://127.0.0.1:9", customer=CUST, actor="t", mode="local")
    yield path
    with open_store(path) as s:
        assert s.check_ledger() == []
        assert_books_balance(s)


def run(capsysbinary, *argv):
    code = main(list(argv))
    out = capsysbinary.readouterr()
    return code, out.out, out.err.decode()


def test_agreement_export_and_import_once_each(db, tmp_path, capsysbinary):
    key_file = str(tmp_path / "keys.json")
    assert run(capsysbinary, "keys", "init", "--key-file", key_file)[0] == 0
    code, out, err = run(capsysbinary, "bank", "agreement", "add", CUST, "--bank", "icbc", "--account",
                         "6222 0211 0000 1234", "--holder", "张三", "--agreement", "W-77", "--topup", "50",
                         "--below", "20", "--key-file", key_file)
    assert code == 0, err
    assert "6222********1234" in out.decode() and "62220211" not in out.decode()
    code, out, err = run(capsysbinary, "bank", "agreement", "show", CUST, "--json")
    assert json.loads(out)["account"] == "6222********1234"

    code, first, err = run(capsysbinary, "bank", "export", "--bank", "ICBC", "--date", "2025-12-05",
                           "--key-file", key_file)
    assert code == 0, err
    assert b"6222021100001234" in first and "张三".encode("gbk") in first
    assert "batch 1: ICBC 2025-12-05, 1 row(s), 50.00 yuan" in err
    code, again, err = run(capsysbinary, "bank", "export", "--bank", "ICBC", "--date", "2025-12-05")
    assert (code, again) == (0, first) and "exported before: the same file" in err

    ret = tmp_path / "ret.txt"
    ret.write_bytes(bank_answer(load_profile("ICBC"), first))
    code, out, err = run(capsysbinary, "bank", "import", str(ret))
    assert code == 0, err
    assert "batch 1 (ICBC 2025-12-05) applied: 1 debited" in out.decode()
    code, out, err = run(capsysbinary, "bank", "import", str(ret))
    assert code == 0 and "already imported" in out.decode() and "nothing changed" in out.decode()
    with open_store(db) as s:
        [p] = s.list_payments()
        [cmd] = s.list_commands(kind="recharge")
        assert (p.channel_id, p.amount_fen, cmd.meter, cmd.params["amount_fen"]) == ("bank-icbc", 5000, METER, 5000)

    code, out, err = run(capsysbinary, "bank", "agreement", "remove", CUST)
    assert code == 0 and "removed" in out.decode()


def test_customer_show_has_the_agreement_masked_and_customer_set_points_to_bank_agreement(db, tmp_path,
                                                                                         capsysbinary):
    key_file = str(tmp_path / "keys.json")
    assert run(capsysbinary, "keys", "init", "--key-file", key_file)[0] == 0
    assert run(capsysbinary, "bank", "agreement", "add", CUST, "--bank", "ICBC", "--account", "6222021100001234",
               "--holder", "张三", "--agreement", "W-77", "--settle-month", "--key-file", key_file)[0] == 0
    with open_store(db) as s:
        sealed = s.get_account(CUST).withholding["sealed"]
    code, out, err = run(capsysbinary, "customer", "show", CUST)
    assert code == 0, err
    shown = out.decode()
    assert "6222********1234" in shown and "W-77" in shown
    assert "6222021100001234" not in shown and "sealed" not in shown and str(sealed)[:16] not in shown
    # the one way to record an agreement is `headend bank agreement add` (it seals the account number)
    code, out, err = run(capsysbinary, "customer", "set", CUST, "--withholding", "ICBC:6222****9999:W-1")
    assert code == 2 and "headend bank agreement add" in err, err
    with open_store(db) as s:
        assert s.get_account(CUST).withholding["agreement"] == "W-77"


def test_a_bad_file_exits_2_with_its_lines_and_changes_nothing(db, tmp_path, capsysbinary):
    key_file = str(tmp_path / "keys.json")
    run(capsysbinary, "keys", "init", "--key-file", key_file)
    run(capsysbinary, "bank", "agreement", "add", CUST, "--bank", "CCB", "--account", "62270000111122223",
        "--holder", "Zhang San", "--agreement", "C-1", "--topup", "30", "--below", "10", "--key-file", key_file)
    code, content, err = run(capsysbinary, "bank", "export", "--bank", "CCB", "--date", "2025-12-05",
                             "--key-file", key_file)
    assert code == 0, err
    ret = tmp_path / "ret.csv"
    ret.write_bytes(bank_answer(load_profile("CCB"), content).replace(b"3000,S", b"30.00,S"))
    code, out, err = run(capsysbinary, "bank", "import", str(ret))
    assert code == 2
    assert f"{ret}: nothing applied" in err and "line 2: amount_fen '30.00' has decimals" in err
    with open_store(db) as s:
        assert s.list_payments() == []
