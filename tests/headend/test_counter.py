"""The business-hall counter: shift, payments by tender, receipt with the meter's confirmation,
void within the shift, the close (日结) with differences; domain level and through the CLI."""

from __future__ import annotations

import json

import pytest

from headend.cli.main import main
from headend.payments import PaymentError
from headend.payments import counter as ctr
from headend.store import InvalidInput, open_store
from tests.headend.payments_support import (
    LOCAL_CUST,
    LOCAL_METER,
    REMOTE_CUST,
    T0,
    assert_books_balance,
    confirm_recharge,
    money_store,
)
from tests.headend.store_support import Clock

POS = {"kind": "unionpay_pos", "terminal_id": "12345678", "trace_no": "000123", "ref_no": "000000123456"}


@pytest.fixture
def clock():
    return Clock(T0)


@pytest.fixture
def store(tmp_path, clock):
    s = money_store(str(tmp_path / "counter.db"), clock)
    yield s
    assert_books_balance(s)
    s.close()


def fmt(t):
    return "-" if t is None else f"t={t}"


def test_a_shift_takes_payments_by_tender_and_the_receipt_shows_the_meters_confirmation(store, clock):
    shift = ctr.open_shift(store, "carol")
    p = ctr.take_payment(store, "carol", customer=LOCAL_CUST, amount_fen=5000, tender={"kind": "cash"})
    assert (p.channel_id, p.shift_id, p.tender, p.actor, p.txn_id) == ("hall", shift.id, {"kind": "cash"}, "carol",
                                                                       f"S{shift.id}-1")
    assert "sent to meter, not yet confirmed" in ctr.receipt_text(store, p.id, fmt)
    clock.t += 4
    confirm_recharge(store, p.command_id)
    text = ctr.receipt_text(store, p.id, fmt)
    assert f"confirmed on meter at t={T0 + 4}" in text and "50.00 yuan" in text and "张*" in text
    q = ctr.take_payment(store, "carol", customer=REMOTE_CUST, amount_fen=8000, tender=POS)
    text = ctr.receipt_text(store, q.id, fmt)
    assert "terminal 12345678 trace 000123 ref 000000123456" in text and "credited to account" in text


@pytest.mark.parametrize("tender, what", [
    ({"kind": "cheque"}, "cheque number"),
    ({"kind": "unionpay_pos", "terminal_id": "1234", "trace_no": "000123", "ref_no": "000000123456"}, "terminal id"),
    ({"kind": "unionpay_pos", "terminal_id": "12345678", "trace_no": "12", "ref_no": "000000123456"}, "trace no"),
    ({"kind": "bitcoin"}, "tender must be one of"),
])
def test_a_tender_without_its_slip_details_is_refused(store, tender, what):
    ctr.open_shift(store, "carol")
    with pytest.raises(InvalidInput, match=what):
        ctr.take_payment(store, "carol", customer=REMOTE_CUST, amount_fen=100, tender=tender)
    assert store.list_payments() == []


def test_no_payment_without_an_open_shift(store):
    with pytest.raises(InvalidInput, match="no open shift"):
        ctr.take_payment(store, "carol", customer=REMOTE_CUST, amount_fen=100, tender={"kind": "cash"})


def test_void_only_within_the_shift(store):
    ctr.open_shift(store, "carol")
    p = ctr.take_payment(store, "carol", customer=REMOTE_CUST, amount_fen=700, tender={"kind": "cash"})
    v = ctr.void_payment(store, "carol", p.id, reason="wrong customer")
    assert v.state == "reversed" and store.get_account(REMOTE_CUST).balance_fen == 0
    q = ctr.take_payment(store, "carol", customer=REMOTE_CUST, amount_fen=900, tender={"kind": "cash"})
    ctr.close_shift(store, "carol", {"cash": {"count": 1, "fen": 900}})
    ctr.open_shift(store, "carol")
    with pytest.raises(PaymentError) as e:
        ctr.void_payment(store, "carol", q.id, reason="too late")
    assert e.value.code == "not_reversible" and store.get_account(REMOTE_CUST).balance_fen == 900


