"""What the links' partition between serves keeps in the store, on SQLite and PostgreSQL: each
meter's link slot (on insert, on a change of link, filled by the migration), the claim restricted
to a share of the slots, and lease rows with their own lease time, view and collection mark."""

from __future__ import annotations

import pytest

from headend.frontends import SLOTS, slot_of
from headend.store import open_store
from headend.store.backend import Backend
from tests.headend.store_support import Clock

CUST = "000000000042"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(store_db: str, clock: Clock):
    s = open_store(store_db, clock=clock)
    yield s
    s.close()


def _two_slots() -> tuple[str, str]:
    """Two link URLs in different slots."""
    a = "tcp://10.0.0.1:8899"
    b = next(f"tcp://10.0.0.{i}:8899" for i in range(2, 300) if slot_of(f"tcp://10.0.0.{i}:8899") != slot_of(a))
    return a, b


def test_a_claim_takes_only_commands_for_meters_on_the_links_of_its_share(store) -> None:
    la, lb = _two_slots()
    store.add_meter("000000000001", link=la, customer=CUST, actor="t")
    store.add_meter("000000000002", link=lb, customer=CUST, actor="t")
    store.add_meter("000000000003", link=lb, customer=CUST, actor="t")
    assert store.link_slots(["000000000001", "000000000002", "000000000003"]) == \
        {"000000000001": slot_of(la), "000000000002": slot_of(lb), "000000000003": slot_of(lb)}
    for m in ("000000000001", "000000000002", "000000000003"):
        store.enqueue(m, "trip", actor="t")
    assert store.claim_next(limit=10, slots=frozenset()) == []
    got = store.claim_next(limit=10, owner="b", slots=frozenset({slot_of(lb)}))
    assert sorted(c.meter for c in got) == ["000000000002", "000000000003"]
    assert [c.meter for c in store.claim_next(limit=10, owner="a", slots=frozenset(range(SLOTS)) - {slot_of(lb)})] == \
        ["000000000001"]


def test_a_meter_moved_to_another_link_takes_that_links_slot(store) -> None:
    la, lb = _two_slots()
    store.add_meter("000000000001", link=la, customer=CUST, actor="t")
    store.update_meter("000000000001", link=lb, actor="t")
    assert store.link_slots(["000000000001"]) == {"000000000001": slot_of(lb)}
    store.enqueue("000000000001", "trip", actor="t")
    assert store.claim_next(limit=1, slots=frozenset({slot_of(la)})) == []
    assert len(store.claim_next(limit=1, slots=frozenset({slot_of(lb)}))) == 1


def test_the_migration_gives_every_registered_meter_its_links_slot(store_db: str, request) -> None:
    from headend.store import Store

    if store_db.startswith("postgresql://"):  # store_db's PostgreSQL database is migrated already
        store_db = request.getfixturevalue("pg_server").create_db()
    s = open_store(store_db, migrate=False)
    backend: Backend = s._db
    assert backend.migrate(upto=15) == 15
    la, lb = _two_slots()
    with backend.transaction() as tx:
        tx.execute("INSERT INTO accounts (customer, created_at, updated_at) VALUES (?, 0, 0)", (CUST,))
        for a, link in (("000000000001", la), ("000000000002", lb), ("000000000003", lb)):
            tx.execute("INSERT INTO meters (address, link, customer, mode, meter_number, created_at, updated_at)"
                       " VALUES (?, ?, ?, 'local', ?, 0, 0)", (a, link, CUST, a))
    assert Store(backend).migrate() > 15
    assert s.link_slots(["000000000001", "000000000002", "000000000003"]) == \
        {"000000000001": slot_of(la), "000000000002": slot_of(lb), "000000000003": slot_of(lb)}
    s.close()


def test_each_lease_lapses_after_its_own_time_and_records_its_view_and_collection(store, clock: Clock) -> None:
    a = store.take_lease(1, "host-a", "db", shared=True, ttl_s=3)
    b = store.take_lease(2, "host-b", "db", shared=True)  # the default 15 s
    assert store.beat_lease(1, "host-a", '["host-a pid 1"]')
    store.mark_collected(b, 0)
    assert store.live_leases() == {a: ('["host-a pid 1"]', None), b: (None, 0)}
    clock.t += 2
    assert set(store.live_leases()) == {a, b} and store.serves_alive() == 2
    clock.t += 1
    assert set(store.live_leases()) == {b} and store.serves_alive() == 1  # a's 3 s are over
    store.mark_collected(b, 1_700_000_000)
    assert store.live_leases() == {b: (None, 1_700_000_000)}
    with pytest.raises(Exception, match="at least"):
        store.take_lease(3, "host-c", "db", shared=True, ttl_s=0)


def test_a_killed_serves_commands_come_back_after_its_own_lease_time(store, clock: Clock) -> None:
    store.add_meter("000000000001", link="tcp://10.0.0.1:1", customer=CUST, actor="t")
    a = store.take_lease(1, "host-a", "db", shared=True, ttl_s=4)
    cmd = store.enqueue("000000000001", "trip", actor="t")
    [c] = store.claim_next(limit=1, owner=a)
    assert store.requeue_stale(0) == 0  # a still beats
    clock.t += 4
    assert store.requeue_stale(0) == 1 and store.get_command(cmd.id).status == "queued"
    assert c.id == cmd.id
