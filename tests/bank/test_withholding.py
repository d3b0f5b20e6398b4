"""Withholding end to end on a real SQLite file: agreements, the day's batch exported once, return
files applied exactly once as payments (a local meter's top-up through the outbox, a remote
account's credit) and notices; every kind of bad return file refused with its line, nothing
applied. After every scenario the journal checks."""

from __future__ import annotations

import pytest

from headend.bank import (BankFileError, account_number, add_agreement, agreement_of, bank_channel_id, export_batch,
                          import_return, pick_profile, known_profiles, read_file, remove_agreement,
                          write_file)
from headend.store import InvalidInput
from tests.bank.support import DAY, bank_answer, bank_store, exported, local_customer, remote_customer
from tests.headend.payments_support import KEYS, assert_books_balance


@pytest.fixture(params=["ICBC", "CCB"])
def bank(request):
    return request.param


@pytest.fixture
def store(tmp_path, bank):
    s = bank_store(str(tmp_path / "bank.db"), bank=bank)
    yield s
    assert s.check_ledger() == []
    assert_books_balance(s)
    s.close()


def test_agreement_keeps_the_account_number_sealed_and_shows_it_masked(tmp_path):
    s = bank_store(str(tmp_path / "a.db"), locals_=1, remotes=0)
    c = local_customer(0)
    shown = agreement_of(s, c)
    assert shown == {"customer": c, "bank": "ICBC", "account": "6222********0000", "holder": "张三",
                     "agreement": "W-0", "rule": "topup", "amount_fen": 5000, "below_fen": 2000}
    raw = s.get_account(c).withholding
    assert "6222000000000000" not in str(raw) and account_number(KEYS, c, raw) == "6222000000000000"
    assert "6222000000000000" not in str(s.audit_entries(target=c))
    with pytest.raises(InvalidInput, match="8-32 digits"):
        add_agreement(s, KEYS, c, bank="ICBC", account="12ab", holder="x", agreement="W", rule="topup",
                      amount_fen=1, below_fen=1, actor="t")
    with pytest.raises(InvalidInput, match="no amount or level"):
        add_agreement(s, KEYS, c, bank="ICBC", account="62220000000000", holder="x", agreement="W",
                      rule="settle_month", amount_fen=100, actor="t")
    remove_agreement(s, c, actor="t")
    assert agreement_of(s, c) is None
    s.close()


def test_the_batch_holds_who_is_due_and_is_exported_once(store, bank):
    p, content = exported(store, bank)
    req = read_file(p, "request", content)
    assert req.errors == []
    rows = [(d["seq"], d["customer"], d["amount_fen"], d["account"]) for _, d in req.details]
    assert rows == [(i + 1, local_customer(i), 5000, f"62220000{i:08d}") for i in range(4)] + \
        [(5, remote_customer(0), 3000, "6228000000000000"), (6, remote_customer(1), 3001, "6228000000000001")]
    assert (req.header["count"], req.header["total_fen"], req.trailer["total_fen"]) == (6, 26001, 26001)
    again, made = export_batch(store, KEYS, p, DAY, actor="t")
    assert (made, again.content) == (False, content)
    assert store.get_channel(bank_channel_id(bank)).kind == "bank_withholding"


def test_only_balances_below_the_level_are_debited(store, bank):
    store.record_meter_state(f"{1:012d}", balance_fen=2000)      # at the level: not due
    store.record_meter_state(f"{2:012d}", balance_fen=1999)      # just below: due
    store.adjust(remote_customer(1), 3001, actor="t", reason="paid at the counter")   # owes nothing now
    p, content = exported(store, bank)
    due = [d["customer"] for _, d in read_file(p, "request", content).details]
    assert due == [local_customer(1), local_customer(2), local_customer(3), remote_customer(0)]