def test_closing_a_shift_records_expected_counted_and_differences_per_tender(store):
    shift = ctr.open_shift(store, "carol")
    for amount, tender in ((5000, {"kind": "cash"}), (2000, {"kind": "cash"}), (8000, POS),
                           (3000, {"kind": "cheque", "cheque_no": "C-991"})):
        ctr.take_payment(store, "carol", customer=REMOTE_CUST, amount_fen=amount, tender=tender)
    voided = ctr.take_payment(store, "carol", customer=REMOTE_CUST, amount_fen=100, tender={"kind": "cash"})
    ctr.void_payment(store, "carol", voided.id, reason="keyed twice")
    closed = ctr.close_shift(store, "carol", {"cash": {"count": 2, "fen": 6950}, "unionpay_pos": {"count": 1,
                                                                                                   "fen": 8000}})
    assert closed.state == "closed" and closed.id == shift.id
    assert closed.expected == {"cash": {"count": 2, "fen": 7000}, "cheque": {"count": 1, "fen": 3000},
                               "unionpay_pos": {"count": 1, "fen": 8000}}
    assert closed.differences == {"cash": {"count": 0, "fen": -50}, "cheque": {"count": -1, "fen": -3000}}
    assert store.audit_entries(action="shift.close")[0].detail["differences"]["cash"]["fen"] == -50
    with pytest.raises(InvalidInput, match="no open shift"):
        ctr.close_shift(store, "carol", {})


