"""The operator's money commands through the real CLI entry point on a real SQLite file:
`recharge` as a payment, `ledger check`, `close-day`, `channel ...`, `customer show`."""

from __future__ import annotations

import json

import pytest

from headend.cli.main import main
from headend.store import open_store
from tests.headend.payments_support import LOCAL_CUST, LOCAL_METER, REMOTE_CUST, REMOTE_METER, assert_books_balance

PASS = "correct horse battery"


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
        s.add_account(LOCAL_CUST, actor="t", name="张三")
        s.add_meter(LOCAL_METER, link="tcp://127.0.0.1:9", customer=LOCAL_CUST, actor="t", mode="local")
        s.add_account(REMOTE_CUST, actor="t", name="Li Wei", close_ok_fen=0)
        s.add_meter(REMOTE_METER, link="tcp://127.0.0.1:9", customer=REMOTE_CUST, actor="t", mode="remote")
    yield path
    with open_store(path) as s:
        assert_books_balance(s)


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_recharge_of_a_remote_meter_credits_the_account_not_the_meters_wallet(db, capsys):
    code, out, err = run(capsys, "recharge", REMOTE_METER, "50", "--wait", "0")
    assert code == 0, err
    with open_store(db) as s:
        assert s.get_account(REMOTE_CUST).balance_fen == 5000
        assert s.list_commands(kind="recharge") == []          # the meter's own wallet is not topped up
        [p] = s.list_payments()
        assert (p.channel_id, p.state, p.actor, p.amount_fen) == ("operator", "credited", "alice", 5000)


def test_recharge_of_a_local_meter_is_one_payment_and_one_recharge_however_often_repeated(db, capsys):
    for _ in range(2):
        code, out, err = run(capsys, "recharge", LOCAL_METER, "12.50", "--idem", "PAY-1", "--wait", "0")
        assert code == 3, err                                   # queued: serve carries it to the meter
    with open_store(db) as s:
        [p] = s.list_payments()
        [cmd] = s.list_commands(kind="recharge")
        assert (p.state, p.command_id, cmd.params["amount_fen"]) == ("sent_to_meter", cmd.id, 1250)
    code, out, err = run(capsys, "recharge", LOCAL_METER, "13", "--idem", "PAY-1", "--wait", "0")
    assert code == 2 and "amount_fen" in err


def test_ledger_check_and_close_day(db, capsys):
    run(capsys, "recharge", REMOTE_METER, "5", "--wait", "0")
    code, out, _ = run(capsys, "ledger", "check")
    assert code == 0 and "2 account(s)" in out
    with open_store(db) as s:
        day = s.business_day()
    code, out, err = run(capsys, "close-day", day, "--json")
    assert code == 0 and json.loads(out)["kinds"]["payment"]["amount_fen"] == 500
    code, out, err = run(capsys, "close-day", day)
    assert code == 2 and "already closed" in err
    import sqlite3
    raw = sqlite3.connect(db)
    raw.execute("UPDATE accounts SET balance_fen = 1 WHERE customer = ?", (REMOTE_CUST,))
    raw.commit()
    code, out, err = run(capsys, "ledger", "check")
    assert code == 1 and REMOTE_CUST in err
    raw.execute("UPDATE accounts SET balance_fen = 500 WHERE customer = ?", (REMOTE_CUST,))
    raw.commit()
    raw.close()


def test_channel_secret_is_printed_once_and_stored_sealed(db, tmp_path, capsys, monkeypatch):
    key_file = str(tmp_path / "master.key")
    assert run(capsys, "keys", "init", "--key-file", key_file)[0] == 0
    code, out, err = run(capsys, "channel", "add", "icbc", "--kind", "online_banking", "--fee-rule", "bp:20",
                         "--key-file", key_file, "--json")
    assert code == 0, err
    shown = json.loads(out)
    with open_store(db) as s:
        ch = s.get_channel("icbc")
    assert shown["secret"] not in (ch.secret or "") and ch.key_id == shown["key_id"]
    from headend.keys import KeyStore
    from headend.payments import channel_secret
    assert channel_secret(KeyStore.unlock(key_file, PASS), ch) == shown["secret"].encode()
    code, out, _ = run(capsys, "channel", "list", "--json")
    assert "secret" not in out
    code, out, _ = run(capsys, "channel", "rotate-secret", "icbc", "--key-file", key_file, "--json")
    again = json.loads(out)
    assert again["key_id"] != shown["key_id"] and again["secret"] != shown["secret"]
    assert run(capsys, "channel", "disable", "icbc")[0] == 0
    with open_store(db) as s:
        assert s.get_channel("icbc").enabled is False


