"""End to end: `headend serve --costctl` (a real subprocess) runs remote cost control on a 15-minute
grid against simulated remote-mode meters (`meter run --mode remote`, real TCP), both on a clock
running 600 times faster, so a grid interval passes in 1.5 s.

Readings collected -> account debited -> alarm notices -> cut notice, then trip at minus the
overdraft limit (the relay confirmed open by status word 3) -> a payment credited -> close
permitted -> the customer's button -> relay closed.  The protected customer is never tripped.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.headend.headend_proc import HeadEnd
from tools.sim.launch import start_meter

A, P = "000000000001", "000000000002"                 # meters
CA, CP = "000000000101", "000000000102"               # their customers; CP is protected
SPEED = 600
GRID = 900
CST = timezone(timedelta(hours=8))
# 09:50 local on a Wednesday: daytime (no night rule), first boundary 10 sim minutes ahead
START = datetime(2026, 3, 4, 9, 50, tzinfo=CST)

CONFIG = """
[costctl]
interval_s = 900
notice_period_h = 0
night = ""
collect_window_s = 240
"""


@pytest.fixture
def he(tmp_path):
    h = HeadEnd(tmp_path)
    cfg = tmp_path / "prepaid645.toml"
    cfg.write_text(f'[store]\ndb = "{h.db}"\n' + CONFIG)
    h.env["PREPAID645_CONFIG"] = str(cfg)
    yield h
    h.stop_serve()


def _wait(what: str, check, timeout: float = 20.0, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def test_serve_runs_cost_control_from_readings_to_trip_and_restore(he, tmp_path):
    start = START.strftime("%Y-%m-%dT%H:%M")
    meter_args = ("--mode", "remote", "--load-w", "10000", "--noise", "0", "--start", start)
    with start_meter(A, he.key_hex(A), str(tmp_path / "a.state"), speed=SPEED, extra=meter_args) as ma, \
            start_meter(P, he.key_hex(P), str(tmp_path / "p.state"), speed=SPEED, extra=meter_args) as mp:
        for m, cust in ((ma, CA), (mp, CP)):
            host, port = m.tcp
            code, _, err = he.cli("meter", "add", m.address, "--link", f"tcp://{host}:{port}", "--customer", cust,
                                  "--mode", "remote")
            assert code == 0, err
        with he.store() as s:
            for cust in (CA, CP):
                # 10 kW for 15 minutes is 2.5 kWh a grid interval: about 1.22 yuan at Beijing's first tier
                s.update_account(cust, actor="test", tariff="beijing", alarm1_fen=150, alarm2_fen=50,
                                 overdraft_fen=100, protected=cust == CP)
                s.credit(cust, 200, actor="test", idem_key=f"open:{cust}")
        he.start_serve("--costctl", "--costctl-clock", start, "--costctl-speed", str(SPEED))

        def account(c):
            with he.store() as s:
                return s.get_account(c)

        # readings land on the grid, and the account is debited for the energy between them
        first = _wait("a debit", lambda: (a := account(CA)).rated_until is not None and a)
        with he.store() as s:
            grid = [r for r in s.readings(A, "00010000") if r.read_at % GRID == 0]
            assert len(grid) >= 2
            [charge] = [e for e in s.ledger(CA) if e.kind == "charge"][-1:]
        assert first.balance_fen < 200 and charge.amount_fen < 0 and first.ladder_wh > 0

        # falling balance: alarm notices, then the cut notice, then the trip at -overdraft
        _wait("the trip", lambda: account(CA).supply == "cut", timeout=25)
        with he.store() as s:
            kinds = [n.kind for n in s.list_notifications(customer=CA)]
            assert kinds[0] in ("alarm1_notice", "alarm2_notice") and "cut_notice" in kinds
            assert s.get_account(CA).balance_fen <= -100
            trip = _wait("the trip confirmed", lambda: [c for c in s.list_commands(meter=A, kind="trip")
                                                         if c.status == "confirmed"])[0]
            reasons = [e.detail["reason"] for e in s.audit_entries(target=CA, action="costctl.trip")]
        assert trip.reply["relay"] == "open" and int(trip.reply["status_word_3"], 16) & 0x10
        assert reasons and "overdraft" in reasons[0]
        assert ma.command("status")["relay_open"] is True

        # the customer pays; the next cycle permits closing, the meter waits for the button
        with he.store() as s:
            s.credit(CA, 5_000, actor="counter", idem_key="pay:CA:1")
        close = _wait("close permitted", lambda: [c for c in _store_commands(he, A, "close_permitted")
                                                  if c.status == "confirmed"])[0]
        assert account(CA).supply == "close_permitted" and ma.command("status")["relay_open"] is True
        assert close.reply["relay"] == "open"
        ma.press_button()
        code, out, err = _wait("relay closed", lambda: (r := he.cli("read", A, "status_word_3", "--json"))[0] == 0
                               and not int(json.loads(r[1])[0]["reply"]["values"]["04000503"]["value"]) & 0x10 and r)
        assert ma.command("status")["relay_open"] is False

        # the protected customer fell as far, was told, and never tripped
        with he.store() as s:
            p = s.get_account(CP)
            held = s.audit_entries(target=CP, action="costctl.hold")
            assert p.balance_fen <= -100 and p.supply == "on"
            assert held and "protected" in held[0].detail["reason"]
            assert s.list_commands(meter=P, kind="trip") == []
        assert mp.command("status")["relay_open"] is False
    assert he.stop_serve() == 0


def _store_commands(he, meter, kind):
    with he.store() as s:
        return s.list_commands(meter=meter, kind=kind)


def test_daily_frozen_readings_are_collected_at_the_freeze_time(tmp_path):
    """On the daily grid the loop reads the meter's daily freeze (real meter firmware over TCP)
    and stores it as the energy register at the meter's midnight, once.

    The meter's clock is moved by hand (real time at speed 1 adds only seconds): at 600 times
    real speed a meter process that steps late on a busy machine integrates the last minute of
    the day after midnight, and the freeze then holds no energy at all."""
    import asyncio

    from headend.commands import target_of
    from headend.costctl.loop import FREEZE_ENERGY, collect_frozen
    from headend.serve import ServeOptions, build_worker
    from headend.store import open_store

    h = HeadEnd(tmp_path)
    meter_args = ("--mode", "remote", "--load-w", "10000", "--noise", "0", "--start", "2026-03-04T23:59")
    with start_meter(A, h.key_hex(A), str(tmp_path / "a.state"), speed=1, extra=meter_args) as m:
        store = open_store(h.db)
        host, port = m.tcp
        store.add_meter(A, link=f"tcp://{host}:{port}", customer=CA, actor="test", mode="remote")
        midnight = int(datetime(2026, 3, 5, tzinfo=CST).timestamp())
        # each control line is answered before the meter integrates the jump, and the next one
        # is read only after that: 30 s of load before midnight, then a jump past it
        assert m.command("advance 30") == {"ok": True}
        before = m.command("status")
        assert before["time"] < "2026-03-05 00:00:00" and before["energy_wh"] > 0
        assert m.command("advance 60") == {"ok": True}
        assert m.command("status")["time"] >= "2026-03-05 00:00:30"

        async def collect():
            frontend, worker = build_worker(store, h.keys, ServeOptions())
            try:
                got = await collect_frozen(store, worker.client, store.find_meters(), 8 * 3600)
                frozen = (await worker.client.read(target_of(store.get_meter(A)), FREEZE_ENERGY | 1)).value
                again = await collect_frozen(store, worker.client, store.find_meters(), 8 * 3600)
                return got, frozen, again
            finally:
                await frontend.close()

        (stored, unsupported, failed), frozen, again = asyncio.run(collect())
        assert (stored, unsupported, failed) == (1, [], {})
        [r] = store.readings(A, "00010000")
        # 10 kW from 23:59: the freeze holds the energy before the jump past midnight (10 Wh steps)
        assert r.read_at == midnight and r.value == int(frozen[0] * 1000) and 0 < r.value <= 400
        assert again[0] == 0 and store.readings(A, "00010000") == [r]      # a freeze is stored once
        store.close()
