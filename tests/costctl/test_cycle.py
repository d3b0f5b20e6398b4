"""A remote cost-control cycle against a real SQLite store: rate, debit once, notify, trip, restore."""

from datetime import datetime, timedelta, timezone

import pytest

from headend.costctl.cycle import run_cycle
from headend.costctl.decide import Rules
from headend.store import open_store
from headend.tariff.catalog import load_catalog

CST = timezone(timedelta(hours=8))
D0 = int(datetime(2025, 6, 2, tzinfo=CST).timestamp())          # Monday 00:00 local
DAY = 86400
PER_DAY = 10 * 4883 * 1000                                        # 10 kWh at 0.4883 yuan/kWh, in sub-fen
A, B, C, P = "000000000001", "000000000002", "000000000003", "000000000004"


@pytest.fixture
def env(tmp_path):
    now = [D0]
    store = open_store(tmp_path / "cc.db", clock=lambda: now[0])
    setup = {A: (20_000, False), B: (1_500, False), C: (500, False), P: (500, True)}
    for n, (cust, (money, protected)) in enumerate(setup.items()):
        addr = f"{n + 1:012d}"
        store.add_meter(addr, link="tcp://127.0.0.1:9", customer=cust, actor="t", mode="remote")
        store.update_account(cust, actor="t", tariff="beijing", alarm1_fen=1000, alarm2_fen=500,
                             protected=protected)
        store.credit(cust, money, actor="t", idem_key=f"open:{cust}")
        store.add_readings((addr, "00010000", 100_000 + 10_000 * d, D0 + d * DAY) for d in range(6))
    yield store, now
    store.close()


def cycle(store, now, at, **kw):
    now[0] = at
    return run_cycle(store, load_catalog(), at, rules=kw.pop("rules", Rules()), **kw)


def test_a_week_of_cycles(env):
    store, now = env
    # day 2, 09:00: two days rated (readings at D0 are the base)
    rep = cycle(store, now, D0 + 2 * DAY + 9 * 3600)
    assert rep.rated == 4 and rep.problems == [] and rep.skipped == []
    two_days = (2 * PER_DAY) // 100_000
    acc = store.get_account(A)
    assert acc.balance_fen == 20_000 - two_days and acc.rem == (2 * PER_DAY) % 100_000
    assert acc.rated_until == D0 + DAY and acc.ladder_wh == 20_000
    assert store.get_account(B).notice_level == 1                 # 1500 - 976 = 524: below alarm 1, above alarm 2
    assert rep.actions.get("cut_notice") == 2                     # C and P went to <= 0
    kinds = {(n.customer, n.kind) for n in store.list_notifications()}
    assert (C, "cut_notice") in kinds and (P, "cut_notice") in kinds

    # the same cycle again: nothing new is charged, no second notice
    before = [store.get_account(x).balance_fen for x in (A, B, C, P)]
    rep2 = cycle(store, now, D0 + 2 * DAY + 9 * 3600 + 60)
    assert rep2.rated == 0 and rep2.charged_fen == 0
    assert [store.get_account(x).balance_fen for x in (A, B, C, P)] == before
    assert len(store.list_notifications()) == len(kinds)

    # next day 10:00: notice period over: C is tripped, P (protected) is held with the reason
    rep3 = cycle(store, now, D0 + 3 * DAY + 10 * 3600)
    assert rep3.actions.get("trip") == 1 and rep3.actions.get("hold") == 1
    trips = [c for c in store.list_commands() if c.kind == "trip"]
    assert [c.meter for c in trips] == ["000000000003"]
    assert store.get_account(C).supply == "cut" and store.get_account(P).supply == "on"
    held = [e for e in store.audit_entries() if e.action == "costctl.hold" and e.at == now[0]]
    assert [e.target for e in held] == [P] and "protected" in held[0].detail["reason"]

    # C pays: next cycle gives close-permitted (the customer presses the button)
    store.credit(C, 5_000, actor="t", idem_key="pay:C")
    cycle(store, now, D0 + 4 * DAY + 10 * 3600)
    assert store.get_account(C).supply == "close_permitted"
    assert sorted((c.id, c.kind) for c in store.list_commands() if c.meter == "000000000003")[-1][1] == "close_permitted"
    assert [c.kind for c in store.list_commands()].count("trip") == 1