def test_a_channel_is_a_configured_record_with_its_fee_rule_settlement_delay_and_maximum(db, capsys):
    code, _, err = run(capsys, "channel", "add", "pos-1", "--kind", "unionpay_pos", "--no-api", "--fee-rule",
                       "fixed:150", "--settle-days", "2", "--max", "5000", "--callback", "https://pos.example/cb")
    assert code == 0, err
    code, out, _ = run(capsys, "channel", "list", "--json")
    [ch] = [c for c in json.loads(out) if c["id"] == "pos-1"]
    assert (ch["kind"], ch["fee_rule"], ch["settle_days"], ch["max_amount_fen"], ch["callback_url"], ch["enabled"],
            ch["key_id"]) == ("unionpay_pos", "fixed:150", 2, 500_000, "https://pos.example/cb", True, None)
    code, out, _ = run(capsys, "channel", "list")
    assert "T+2" in out and "(no API)" in out
    # a settlement delay is whole days from T+0: a negative one is refused by name, nothing is added
    code, _, err = run(capsys, "channel", "add", "pos-2", "--kind", "unionpay_pos", "--no-api", "--settle-days", "-1")
    assert code != 0 and "settlement delay" in err
    with open_store(db) as s:
        assert [c.id for c in s.list_channels() if c.id.startswith("pos-")] == ["pos-1"]


def test_customer_show_has_balance_ledger_and_meters_with_last_state(db, capsys):
    with open_store(db) as s:
        s.record_meter_state(LOCAL_METER, balance_fen=4321, relay="closed")
        s.update_account(LOCAL_CUST, actor="t", phones=["13800000001", "13900000002"], district="Haidian")
    run(capsys, "recharge", LOCAL_METER, "10", "--wait", "0")
    code, out, err = run(capsys, "customer", "show", LOCAL_CUST)
    assert code == 0, err
    for text in ("张三", "13900000002", "Haidian", "43.21", "closed", "topup_sent", "10.00"):
        assert text in out


def test_ledger_adjust_refund_and_show(db, capsys):
    run(capsys, "recharge", REMOTE_METER, "20", "--wait", "0")
    code, out, err = run(capsys, "ledger", "refund", REMOTE_CUST, "5", "--reason", "moved out", "--idem", "R-1")
    assert code == 0 and "refund of -5.00 yuan" in out, err
    code, out, err = run(capsys, "ledger", "refund", REMOTE_CUST, "5", "--reason", "moved out", "--idem", "R-1")
    assert code == 0 and "already booked" in out
    code, out, err = run(capsys, "ledger", "adjust", REMOTE_CUST, "-1.50", "--reason", "reading corrected")
    assert code == 0, err
    code, out, err = run(capsys, "ledger", "adjust", REMOTE_CUST, "1", "--reason", "")
    assert code == 2 and "reason" in err
    code, out, err = run(capsys, "ledger", "show", "--customer", REMOTE_CUST, "--json")
    rows = json.loads(out)
    assert [(r["kind"], r["amount_fen"], r["actor"]) for r in rows] == [
        ("payment", 2000, "alice"), ("refund", -500, "alice"), ("adjustment", -150, "alice")]
    assert rows[1]["detail"] == {"reason": "moved out"}
    with open_store(db) as s:
        assert s.get_account(REMOTE_CUST).balance_fen == 1350


def test_payment_list_show_and_reverse(db, capsys):
    run(capsys, "recharge", REMOTE_METER, "8", "--idem", "P-1", "--wait", "0")
    run(capsys, "recharge", LOCAL_METER, "3", "--idem", "P-2", "--wait", "0")
    code, out, _ = run(capsys, "payment", "list", "--json")
    pays = json.loads(out)
    assert code == 0 and [(p["txn_id"], p["state"]) for p in pays] == [("P-2", "sent_to_meter"), ("P-1", "credited")]
    code, out, _ = run(capsys, "payment", "show", str(pays[0]["id"]), "--json")
    shown = json.loads(out)
    assert [j["kind"] for j in shown["journal"]] == ["payment", "topup_sent"]
    code, out, err = run(capsys, "payment", "reverse", str(pays[1]["id"]), "--reason", "paid twice")
    assert code == 0 and "reversed" in out, err
    code, out, err = run(capsys, "payment", "reverse", "999", "--reason", "x")
    assert code == 4 and "unknown_payment" in err
    with open_store(db) as s:
        assert s.get_account(REMOTE_CUST).balance_fen == 0
        assert s.get_payment(pays[1]["id"]).note == "paid twice"


