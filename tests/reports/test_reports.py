"""Each report against a small ledger whose figures are worked out by hand in the comments."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from headend.payments import accept_payment, reverse_payment
from headend.reports import Query, ReportError, run_report
from headend.reports.charts import draw
from tests.headend.payments_support import LOCAL_CUST, LOCAL_METER, confirm_recharge
from tests.headend.store_support import Clock

DAY = 86400
# 2026-11-02 00:00 China time (UTC+8), a Monday
D1 = 1793548800
A, B = "000000000201", "000000000202"


def _charge(store, key, customer, fen):
    store.charge_accounts(key, [(customer, fen, 0, 0)], actor="costctl")


def _pay(store, channel, txn, customer, fen, *, meter=None):
    return accept_payment(store, channel_id=channel, txn_id=txn, amount_fen=fen, paid_at=store.now(),
                          customer=customer, meter=meter, actor=f"channel:{channel}")


@pytest.fixture
def booked(tmp_path):
    """The hand-computed ledger.

    A (east, resident, remote), B (west, business, remote), L (the local-meter customer, no district):

    day 1 (2026-11-02): 09:00 B pays 5.00 (online_banking)      B  500
                        10:00 A charged 3.00                    A -300   (advance 0: balance was 0)
                        11:00 B charged 8.00                    B -300   (advance 5.00: the 500 it had)
    day 2 (2026-11-03): 09:00 A pays 10.00 (mobile_app)         A  700
                        20:00 A charged 2.00                    A  500   (advance 2.00)
                        20:30 L pays 30.00 at the counter, sent to its meter, confirmed at 20:30:40
    day 3 (2026-11-04): 09:00 B charged 1.00                    B -400   (advance 0)
                        10:00 A pays 4.00 (mobile_app), reversed at 10:05
    """
    from tests.headend.payments_support import money_store

    clock = Clock(D1)
    s = money_store(str(tmp_path / "r.db"), clock)
    s.add_account(A, actor="admin", name="A", district="east", segment="resident", alarm1_fen=1000, alarm2_fen=500)
    s.add_account(B, actor="admin", name="B", district="west", segment="business", protected=True)
    s.add_meter("000000000011", link="tcp://127.0.0.1:9011", customer=A, actor="admin", mode="remote")
    s.add_meter("000000000012", link="tcp://127.0.0.1:9012", customer=B, actor="admin", mode="remote")
    clock.t = D1 + 9 * 3600
    _pay(s, "online_banking", "OB-1", B, 500)
    clock.t = D1 + 10 * 3600
    _charge(s, "d1-a", A, 300)
    clock.t = D1 + 11 * 3600
    _charge(s, "d1-b", B, 800)
    clock.t = D1 + DAY + 9 * 3600
    _pay(s, "mobile_app", "APP-1", A, 1000)
    clock.t = D1 + DAY + 20 * 3600
    _charge(s, "d2-a", A, 200)
    clock.t = D1 + DAY + 20 * 3600 + 1800
    p = _pay(s, "counter", "C-1", LOCAL_CUST, 3000, meter=LOCAL_METER)
    clock.t += 40
    confirm_recharge(s, p.command_id)
    clock.t = D1 + 2 * DAY + 9 * 3600
    _charge(s, "d3-b", B, 100)
    clock.t = D1 + 2 * DAY + 10 * 3600
    r = _pay(s, "mobile_app", "APP-2", A, 400)
    clock.t += 300
    reverse_payment(s, r.id, channel_id="mobile_app", actor="channel:mobile_app", reason="customer cancelled")
    clock.t = D1 + 3 * DAY
    yield s
    s.close()


def _q(**kw):
    base = {"first": "2026-11-02", "last": "2026-11-04"}
    base.update(kw)
    return Query(**base)


def test_collection_by_day(booked):
    rows = {r["period"]: r for r in run_report(booked, "collection", _q()).rows}
    # day 1: due 3.00 + 8.00; collected 5.00 (B); no arrears before it
    d1 = rows["2026-11-02"]
    assert (d1["due_fen"], d1["collected_fen"], d1["arrears_start_fen"]) == (1100, 500, 0)
    assert d1["collected_current_fen"] == 500 and d1["rate"] == round(500 / 1100, 4)
    assert d1["prepaid_share"] == round(500 / 1100, 4)
    # day 2: arrears at its start: A owes 3.00, B owes 3.00. A pays 10.00 (the local customer's
    # 30.00 is paid and then leaves the account for the meter: a payment row and a top-up row)
    d2 = rows["2026-11-03"]
    assert d2["arrears_start_fen"] == 600
    assert d2["due_fen"] == 200
    assert d2["collected_fen"] == 1000 + 3000
    assert d2["collected_arrears_fen"] == 600 and d2["collected_current_fen"] == 200
    assert d2["rate"] == 1.0 and d2["prepaid_share"] == 1.0
    # day 3: only B owes (3.00); A's 4.00 was paid and reversed: net 0
    d3 = rows["2026-11-04"]
    assert (d3["arrears_start_fen"], d3["due_fen"], d3["collected_fen"]) == (300, 100, 0)
    assert d3["rate"] == 0.0 and d3["rate_change"] == -1.0


def test_collection_by_week_and_by_district(booked):
    [w] = run_report(booked, "collection", _q(by="week")).rows
    assert w["period"] == "2026-11-02"
    assert (w["due_fen"], w["arrears_start_fen"], w["collected_fen"]) == (1400, 0, 4500)
    east = run_report(booked, "collection", _q(district="east")).rows
    assert [r["due_fen"] for r in east] == [300, 200, 0]
    assert [r["arrears_start_fen"] for r in east] == [0, 300, 0]
    grouped = run_report(booked, "collection", _q(by="month", group="segment")).rows
    by = {r["segment"]: r for r in grouped}
    assert by["business"]["due_fen"] == 900 and by["resident"]["due_fen"] == 500
    assert by["business"]["collected_fen"] == 500


def test_channels(booked):
    rep = run_report(booked, "channels", _q(by="month"))
    by = {r["channel"]: r for r in rep.rows}
    assert by["mobile_app"]["count"] == 1 and by["mobile_app"]["amount_fen"] == 1000
    assert by["mobile_app"]["reversed_count"] == 1 and by["mobile_app"]["reversed_fen"] == 400
    assert by["counter"]["amount_fen"] == 3000 and by["counter"]["share"] == round(3000 / 4500, 4)
    assert rep.totals == {"count": 3, "amount_fen": 4500, "fee_fen": 0}
    peaks = {r["channel"]: r["peak_hour"] for r in rep.sections["by_channel"].rows}
    assert peaks == {"counter": 20, "mobile_app": 9, "online_banking": 9}
    only = run_report(booked, "channels", _q(channel="counter"))
    assert [r["channel"] for r in only.rows] == ["counter"]


def test_speed(booked):
    rep = run_report(booked, "speed", _q())
    [row] = [r for r in rep.rows if r["channel"] == "counter"]
    assert (row["n"], row["p50_s"], row["p95_s"], row["p99_s"]) == (1, 40, 40, 40)


def test_accounts_and_ageing(booked):
    rep = run_report(booked, "accounts", _q())
    by = {r["district"]: r for r in rep.rows}
    # A: 5.00 with alarm1 10.00 and alarm2 5.00 -> alarm 2; B: -4.00 -> alarm 2, protected
    assert by["east"]["alarm2"] == 1 and by["west"]["alarm2"] == 1 and by["west"]["protected"] == 1
    # B went below zero on day 1 at 11:00 and stayed there: 1-2 days -> 0-30 bucket
    [w] = rep.sections["ageing"].rows
    assert w["district"] == "west" and w["0-30"] == 400 and w["0-30 accounts"] == 1


def test_operations(booked):
    rep = run_report(booked, "operations", _q(stale_days=1))
    assert rep.totals["commands"] == 1
    outcome = rep.sections["commands"].rows
    assert outcome == [{"kind": "recharge", "status": "confirmed", "count": 1, "retries": 0}]
    # no meter was ever heard from in this ledger
    assert len(rep.sections["not_read"].rows) == 4


def test_bad_options_and_no_data(booked):
    with pytest.raises(ReportError, match="after"):
        run_report(booked, "collection", _q(first="2026-11-05", last="2026-11-01"))
    with pytest.raises(ReportError, match="unknown district 'north'"):
        run_report(booked, "collection", _q(district="north"))
    with pytest.raises(ReportError, match="unknown channel"):
        run_report(booked, "channels", _q(channel="nope"))
    with pytest.raises(ReportError, match="unknown report"):
        run_report(booked, "nope", _q())
    empty = run_report(booked, "channels", _q(first="2025-01-01", last="2025-01-31"))
    assert empty.rows == [] and empty.totals["count"] == 0


def test_charts(booked, tmp_path):
    for name in ("collection", "channels", "accounts"):
        rep = run_report(booked, name, _q())
        for suffix in (".png", ".svg"):
            out = draw(rep, tmp_path / f"{name}{suffix}")
            assert out.stat().st_size > 1000
    assert (tmp_path / "collection.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="png or .svg"):
        draw(rep, tmp_path / "x.pdf")


def test_charts_of_a_period_with_nothing_in_it(booked, tmp_path):
    # a day without payments (or a day asked in the wrong time zone) draws an empty chart that says
    # so, as the text report prints no rows: it does not fail the command
    for name in ("collection", "channels", "accounts"):
        rep = run_report(booked, name, _q(first="2025-01-01", last="2025-01-31"))
        out = draw(rep, tmp_path / f"empty-{name}.png")
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _cli(*args, db):
    return subprocess.run([sys.executable, "-m", "headend.cli.main", "report", *args, "--db", db],
                          capture_output=True, text=True, timeout=120)


def test_cli_formats_and_exit_codes(booked, tmp_path):
    db = booked.location
    booked.close()
    r = _cli("collection", "--from", "2026-11-02", "--to", "2026-11-04", "--json", db=db)
    assert r.returncode == 0, r.stderr
    assert [row["due_fen"] for row in json.loads(r.stdout)["rows"]] == [1100, 200, 100]
    r = _cli("channels", "--from", "2026-11-02", "--to", "2026-11-04", "--by", "month", "--csv", db=db)
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert {row["channel"]: int(row["amount_fen"]) for row in rows} == {"counter": 3000, "mobile_app": 1000,
                                                                        "online_banking": 500}
    r = _cli("collection", "--from", "2026-11-02", "--to", "2026-11-04", "--chart", str(tmp_path / "c.png"), db=db)
    assert r.returncode == 0 and "45.45%" in r.stdout and (tmp_path / "c.png").exists()
    r = _cli("collection", "--from", "2026-11-05", "--to", "2026-11-01", db=db)
    assert r.returncode == 2 and "after" in r.stderr
    r = _cli("accounts", "--district", "north", db=db)
    assert r.returncode == 2 and "unknown district" in r.stderr
    r = _cli("channels", "--from", "2025-01-01", "--to", "2025-01-02", db=db)
    assert r.returncode == 0 and "no data" in r.stdout


def test_closed_days_are_read_from_their_kept_figures_and_agree_with_the_journal(booked):
    live = {by: run_report(booked, "collection", _q(by=by, group="district")).rows for by in ("day", "week")}
    for day in ("2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"):
        booked.close_day(day, actor="auditor")
    assert booked.days_with_figures("2026-11-01", "2026-11-04") == {"2026-11-01", "2026-11-02", "2026-11-03",
                                                                    "2026-11-04"}
    # the journal is no longer what answers: a row slipped into it by hand would not show
    for by in ("day", "week"):
        assert run_report(booked, "collection", _q(by=by, group="district")).rows == live[by]
    figures = {(d, g): (due, paid, adv, owed) for d, g, due, paid, adv, owed in
               booked.day_figures("2026-11-01", "2026-11-04", group="district")}
    # hand-computed: day 2 ends with A at +5.00 and B at -3.00; day 3 with B at -4.00
    assert figures[("2026-11-02", "west")] == (800, 500, 500, 300)
    assert figures[("2026-11-03", "east")][3] == 0 and figures[("2026-11-04", "west")][3] == 400


# ---------------------------------------------------------------- kept figures against a scan

_KEPT_TABLES = ("day_figures", "day_payments", "day_latencies", "day_unconfirmed", "day_payments_kept")


def _scanned_copy(store, path):
    """The same store with nothing kept at the closes: every report sums the journal and payments."""
    import sqlite3

    from headend.store import open_store

    src = sqlite3.connect(store.location)
    dst = sqlite3.connect(path)
    src.backup(dst)
    src.close()
    for t in _KEPT_TABLES:
        dst.execute(f"DELETE FROM {t}")
    dst.commit()
    dst.close()
    return open_store(str(path), clock=store._clock)


@pytest.fixture
def generated(tmp_path):
    """A random ledger over eight days: charges, payments on every channel kind to remote
    accounts in three districts, local-meter payments confirmed the same day or days later;
    the first five days closed, some while local payments were still on their way."""
    import random

    from headend.store import CHANNEL_KINDS
    from tests.headend.payments_support import LOCAL_METER, money_store

    rng = random.Random(645)
    clock = Clock(D1)
    s = money_store(str(tmp_path / "g.db"), clock)
    custs = [f"{300 + i:012d}" for i in range(24)]
    for i, c in enumerate(custs):
        s.add_account(c, actor="admin", district=("east", "west", "north")[i % 3],
                      segment=("resident", "business")[i % 2], alarm1_fen=1000)
    pending: list[int] = []
    txn = 0
    for day in range(8):
        for k in range(rng.randrange(10, 20)):
            clock.t = D1 + day * DAY + 3600 + k * 1800 + rng.randrange(600)
            what = rng.random()
            if what < 0.4:
                _charge(s, f"g{day}-{k}", rng.choice(custs), rng.randrange(100, 3000))
            elif what < 0.85:
                txn += 1
                p = _pay(s, rng.choice(CHANNEL_KINDS), f"G-{txn}", rng.choice(custs), rng.randrange(1, 40) * 100)
                if rng.random() < 0.15:
                    reverse_payment(s, p.id, channel_id=p.channel_id, actor="ops", reason="customer cancelled")
            else:
                txn += 1
                pending.append(_pay(s, "counter", f"L-{txn}", LOCAL_CUST, rng.randrange(1, 20) * 100,
                                    meter=LOCAL_METER).command_id)
            # the meter answers in order, mostly within the hour, sometimes days later
            while pending and rng.random() < 0.5:
                clock.t += rng.randrange(5, 300)
                confirm_recharge(s, pending.pop(0))
        if day == 4:
            # late in the evening: still on its way to the meter when the days are closed
            clock.t = D1 + 4 * DAY + 23 * 3600
            txn += 1
            pending.append(_pay(s, "counter", f"L-{txn}", LOCAL_CUST, 700, meter=LOCAL_METER).command_id)
            clock.t = D1 + 5 * DAY + 60
            for d in range(5):
                s.close_day(f"2026-11-{2 + d:02d}", actor="auditor")
    clock.t = D1 + 8 * DAY + 3600
    while pending[:-1]:
        confirm_recharge(s, pending.pop(0))       # after the closes; the last one never
    yield s
    s.close()


QUERIES = [_q(first="2026-11-01", last="2026-11-10", **kw) for kw in (
    {}, {"by": "week"}, {"by": "month", "group": "district"}, {"group": "segment"}, {"district": "west"},
    {"segment": "business", "by": "week"}, {"channel": "mobile_app"}, {"channel": "counter", "by": "month"})]


def test_reports_from_kept_figures_equal_the_scan_of_journal_and_payments(generated, tmp_path):
    assert len(generated.days_with_figures("2026-11-01", "2026-11-10")) == 5
    assert generated.list_payments(state="reversed", limit=1000)
    scanned = _scanned_copy(generated, tmp_path / "scan.db")
    try:
        for q in QUERIES:
            for name in ("collection", "channels", "speed"):
                if name == "collection" and q.channel:
                    continue
                assert run_report(generated, name, q).to_dict() == run_report(scanned, name, q).to_dict(), (name, q)
        # something was kept for the closed days and nothing for the open ones
        with sqlite3_of(generated) as con:
            kept = {r[0] for r in con.execute("SELECT DISTINCT day FROM day_payments")}
            assert kept and max(kept) <= "2026-11-06" and con.execute("SELECT COUNT(*) FROM day_unconfirmed").fetchone()[0]
    finally:
        scanned.close()


def test_a_closed_days_payment_reversed_later_moves_to_the_reversed_counts(generated, tmp_path):
    [p] = [p for p in generated.list_payments(day="2026-11-03", limit=1000) if p.state == "credited"][:1] or [None]
    assert p is not None
    generated.reverse_payment_record(p.id, actor="ops", reason="bank returned it")
    scanned = _scanned_copy(generated, tmp_path / "scan.db")
    try:
        for q in QUERIES[:3]:
            for name in ("channels", "speed"):
                assert run_report(generated, name, q).to_dict() == run_report(scanned, name, q).to_dict(), (name, q)
    finally:
        scanned.close()


def sqlite3_of(store):
    import contextlib
    import sqlite3

    return contextlib.closing(sqlite3.connect(store.location))


def test_percentiles_from_a_histogram_are_numpys_higher_percentiles():
    import random

    import numpy as np

    from headend.reports import _pcts

    rng = random.Random(7)
    for n in (1, 2, 3, 7, 100, 1001):
        values = [rng.randrange(0, 50) for _ in range(n)]
        hist: dict[int, int] = {}
        for v in values:
            hist[v] = hist.get(v, 0) + 1
        want = [int(np.percentile(np.array(values), q, method="higher")) for q in (50, 95, 99)]
        got = _pcts(hist)
        assert (got["n"], got["p50_s"], got["p95_s"], got["p99_s"]) == (n, *want)


def test_owing_since_kept_with_every_balance_change_equals_the_journal(generated):
    """When each balance went below zero, kept by the booking and charge paths, is what the
    journal says: the time of the first row after the last one that left the balance at zero or
    more; None for the accounts not owing."""
    with sqlite3_of(generated) as con:
        kept = dict(con.execute("SELECT customer, owing_since FROM accounts"))
        rows = con.execute("SELECT customer, at, balance_after FROM ledger ORDER BY customer, id").fetchall()
    want: dict[str, int | None] = {c: None for c in kept}
    for c, at, bal in rows:
        if bal >= 0:
            want[c] = None
        elif want[c] is None:
            want[c] = at
    assert kept == want
    assert sum(v is not None for v in want.values()) >= 3


def test_account_states_counted_in_the_database_follow_the_readme(generated):
    """Each account classified by hand from the README's words, against the report's counts:
    remote accounts cut or in debt, a local account whose meter was last seen with its relay
    open, and one whose meter wallet lifts it into credit."""
    from tests.headend.payments_support import LOCAL_METER, REMOTE_CUST

    s = generated
    s.set_account_state(REMOTE_CUST, supply="cut")
    s.record_meter_state(LOCAL_METER, balance_fen=50_000, relay="closed")
    s.add_account("000000000901", actor="admin", district="east", alarm1_fen=100)
    s.add_meter("000000000091", link="tcp://127.0.0.1:9091", customer="000000000901", actor="admin", mode="local")
    s.record_meter_state("000000000091", balance_fen=5_000, relay="open")

    def state(a) -> str:
        local = [m for m in s.meters_of_customer(a.customer) if m.mode == "local"]
        bal = a.balance_fen + sum(m.balance_fen or 0 for m in local)
        if (not local and a.supply != "on") or any(m.relay == "open" for m in local):
            return "cut"
        if bal <= 0 or (a.alarm2_fen > 0 and bal <= a.alarm2_fen):
            return "alarm2"
        if a.alarm1_fen > 0 and bal <= a.alarm1_fen:
            return "alarm1"
        return "credit"

    want: dict[str, dict[str, int]] = {}
    for a in s.list_accounts():
        row = want.setdefault(a.district or "-", {"accounts": 0, "credit": 0, "alarm1": 0, "alarm2": 0, "cut": 0,
                                                  "protected": 0})
        row["accounts"] += 1
        row[state(a)] += 1
        row["protected"] += int(a.protected)
    got = {r["district"]: {k: v for k, v in r.items() if k != "district"}
           for r in run_report(s, "accounts", _q()).rows}
    assert got == want
    assert got["-"]["cut"] == 1 and got["east"]["cut"] == 1 and sum(r["credit"] for r in got.values()) >= 1


def test_confirmed_closes_of_either_kind_count_as_restores(booked):
    """A restore is a confirmed close_permitted or close_direct command (there is no command
    named plain "close"): a trip, then a close permitted and a close direct, all confirmed on 2026-11-05."""
    meter = "000000000011"
    for kind in ("trip", "close_permitted", "close_direct"):
        cmd = booked.enqueue(meter, kind, actor="costctl")
        [claimed] = booked.claim_next(limit=1)
        assert claimed.id == cmd.id
        booked.confirm(cmd.id, reply={"relay": "closed"})
    rep = run_report(booked, "operations", _q(last="2026-11-05"))
    assert (rep.totals["cuts"], rep.totals["restores"]) == (1, 2)
    # the speed report's payment to restore: A's standing payment (day 2, 09:00) to the first
    # confirmed close after it (2026-11-05 00:00): 1 day 15 h
    rep = run_report(booked, "speed", _q(last="2026-11-05"))
    [row] = [r for r in rep.rows if r["channel"] == "mobile_app" and r["measure"] == "payment_to_restore"]
    assert (row["n"], row["p50_s"]) == (1, DAY + 15 * 3600)


def test_ageing_and_states_from_one_pass_equal_the_accounts_by_hand(generated):
    """The accounts report reads states and ageing in one pass over the accounts: its ageing is
    each account below zero by its own balance, aged by whole days since owing_since (now when
    unknown), bucketed by hand; its state counts are the console's ``account_states``."""
    from headend.reports import AGEING

    s = generated
    now = s.now()
    with sqlite3_of(s) as con:
        owing = con.execute("SELECT district, balance_fen, owing_since FROM accounts WHERE balance_fen < 0").fetchall()
    want: dict[str, dict[str, int]] = {}
    for district, bal, since in owing:
        days = max(0, (now - (now if since is None else since)) // DAY)
        [label] = [lab for lo, hi, lab in AGEING if days >= lo and (hi is None or days <= hi)]
        row = want.setdefault(district or "-", {k: 0 for _, _, lab in AGEING for k in (lab, f"{lab} accounts")})
        row[label] -= bal
        row[f"{label} accounts"] += 1
    rep = run_report(s, "accounts", _q())
    got = {r["district"]: {k: v for k, v in r.items() if k != "district"} for r in rep.sections["ageing"].rows}
    assert got == want and len(owing) >= 3
    console: dict[str, dict[str, int]] = {}
    for district, state, n, protected in s.account_states():
        row = console.setdefault(district or "-", {"accounts": 0, "protected": 0})
        row[state] = row.get(state, 0) + n
        row["accounts"] += n
        row["protected"] += protected
    assert {r["district"]: {k: v for k, v in r.items() if k != "district" and (v or k in ("accounts", "protected"))}
            for r in rep.rows} == console
