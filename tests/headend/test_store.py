"""Store on a real SQLite file: schema, registry, audit atomicity, readings, events, money."""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from headend.store.sqlite import MIGRATIONS, SQLiteBackend
from headend.store import (
    Conflict,
    InvalidInput,
    NotFound,
    Reading,
    StoreError,
    open_store,
)
from tests.headend.store_support import Clock
from tests.store_backends import raw_sql

A1, A2, A3 = "000000000001", "000000000002", "112233445566"
C1, C2 = "000000000042", "000000000043"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "h.db"


@pytest.fixture
def store(store_db: str):
    s = open_store(store_db, clock=Clock())
    yield s
    s.close()


def add(store, address=A1, customer=C1, mode="local", link="tcp://127.0.0.1:9001", **kw):
    return store.add_meter(address, link=link, customer=customer, actor="alice", mode=mode, **kw)


# ----------------------------------------------------------------------------- schema
def test_file_is_wal_and_migrations_are_idempotent(db: Path) -> None:
    newest = MIGRATIONS[-1][0]
    s = open_store(db)
    assert s.schema_version() == newest
    s.close()
    s = open_store(db)  # second open: nothing re-applied, nothing fails
    assert s.schema_version() == newest
    s.close()
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("SELECT version FROM schema_version ORDER BY version").fetchall() == [
        (v,) for v, _ in MIGRATIONS]
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"accounts", "meters", "commands", "readings", "events", "audit", "notifications", "ledger"} <= tables
    raw.close()


def test_a_cycles_reads_use_the_index_alone_and_charges_stay_out_of_the_payment_index(db: Path) -> None:
    s = open_store(db, clock=Clock())
    add(s, A1, C1, mode="remote")
    s.add_readings([(A1, "00010000", 5, 100), (A1, "00010000", 9, 200)])
    assert s.charge_accounts("c1", [(C1, 10, 5, 20, 86_400)], actor="costctl") == 1
    s.close()
    raw = sqlite3.connect(db)
    plan = " ".join(str(r) for r in raw.execute(
        "EXPLAIN QUERY PLAN SELECT CAST(meter AS BIGINT), value, read_at FROM readings WHERE di = ?"
        " AND read_at >= ? AND read_at < ? AND value IS NOT NULL", ("00010000", 0, 300)))
    assert "COVERING INDEX readings_di_time" in plan
    plan = " ".join(str(r) for r in raw.execute("EXPLAIN QUERY PLAN SELECT * FROM ledger WHERE payment_id = ?", (1,)))
    assert "INDEX ledger_payment" in plan
    # the charge row is in the journal; the index holds only rows that name a payment
    assert raw.execute("SELECT COUNT(*) FROM ledger").fetchone()[0] == 1
    (sql,) = raw.execute("SELECT sql FROM sqlite_master WHERE name = 'ledger_payment'").fetchone()
    assert sql.endswith("WHERE payment_id IS NOT NULL")
    raw.close()


def test_money_on_its_way_to_meters_is_read_from_the_payments_still_on_their_way(db: Path) -> None:
    """Each payment to a local meter asks what is already on its way there: through an index of
    the payments still sent_to_meter, never a scan of every payment ever taken."""
    from headend.store.payments import _IN_FLIGHT

    open_store(db, clock=Clock()).close()
    raw = sqlite3.connect(db)
    plan = " ".join(str(r) for r in raw.execute("EXPLAIN QUERY PLAN " + _IN_FLIGHT % "?, ?", (A1, "000000000099")))
    assert "SCAN payments" not in plan and "INDEX payments_in_flight" in plan
    raw.close()


def test_checkpoint_every_sets_how_much_wal_a_commit_leaves_uncopied(db: Path) -> None:
    def in_file() -> int:
        raw = sqlite3.connect(f"file:{db}?immutable=1", uri=True)   # the file without its WAL
        try:
            return raw.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
        finally:
            raw.close()

    s = open_store(db)
    s.checkpoint_every(1)   # every commit copies the WAL back
    s.add_readings([(A1, "00010000", 5, 1000)])
    assert in_file() == 1
    s.checkpoint_every(100_000)
    s.add_readings([(A1, "00010000", 6, 1001)])
    assert in_file() == 1   # still only in the WAL
    with s._db.transaction(write=False) as tx:
        assert tx.one("PRAGMA wal_autocheckpoint") == (100_000,)
    with pytest.raises(ValueError, match="pages >= 1"):
        s.checkpoint_every(0)
    s._db.checkpoint_in_background(every_s=60)
    s.checkpoint_every(5000)   # background checkpoints replace the threshold: left at 0
    with s._db.transaction(write=False) as tx:
        assert tx.one("PRAGMA wal_autocheckpoint") == (0,)
    s.close()


def test_concurrent_first_opens_migrate_once(db: Path) -> None:
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            open_store(db).close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    raw = sqlite3.connect(db)
    assert raw.execute("SELECT version FROM schema_version ORDER BY version").fetchall() == [
        (v,) for v, _ in MIGRATIONS]
    raw.close()


def test_old_database_is_upgraded_keeping_its_data(db: Path) -> None:
    old = SQLiteBackend(db)
    assert old.migrate(upto=1) == 1
    with old.transaction() as tx:
        tx.execute("INSERT INTO accounts (customer, balance_fen, created_at, updated_at) VALUES (?, 1234, 0, 0)", (C1,))
    old.close()
    s = open_store(db)
    assert s.schema_version() == MIGRATIONS[-1][0]
    a = s.get_account(C1)
    assert (a.balance_fen, a.supply, a.notice_level, a.rated_until) == (1234, "on", 0, None)
    s.close()


def test_newer_schema_is_refused_with_a_clear_message(db: Path) -> None:
    open_store(db).close()
    raw = sqlite3.connect(db)
    raw.execute("INSERT INTO schema_version VALUES (99, 0)")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="newer than this program"):
        open_store(db)


