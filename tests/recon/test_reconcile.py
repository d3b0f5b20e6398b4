"""Channel statements against the journal: every injected discrepancy found, nothing else flagged;
both layouts (CSV, fixed-width GBK) round-trip; bad files named by line and nothing kept from them."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headend.payments import accept_payment, reverse_payment
from headend.reconcile import classify, reconcile_day, resolve
from headend.reconcile.statement import Line, StatementError, load_profile, parse, write
from tests.headend.payments_support import REMOTE_CUST, money_store
from tests.headend.store_support import Clock

T = 1764900000  # 2025-12-05 10:00 China time
DAY = "2025-12-05"
CH = "mobile_app"


def _lines(n, seed=1):
    rnd = random.Random(seed)
    amounts = [rnd.randint(1, 99999) * 10 for _ in range(n)]
    return [Line(0, f"T{i:08d}", a, 0, a, "paid") for i, a in enumerate(amounts)]


def _with_fees(lines, fee_every=3):
    return [Line(x.line_no, x.txn_id, x.amount_fen, (x.amount_fen // 100) if i % fee_every == 0 else 0,
                 x.amount_fen - ((x.amount_fen // 100) if i % fee_every == 0 else 0),
                 "reversed" if i % 17 == 5 else "paid") for i, x in enumerate(lines)]


@pytest.mark.parametrize("profile", ["csv", "fixed-gbk"])
def test_layouts_round_trip(profile):
    lines = _with_fees(_lines(500))
    p = load_profile(profile)
    back = parse(p, write(p, lines))
    assert [(x.txn_id, x.amount_fen, x.fee_fen, x.net_fen, x.state) for x in back] == \
           [(x.txn_id, x.amount_fen, x.fee_fen, x.net_fen, x.state) for x in lines]
    if profile == "fixed-gbk":
        data = write(p, lines)
        assert "合计".encode("gbk") in data
        with pytest.raises(UnicodeDecodeError):
            data.decode("utf-8")


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_every_injected_discrepancy_is_found_and_nothing_else(data):
    n = data.draw(st.integers(20, 200))
    rnd = random.Random(data.draw(st.integers(0, 10**6)))
    base = {f"T{i:06d}": rnd.randint(1, 50000) for i in range(n)}
    ours = {t: (a, "paid", i, "c") for i, (t, a) in enumerate(base.items())}
    theirs = {t: Line(0, t, a, 0, a, "paid") for t, a in base.items()}
    want: dict[str, str] = {}
    for t in rnd.sample(sorted(base), min(n, 40)):
        cls = rnd.choice(["amount_mismatch", "state_mismatch_ours", "state_mismatch_theirs", "ours_only",
                          "theirs_only"])
        if cls == "amount_mismatch":
            theirs[t] = Line(0, t, base[t] + rnd.choice([-1, 1, 100]), 0, 0, "paid")
        elif cls == "state_mismatch_ours":
            ours[t] = (base[t], "reversed", ours[t][2], "c")
        elif cls == "state_mismatch_theirs":
            theirs[t] = Line(0, t, base[t], 0, base[t], "reversed")
        elif cls == "ours_only":
            del theirs[t]
        else:
            del ours[t]
        want[t] = cls.replace("_ours", "").replace("_theirs", "") if cls.startswith("state") else cls
    got = {r["txn_id"]: r["class"] for r in classify(ours, list(theirs.values()))}
    assert {t: c for t, c in got.items() if c != "matched"} == want
    assert len(got) == len(set(ours) | set(theirs))


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b.rsplit(b"TOTAL", 1)[0], "trailer"),                         # truncated
    (lambda b: b.replace(b"TOTAL,12,", b"TOTAL,11,"), "trailer says 11 rows, the file has 12"),
    (lambda b: b.replace(b"\nT00000003,", b"\nT00000002,"), "duplicate"),
    (lambda b: b.replace(b"\nT00000004,", b"\nT00000004,12.5,0,12.5,S\nX"), "amount '12.5' has decimals"),
    (lambda b: b.replace(b",S\n", b",Q\n", 1), "unknown state"),
    (lambda b: b"\xff\xfe" + b, "encoding"),
])
def test_bad_files_are_named_by_line(mutate, message):
    p = load_profile("csv")
    good = write(p, _lines(12))
    with pytest.raises(StatementError, match=message) as exc:
        parse(p, mutate(good))
    assert "line" in str(exc.value)


@pytest.fixture
def day_store(tmp_path):
    clock = Clock(T)
    s = money_store(str(tmp_path / "m.db"), clock)
    for i in range(6):
        accept_payment(s, channel_id=CH, txn_id=f"APP-{i}", amount_fen=1000 * (i + 1), paid_at=T,
                       customer=REMOTE_CUST, actor=f"channel:{CH}")
    reverse_payment(s, s.payment_by_txn(CH, "APP-5").id, channel_id=CH, actor=f"channel:{CH}", reason="void")
    yield s
    s.close()


def _statement(rows):
    return write(load_profile("csv"), [Line(0, t, a, a // 100, a - a // 100, st_) for t, a, st_ in rows])


def test_a_clean_statement_reconciles_the_day_and_keeps_its_report(day_store):
    stmt = _statement([(f"APP-{i}", 1000 * (i + 1), "paid") for i in range(5)] + [("APP-5", 6000, "reversed")])
    res = reconcile_day(day_store, CH, DAY, stmt, profile="csv", actor="auditor1")
    assert res.reconciled and res.counts["matched"] == 6
    assert res.totals == {"their_gross_fen": 15000, "their_fee_fen": 150, "their_net_fen": 14850,
                          "our_gross_fen": 15000}
    kept = day_store.reconciliation(CH, DAY)
    assert kept["status"] == "reconciled" and kept["file_sha256"] == res.file_sha256
    assert day_store.unreconciled_channels(DAY, ("mobile_app",)) == []


def test_discrepancies_stay_open_until_resolved_with_a_journal_adjustment(day_store):
    balance0 = day_store.get_account(REMOTE_CUST).balance_fen
    stmt = _statement([("APP-0", 1000, "paid"), ("APP-1", 2500, "paid"), ("APP-2", 3000, "reversed"),
                       ("APP-4", 5000, "paid"), ("APP-5", 6000, "reversed"), ("BANK-9", 700, "paid")])
    res = reconcile_day(day_store, CH, DAY, stmt, profile="csv", actor="auditor1")
    classes = {r["txn_id"]: r["class"] for r in res.rows}
    assert classes == {"APP-0": "matched", "APP-1": "amount_mismatch", "APP-2": "state_mismatch",
                       "APP-3": "ours_only", "APP-4": "matched", "APP-5": "matched", "BANK-9": "theirs_only"}
    assert not res.reconciled
    assert day_store.unreconciled_channels(DAY, ("mobile_app",)) == [CH]
    for t in ("APP-1", "APP-2", "APP-3"):
        out = resolve(day_store, CH, DAY, t, actor="auditor1", reason="channel corrected it the next day")
        assert not out["reconciled"]
    with pytest.raises(Exception, match="reason"):
        resolve(day_store, CH, DAY, "BANK-9", actor="auditor1", reason=" ")
    out = resolve(day_store, CH, DAY, "BANK-9", actor="auditor1", reason="paid at the bank, never posted to us",
                  adjust_fen=700, customer=REMOTE_CUST)
    assert out["reconciled"] and out["ledger_id"]
    assert day_store.get_account(REMOTE_CUST).balance_fen == balance0 + 700
    assert day_store.check_ledger() == []
    # a re-run keeps what was resolved
    again = reconcile_day(day_store, CH, DAY, stmt, profile="csv", actor="auditor1")
    assert again.reconciled


def test_a_bad_statement_changes_nothing(day_store):
    with pytest.raises(StatementError):
        reconcile_day(day_store, CH, DAY, b"header\nAPP-0,10.00,0,10.00,S\nTOTAL,1,1000\n", profile="csv",
                      actor="a")
    with pytest.raises(Exception, match="no reconciliation"):
        day_store.reconciliation(CH, DAY)


def _cli(*args, db, env=None):
    return subprocess.run([sys.executable, "-m", "headend.cli.main", *args, "--db", db], capture_output=True,
                          text=True, timeout=120)


def test_close_day_refuses_an_unreconciled_statement_channel(day_store, tmp_path):
    db = day_store.location
    day_store.close()
    r = _cli("close-day", DAY, db=db)
    assert r.returncode == 2 and "not reconciled for channel(s) mobile_app" in r.stderr
    r = _cli("close-day", DAY, "--force", db=db)
    assert r.returncode == 2 and "--reason" in r.stderr
    f = tmp_path / "s.csv"
    f.write_bytes(_statement([(f"APP-{i}", 1000 * (i + 1), "paid") for i in range(5)] + [("APP-5", 6000, "reversed")]))
    r = _cli("reconcile", "run", CH, DAY, str(f), "--json", db=db)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["counts"]["matched"] == 6
    r = _cli("close-day", DAY, "--json", db=db)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["unreconciled"] == [] and {p["channel"]: p["amount_fen"] for p in out["payments"]} == {CH: 15000}


def test_cli_reports_discrepancies_and_resolves(day_store, tmp_path):
    db = day_store.location
    day_store.close()
    f = tmp_path / "s.csv"
    f.write_bytes(_statement([("APP-0", 1000, "paid"), ("APP-9", 50, "paid")]))
    r = _cli("reconcile", "run", CH, DAY, str(f), "--csv", db=db)
    assert r.returncode == 1
    assert "APP-9,theirs_only" in r.stdout and "APP-3,ours_only" in r.stdout
    r = _cli("reconcile", "resolve", CH, DAY, "APP-9", "--reason", "test", "--adjust", "0.50", db=db)
    assert r.returncode == 2 and "--customer" in r.stderr
    f.write_bytes(b"header\nAPP-0,1000,0,1000\n")
    r = _cli("reconcile", "run", CH, DAY, str(f), db=db)
    assert r.returncode == 2 and "line" in r.stderr


@pytest.mark.parametrize("profile", ["csv", "fixed-gbk"])
def test_reading_by_columns_gives_the_lines_read_one_by_one(profile):
    from headend.reconcile.statement import _by_columns, _by_lines, parse_statement

    p = load_profile(profile)
    lines = _with_fees(_lines(300, seed=4))
    text = write(p, lines).decode(p.encoding)
    body = text.splitlines()[p.header_lines:-1]
    fast = _by_columns(p, body, text)
    assert fast is not None and fast == _by_lines(p, body)
    assert parse_statement(p, write(p, lines)) == fast


@pytest.mark.parametrize("edit", [
    lambda t: t.replace("\nT00000007,", '\n"T00000007",'),          # quoted: the csv module reads it
    lambda t: t.replace("\nT00000009,", "\n\nT00000009,"),          # a blank line is skipped
    lambda t: t.replace("\nT00000011,", "\n T00000011 ,"),         # spaces around a field
])
def test_irregular_statements_are_read_line_by_line_to_the_same_result(edit):
    from headend.reconcile.statement import _by_lines, parse_statement

    p = load_profile("csv")
    text = edit(write(p, _with_fees(_lines(20))).decode())
    body = text.splitlines()[p.header_lines:-1]
    assert parse_statement(p, text.encode()) == _by_lines(p, body)
    assert [x.txn_id for x in parse(p, text.encode())] == [f"T{i:08d}" for i in range(20)]


def test_reconcile_rows_list_matched_lines_only_when_asked(day_store):
    stmt = _statement([(f"APP-{i}", 1000 * (i + 1), "paid") for i in range(4)] + [("APP-5", 6000, "reversed")])
    res = reconcile_day(day_store, CH, DAY, stmt, profile="csv", actor="auditor1")
    assert [(r["txn_id"], r["class"]) for r in res.problems] == [("APP-4", "ours_only")]
    full = {r["txn_id"]: (r["class"], r["payment"], r["customer"], r["line"]) for r in res.rows}
    assert full["APP-0"] == ("matched", day_store.payment_by_txn(CH, "APP-0").id, REMOTE_CUST, 2)
    assert len(full) == 6 and res.counts["matched"] == 5