def test_a_return_file_applies_every_result_once(store, bank):
    p, content = exported(store, bank)
    ret = bank_answer(p, content, {2: ("insufficient", 0), 3: ("closed", 0), 4: ("partial", 1200),
                                   6: ("insufficient", 0)})
    res = import_return(store, p, ret, actor="t")
    assert not res.already
    assert res.summary == {"rows": 6, "debited_fen": 5000 + 1200 + 3000, "payments": 3, "notices": 4,
                           "debited": 2, "partial": 1, "insufficient": 2, "closed": 1}
    pays = {pay.customer: pay for pay in store.list_payments()}
    assert {c: (pay.amount_fen, pay.channel_id) for c, pay in pays.items()} == {
        local_customer(0): (5000, bank_channel_id(bank)), local_customer(3): (1200, bank_channel_id(bank)),
        remote_customer(0): (3000, bank_channel_id(bank))}
    # one recharge to each local meter paid, none for the remote account (credited instead)
    cmds = store.list_commands(kind="recharge")
    assert sorted((cmd.meter, cmd.params["amount_fen"]) for cmd in cmds) == [(f"{1:012d}", 5000), (f"{4:012d}", 1200)]
    assert store.get_account(remote_customer(0)).balance_fen == 0
    assert pays[local_customer(0)].extra["bank_serial"].startswith("SN")
    failed = sorted((n.customer, n.detail["amount_fen"], n.detail["reason"])
                    for n in store.find_notices(kind="withholding_failed"))
    assert failed == [(local_customer(1), 5000, "insufficient funds"), (local_customer(2), 5000, "account closed"),
                      (local_customer(3), 3800, "only 1200 of 5000 fen debited"),
                      (remote_customer(1), 3001, "insufficient funds")]
    rows = {r.seq: (r.result, r.debited_fen) for r in store.bank_batch_rows(res.batch)}
    assert rows[4] == ("partial", 1200) and rows[3] == ("closed", 0)
    assert store.check_ledger() == []

    before = (len(store.list_payments()), len(store.list_commands(kind="recharge")),
              len(store.find_notices(kind="withholding_failed")), store.journal(limit=10**6))
    again = import_return(store, p, ret, actor="t")
    assert again.already and again.summary == res.summary
    assert before == (len(store.list_payments()), len(store.list_commands(kind="recharge")),
                      len(store.find_notices(kind="withholding_failed")), store.journal(limit=10**6))
    assert pick_profile(known_profiles().values(), ret).bank == bank


def spoil(p, ret: bytes, how: str) -> tuple[bytes, str]:
    """A return file with one problem of a class; the message expected for it."""
    parsed = read_file(p, "return", ret)
    head, rows, trail = dict(parsed.header), [dict(d) for _, d in parsed.details], dict(parsed.trailer)
    for r in [head, trail, *rows]:
        r.pop("kind")
    nl = p.newline
    if how == "truncated":
        return nl.join(ret.split(nl)[:4]) + nl, "line 5: the file ends without its trailer"
    if how == "wrong_totals":
        trail["debited_fen"] += 1
        return write_file(p, "return", head, rows, trail), "line 8: trailer total 21002 fen debited, the rows add up to 21001"
    if how == "wrong_count":
        trail["count"] = 5
        return write_file(p, "return", head, rows, trail), "line 8: trailer says 5 rows, the file has 6"
    if how == "duplicate":
        rows.insert(3, dict(rows[1]))
        trail.update(count=7, debited_fen=trail["debited_fen"] + rows[1]["debited_fen"])
        return write_file(p, "return", head, rows, trail), "line 5: sequence 2 repeats line 3"
    if how == "unknown_customer":
        rows[2]["customer"] = "999999999999"
        return write_file(p, "return", head, rows, trail), "line 4: customer 999999999999 (sequence 3) is not in"
    if how == "other_bank":
        head["bank"] = "ABC"
        return write_file(p, "return", head, rows, trail), "line 1: the file is for bank 'ABC'"
    if how == "other_day":
        head["date"] = "20251206"
        return write_file(p, "return", head, rows, trail), "line 1: the file is for day 20251206"
    if how == "unknown_batch":
        head["batch"] = 99
        return write_file(p, "return", head, rows, trail), "line 1: there is no"
    if how == "decimals":
        lines = ret.split(nl)
        lines[2] = lines[2].replace(b"5000", b"50.0" if p.format == "fixed" else b"50.00", 1)
        return nl.join(lines), "line 3: amount_fen '50.0"
    if how == "encoding":
        lines = ret.split(nl)
        bad = b"\xff" * 4
        lines[3] = lines[3][:-4] + bad if p.format == "fixed" else lines[3] + bad
        return nl.join(lines), "line 4: "
    if how == "not_adding_up":
        rows[0]["debited_fen"] = 4999
        trail["debited_fen"] -= 1
        return write_file(p, "return", head, rows, trail), "line 2: result debited with 4999 fen debited of 5000"
    if how == "missing_row":
        dropped = rows.pop(5)
        trail.update(count=5, debited_fen=trail["debited_fen"] - dropped["debited_fen"])
        return write_file(p, "return", head, rows, trail), "no result for sequence(s) 6"
    raise AssertionError(how)


