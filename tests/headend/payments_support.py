"""A store set up for money tests: a hand-set clock, a channel of every kind, a customer with a
local-cost-control meter and one with a remote-cost-control meter; and the journal proof that
every money test runs after each scenario."""

from __future__ import annotations

from headend.keys import KeyStore
from headend.payments import issue_credentials
from headend.store import CHANNEL_KINDS, Store, open_store
from tests.headend.store_support import Clock

LOCAL_CUST, LOCAL_METER = "000000000101", "000000000001"
REMOTE_CUST, REMOTE_METER = "000000000102", "000000000002"
# 2025-12-05 10:00 China time
T0 = 1764900000
KEYS = KeyStore.in_memory(bytes(range(32)))


def money_store(path: str, clock: Clock | None = None) -> Store:
    """A fresh store on a real SQLite file with one channel per kind (id = kind) and two customers."""
    clock = clock or Clock(T0)
    s = open_store(path, clock=clock)
    for kind in CHANNEL_KINDS:
        key_id, _secret, sealed = issue_credentials(KEYS, kind)
        s.add_channel(kind, kind, actor="admin", key_id=key_id, secret=sealed)
    s.add_account(LOCAL_CUST, actor="admin", name="张三", alarm1_fen=1000)
    s.add_meter(LOCAL_METER, link="tcp://127.0.0.1:9001", customer=LOCAL_CUST, actor="admin", mode="local")
    s.add_account(REMOTE_CUST, actor="admin", name="Li Wei", alarm1_fen=2000, close_ok_fen=500)
    s.add_meter(REMOTE_METER, link="tcp://127.0.0.1:9002", customer=REMOTE_CUST, actor="admin", mode="remote")
    return s


def journal_total(store: Store) -> tuple[int, int]:
    """(rows, fen) of the whole journal: what a refused request must leave unchanged."""
    rows = store.journal(limit=1_000_000)
    return len(rows), sum(e.amount_fen for e in rows)


def assert_books_balance(store: Store) -> None:
    """Journal sums == cached balances, and money in flight == payments on their way."""
    assert store.check_ledger() == []
    for a in store.list_accounts():
        assert sum(e.amount_fen for e in store.ledger(a.customer, limit=1_000_000)) == a.balance_fen


def confirm_recharge(store: Store, command_id: int) -> None:
    """What the outbox worker records when the meter confirms a recharge."""
    [cmd] = store.claim_next(limit=1)
    assert cmd.id == command_id
    store.confirm(cmd.id, reply={"result": "credited", "purchase_count": 1})