def test_missing_folder_and_unsupported_url(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        open_store(tmp_path / "nope" / "h.db")
    with pytest.raises(InvalidInput, match="mysql:// is not supported"):
        open_store("mysql://db/headend")
    s = open_store(f"sqlite:///{tmp_path}/u.db")
    assert Path(s.location) == tmp_path / "u.db"
    s.close()


def test_no_sqlite_specific_sql_outside_the_backend_modules() -> None:
    root = Path(__file__).resolve().parents[2] / "headend"
    offenders = []
    pattern = re.compile(r"import sqlite3|PRAGMA|WITHOUT ROWID|INSERT OR |AUTOINCREMENT|sqlite_master|BEGIN IMMEDIATE")
    for path in root.rglob("*.py"):
        if path.name in ("sqlite.py", "postgres.py") and path.parent.name == "store":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    assert offenders == []


def test_data_survives_reopen(db: Path) -> None:
    s = open_store(db)
    add(s, purchase_count=3)
    s.close()
    s = open_store(db)
    assert s.get_meter(A1).purchase_count == 3
    s.close()


# ----------------------------------------------------------------------------- registry
def test_add_meter_creates_account_and_audit_rows(store) -> None:
    m = add(store, mode="remote", krn=2, protected=True)
    assert (m.address, m.mode, m.krn, m.protected, m.meter_number) == (A1, "remote", 2, True, A1)
    assert store.get_account(C1).balance_fen == 0
    actions = [(e.actor, e.action, e.target) for e in store.audit_entries()]
    assert actions == [("alice", "meter.add", A1), ("alice", "customer.add", C1)]
    assert store.audit_entries()[0].at == 1_700_000_000


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"address": "12345"}, "12 decimal digits"),
        ({"address": "00000000000A"}, "12 decimal digits"),
        ({"customer": "42"}, "customer number"),
        ({"mode": "both"}, "local' or 'remote"),
        ({"krn": 256}, "0..255"),
        ({"link": "10.0.0.5:8899"}, "URL"),
    ],
)
def test_add_meter_rejects_bad_input_and_writes_nothing(store, kw, msg) -> None:
    with pytest.raises(InvalidInput, match=msg):
        add(store, **kw)
    assert store.find_meters() == []
    assert store.audit_entries() == []


def test_duplicate_meter_is_a_conflict(store) -> None:
    add(store)
    with pytest.raises(Conflict, match="already registered"):
        add(store, link="tcp://other:1")
    assert store.get_meter(A1).link == "tcp://127.0.0.1:9001"


def test_unknown_meter_says_how_to_add_it(store) -> None:
    with pytest.raises(NotFound, match="headend meter add 000000000009"):
        store.get_meter("000000000009")


def test_find_meters_filters(store) -> None:
    add(store, A1, mode="remote", link="tcp://10.0.0.1:1")
    add(store, A2, mode="local", link="tcp://10.0.0.1:1", protected=True)
    add(store, A3, C2, mode="remote", link="serial:///dev/ttyUSB0")
    assert [m.address for m in store.find_meters([("mode", "=", "remote")])] == [A1, A3]
    assert [m.address for m in store.find_meters([("link", "like", "tcp://%")])] == [A1, A2]
    assert [m.address for m in store.find_meters([("protected", "=", True)])] == [A2]
    assert [m.address for m in store.find_meters([("customer", "!=", C1)])] == [A3]
    with pytest.raises(InvalidInput, match="cannot select meters by"):
        store.find_meters([("balance; DROP TABLE meters", "=", 1)])


def test_update_meter_is_audited_with_before_and_after(store) -> None:
    add(store)
    m = store.update_meter(A1, actor="bob", mode="remote", link="tcp://x:2")
    assert (m.mode, m.link) == ("remote", "tcp://x:2")
    last = store.audit_entries(limit=1)[0]
    assert (last.actor, last.action) == ("bob", "meter.update")
    assert last.detail == {"link": ["tcp://127.0.0.1:9001", "tcp://x:2"], "mode": ["local", "remote"]}
    with pytest.raises(InvalidInput):
        store.update_meter(A1, actor="bob", purchase_count=9)


def test_purchase_count_compare_and_set(store) -> None:
    add(store, purchase_count=4)
    assert store.set_purchase_count(A1, 5, expected=4).purchase_count == 5
    with pytest.raises(Conflict, match="purchase count is 5, expected 4"):
        store.set_purchase_count(A1, 5, expected=4)
    with pytest.raises(NotFound):
        store.set_purchase_count(A2, 1, expected=0)


def test_record_meter_state(store) -> None:
    add(store)
    store.record_meter_state(A1, balance_fen=-150, relay="open", seen_at=1_700_000_100)
    m = store.get_meter(A1)
    assert (m.balance_fen, m.relay, m.last_seen) == (-150, "open", 1_700_000_100)


# ----------------------------------------------------------------------------- atomicity
def test_atomic_rolls_back_every_part(store) -> None:
    add(store)
    with pytest.raises(RuntimeError):
        with store.atomic():
            store.enqueue(A1, "trip", {}, actor="alice")
            store.add_event(A1, "note")
            store.credit(C1, 500, actor="alice", idem_key="p1")
            raise RuntimeError("crash in the middle")
    assert store.list_commands() == []
    assert store.events(A1) == []
    assert store.get_account(C1).balance_fen == 0
    assert [e.action for e in store.audit_entries()] == ["meter.add", "customer.add"]


def test_a_failed_part_undoes_only_its_own_writes(store) -> None:
    add(store)
    with store.atomic():
        store.credit(C1, 500, actor="alice", idem_key="p1")
        with pytest.raises(RuntimeError):
            with store.part():
                store.credit(C1, 700, actor="alice", idem_key="p2")
                store.enqueue(A1, "trip", {}, actor="alice")
                raise RuntimeError("this part is refused")
        with store.part():
            store.add_event(A1, "note")
    assert store.get_account(C1).balance_fen == 500
    assert store.list_commands() == []
    assert [e.kind for e in store.events(A1)] == ["note"]
    assert store.check_ledger() == []


_DUPLICATE = re.compile(r"UNIQUE|unique|duplicate")


def _write_a_duplicate_audit_id(store) -> None:
    """A write whose outcome is not read (on PostgreSQL it is sent with the next statement) and fails."""
    with store._tx() as tx:
        first = tx.one("SELECT MIN(id) FROM audit")[0]
        tx.write("INSERT INTO audit (id, at, actor, action) VALUES (?, 0, 'test', 'duplicate')", (first,))


