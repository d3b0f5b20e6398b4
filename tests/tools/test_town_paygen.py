"""The town's payment generator: who pays when and through which channel (PayModel), and paying
through the real payments API (uvicorn on loopback, a real SQLite file)."""

from __future__ import annotations

import asyncio
import calendar
from collections import Counter
from pathlib import Path

from headend.keys import KeyStore
from headend.store import open_store
from tests.api.support import LiveApi
from tools.town.paygen import CHANNELS, PayModel, Payer, pay_storm, setup_channels
from tools.town.plan import plan_town
from tools.town.register import register_town

HOUR = 3600


def _day(m: PayModel, day: int, month: int = 3) -> list:
    t = calendar.timegm((2026, month, day, 0, 0, 0))
    out = []
    for h in range(24):
        out += m.step(t + h * HOUR, t + (h + 1) * HOUR)
    return out


def test_customers_pay_in_the_evening_on_pay_day_and_after_warnings() -> None:
    homes = plan_town(3_000, seed=9).homes
    m = PayModel(homes, seed=9)
    ordinary = [p for d in (3, 4, 5, 6) for p in _day(m, d)]
    payday = _day(m, 15)
    assert len(payday) > 2.5 * len(ordinary) / 4
    t = calendar.timegm((2026, 3, 5, 0, 0, 0))
    evening = sum(len(m.step(t + 19 * HOUR, t + 20 * HOUR)) for _ in range(5))
    night = sum(len(m.step(t + 3 * HOUR, t + 4 * HOUR)) for _ in range(5))
    assert evening > 5 * max(night, 1)
    # channels in their shares; the counter only in hall hours
    every = ordinary + payday
    share = Counter(p.channel for p in every)
    top = max(CHANNELS, key=lambda c: c[2])[0]
    assert share.most_common(1)[0][0] == top and set(share) <= {c[0] for c in CHANNELS}
    assert any(p.channel == "hall-counter" for p in every)
    night_pay = [p for _ in range(10) for p in m.step(t + 22 * HOUR, t + 23 * HOUR)]  # the hall is closed
    assert night_pay and all(p.channel != "hall-counter" for p in night_pay)
    # a cut customer pays within the hour, even at night; a warned one the same day mostly
    cut, warned = homes[10].customer, homes[11].customer
    m2 = PayModel(homes[:20], seed=1)
    night0 = calendar.timegm((2026, 3, 5, 2, 0, 0))
    got = m2.step(night0, night0 + HOUR, {cut: "cut", warned: "low"})
    assert [p.reason for p in got if p.customer == cut] == ["after_cut"]
    later = [p for h in range(1, 24) for p in m2.step(night0 + h * HOUR, night0 + (h + 1) * HOUR)]
    assert any(p.customer == warned and p.reason == "low_balance" for p in later + got)
    # the same seed, the same payments
    assert [(p.customer, p.channel, p.amount_fen) for p in _day(PayModel(homes, seed=4), 15)] == \
        [(p.customer, p.channel, p.amount_fen) for p in _day(PayModel(homes, seed=4), 15)]


def test_a_storm_of_payments_through_the_api_each_credited_once(tmp_path: Path) -> None:
    town = plan_town(60, seed=2, remote_share=1.0)
    keys = KeyStore.in_memory(bytes(range(32)))
    db = tmp_path / "h.db"
    store = open_store(db)
    register_town(store, town, {h.address: "tcp://127.0.0.1:9" for h in town.homes})
    creds = setup_channels(store, keys)
    m = PayModel(town.homes, seed=2)
    payments = [p for d in range(1, 31) for p in _day(m, d)]
    assert len(payments) > 40
    with LiveApi(db, keys) as api:
        async def go():
            payer = Payer(api.url, creds)
            try:
                first = await pay_storm(payer, payments, concurrency=16)
                again = await pay_storm(payer, payments[:10], concurrency=4)  # the same txn ids: no new money
            finally:
                await payer.close()
            return first, again

        first, again = asyncio.run(go())
    assert len(first["latencies"]) == len(payments) and not first["refused"]
    assert {r["state"] for r in first["receipts"] + again["receipts"]} == {"credited"}
    total = sum(p.amount_fen for p in payments)
    assert sum(store.get_account(h.customer).balance_fen for h in town.homes) == total
    store.close()
