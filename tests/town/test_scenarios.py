"""Scenarios of a town's life, end to end: a town (`python -m tools.town`, real TCP buses, the
real meter cores) registered into a head-end, `headend serve` a real process, the clock of both
running 600 times faster (a 15-minute cost-control interval in 1.5 s).

* a customer runs out of money: warnings, the cut notice, the cut (relay open), a payment at
  the counter, close permitted, the customer's button, supply back;
* a protected customer falls as far and is never cut;
* a planned outage on a feeder reaches exactly the customers behind that feeder.
"""

from __future__ import annotations

import time
from datetime import datetime

from tests.town.support import Town, wait_for
from tools.town.plan import plan_town

COUNT, SEED = 40, 3


def _start() -> str:
    # today at 10:00 local: daytime, so no night rule, and the counter is open
    return datetime.now().strftime("%Y-%m-%dT10:00")


def test_out_of_money_warned_cut_pays_at_the_counter_restored_and_the_protected_never_cut(tmp_path):
    town_plan = plan_town(COUNT, seed=SEED, remote_share=1.0)
    homes = town_plan.homes
    poor, protected = homes[5], homes[6]
    start = _start()
    with Town(tmp_path, count=COUNT, seed=SEED, start=start, extra=("--remote-share", "1.0")) as town:
        he = town.he
        with he.store() as s:
            for h in homes:  # everyone else has plenty; the two watched start just above the first warning
                s.credit(h.customer, 3_500 if h in (poor, protected) else 1_000_000, actor="test",
                         idem_key=f"open:{h.customer}")
            s.update_account(protected.customer, actor="test", protected=True)
        for h in (poor, protected):
            town.control(f"load {h.address} 20000")  # 20 kW: about 2.5 yuan a 15-minute interval
        he.start_serve("--costctl", "--costctl-clock", start, "--costctl-speed", "600", "--costctl-interval", "900")

        def kinds(customer):
            with he.store() as s:
                return [n.kind for n in s.list_notifications(customer=customer) if n.status == "sent"]

        def account(customer):
            with he.store() as s:
                return s.get_account(customer)

        wait_for("the cut", lambda: account(poor.customer).supply == "cut", timeout=120)
        told = wait_for("the cut SMS", lambda: "cut" in (k := kinds(poor.customer)) and k, timeout=60)
        # warned first (alarm 1 then alarm 2; a late cycle on a busy machine may pass both at once), cut last
        warnings = [i for i, k in enumerate(told) if k in ("alarm1_notice", "alarm2_notice")]
        assert warnings and max(warnings) < told.index("cut_notice") < told.index("cut")
        if "alarm1_notice" in told and "alarm2_notice" in told:
            assert told.index("alarm1_notice") < told.index("alarm2_notice")
        wait_for("the relay open", lambda: town.status(poor.address)["relay_open"], timeout=60)
        assert account(poor.customer).balance_fen <= -500  # the overdraft line
        # the customer pays 100 yuan at the business hall's counter
        code, out, err = he.cli("counter", "open", "--actor", "carol")
        assert code == 0, err
        code, out, err = he.cli("counter", "pay", poor.customer, "100", "--tender", "cash", "--actor", "carol")
        assert code == 0, err
        wait_for("close permitted", lambda: account(poor.customer).supply == "close_permitted", timeout=60)
        with he.store() as s:
            wait_for("the close-permitted command confirmed",
                     lambda: [c for c in s.list_commands(meter=poor.address, kind="close_permitted")
                              if c.status == "confirmed"], timeout=60)
        assert town.status(poor.address)["relay_open"] is True  # permitted: the customer closes it
        town.control(f"button {poor.address}")
        assert town.status(poor.address)["relay_open"] is False
        # the protected customer fell as far (past the cut line) and still has supply
        wait_for("the protected customer past the cut line",
                 lambda: account(protected.customer).balance_fen <= -500, timeout=120)
        time.sleep(3)  # two more cost-control cycles at 600x
        with he.store() as s:
            assert s.list_commands(meter=protected.address, kind="trip") == []
            assert s.audit_entries(target=protected.customer, action="costctl.hold")
        assert account(protected.customer).supply == "on"
        assert town.status(protected.address)["relay_open"] is False
    assert town.proc.returncode == 0


def test_a_planned_outage_reaches_exactly_the_customers_behind_the_feeder(tmp_path):
    town_plan = plan_town(COUNT * 3, seed=SEED)
    feeder = town_plan.homes[0].feeder
    behind = {h.customer for h in town_plan.homes if h.feeder == feeder}
    assert 0 < len(behind) < len(town_plan.homes)
    with Town(tmp_path, count=COUNT * 3, seed=SEED, speed=1, start=_start(), extra=("--no-load",)) as town:
        he = town.he
        he.start_serve("--no-costctl")
        # three hours from now: inside every customer's notice lead, so every notice is due at once
        begin, end = (datetime.fromtimestamp(time.time() + h * 3600).strftime("%Y-%m-%dT%H:%M") for h in (3, 5))
        code, out, err = he.cli("outage", "plan", "--feeder", feeder, "--from", begin, "--to", end,
                                "--reason", "line work")
        assert code == 0, err

        def told():
            with he.store() as s:
                return {n.customer for n in s.list_notifications(limit=10_000)
                        if n.kind == "outage_planned" and n.status == "sent"}

        wait_for("every outage notice sent", lambda: told() == behind, timeout=60)
        with he.store() as s:
            others = [n for n in s.list_notifications(limit=10_000) if n.kind == "outage_planned"]
        assert {n.customer for n in others} == behind and len(others) == len(behind)