def test_a_part_whose_unread_write_fails_fails_itself_not_the_next_part(store) -> None:
    add(store)
    with store.atomic():
        with pytest.raises(Exception, match=_DUPLICATE):
            with store.part():
                store.credit(C1, 700, actor="alice", idem_key="p1")
                _write_a_duplicate_audit_id(store)
        with store.part():  # a failure left in flight by the part before would surface in here
            store.add_event(A1, "note")
    assert store.get_account(C1).balance_fen == 0
    assert [e.kind for e in store.events(A1)] == ["note"]
    assert "duplicate" not in [e.action for e in store.audit_entries()]


def test_a_write_that_fails_before_a_part_is_raised_before_the_part_begins(store) -> None:
    add(store)
    entered = []
    with pytest.raises(Exception, match=_DUPLICATE):
        with store.atomic():
            _write_a_duplicate_audit_id(store)
            with store.part():
                entered.append(True)  # not reached: the failure is not this part's
    assert entered == []
    assert "duplicate" not in [e.action for e in store.audit_entries()]


def test_enqueue_without_actor_leaves_no_command(store) -> None:
    add(store)
    with pytest.raises(InvalidInput, match="actor"):
        store.enqueue(A1, "trip", {}, actor="")
    assert store.list_commands() == []


# ----------------------------------------------------------------------------- readings and events
def test_a_fleets_readings_from_a_generator_are_stored_whole_and_once(store) -> None:
    """A read cycle's readings come from a generator, many statements' worth (PostgreSQL takes
    10,000 a statement, SQLite a few thousand at a time): every one stored, in order, counted once."""
    add(store)
    add(store, A2)

    def rows():
        for i in range(12_500):
            yield A1, "00010000", i, 1_700_000_000 + 60 * i
            yield A2, "00010000", 2 * i, 1_700_000_000 + 60 * i

    assert store.add_readings(rows()) == 25_000
    assert store.add_readings(rows()) == 0
    assert [r.value for r in store.readings(A2, "00010000")][-3:] == [24_994, 24_996, 24_998]


def test_readings_stored_once_per_meter_di_time(store) -> None:
    add(store)
    add(store, A2)
    rows = [(A1, "00010000", 1000 + i, 1_700_000_000 + 900 * i) for i in range(10)]
    assert store.add_readings(rows) == 10
    assert store.add_readings(rows[5:] + [(A2, "00010000", 7, 1_700_000_000)]) == 1  # re-read: only A2 is new
    got = store.readings(A1, "00010000")
    assert [r.value for r in got] == list(range(1000, 1010))
    assert store.readings(A1, since=1_700_000_000 + 900 * 3, until=1_700_000_000 + 900 * 5) == [
        Reading(A1, "00010000", 1003, 1_700_000_000 + 2700),
        Reading(A1, "00010000", 1004, 1_700_000_000 + 3600),
    ]
    assert store.latest_reading(A1, "00010000").value == 1009
    assert store.latest_reading(A1, "00020000") is None
    assert store.readings_for_di("00010000", since=1_700_000_000, until=1_700_000_001) == [
        (A1, 1000, 1_700_000_000),
        (A2, 7, 1_700_000_000),
    ]


def test_a_partitions_readings_are_those_of_its_span_of_meter_addresses(store) -> None:
    t0 = 1_700_000_000
    addrs = [f"{k:012d}" for k in (1, 2, 10, 999_999_999_999)]
    for a in addrs:
        add(store, a)
    store.add_readings([(a, "00010000", 100 + k, t0 + 900 * d) for k, a in enumerate(addrs) for d in range(3)])

    def read(meters):
        cols = store.readings_between_columns("00010000", since=t0, until=t0 + 1800, meters=meters)
        assert all(c.dtype == np.int64 for c in cols)
        return sorted(zip(*(c.tolist() for c in cols)))

    assert read(None) == sorted((int(a), 100 + k, t0 + 900 * d) for k, a in enumerate(addrs) for d in range(2))
    assert read((2, 11)) == [(2, 101, t0), (2, 101, t0 + 900), (10, 102, t0), (10, 102, t0 + 900)]
    assert read((11, 10**12)) == [(999_999_999_999, 103, t0), (999_999_999_999, 103, t0 + 900)]
    assert read((3, 10)) == []



def test_a_querys_columns_come_in_its_order_with_its_nulls(store) -> None:
    store.log_actions([("t", "x", target, None) for target in ("b,1", None, "a\x1fz", "", "c")])
    with store._tx(write=False) as tx:
        ids, targets, tens = tx.columns("SELECT id, target, CASE WHEN target IS NULL THEN NULL ELSE id * 10 END"
                                        " FROM audit WHERE actor = 't' ORDER BY id DESC", "iti")
        nothing = tx.columns("SELECT id, target FROM audit WHERE actor = ?", "it", ("nobody",))
    assert ids.dtype == tens.dtype == np.int64
    assert ids.tolist() == sorted(ids.tolist(), reverse=True) and len(ids) == 5
    # a text may hold the separators the engine packs with, and a NULL text stays None
    assert targets == ["c", "", "a\x1fz", None, "b,1"]
    assert tens.tolist() == [i * 10 if t is not None else -1 for i, t in zip(ids.tolist(), targets)]
    assert nothing[0].size == 0 and nothing[0].dtype == np.int64 and nothing[1] == []
    with store._tx(write=False) as tx, pytest.raises(StoreError, match="not all integers"):
        tx.columns("SELECT id, target FROM audit WHERE actor = 't' ORDER BY id", "ii")