def test_counter_through_the_cli_with_a_logged_in_cashier(tmp_path, monkeypatch, capsys):
    db = str(tmp_path / "hall.db")
    money_store(db).close()
    monkeypatch.setenv("PREPAID645_DB", db)
    monkeypatch.delenv("PREPAID645_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)

    def run(*argv, actor=None, password=None):
        if password is not None:
            monkeypatch.setenv("PREPAID645_OPERATOR_PASSWORD", password)
        code = main([*argv, *(("--actor", actor) if actor else ())])
        out = capsys.readouterr()
        return code, out.out, out.err

    monkeypatch.setenv("PREPAID645_NEW_PASSWORD", "admin-pass-1")
    assert run("operator", "add", "root", "--role", "admin", actor="setup")[0] == 0
    monkeypatch.setenv("PREPAID645_NEW_PASSWORD", "cashier-pass-1")
    assert run("operator", "add", "carol", "--role", "cashier", actor="root", password="admin-pass-1")[0] == 0

    code, _, err = run("counter", "open", actor="carol", password="wrong-password")
    assert code == 2 and "wrong name or password" in err
    code, _, err = run("counter", "open", actor="root", password="admin-pass-1")
    assert code == 0, err
    run("counter", "close", actor="root", password="admin-pass-1")
    assert run("counter", "open", actor="carol", password="cashier-pass-1")[0] == 0
    code, out, err = run("counter", "find", "张", actor="carol")
    assert code == 0 and LOCAL_CUST in out and LOCAL_METER in out
    code, out, err = run("counter", "pay", REMOTE_CUST, "30", "--tender", "pos", "--terminal", "12345678",
                         "--trace", "000123", "--ref", "000000123456", "--wait", "0", actor="carol")
    assert code == 0, err
    assert "30.00 yuan" in out and "terminal 12345678" in out and "credited to account" in out
    code, out, err = run("counter", "pay", REMOTE_CUST, "5", "--wait", "0", actor="carol")
    pid = int(out.split("Receipt no.")[1].split()[0])
    code, out, err = run("counter", "void", str(pid), "--reason", "keyed twice", actor="carol")
    assert code == 0 and "VOID" in out
    code, out, err = run("counter", "receipt", str(pid), actor="carol")
    assert code == 0 and f"Receipt no.  {pid}" in out and "VOID" in out and "keyed twice" in out
    code, out, err = run("counter", "close", "--pos", "30", "--json", actor="carol")
    assert code == 0, err
    shift = json.loads(out)
    assert shift["differences"] == {} and shift["expected"]["unionpay_pos"] == {"count": 1, "fen": 3000}
    code, _, err = run("recharge", REMOTE_METER_ADDR, "1", "--wait", "0", actor="carol")
    assert code == 2 and "needs one of" in err                 # a cashier does not recharge outside the counter
    with open_store(db) as s:
        assert_books_balance(s)
        acts = {(a.actor, a.action) for a in s.audit_entries(limit=1000)}
        assert ("carol", "payment.accept") in acts and ("carol", "payment.reverse") in acts
        assert ("carol", "operator.login_refused") in acts


REMOTE_METER_ADDR = "000000000002"


def test_one_pos_slip_is_taken_once_while_its_payment_stands(store):
    ctr.open_shift(store, "carol")
    first = ctr.take_payment(store, "carol", customer=REMOTE_CUST, amount_fen=5000, tender=POS)
    with pytest.raises(InvalidInput, match=f"already taken as payment {first.id}"):
        ctr.take_payment(store, "carol", customer=LOCAL_CUST, amount_fen=6000, tender=POS)
    ctr.open_shift(store, "dave")
    with pytest.raises(InvalidInput, match=f"already taken as payment {first.id}"):
        ctr.take_payment(store, "dave", customer=REMOTE_CUST, amount_fen=5000, tender=POS)
    ctr.void_payment(store, "carol", first.id, reason="wrong customer")
    again = ctr.take_payment(store, "carol", customer=LOCAL_CUST, amount_fen=5000, tender=POS)
    assert [p.id for p in store.list_payments() if p.state != "reversed"] == [again.id]


def test_the_days_payments_are_summed_per_tender_not_per_slip(store):
    ctr.open_shift(store, "carol")
    for trace, ref in (("000123", "000000123456"), ("000124", "000000123457")):
        ctr.take_payment(store, "carol", customer=REMOTE_CUST, amount_fen=1000,
                         tender=dict(POS, trace_no=trace, ref_no=ref))
    ctr.take_payment(store, "carol", customer=REMOTE_CUST, amount_fen=300, tender={"kind": "cash"})
    assert store.day_payment_summary(store.business_day()) == [("hall", "cash", 1, 300, 0, 0),
                                                               ("hall", "unionpay_pos", 2, 2000, 0, 0)]


def test_no_shift_opens_at_a_disabled_counter(store):
    ctr.open_shift(store, "carol")
    ctr.close_shift(store, "carol", {})
    store.update_channel("hall", actor="admin", enabled=False)
    with pytest.raises(InvalidInput, match="hall is disabled"):
        ctr.open_shift(store, "carol")
    assert store.current_shift("carol") is None


@pytest.fixture
def cashier_cli(tmp_path, monkeypatch):
    """A money store on a file and the CLI arguments to act on it as cashier carol (no operators
    yet, so no login), with carol's shift open: the argument list."""
    db = str(tmp_path / "hall.db")
    money_store(db).close()
    monkeypatch.delenv("PREPAID645_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    base = ["--db", db, "--actor", "carol"]
    assert main(["counter", "open", *base]) == 0
    return base


def test_slip_details_given_with_another_tender_are_refused_not_dropped(cashier_cli, capsys):
    # "--terminal ..." without "--tender pos" was booked as cash: the shift's close then disagrees with the drawer
    base = cashier_cli
    pos = ["--terminal", "12345678", "--trace", "000123", "--ref", "000000123456"]
    for argv, says in (([*pos], "--tender pos"), (["--tender", "cheque", "--cheque-no", "C-1", *pos], "--tender pos"),
                       (["--tender", "pos", *pos, "--cheque-no", "C-1"], "--tender cheque")):
        capsys.readouterr()
        assert main(["counter", "pay", REMOTE_CUST, "50", *argv, "--wait", "0", *base]) == 2
        assert says in capsys.readouterr().err
    with open_store(base[base.index("--db") + 1]) as s:
        assert s.list_payments() == []


def test_a_cashier_is_told_whose_open_shift_a_payment_belongs_to(store):
    ctr.open_shift(store, "carol")
    p = ctr.take_payment(store, "carol", customer=REMOTE_CUST, amount_fen=700, tender={"kind": "cash"})
    ctr.open_shift(store, "dave")
    with pytest.raises(PaymentError, match="carol can void it") as e:
        ctr.void_payment(store, "dave", p.id, reason="not mine")
    assert e.value.code == "not_reversible" and store.get_payment(p.id).state == "credited"


@pytest.mark.parametrize("counted, says", [
    ({"cash": {"count": -3, "fen": 700}}, "count"),
    ({"cash": {"count": 1, "fen": -700}}, "fen"),
])
def test_a_count_below_zero_is_refused_and_the_shift_stays_open(store, counted, says):
    shift = ctr.open_shift(store, "carol")
    ctr.take_payment(store, "carol", customer=REMOTE_CUST, amount_fen=700, tender={"kind": "cash"})
    with pytest.raises(InvalidInput, match=says):
        ctr.close_shift(store, "carol", counted)
    assert store.current_shift("carol") == shift


def test_a_cashier_with_an_open_shift_is_not_disabled_until_an_admin_closes_it_for_them(tmp_path, monkeypatch, capsys):
    # disabled first, the cashier could never log in to close, and the shift's takings would stay uncounted
    from headend.operators import hash_password

    db = str(tmp_path / "hall.db")
    with money_store(db) as s:
        s.add_operator("root", "admin", hash_password("admin-pass-1"), actor="setup")
        s.add_operator("eve", "cashier", hash_password("cashier-pass-1"), actor="setup")
        s.add_operator("carol", "cashier", hash_password("cashier-pass-2"), actor="setup")
    monkeypatch.delenv("PREPAID645_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)

    def run(who, password, *argv):
        monkeypatch.setenv("PREPAID645_OPERATOR_PASSWORD", password)
        code = main([*argv, "--db", db, "--actor", who])
        out = capsys.readouterr()
        return code, out.out, out.err

    assert run("eve", "cashier-pass-1", "counter", "open")[0] == 0
    assert run("eve", "cashier-pass-1", "counter", "pay", REMOTE_CUST, "12", "--wait", "0")[0] == 0
    code, out, err = run("root", "admin-pass-1", "operator", "disable", "eve")
    assert code == 2 and "open shift" in err and "--cashier eve" in err
    code, out, err = run("carol", "cashier-pass-2", "counter", "close", "--cashier", "eve", "--cash", "12")
    assert code == 2 and "admin" in err
    code, out, err = run("root", "admin-pass-1", "counter", "close", "--cashier", "eve", "--cash", "11.50", "--json")
    assert code == 0, err
    closed = json.loads(out)
    assert closed["cashier"] == "eve" and closed["differences"] == {"cash": {"count": 0, "fen": -50}}
    assert run("root", "admin-pass-1", "operator", "disable", "eve")[0] == 0
    with open_store(db) as s:
        [entry] = s.audit_entries(action="shift.close")
        assert (entry.actor, entry.target) == ("root", "eve")


def test_the_counter_takes_the_number_on_the_meter_in_place_of_the_customer_number(cashier_cli, capsys):
    base = cashier_cli
    capsys.readouterr()
    assert main(["counter", "pay", LOCAL_METER, "15", "--wait", "0", "--json", *base]) == 0
    paid = json.loads(capsys.readouterr().out)
    assert (paid["customer"], paid["meter"], paid["amount_fen"]) == (LOCAL_CUST, LOCAL_METER, 1500)
    assert main(["counter", "pay", "000000000999", "15", "--wait", "0", *base]) == 4
    assert "no customer 000000000999" in capsys.readouterr().err


def test_an_auditor_lists_the_shifts_with_their_differences(tmp_path, monkeypatch, capsys):
    db = str(tmp_path / "hall.db")
    with money_store(db) as s:
        ctr.open_shift(s, "carol")
        ctr.take_payment(s, "carol", customer=REMOTE_CUST, amount_fen=5000, tender={"kind": "cash"})
        ctr.close_shift(s, "carol", {"cash": {"count": 1, "fen": 4950}})
        ctr.open_shift(s, "dave")
    monkeypatch.delenv("PREPAID645_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["counter", "shifts", "--db", db, "--json"]) == 0
    shifts = json.loads(capsys.readouterr().out)
    assert [(x["cashier"], x["state"], x["differences"]) for x in shifts] == [
        ("dave", "open", None), ("carol", "closed", {"cash": {"count": 0, "fen": -50}})]
    assert main(["counter", "shifts", "--db", db, "--differences"]) == 0
    out = capsys.readouterr().out
    assert "carol" in out and "-0.50" in out and "dave" not in out


def test_a_lookup_with_more_matches_than_shown_says_so(tmp_path, monkeypatch, capsys):
    db = str(tmp_path / "hall.db")
    with money_store(db) as s:
        for i in range(25):
            s.add_account(f"{500 + i:012d}", actor="setup", name=f"王{i}")
    monkeypatch.delenv("PREPAID645_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["counter", "find", "王", "--db", db, "--actor", "carol"]) == 0
    out, err = capsys.readouterr()
    assert "first 20" in out + err and "narrow" in out + err
    assert main(["counter", "find", "王1", "--db", db, "--actor", "carol"]) == 0
    out, err = capsys.readouterr()
    assert "first 20" not in out + err


def test_closing_a_day_names_the_shifts_still_open_with_its_payments(tmp_path, monkeypatch, capsys):
    db = str(tmp_path / "hall.db")
    with money_store(db) as s:
        ctr.open_shift(s, "carol")
        ctr.take_payment(s, "carol", customer=REMOTE_CUST, amount_fen=500, tender={"kind": "cash"})
        ctr.open_shift(s, "dave")                       # open, but nothing taken
        day = s.business_day()
    monkeypatch.delenv("PREPAID645_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["close-day", day, "--db", db, "--actor", "audrey", "--json"]) == 0
    out, err = capsys.readouterr()
    assert [(x["cashier"], x["payments"]) for x in json.loads(out)["open_shifts"]] == [("carol", 1)]
    assert "carol" in err and "counter close" in err and "dave" not in err


def test_numbers_typed_in_full_width_or_with_spaces_find_the_customer(cashier_cli, capsys):
    base = cashier_cli
    wide = REMOTE_CUST.translate({ord(d): 0xFF10 + int(d) for d in "0123456789"})
    assert main(["counter", "find", wide, *base]) == 0
    assert REMOTE_CUST in capsys.readouterr().out
    assert main(["counter", "pay", f" {wide} ", "5", "--wait", "0", "--json", *base]) == 0
    assert json.loads(capsys.readouterr().out)["customer"] == REMOTE_CUST