def test_levels_and_messages_follow_the_balance(env):
    store, now = env
    cycle(store, now, D0 + 2 * DAY + 9 * 3600)
    b = store.get_account(B)
    assert b.balance_fen == 1_500 - (2 * PER_DAY) // 100_000
    assert b.notice_level == (2 if b.balance_fen <= 500 else 1)
    note = [n for n in store.list_notifications() if n.customer == B][0]
    assert "low" in note.message and "yuan" in note.message


def test_no_trip_at_night(env):
    store, now = env
    cycle(store, now, D0 + 2 * DAY + 9 * 3600)
    rep = cycle(store, now, D0 + 3 * DAY + 23 * 3600)
    assert "trip" not in rep.actions and rep.actions.get("hold") == 2
    held = {e.target: e.detail["reason"] for e in store.audit_entries() if e.action == "costctl.hold" and e.at == now[0]}
    assert "night" in held[C] and "protected" in held[P]


def test_gaps_wait_and_off_grid_readings_are_reported(env):
    store, now = env
    store.add_readings([("000000000001", "00010000", 999_999, D0 + DAY + 1234)])     # off the daily grid
    rep = cycle(store, now, D0 + 7 * DAY + 9 * 3600)             # readings exist only up to day 5
    assert any("off the 86400 s grid" in p for p in rep.problems)
    assert any("gap" in p for p in rep.problems)
    acc = store.get_account(A)
    assert acc.rated_until == D0 + 4 * DAY                         # rated up to the last good reading only
    assert acc.ladder_wh == 50_000
    store.add_readings([("000000000001", "00010000", 100_000 + 10_000 * 7, D0 + 7 * DAY)])
    cycle(store, now, D0 + 7 * DAY + 10 * 3600)
    acc = store.get_account(A)
    assert acc.ladder_wh == 70_000 and acc.rated_until == D0 + 6 * DAY    # the gap's energy billed once


def test_readings_a_little_after_the_boundary_snap_to_it(tmp_path):
    store = open_store(tmp_path / "s.db", clock=lambda: D0)
    store.add_meter("000000000001", link="tcp://127.0.0.1:9", customer=A, actor="t", mode="remote")
    store.update_account(A, actor="t", tariff="beijing")
    # collected 40 s and 95 s after midnight; a second, later reading of day 1 loses to the closer one
    store.add_readings([("000000000001", "00010000", 100_000, D0 + 40), ("000000000001", "00010000", 110_000, D0 + DAY + 95),
                        ("000000000001", "00010000", 110_500, D0 + DAY + 250), ("000000000001", "00010000", 120_000, D0 + 2 * DAY + 10)])
    exact = run_cycle(store, load_catalog(), D0 + 2 * DAY + 3600)
    assert exact.rated == 0 and sum("off the 86400 s grid" in p for p in exact.problems) == 3   # the 4th: later
    rep = run_cycle(store, load_catalog(), D0 + 2 * DAY + 3600, snap_s=300)
    assert rep.rated == 1 and rep.problems == []
    acc = store.get_account(A)
    assert acc.ladder_wh == 20_000 and acc.rated_until == D0 + DAY
    with pytest.raises(ValueError, match="snap_s"):
        run_cycle(store, load_catalog(), D0, snap_s=DAY)
    store.close()