def test_the_cost_control_columns_are_the_cost_control_rows(store) -> None:
    add(store, A3, C2, mode="remote", protected=True)   # C2's meters added out of address order
    add(store, "000000000009", "000000000041", mode="local")   # a local meter and account: not in either
    add(store, mode="remote")
    add(store, A2, C2, mode="remote")
    add(store, "000000000005", C1, mode="remote")       # C1's second meter, its number between C2's
    store.set_account_state(C2, notice_level=2, notice_at=500, supply="cut", supply_at=600)
    rows = store.cost_control_meters()
    cols = store.cost_control_columns()
    assert [(r[0], r[17]) for r in rows] == [(C1, 1), (C1, 5), (C2, 2), (C2, int(A3))]
    assert len(cols) == len(rows[0]) and len(rows) == 4
    ints = [k for k, c in enumerate(cols) if isinstance(c, np.ndarray)]
    assert {k for k in range(len(cols)) if k not in ints} >= {0, 6, 15}       # customer, tariff, supply
    assert [tuple(-1 if v is None and k in ints else v for k, v in enumerate(r)) for r in rows] == \
        list(zip(*(c.tolist() if isinstance(c, np.ndarray) else c for c in cols)))


def test_the_cost_control_columns_of_a_fleet_read_in_its_order(store) -> None:
    # the usual fleet: one meter an account, the accounts stored in customer order; the columns
    # come as they were read, still the rows of cost_control_meters
    for k in range(1, 6):
        add(store, f"{k:012d}", f"{100 + k:012d}", mode="remote", protected=k == 3)
    rows = store.cost_control_meters()
    cols = store.cost_control_columns()
    assert [r[0] for r in rows] == [f"{100 + k:012d}" for k in range(1, 6)]
    assert [tuple(-1 if v is None and isinstance(c, np.ndarray) else v for v, c in zip(r, cols)) for r in rows] == \
        list(zip(*(c.tolist() if isinstance(c, np.ndarray) else c for c in cols)))


def test_text_readings_and_reading_records(store) -> None:
    add(store)
    assert store.add_readings([Reading(A1, "04000503", None, 5, text="0040")]) == 1
    assert store.readings(A1) == [Reading(A1, "04000503", None, 5, "0040")]


def test_bulk_readings_one_transaction_all_or_nothing(store) -> None:
    add(store)
    good = [(A1, "00010000", i, i) for i in range(999)]
    for bad_row in [(A1, "00010000", 5, None), (A1, "00010000", 1.5, 1), (A1, "00010000")]:
        with pytest.raises(InvalidInput):
            store.add_readings(good + [bad_row])
    assert store.readings(A1) == []
    assert store.add_readings(good + [(A1, "00010000", 0, 999)]) == 1000


def test_read_path_rows_are_checked_and_normalised_like_any(store) -> None:
    # the read path's (meter, di, value, read_at, text) rows, checked a batch at a time
    add(store)
    good = [(A1, "00010000", i, i, None) for i in range(5000)]
    for bad_row in [(A1, "00010000", 5, None, None), (A1, "00010000", 1.5, 1, None), (A1, "00010000", True, 1, None),
                    (A1, "00010000", 5, 1.0, None), (A1, "total energy", 1, 3, None)]:
        with pytest.raises(InvalidInput):
            store.add_readings(good + [bad_row])
    assert store.readings(A1) == []
    assert store.add_readings(good + [(A1, "0001ff00", None, 7, "0040"), (A1, "00 01 FF 00", 2, 8, None)]) == 5002
    assert store.readings(A1, "0001FF00") == [Reading(A1, "0001FF00", None, 7, "0040"), Reading(A1, "0001FF00", 2, 8)]
    assert store.readings(A1, "00010000", since=4998) == [Reading(A1, "00010000", 4998, 4998),
                                                          Reading(A1, "00010000", 4999, 4999)]


def test_events_dedup_and_order(store) -> None:
    add(store)
    assert store.add_event(A1, "trip", {"reason": "overdraft"}, at=10, source="meter", dedup="trip#1") is not None
    assert store.add_event(A1, "trip", {"reason": "overdraft"}, at=10, source="meter", dedup="trip#1") is None
    store.add_event(A1, "close", at=20)
    evs = store.events(A1)
    assert [(e.kind, e.at, e.source) for e in evs] == [("close", 20, "headend"), ("trip", 10, "meter")]
    assert evs[1].detail == {"reason": "overdraft"}


# ----------------------------------------------------------------------------- money
def test_credit_is_exactly_once_per_key(store) -> None:
    add(store)
    entry, new = store.credit(C1, 5000, actor="counter-1", idem_key="hall:42")
    assert new and entry.balance_after == 5000
    again, new2 = store.credit(C1, 5000, actor="counter-1", idem_key="hall:42")
    assert not new2 and again == entry
    assert store.get_account(C1).balance_fen == 5000
    with pytest.raises(Conflict, match="already used"):
        store.credit(C1, 6000, actor="counter-1", idem_key="hall:42")
    with pytest.raises(NotFound):
        store.credit(C2, 100, actor="x", idem_key="hall:43")
    assert store.get_account(C1).version == 1


def test_charge_batch_applies_once_and_ledger_balances(store) -> None:
    add(store, mode="remote")
    add(store, A2, C2, mode="remote")
    store.credit(C1, 1000, actor="a", idem_key="k1")
    charges = [(C1, 300, 12345, 5000), (C2, 50, 0, 100)]
    assert store.charge_accounts("day:2026-11-27", charges, actor="costctl") == 2
    assert store.charge_accounts("day:2026-11-27", charges, actor="costctl") == 0
    a1, a2 = store.get_account(C1), store.get_account(C2)
    assert (a1.balance_fen, a1.rem, a1.ladder_wh) == (700, 12345, 5000)
    assert (a2.balance_fen, a2.rem, a2.ladder_wh) == (-50, 0, 100)
    led = store.ledger(C1)
    assert [(e.kind, e.amount_fen, e.balance_after) for e in led] == [("charge", -300, 700), ("payment", 1000, 1000)]
    assert sum(e.amount_fen for e in led) == a1.balance_fen


def test_charge_batch_with_unknown_customer_changes_nothing(store) -> None:
    add(store)
    with pytest.raises(NotFound, match="unknown customers"):
        store.charge_accounts("b1", [(C1, 10, 0, 0), ("000000000999", 10, 0, 0)], actor="costctl")
    assert store.get_account(C1).balance_fen == 0
    assert store.charge_accounts("b1", [(C1, 10, 0, 0)], actor="costctl") == 1  # key not burnt by the failure
    with pytest.raises(InvalidInput, match="twice"):
        store.charge_accounts("b2", [(C1, 1, 0, 0), (C1, 1, 0, 0)], actor="costctl")
    with pytest.raises(InvalidInput, match="remainder"):
        store.charge_accounts("b3", [(C1, 1, 100_000, 0)], actor="costctl")