PROBLEMS = ["truncated", "wrong_totals", "wrong_count", "duplicate", "unknown_customer", "other_bank", "other_day",
            "unknown_batch", "decimals", "encoding", "not_adding_up", "missing_row"]


@pytest.mark.parametrize("how", PROBLEMS)
def test_a_bad_return_file_is_reported_by_line_and_nothing_is_applied(store, bank, how):
    p, content = exported(store, bank)
    ret = bank_answer(p, content, {2: ("insufficient", 0)})
    bad, expected = spoil(p, ret, how)
    journal = store.journal(limit=10**6)
    with pytest.raises(BankFileError) as exc:
        import_return(store, p, bad, actor="t")
    assert expected in str(exc.value), exc.value.problems
    assert all(e.startswith("line ") for e in exc.value.problems)
    assert store.journal(limit=10**6) == journal
    assert store.list_payments() == [] and store.find_notices(kind="withholding_failed") == []
    assert store.bank_return(batch_id=1) is None
    # the good file still applies afterwards
    assert import_return(store, p, ret, actor="t").summary["payments"] == 5


def test_a_second_different_return_file_for_an_applied_batch_is_refused(store, bank):
    p, content = exported(store, bank)
    import_return(store, p, bank_answer(p, content), actor="t")
    with pytest.raises(BankFileError, match="already has its return file"):
        import_return(store, p, bank_answer(p, content, {1: ("closed", 0)}), actor="t")
    assert len(store.list_payments()) == 6


def test_money_the_bank_took_for_a_meter_that_cannot_hold_it_lands_on_the_account(store, bank):
    # the meter's headroom fell below the debit after the batch went out (a counter payment, a
    # lower hoarding limit): the bank has taken the money, so the file is applied, that row's
    # money is credited to the customer's account rather than refused, and the rest reach theirs
    p, content = exported(store, bank)
    store.update_meter(f"{1:012d}", actor="t", hoarding_fen=3000)
    res = import_return(store, p, bank_answer(p, content), actor="t")
    assert res.summary["payments"] == 6 and res.summary["debited_fen"] == 4 * 5000 + 3000 + 3001
    pays = {pay.customer: pay for pay in store.list_payments()}
    full = pays[local_customer(0)]
    assert (full.state, full.amount_fen, full.command_id) == ("credited", 5000, None)
    assert store.get_account(local_customer(0)).balance_fen == 5000
    cmds = store.list_commands(kind="recharge")
    assert sorted(cmd.meter for cmd in cmds) == [f"{i:012d}" for i in (2, 3, 4)]


def test_a_payment_that_cannot_be_taken_fails_the_whole_file_naming_its_line(store, bank):
    p, content = exported(store, bank)
    # a second meter makes the top-up ambiguous: the payment refuses, so nothing of the file lands
    store.add_meter(f"{77:012d}", link="tcp://127.0.0.1:9", customer=local_customer(2), actor="t", mode="local")
    with pytest.raises(BankFileError, match="line 4: customer 100000000002: .*say which one"):
        import_return(store, p, bank_answer(p, content), actor="t")
    assert store.list_payments() == [] and store.bank_return(batch_id=1) is None
