"""Planned outages on a grid of 1,000+ registered meters: exactly the affected customers, important first."""

from __future__ import annotations

from collections import Counter

import pytest

from headend.cli.main import main as headend
from headend.grid import announce, cancel_outage, change_outage, plan_outage, resync_after_outages
from headend.grid.topology import read_grid_csv
from headend.store import Conflict, InvalidInput, NotFound, open_store
from tests.notices.conftest import NOON, local, make_sender

HOUR = 3600
F1_METERS = 1000


def _grid(store) -> tuple[set[str], set[str]]:
    """1,000 meters on feeder F1 (10 areas), 100 on F2; every 10th F1 customer has two meters;
    30 marked important, 10 more protected.  Returns (F1 customers, important F1 customers)."""
    rows, grid, f1, important = [], [], set(), set()
    for i in range(1, F1_METERS + 101):
        meter = f"{i:012d}"
        on_f1 = i <= F1_METERS
        cust = f"{900000000000 + (i - 1 if on_f1 and i % 10 == 0 else i):012d}"
        rows.append({"address": meter, "link": "tcp://127.0.0.1:9", "customer": cust})
        imp = on_f1 and i % 33 == 0
        grid.append((meter, "F1" if on_f1 else "F2", f"A{(i - 1) // 100}", "1" if imp else "0"))
        if on_f1:
            f1.add(cust)
            if imp:
                important.add(cust)
    store.add_meters(rows, actor="t")
    with store.atomic():
        for r in {r["customer"] for r in rows}:
            store.update_account(r, actor="t", phone="13" + r[-9:])
        for n in range(10):                                   # protected accounts count as important
            cust = f"{900000000000 + 501 + 2 * n:012d}"
            store.update_account(cust, actor="t", protected=True)
            important.add(cust)
        for n in range(5):                                    # so do accounts marked important
            cust = f"{900000000000 + 701 + 2 * n:012d}"
            store.update_account(cust, actor="t", important=True)
            important.add(cust)
    store.import_grid(grid, actor="t")
    return f1, important


@pytest.fixture
def grid(store):
    return _grid(store)


def test_a_feeder_outage_reaches_exactly_its_customers_important_first(store, provider, grid):
    f1, important = grid
    start = NOON + 2 * HOUR
    o, n = plan_outage(store, feeder="F1", start_at=start, end_at=start + 4 * HOUR, reason="transformer upkeep",
                       actor="ops", now=NOON)
    assert n == len(f1) == 900 and o.scope == "feeder F1"
    sender = make_sender(store, provider, rate_n=10)
    while sender.run_once(NOON).claimed:
        pass
    to = [m["to"] for m in provider.delivered]
    phone = {("13" + c[-9:]): c for c in f1}
    reached = [phone[p] for p in to]
    assert set(reached) == f1 and len(reached) == len(f1)                       # exactly, once each
    first = reached[:len(important)]
    assert set(first) == important                                              # important ones first
    text = store.find_notices(customer=reached[0])[0].sent_text
    assert "transformer upkeep" in text and "A" in text and "14:00" in text and "18:00" in text


def test_lead_times_changes_and_cancellation(store, provider, grid):
    f1, important = grid
    start = NOON + 48 * HOUR
    o, _ = plan_outage(store, feeder="F1", start_at=start, end_at=start + 3 * HOUR, reason="line work", actor="ops",
                       now=NOON)
    sender = make_sender(store, provider, rate_n=10)
    while sender.run_once(NOON).claimed:
        pass
    told = Counter(n.customer for n in store.find_notices(status="sent", limit=5000))
    assert set(told) == important                      # 72 h ahead; the others wait for 24 h ahead
    waiting = store.find_notices(status="queued", limit=5000)
    assert {n.not_before for n in waiting} == {start - 24 * HOUR} and len(waiting) == len(f1) - len(important)

    # moved by two hours: those told get an update now, the others the new plan at its lead time
    o2, n = change_outage(store, o.id, actor="ops", now=NOON + HOUR, start_at=start + 2 * HOUR,
                          end_at=start + 5 * HOUR)
    assert o2.version == 2 and n == len(f1)
    while sender.run_once(NOON + HOUR).claimed:
        pass
    kinds = Counter(n.kind for n in store.find_notices(status="sent", limit=5000))
    assert kinds == {"outage_planned": len(important), "outage_changed": len(important)}
    assert {n.last_error for n in store.find_notices(status="failed", limit=5000)} == {
        "superseded by the outage's change to version 2"}

    # cancelled: only the customers already told hear of it; the rest never get a word
    cancel_outage(store, o.id, actor="ops", now=NOON + 2 * HOUR)
    for t in (NOON + 2 * HOUR, start, start + 2 * HOUR):
        while sender.run_once(t).claimed:
            pass
    sent = Counter((n.customer, n.kind) for n in store.find_notices(status="sent", limit=5000))
    assert {c for c, k in sent if k == "outage_cancelled"} == important
    assert {c for c, _k in sent} == important and all(v == 1 for v in sent.values())
    assert announce(store, start + 3 * HOUR) == []                # cancelled: nothing on the hotline
    with pytest.raises(Conflict):
        change_outage(store, o.id, actor="ops", now=NOON, reason="x")