def test_charge_batch_from_the_callers_reading_survives_a_payment_racing_in(store) -> None:
    # a rating cycle passes the state it read; a payment landing between that read and the
    # charge moves the version: the charge still applies once and balance_after counts the payment
    add(store, mode="remote")
    add(store, A2, C2, mode="remote")
    read = [(a.balance_fen, a.rem, a.ladder_wh, a.version) for a in map(store.get_account, (C1, C2))]
    store.credit(C2, 500, actor="pay", idem_key="raced")
    charges = [(C1, 30, 7, 70, 86_400), (C2, 40, 8, 80, 86_400)]
    assert store.charge_accounts("race", charges, actor="costctl", read_as=read) == 2
    assert [(e.amount_fen, e.balance_after) for e in store.ledger(C1)] == [(-30, -30)]
    assert [(e.amount_fen, e.balance_after) for e in store.ledger(C2)] == [(-40, 460), (500, 500)]
    assert [(a.balance_fen, a.rem, a.ladder_wh, a.version) for a in map(store.get_account, (C1, C2))] == \
        [(-30, 7, 70, 1), (460, 8, 80, 2)]
    # and with nothing raced in, the reading it was given is the one in the ledger
    read = [(a.balance_fen, a.rem, a.ladder_wh, a.version) for a in map(store.get_account, (C1, C2))]
    assert store.charge_accounts("calm", [(C1, 1, 7, 71, 2 * 86_400), (C2, 1, 8, 81, 2 * 86_400)],
                                 actor="costctl", read_as=read) == 2
    assert [e.balance_after for e in store.ledger(C2, limit=1)] == [459]
    # a charge that moves neither money, remainder nor ladder (no energy) writes no ledger row
    read = [(a.balance_fen, a.rem, a.ladder_wh, a.version) for a in map(store.get_account, (C1, C2))]
    assert store.charge_accounts("idle", [(C1, 0, 7, 71, 3 * 86_400), (C2, 2, 8, 81, 3 * 86_400)],
                                 actor="costctl", read_as=read) == 2
    assert len(store.ledger(C1)) == 2 and len(store.ledger(C2)) == 4
    assert store.get_account(C1).rated_until == 3 * 86_400
    with pytest.raises(InvalidInput, match="read_as"):
        store.charge_accounts("short", [(C1, 1, 0, 0)], actor="costctl", read_as=[])


def test_charge_with_states_sets_only_the_states_given_and_leaves_a_none_as_it_was(store) -> None:
    add(store, mode="remote")
    add(store, A2, C2, mode="remote")
    store.set_account_states([(C2, 2, 50, "cut", 60)])
    read = [(a.balance_fen, a.rem, a.ladder_wh, a.version) for a in map(store.get_account, (C1, C2))]
    charges = [(C1, 30, 7, 70, 86_400), (C2, 40, 8, 80, 86_400)]
    assert store.charge_and_set_states("s1", charges, actor="costctl", read_as=read,
                                       states=[(1, 100, "on", None), None]) == (2, True)
    got = [(a.balance_fen, a.version, a.notice_level, a.notice_at, a.supply, a.supply_at)
           for a in map(store.get_account, (C1, C2))]
    assert got == [(-30, 1, 1, 100, "on", None), (-40, 1, 2, 50, "cut", 60)]
    # a payment raced in: the charges land, no state is set, not even the one given
    read = [(a.balance_fen, a.rem, a.ladder_wh, a.version) for a in map(store.get_account, (C1, C2))]
    store.credit(C1, 500, actor="pay", idem_key="raced")
    assert store.charge_and_set_states("s2", charges, actor="costctl", read_as=read,
                                       states=[None, (3, 200, "on", None)]) == (2, False)
    assert [(a.balance_fen, a.notice_level) for a in map(store.get_account, (C1, C2))] == [(440, 1), (-80, 2)]


def test_charges_as_columns_book_as_charges_as_rows_do(store) -> None:
    for a, c in ((A1, C1), (A2, C2)):
        add(store, a, c, mode="remote")

    def book(how: str, key: str) -> list:
        keys = {r[0]: r[-1] for r in store.cost_control_meters()}
        accts = [store.get_account(c) for c in (C1, C2)]
        read = [(a.balance_fen, a.rem, a.ladder_wh, a.version) for a in accts]
        states = [None, (2, 100, "on", None)]
        if how == "rows":
            got = store.charge_and_set_states(key, [(C1, 30, 7, 70, 86_400), (C2, 0, 0, 0, 86_400)], actor="costctl",
                                              interval_s=3600, read_as=read, fixed_fen=[10, 0], states=states,
                                              keys=[keys[C1], keys[C2]])
        else:
            got = store.charge_columns(key, [C1, C2], np.array([30, 0]), np.array([7, 0]), np.array([70, 0]),
                                       np.array([86_400, 86_400]), actor="costctl", interval_s=3600,
                                       read_as=[np.array(c) for c in zip(*read)], fixed_fen=np.array([10, 0]),
                                       states=states, keys=np.array([keys[C1], keys[C2]]))
        return [got, *[(a.balance_fen, a.rem, a.ladder_wh, a.rated_until, a.notice_level)
                       for a in map(store.get_account, (C1, C2))],
                [(e.kind, e.amount_fen, e.balance_after) for e in store.ledger(C1, limit=2)],
                store.charge_columns(key, [C1], [1], [0], [0], actor="costctl")]     # once per key: no change

    rows = book("rows", "r1")
    columns = book("columns", "c1")
    # the same movements (a charge of 20 and a fixed charge of 10 each time) from balances 30 apart
    assert rows[0] == columns[0] == (2, True) and rows[-1] == columns[-1] == (0, False)
    assert rows[1] == (-30, 7, 70, 86_400, 0) and columns[1] == (-60, 7, 70, 86_400, 0)
    assert rows[2][4] == columns[2][4] == 2                      # C2 had no energy: no journal row
    assert rows[3] == [("fixed_charge", -10, -30), ("charge", -20, -20)]
    assert columns[3] == [("fixed_charge", -10, -60), ("charge", -20, -50)]
    with pytest.raises(InvalidInput, match=f"customer {C2}: remainder"):
        store.charge_columns("bad", [C1, C2], [1, 1], [0, 100_000], [0, 0], actor="costctl")
    with pytest.raises(InvalidInput, match="appears twice"):
        store.charge_columns("twice", [C1, C1], [1, 1], [0, 0], [0, 0], actor="costctl")