def test_an_account_with_two_meters_goes_the_careful_way_and_a_protected_meter_protects_it(tmp_path):
    store = open_store(tmp_path / "two.db", clock=lambda: D0)
    for addr, cust, prot in (("000000000001", A, False), ("000000000002", B, False), ("000000000003", B, True)):
        store.add_meter(addr, link="tcp://127.0.0.1:9", customer=cust, actor="t", mode="remote", protected=prot)
    for cust in (A, B):
        store.update_account(cust, actor="t", tariff="beijing", alarm1_fen=1000)
    # A: one meter, the whole-array path; B: two meters (the second, protected, not read yet)
    store.add_readings((m, "00010000", 100_000 + 10_000 * d, D0 + d * DAY) for m in ("000000000001", "000000000002")
                       for d in range(4))
    rep = run_cycle(store, load_catalog(), D0 + 3 * DAY + 9 * 3600, rules=Rules(notice_period_s=0))
    assert rep.rated == 2 and rep.problems == []
    a, b = store.get_account(A), store.get_account(B)
    assert (a.balance_fen, a.rem, a.ladder_wh, a.rated_until) == (b.balance_fen, b.rem, b.ladder_wh, b.rated_until)
    assert a.balance_fen == -(3 * PER_DAY // 100_000) and b.rated_until == D0 + 2 * DAY
    # both at the trip level with the cut notice standing: A is tripped, B is held (a protected meter)
    rep = run_cycle(store, load_catalog(), D0 + 3 * DAY + 10 * 3600, rules=Rules(notice_period_s=0))
    assert rep.actions == {"trip": 1, "hold": 1}
    assert [(c.meter, c.kind) for c in store.list_commands()] == [("000000000001", "trip")]
    assert [e.detail["command"] for e in store.audit_entries(action="command.trip")] == [store.list_commands()[0].id]
    # the same cycle again queues nothing twice
    run_cycle(store, load_catalog(), D0 + 3 * DAY + 10 * 3600, rules=Rules(notice_period_s=0))
    assert len(store.list_commands()) == 1
    store.close()


def _fleet_store(path, n=60):
    """n remote accounts with varied balances, one with two meters and one protected, a week of readings."""
    store = open_store(path, clock=lambda: D0)
    for i in range(n):
        cust, addr = f"{i + 1:012d}", f"{i + 1:012d}"
        store.add_meter(addr, link="tcp://127.0.0.1:9", customer=cust, actor="t", mode="remote",
                        protected=(i % 17 == 0))
        store.update_account(cust, actor="t", tariff="beijing", alarm1_fen=1000, alarm2_fen=500)
        store.credit(cust, 300 * i, actor="t", idem_key=f"open:{cust}")
        store.add_readings((addr, "00010000", 100_000 + (2_000 + 300 * i) * d, D0 + d * DAY) for d in range(6))
    store.add_meter("000000009999", link="tcp://127.0.0.1:9", customer="000000000002", actor="t", mode="remote")
    store.add_readings(("000000009999", "00010000", 5_000 + 1_000 * d, D0 + d * DAY) for d in range(6))
    return store


def _week(store):
    """Four daily cycles; what they reported and what the store holds after them."""
    out = []
    for day in (2, 3, 4, 5):
        clock = [D0 + day * DAY + 10 * 3600]
        store._clock = lambda clock=clock: clock[0]
        rep = run_cycle(store, load_catalog(), clock[0], rules=Rules(notice_period_s=0))
        out.append((rep.rated, rep.charged_fen, rep.actions, rep.problems, rep.conflicts))
    tables = {
        "accounts": [(a.customer, a.balance_fen, a.rem, a.ladder_wh, a.rated_until, a.version, a.notice_level,
                      a.notice_at, a.supply, a.supply_at) for a in store.list_accounts()],
        "ledger": [(e.customer, e.kind, e.amount_fen, e.balance_after) for a in store.list_accounts()
                   for e in store.ledger(a.customer, limit=1000)],
        "notices": sorted((n.customer, n.kind, n.message, n.idem_key, str(n.detail))
                          for n in store.list_notifications()),
        "commands": sorted((c.meter, c.kind, c.status, c.idem_key, str(c.params))
                           for c in store.list_commands(limit=1000)),
        "audit": sorted((e.action, e.target, str(e.detail)) for e in store.audit_entries(limit=10_000)),
    }
    store.close()
    return out, tables


def test_recording_in_slices_changes_no_result(tmp_path, monkeypatch):
    """The cycle charges and records its decisions slice by slice so that memory stays bounded;
    with slices of a few rows it must do exactly what it does in one piece: same charges,
    balances, states, notices, commands and audit rows."""
    import headend.costctl.cycle as cyc

    whole = _week(_fleet_store(tmp_path / "whole.db"))
    monkeypatch.setattr(cyc, "_DECISION_SLICE", 4)
    monkeypatch.setattr(cyc, "_CHARGE_SLICE", 5)
    pieces = _week(_fleet_store(tmp_path / "pieces.db"))
    assert pieces == whole
    reports, tables = whole
    assert sum(r[0] for r in reports) > 60 and tables["commands"] and tables["notices"]   # it did things


def test_states_written_with_the_charge_equal_the_separate_decision_update(tmp_path, monkeypatch):
    """A charged account's new notice and supply state goes in with its money (one UPDATE); when
    that cannot be (a payment raced in), the decisions are recorded on their own afterwards.  Both
    ways leave the same balances, states, journal, notices, commands and audit."""
    from headend.store import Store

    merged = _week(_fleet_store(tmp_path / "merged.db"))
    calls: list[bool] = []
    real = Store.charge_columns

    def without_states(self, *args, **kw):
        kw["states"] = None          # the store sets none: every decision goes the separate way
        n, done = real(self, *args, **kw)
        calls.append(done)
        return n, done

    monkeypatch.setattr(Store, "charge_columns", without_states)
    separate = _week(_fleet_store(tmp_path / "separate.db"))
    assert calls and not any(calls)
    assert separate == merged
    reports, tables = merged
    assert any(r[2] for r in reports) and tables["notices"] and tables["commands"]


def test_a_cycle_leaves_one_summary_audit_row_and_account_rows_only_where_a_decision_changed(env):
    store, now = env
    rep = cycle(store, now, D0 + 2 * DAY + 9 * 3600)
    [summary] = store.audit_entries(action="costctl.cycle")
    assert summary.target == rep.batch_key and summary.actor == "costctl"
    assert summary.detail["accounts"] == 4 and summary.detail["rated"] == rep.rated == 4
    assert summary.detail["charged_fen"] == rep.charged_fen > 0 and summary.detail["decided"] == rep.actions
    decided = [e for e in store.audit_entries(limit=1000) if e.action.startswith("costctl.")
               and e.action != "costctl.cycle"]
    # A keeps plenty of money: charged, nothing decided, no row of its own
    assert A not in {e.target for e in decided}
    assert len(decided) == sum(rep.actions.values()) > 0


def test_a_payment_racing_in_leaves_that_account_to_the_next_cycle_and_out_of_the_counts(env, monkeypatch):
    """C pays between the cycle's read and its debit: C's money still moves, but its decision
    (a cut notice on the balance the cycle read) is not recorded, not counted as done, and named
    as a conflict; the cycle's summary still counts it among the decisions made, as stale."""
    from headend.store import Store

    store, now = env
    real = Store.charge_columns

    def paid_first(self, *args, **kw):
        self.credit(C, 10_000, actor="t", idem_key="pay:C:race")
        return real(self, *args, **kw)

    monkeypatch.setattr(Store, "charge_columns", paid_first)
    rep = cycle(store, now, D0 + 2 * DAY + 9 * 3600)
    assert rep.conflicts == [f"{C}: money moved while deciding; decided again next cycle"]
    assert rep.actions == {"alarm1_notice": 1, "cut_notice": 1}                  # B and P, not C
    [summary] = store.audit_entries(action="costctl.cycle")
    assert summary.detail["decided"] == {"alarm1_notice": 1, "cut_notice": 2} and summary.detail["stale"] == 1
    assert {n.customer for n in store.list_notifications()} == {B, P}
    assert C not in {e.target for e in store.audit_entries(limit=1000) if e.action.startswith("costctl.")}
    assert store.get_account(C).balance_fen == 500 + 10_000 - (2 * PER_DAY) // 100_000
    monkeypatch.setattr(Store, "charge_columns", real)
    rep = cycle(store, now, D0 + 2 * DAY + 9 * 3600 + 60)      # nothing more to rate: C is decided on what it has
    assert rep.conflicts == [] and store.get_account(C).notice_level == 0


def test_the_decisions_audit_rows_are_written_after_the_money_commits(env, monkeypatch):
    """The per-account audit rows are the record of a committed cycle, not part of its money
    transaction: should writing them fail, the charges, states, notices and the summary row
    stand, and the summary still counts the decisions by action."""
    from headend.store import Store, StoreError

    store, now = env
    real = Store.log_actions

    def refuse_decision_rows(self, rows):
        rows = list(rows)
        if any(r[1].startswith("costctl.") and r[1] != "costctl.cycle" for r in rows):
            raise StoreError("disk full (test)")
        return real(self, rows)

    monkeypatch.setattr(Store, "log_actions", refuse_decision_rows)
    with pytest.raises(StoreError):
        cycle(store, now, D0 + 2 * DAY + 9 * 3600)
    monkeypatch.setattr(Store, "log_actions", real)
    assert store.get_account(A).balance_fen == 20_000 - (2 * PER_DAY) // 100_000
    assert store.get_account(B).notice_level == 1
    assert {n.customer for n in store.list_notifications()} == {B, C, P}
    [summary] = store.audit_entries(action="costctl.cycle")
    assert summary.detail["decided"] == {"alarm1_notice": 1, "cut_notice": 2}
    assert not [e for e in store.audit_entries(limit=1000) if e.action.startswith("costctl.")
                and e.action != "costctl.cycle"]