def test_hotline_announcement_and_clock_resync_after_the_outage(store, grid):
    start = local("2026-12-03 09:00")
    o, _ = plan_outage(store, area="A3", start_at=start, end_at=start + 5 * HOUR, reason="cable repair", actor="ops",
                       now=NOON)
    assert announce(store, start - 1) == []
    [(got, texts)] = announce(store, start + HOUR)
    assert got.id == o.id
    assert texts["zh"] == "A3因cable repair停电，预计2026-12-03 14:00恢复供电。给您带来不便，敬请谅解。"
    assert "A3" in texts["en"] and "2026-12-03 14:00" in texts["en"]
    assert resync_after_outages(store, start + HOUR) == 0                # not over yet
    assert resync_after_outages(store, start + 5 * HOUR) == 100          # every meter of the area, once
    assert resync_after_outages(store, start + 6 * HOUR) == 0
    cmds = store.list_commands(kind="sync_time", limit=1000)
    assert sorted(c.meter for c in cmds) == store.outage_meters(o.id) and len(cmds) == 100
    assert all(c.idem_key.startswith(f"outage:{o.id}:sync:") for c in cmds)


def test_bad_grid_input_changes_nothing(store, tmp_path):
    store.add_meter("000000000001", link="tcp://127.0.0.1:9", customer="000000000001", actor="t")
    store.add_meter("000000000002", link="tcp://127.0.0.1:9", customer="000000000002", actor="t")
    with pytest.raises(NotFound, match="row 2: meter 000000000009"):
        store.import_grid([("000000000001", "F1", "A1", "0"), ("000000000009", "F1", "A1", "0")], actor="t")
    with pytest.raises(Conflict, match="area A1 would sit on two feeders"):
        store.import_grid([("000000000001", "F1", "A1", "0"), ("000000000002", "F2", "A1", "0")], actor="t")
    with pytest.raises(InvalidInput, match="row 1: important"):
        store.import_grid([("000000000001", "F1", "A1", "maybe")], actor="t")
    assert store.grid_summary() == []
    f = tmp_path / "g.csv"
    f.write_text("meter,area\n000000000001,A1\n")
    with pytest.raises(InvalidInput, match="missing feeder"):
        read_grid_csv(f)
    with pytest.raises(NotFound, match="import the grid first"):
        plan_outage(store, feeder="F9", start_at=NOON + HOUR, end_at=NOON + 2 * HOUR, reason="x", actor="t", now=NOON)
    store.import_grid([("000000000001", "F1", "A1", "0")], actor="t")
    with pytest.raises(InvalidInput, match="end after it starts"):
        plan_outage(store, feeder="F1", start_at=NOON + HOUR, end_at=NOON + HOUR, reason="x", actor="t", now=NOON)


def test_grid_and_outage_commands(tmp_path, capsys):
    db = str(tmp_path / "cli.db")
    with open_store(db) as s:
        for i in (1, 2, 3):
            s.add_meter(f"{i:012d}", link="tcp://127.0.0.1:9", customer=f"{i:012d}", actor="t")
            s.update_account(f"{i:012d}", actor="t", phone=f"1380013800{i}")
    csv = tmp_path / "grid.csv"
    csv.write_text("meter,feeder,area,important\n000000000001,F1,A1,1\n000000000002,F1,A2,0\n000000000003,F2,A3,0\n")
    assert headend(["grid", "import", str(csv), "--db", db]) == 0
    assert headend(["grid", "show", "--db", db, "--json"]) == 0
    out = capsys.readouterr().out
    assert '"area": "A1"' in out and '"important": 1' in out
    assert headend(["outage", "plan", "--feeder", "F1", "--from", "2026-12-02T08:00", "--to", "2026-12-02T12:00",
                    "--reason", "maintenance", "--db", db, "--at", str(NOON)]) == 0
    assert "2 customer(s) to notify (1 important first" in capsys.readouterr().out
    assert headend(["notices", "list", "--db", db, "--kind", "outage_planned", "--json"]) == 0
    listed = capsys.readouterr().out
    assert listed.count('"kind": "outage_planned"') == 2 and "000000000003" not in listed
    assert headend(["outage", "announce", "--db", db, "--at", str(local("2026-12-02 09:00")),
                    "--out", str(tmp_path / "hotline.txt")]) == 0
    assert "maintenance" in (tmp_path / "hotline.txt").read_text(encoding="utf-8")
    assert headend(["outage", "plan", "--area", "A9", "--from", "2026-12-02T08:00", "--to", "2026-12-02T12:00",
                    "--reason", "x", "--db", db]) == 4
    assert headend(["outage", "plan", "--feeder", "F1", "--from", "tomorrow", "--to", "2026-12-02T12:00",
                    "--reason", "x", "--db", db]) == 2