def test_payment_reverse_decides_a_lifted_account_with_the_configured_trip_rules(db, capsys, tmp_path, monkeypatch):
    (tmp_path / "p.toml").write_text("[costctl]\ntrips = false\n")
    monkeypatch.setenv("PREPAID645_CONFIG", str(tmp_path / "p.toml"))
    with open_store(db) as s:
        s.credit(REMOTE_CUST, -800, actor="costctl", idem_key="k", kind="rerate")
        a = s.get_account(REMOTE_CUST)
        s.set_account_state(REMOTE_CUST, supply="cut", supply_at=s.now() - 100, notice_level=3,
                            notice_at=s.now() - 2 * 86400, expected_version=a.version)
    run(capsys, "recharge", REMOTE_METER, "10", "--idem", "L-1", "--wait", "0")     # -8.00 -> 2.00: lifted
    with open_store(db) as s:
        [close] = s.claim_next()                                 # the restore is on its way to the meter
        assert close.kind == "close_permitted"
        [p] = s.list_payments()
    code, out, err = run(capsys, "payment", "reverse", str(p.id), "--reason", "bounced")
    assert code == 0, err
    with open_store(db) as s:
        # the cycle's own rules say no trips: held with that reason, not tripped, not left undecided
        assert s.get_account(REMOTE_CUST).supply == "close_permitted"
        assert [c.kind for c in s.list_commands(meter=REMOTE_METER)] == ["close_permitted"]
        [held] = [e for e in s.audit_entries() if e.action == "costctl.hold"]
        assert "trips are disabled" in held.detail["reason"]


@pytest.mark.parametrize("typed, why", [
    ("1e3", "digits"),                  # an exponent is a slip of the keyboard, not 1000 yuan
    ("1_000", "digits"),
    ("١٠٠", "digits"),                  # digits of another script: Decimal would read them as 100
    ("1e30", "digits"),
    ("99999999999999999999", "more than"),
])
def test_an_amount_not_written_as_plain_yuan_is_refused_before_anything_moves(db, capsys, typed, why):
    code, out, err = run(capsys, "recharge", REMOTE_METER, typed, "--wait", "0")
    assert code == 2 and why in err and typed in err
    code, out, err = run(capsys, "ledger", "adjust", REMOTE_CUST, typed, "--reason", "typed in")
    assert code == 2 and why in err and "Traceback" not in err
    with open_store(db) as s:
        assert s.list_payments() == [] and s.journal(limit=10) == []


def test_full_width_digits_from_a_chinese_input_method_are_read_as_the_same_yuan(db, capsys):
    code, out, err = run(capsys, "recharge", REMOTE_METER, "１００．５０", "--wait", "0")
    assert code == 0, err
    with open_store(db) as s:
        assert s.get_account(REMOTE_CUST).balance_fen == 10050


def test_a_refund_cannot_pay_back_more_than_the_account_holds(db, capsys):
    run(capsys, "recharge", REMOTE_METER, "20", "--wait", "0")
    code, out, err = run(capsys, "ledger", "refund", REMOTE_CUST, "20.01", "--reason", "moved out")
    assert code == 2 and "20.00" in err and "20.01" in err
    code, out, err = run(capsys, "ledger", "refund", LOCAL_CUST, "10", "--reason", "moved out")
    assert code == 2 and "0.00" in err
    with open_store(db) as s:
        assert s.get_account(REMOTE_CUST).balance_fen == 2000 and s.get_account(LOCAL_CUST).balance_fen == 0
        assert [e.kind for e in s.journal(limit=10)] == ["payment"]
    code, out, err = run(capsys, "ledger", "refund", REMOTE_CUST, "20", "--reason", "moved out")
    assert code == 0, err


def test_a_channel_takes_only_a_callback_it_can_post_to_and_lists_the_maximum_it_enforces(db, capsys):
    for url in ("ftp://bank.example/cb", "bank.example/cb", "http://"):
        code, out, err = run(capsys, "channel", "add", "kiosk-1", "--kind", "kiosk", "--no-api", "--callback", url)
        assert code == 2 and "callback" in err and url in err
    code, out, err = run(capsys, "channel", "add", "kiosk-1", "--kind", "kiosk", "--no-api",
                         "--callback", "https://bank.example/cb")
    assert code == 0, err
    code, out, err = run(capsys, "channel", "list")
    [row] = [line for line in out.splitlines() if "kiosk-1" in line]
    assert "100000.00" in row                  # the maximum a payment is held to without --max


def test_a_refused_amount_is_told_in_yuan_as_it_was_typed(db, capsys):
    code, out, err = run(capsys, "recharge", REMOTE_METER, "100000.01", "--wait", "0")
    assert code == 2 and "100000.01 yuan" in err and "100000.00 yuan" in err
    with open_store(db) as s:
        s.update_meter(LOCAL_METER, actor="t", hoarding_fen=5000)
    code, out, err = run(capsys, "recharge", LOCAL_METER, "60", "--wait", "0")
    assert code == 2 and "50.00 yuan" in err and "60.00 yuan" in err