def test_charge_by_the_keys_the_cycle_read_lands_on_the_customer_even_if_the_keys_moved(store) -> None:
    add(store, mode="remote")
    add(store, A2, C2, mode="remote")
    keys = {r[0]: r[-1] for r in store.cost_control_meters()}
    read = [(a.balance_fen, a.rem, a.ladder_wh, a.version) for a in map(store.get_account, (C1, C2))]
    charges = [(C1, 30, 7, 70, 86_400), (C2, 40, 8, 80, 86_400)]
    assert store.charge_and_set_states("k1", charges, actor="costctl", read_as=read, keys=[keys[C1], keys[C2]],
                                       states=[(1, 100, "on", None), None]) == (2, True)
    assert [(a.balance_fen, a.notice_level) for a in map(store.get_account, (C1, C2))] == [(-30, 1), (-40, 0)]
    # the rows renumbered between the read and the write (a VACUUM may do that to SQLite's rowids):
    # each key now finds the other account, and still each charge lands on its own customer
    read = [(a.balance_fen, a.rem, a.ladder_wh, a.version) for a in map(store.get_account, (C1, C2))]
    store.charge_and_set_states("k2", charges, actor="costctl", read_as=read, keys=[keys[C2], keys[C1]],
                                states=[None, (2, 100, "on", None)])
    assert [a.balance_fen for a in map(store.get_account, (C1, C2))] == [-60, -80]
    assert [e.balance_after for e in store.ledger(C1, limit=1)] == [-60]
    with pytest.raises(InvalidInput, match="keys"):
        store.charge_and_set_states("k3", charges, actor="costctl", read_as=read, keys=[keys[C1]])


def test_decisions_of_an_account_whose_money_moved_are_left_for_the_next_cycle(store) -> None:
    add(store, mode="remote")
    add(store, A2, C2, mode="remote")
    v1, v2 = store.get_account(C1).version, store.get_account(C2).version
    store.credit(C2, 500, actor="pay", idem_key="raced")          # C2's version moves
    states = [(C1, v1, 1, 100, "on", None), (C2, v2, 1, 100, "on", None)]
    notices = [(c, "alarm1", "low", f"n:{c}", {"reason": "x"}) for c in (C1, C2)]
    audit = [("costctl", "costctl.notice1", c, {"balance_fen": 0}) for c in (C1, C2)]
    assert store.apply_decisions(states, notices=notices, audit=audit, actor="costctl") == {C2}
    assert (store.get_account(C1).notice_level, store.get_account(C2).notice_level) == (1, 0)
    assert [n.customer for n in store.list_notifications(status="queued")] == [C1]
    assert [e.target for e in store.audit_entries(action="costctl.notice1")] == [C1]
    # every version as read: all recorded, none skipped
    states = [(C1, v1, 2, 200, "on", None), (C2, v2 + 1, 2, 200, "on", None)]
    assert store.apply_decisions(states, actor="costctl") == set()
    assert (store.get_account(C1).notice_level, store.get_account(C2).notice_level) == (2, 2)
    with pytest.raises(NotFound, match="do not exist"):
        store.apply_decisions([("000000000999", 0, 1, None, "on", None)], actor="costctl")


def test_account_limits_validated_and_audited(store) -> None:
    store.add_account(C1, actor="alice", alarm1_fen=2000, overdraft_fen=500, restore_policy="direct")
    with pytest.raises(InvalidInput):
        store.update_account(C1, actor="alice", overdraft_fen=-1)
    with pytest.raises(InvalidInput):
        store.update_account(C1, actor="alice", balance_fen=10**6)
    a = store.update_account(C1, actor="bob", protected=True, alarm2_fen=1000)
    assert (a.protected, a.alarm1_fen, a.alarm2_fen, a.restore_policy) == (True, 2000, 1000, "direct")
    assert store.audit_entries(actor="bob")[0].detail == {"alarm2_fen": [0, 1000], "protected": [False, 1]}
    with pytest.raises(Conflict):
        store.add_account(C1, actor="alice")


def test_notifications_outbox(store) -> None:
    n = store.notify(C1, "alarm1", "balance low", idem_key="alarm1:C1:2026-11-27")
    assert store.notify(C1, "alarm1", "balance low", idem_key="alarm1:C1:2026-11-27") == n
    assert [x.id for x in store.list_notifications(status="queued")] == [n.id]
    sent = store.mark_notification(n.id, "sent")
    assert (sent.status, sent.attempts) == ("sent", 1)
    with pytest.raises(Conflict):
        store.mark_notification(n.id, "failed")
    with pytest.raises(NotFound):
        store.mark_notification(999, "sent")


# ----------------------------------------------------------------------------- remote cost control state
def test_account_state_for_cost_control(store) -> None:
    add(store, A1, C1, mode="remote")
    add(store, A2, C2, mode="local")
    a = store.set_account_state(C1, notice_level=1, notice_at=100, supply="on")
    assert (a.notice_level, a.notice_at, a.supply, a.supply_at) == (1, 100, "on", None)
    store.credit(C1, 50, actor="pay", idem_key="p")  # money moved: version 1
    with pytest.raises(Conflict, match="read it again"):
        store.set_account_state(C1, expected_version=0, supply="cut")
    a = store.set_account_state(C1, expected_version=1, supply="cut", supply_at=200, notice_at=None)
    assert (a.supply, a.supply_at, a.notice_at, a.notice_level) == ("cut", 200, None, 1)
    for bad in ({"supply": "off"}, {"notice_level": 4}):
        with pytest.raises(InvalidInput):
            store.set_account_state(C1, **bad)
    with pytest.raises(NotFound):
        store.set_account_state(A3, supply="on")
    assert store.rating_accounts() == [(C1, 50, 0, 0, None, 1, None)]


