"""Every event that deserves a notice reaches the customer once: remote accounts through the
cost-control cycle, local-cost-control meters through what the head-end reads."""

from __future__ import annotations

from collections import Counter

from headend.costctl.decide import Rules
from headend.notices.events import watch_local
from headend.store import yuan
from headend.store import open_store
from tests.costctl.test_cycle import A, B, C, D0, DAY, P, cycle
from tests.notices.conftest import NOON, customer, make_sender

import pytest


@pytest.fixture
def remote(tmp_path):
    now = [D0]
    store = open_store(tmp_path / "cc.db", clock=lambda: now[0])
    setup = {A: 20_000, B: 1_500, C: 500, P: 500}
    for n, (cust, money) in enumerate(setup.items()):
        store.add_meter(f"{n + 1:012d}", link="tcp://127.0.0.1:9", customer=cust, actor="t", mode="remote")
        store.update_account(cust, actor="t", tariff="beijing", alarm1_fen=1000, alarm2_fen=500,
                             protected=cust == P, phone=f"1380013800{n}")
        store.credit(cust, money, actor="t", idem_key=f"open:{cust}")
        store.add_readings((f"{n + 1:012d}", "00010000", 100_000 + 10_000 * d, D0 + d * DAY) for d in range(6))
    yield store, now
    store.close()


def test_remote_accounts_alarm_cut_ahead_cut_and_restore_each_notify_once(remote, provider):
    store, now = remote
    sender = make_sender(store, provider, quiet=None)
    cycle(store, now, D0 + 2 * DAY + 9 * 3600)
    cycle(store, now, D0 + 2 * DAY + 10 * 3600)                       # a second cycle: no new notice
    sender.run_once(now[0])
    cycle(store, now, D0 + 3 * DAY + 10 * 3600, rules=Rules(notice_period_s=86400))   # C tripped
    sender.run_once(now[0])
    store.credit(C, 5_000, actor="t", idem_key="pay:C")
    cycle(store, now, D0 + 4 * DAY + 10 * 3600)                       # C restored (close permitted)
    sender.run_once(now[0])
    sender.run_once(now[0] + 86400)
    kinds = Counter((n.customer, n.kind) for n in store.find_notices(limit=1000) if n.status == "sent")
    assert kinds[(B, "alarm1_notice")] == 1
    assert kinds[(C, "cut_notice")] == 1 and kinds[(C, "cut")] == 1 and kinds[(C, "close_permitted")] == 1
    assert kinds[(P, "cut_notice")] == 1 and (P, "cut") not in kinds            # protected: never cut
    assert (A, "alarm1_notice") not in kinds
    assert all(v == 1 for v in kinds.values()) and len(provider.delivered) == sum(kinds.values())
    # the cut notice names the notice period and when the cut may come; amounts in yuan from fen
    [cut_ahead] = [n for n in store.find_notices(customer=C, kind="cut_notice")]
    assert "提前24小时" in cut_ahead.sent_text and "2025-06-05 09:00" in cut_ahead.sent_text   # decided 06-04 09:00
    assert f"{yuan(cut_ahead.detail['balance_fen'])}元" in cut_ahead.sent_text


def _seen(store, meter, at, *, balance=None, relay=None):
    store.record_meter_state(meter, seen_at=at, **({"balance_fen": balance} if balance is not None else {}),
                             **({"relay": relay} if relay is not None else {}))


def test_local_meters_notify_from_what_the_headend_reads(store, provider):
    m = "000000000007"
    cust = customer(store, "000000000077", "13800138000", meter=m, alarm1_fen=2000, alarm2_fen=500)
    sender = make_sender(store, provider, quiet=None)
    t = NOON
    _seen(store, m, t, balance=5000, relay="closed")
    assert watch_local(store) == 0                                   # healthy: nothing to say
    _seen(store, m, t + 60, balance=1900)
    assert watch_local(store) == 1 and watch_local(store) == 0       # alarm 1, once
    _seen(store, m, t + 120, balance=1800)
    assert watch_local(store) == 0                                   # still in the same band
    _seen(store, m, t + 180, balance=400)
    assert watch_local(store) == 1                                   # alarm 2
    _seen(store, m, t + 240, balance=0, relay="open")                # status word 3: relay open
    assert watch_local(store) == 1
    store.add_event(m, "recharge", {"command": 9, "amount_fen": 5000, "purchase_count": 3, "result": "ok",
                                    "balance_fen": 5000})
    _seen(store, m, t + 300, balance=5000, relay="closed")
    assert watch_local(store) == 2 and watch_local(store) == 0       # payment on the meter, supply back
    sender.run_once(t + 400)
    sent = [n.kind for n in store.find_notices(customer=cust, newest_first=False)]
    assert sent == ["alarm1_notice", "alarm2_notice", "cut", "restore", "payment_confirmed"]
    assert len(provider.delivered) == 5
    confirmed = store.find_notices(kind="payment_confirmed")[0]
    assert "50.00" in confirmed.sent_text and m in confirmed.sent_text
    # a fall after recovery notifies again
    _seen(store, m, t + 500, balance=1500)
    assert watch_local(store) == 1


def test_local_meters_notify_from_read_cycle_readings(store, provider):
    """Read cycles store readings without touching the meter record: the watcher reads them too."""
    m = "000000000008"
    cust = customer(store, "000000000088", "13800138000", meter=m, alarm1_fen=2000, alarm2_fen=500)
    t = NOON
    store.add_readings([(m, "00900200", 5000, t), (m, "04000503", 0x0000, t)])
    assert watch_local(store) == 0
    store.add_readings([(m, "00900200", 300, t + 900), (m, "04000503", 0x0080, t + 900)])   # pre-trip alarm
    assert watch_local(store) == 1                                      # straight to alarm 2: one notice
    store.add_readings([(m, "00900200", 0, t + 1800), (m, "04000503", 0x0050, t + 1800)])   # relay open
    assert watch_local(store) == 1 and watch_local(store) == 0
    _seen(store, m, t + 1700, balance=0, relay="closed")               # an older record does not undo it
    assert watch_local(store) == 0
    store.add_readings([(m, "00900200", 10000, t + 2700), (m, "04000503", 0x0000, t + 2700)])
    assert watch_local(store) == 1
    make_sender(store, provider, quiet=None).run_once(t + 3000)
    assert [n.kind for n in store.find_notices(customer=cust, newest_first=False)] == ["alarm2_notice", "cut",
                                                                                       "restore"]
    assert "3.00元" in store.find_notices(kind="alarm2_notice")[0].sent_text