def test_charge_batch_records_rating_position(store) -> None:
    add(store, A1, C1, mode="remote")
    assert store.charge_accounts("c1", [(C1, 10, 5, 20, 86_400)], actor="costctl") == 1
    assert store.rating_accounts() == [(C1, -10, 5, 20, 86_400, 1, None)]
    with pytest.raises(InvalidInput, match="one width"):
        store.charge_accounts("c2", [(C1, 1, 0, 0, 1), (C2, 1, 0, 0)], actor="costctl")


def test_bulk_audit_rows(store) -> None:
    assert store.log_actions([("costctl", "costctl.alarm1", C1, {"balance_fen": 900}),
                              ("costctl", "costctl.trip", C2, {"reason": "overdraft"})]) == 2
    assert [(e.action, e.target) for e in store.audit_entries()] == [("costctl.trip", C2), ("costctl.alarm1", C1)]
    with pytest.raises(InvalidInput):
        store.log_actions([("", "x", None, None)])


def test_rows_written_together_keep_every_value_as_given(store) -> None:
    """A batch goes in as one statement per table (on PostgreSQL as one array per column): text
    with quotes, backslashes, braces, commas and the word NULL, empty text, None, and whole
    numbers (a bool as 0/1) come back exactly."""
    odd = ['say "hi"', "back\\slash\\", "{a,b}", "NULL", "", " edge ", "中文", None]
    assert store.log_actions([("t", f"odd.{i}", v, {"n": i}) for i, v in enumerate(odd)]) == len(odd)
    got = {e.action: (e.target, e.detail) for e in store.audit_entries(actor="t", limit=100)}
    assert got == {f"odd.{i}": (v, {"n": i}) for i, v in enumerate(odd)}
    with store._tx() as tx:
        tx.insert_rows("INSERT INTO accounts (customer, balance_fen, supply, created_at, updated_at) VALUES ",
                       "(?, ?, ?, ?, 0)", [(C1, -(2**40), "on", True), (C2, 0, "cut", False)])
        assert tx.all("SELECT customer, balance_fen, supply, created_at FROM accounts ORDER BY customer") == \
            [(C1, -(2**40), "on", 1), (C2, 0, "cut", 0)]


def test_a_senders_results_are_recorded_together_each_as_one_at_a_time(store) -> None:
    """``record_notice_results`` writes a sender's results with one statement: each notice moves
    as its first result says (sent with its text and deliveries, failed, back in the queue with its
    error and time), a second result for it changes nothing, and a notice whose lease another
    sender took is left alone and named."""
    store.queue_notices([(C1, "payment_received", f"m{i}", f"k{i}", {}, 0, 0) for i in range(4)])
    lost, a, b, c = sorted(store.claim_notices("s1", now=100, lease_s=60), key=lambda n: n.id)
    assert [n.id for n in store.claim_notices("s2", now=160, limit=1)] == [lost.id]   # s1's lease ran out
    assert store.record_notice_results("s2", [{"id": lost.id, "status": "sent", "attempted": True}], now=170) == []
    held = [a.id, b.id, c.id]
    assert store.record_notice_results("s1", [
        {"id": a.id, "status": "sent", "attempted": True, "text": 'said "paid"',
         "deliveries": [("13800138000", "k0:1", "sms", "P1", "accepted", None)]},
        {"id": b.id, "status": "queued", "attempted": True, "error": "busy", "not_before": 999},
        {"id": c.id, "status": "failed", "attempted": False, "error": "no phone"},
        {"id": b.id, "status": "sent", "attempted": True},          # a second result: ignored
        {"id": lost.id, "status": "failed", "attempted": True},     # not s1's: named
    ], now=500) == [lost.id]
    got = {i: store.get_notification(i) for i in held + [lost.id]}
    assert [(got[i].status, got[i].attempts, got[i].last_error, got[i].sent_at, got[i].sent_text)
            for i in held + [lost.id]] == [("sent", 1, None, 500, 'said "paid"'), ("queued", 1, "busy", None, None),
                                            ("failed", 0, "no phone", None, None), ("sent", 1, None, 170, None)]
    assert got[b.id].not_before == 999
    assert [(d.phone, d.key, d.provider_id, d.state, d.sent_at) for d in store.notice_deliveries([a.id])[a.id]] == \
        [("13800138000", "k0:1", "P1", "accepted", 500)]


def test_a_batch_of_megabytes_is_written_whole(store) -> None:
    """A batch far past what the connection's buffers hold in one piece (thousands of audit rows
    of bulk work) is written whole, and what follows in the transaction runs."""
    note = "x" * 400
    assert store.log_actions([("bulk", "bulk.row", f"{i:012d}", {"i": i, "note": note}) for i in range(6000)]) == 6000
    with store._tx() as tx:
        assert tx.one("SELECT COUNT(*), SUM(LENGTH(detail)) FROM audit WHERE actor = 'bulk'")[0] == 6000


def test_write_inside_a_read_transaction_is_refused(db: Path) -> None:
    backend = SQLiteBackend(db)
    backend.migrate()
    with pytest.raises(StoreError, match="read-only transaction"):
        with backend.transaction(write=False):
            with backend.transaction(write=True):
                pass  # pragma: no cover
    with backend.transaction() as tx:  # the connection is usable afterwards
        assert tx.one("SELECT COUNT(*) FROM meters") == (0,)
    backend.close()


def test_writes_not_read_and_queries_read_later_land_with_the_transaction_or_fail_it(store) -> None:
    db = store._db
    with db.transaction() as tx:
        tx.write("INSERT INTO accounts (customer, balance_fen, created_at, updated_at) VALUES (?, 5, 0, 0)", (C1,))
        tx.write_many("UPDATE accounts SET balance_fen = balance_fen + ? WHERE customer = ?", [(1, C1), (2, C1)])
        assert tx.one("SELECT balance_fen FROM accounts WHERE customer = ?", (C1,)) == (8,)  # seen by what follows
        first = tx.submit("SELECT balance_fen FROM accounts WHERE customer = ?", (C1,))
        tx.write("UPDATE accounts SET balance_fen = 7 WHERE customer = ?", (C1,))
        second = tx.submit("SELECT balance_fen FROM accounts WHERE customer = ?", (C1,))
        assert (second.all(), first.one()) == ([(7,)], (8,))   # submitted queries: each its own result, in order
        tx.write("UPDATE accounts SET balance_fen = 9 WHERE customer = ?", (C1,))
    assert store.get_account(C1).balance_fen == 9  # the last one went out with the commit
    with pytest.raises(Conflict):
        with db.transaction() as tx:
            tx.write("UPDATE accounts SET balance_fen = 1 WHERE customer = ?", (C1,))
            tx.write("INSERT INTO accounts (customer, balance_fen, created_at, updated_at) VALUES (?, 0, 0, 0)", (C1,))
            tx.write("INSERT INTO accounts (customer, balance_fen, created_at, updated_at) VALUES (?, 0, 0, 0)", (C2,))
    assert [(a.customer, a.balance_fen) for a in store.list_accounts()] == [(C1, 9)]  # none of the three landed
    with db.transaction() as tx:  # the connection is usable afterwards, pages with writes between them too
        tx.write_many("INSERT INTO accounts (customer, balance_fen, created_at, updated_at) VALUES (?, 0, 0, 0)",
                      [(f"{i:012d}",) for i in range(100, 110)])
        seen = []
        for page in tx.pages("SELECT customer FROM accounts ORDER BY customer", size=4):
            seen += [r[0] for r in page]
            tx.write("UPDATE accounts SET balance_fen = balance_fen + 1 WHERE customer = ?", (page[0][0],))
    assert len(seen) == 11 and sum(a.balance_fen for a in store.list_accounts()) == 9 + 3


def test_reading_dis_are_checked_and_normalised(store) -> None:
    add(store)
    assert store.add_readings([(A1, "0001ff00", 1, 1), (A1, "00 01 FF 00", 2, 2)]) == 2
    assert [r.di for r in store.readings(A1, "0001FF00")] == ["0001FF00", "0001FF00"]
    with pytest.raises(InvalidInput, match="data identifier"):
        store.add_readings([(A1, "total energy", 1, 3)])


def test_command_params_must_be_json(store) -> None:
    add(store)
    with pytest.raises(InvalidInput, match="JSON"):
        store.enqueue(A1, "read", {"di": object()}, actor="ops")
    cmd = store.enqueue(A1, "read", {"dis": ("00010000", "00020000")}, actor="ops")
    assert cmd.params == {"dis": ["00010000", "00020000"]} == store.get_command(cmd.id).params


def test_cost_control_views_and_bulk_decisions(store) -> None:
    add(store, A1, C1, mode="remote")
    add(store, A2, C2, mode="remote")
    add(store, A3, "000000000044", mode="local")
    store.update_account(C1, actor="ops", alarm1_fen=2000, overdraft_fen=500, protected=True,
                         restore_policy="direct")
    rows = store.cost_control_accounts()
    assert [r[0] for r in rows] == [C1, C2]
    assert rows[0] == (C1, 0, 2000, 0, 500, 0, 1, "direct", 0, None, "on", None, 0)
    assert store.set_account_states([(C1, 3, 100, "on", None), (C2, 0, None, "cut", 200)]) == 2
    assert [r[8:12] for r in store.cost_control_accounts()] == [(3, 100, "on", None), (0, None, "cut", 200)]
    with pytest.raises(NotFound, match="1 of 2"):
        store.set_account_states([(C1, 0, None, "on", None), ("000000000099", 0, None, "on", None)])
    assert store.get_account(C1).notice_level == 3  # the failed batch changed nothing
    with pytest.raises(InvalidInput):
        store.set_account_states([(C1, 0, None, "off", None)])


def test_account_states_and_ageing_in_one_pass(store, store_db) -> None:
    """Per district, state and whole days owing: accounts, protected accounts and fen owed, on
    either engine; days only for an account whose own balance is below zero (0 when the time it went
    below zero is unknown), and the states as the console's ``account_states`` counts them."""
    now = int(store.now())
    for customer, district in (("000000000301", "east"), ("000000000302", "east"), ("000000000303", "west"),
                               ("000000000304", "east")):
        store.add_account(customer, actor="ops", district=district, protected=customer.endswith("4"))
    for customer, fen, since in (("000000000301", -500, now - 40 * 86400 - 5), ("000000000302", -300, None),
                                 ("000000000303", 1000, None), ("000000000304", -200, now - 40 * 86400)):
        raw_sql(store_db, "UPDATE accounts SET balance_fen = ?, owing_since = ? WHERE customer = ?",
                (fen, since, customer))
    assert sorted(store.account_states_and_ageing(now), key=lambda r: (r[0], r[2] or 0)) == [
        ("east", "alarm2", 0, 1, 0, 300), ("east", "alarm2", 40, 2, 1, 700), ("west", "credit", None, 1, 0, 0)]
    assert sorted(store.account_states_and_ageing(now, district="west")) == [("west", "credit", None, 1, 0, 0)]
    assert sorted(store.account_states()) == [("east", "alarm2", 3, 1), ("west", "credit", 1, 0)]


def test_detail_text_is_sorted_compact_ascii_json():
    # stored details are compared and indexed as text by nothing, but they stay the one form:
    # keys sorted, no spaces, non-ASCII escaped, whatever encoder writes them
    import json

    from headend.store.models import JSONText, dumps, loads

    detail = {"b": [1, 2.5, None, True, "é 中"], "a": {"z": -1, "y": 1e100}, "": 0}
    assert dumps(detail) == '{"":0,"a":{"y":1e+100,"z":-1},"b":[1,2.5,null,true,"\\u00e9 \\u4e2d"]}'
    assert dumps(detail) == json.dumps(detail, sort_keys=True, separators=(",", ":"))
    assert loads(dumps(detail)) == detail
    assert dumps(None) is None and dumps(JSONText('{"k":1}')) == '{"k":1}' and dumps("x") == '"x"'
    with pytest.raises(TypeError, match="object"):
        dumps({"a": object()})
