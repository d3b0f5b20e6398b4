"""The command outbox: enqueue with audit, compare-and-set transitions, claiming under concurrency."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from headend.store import COMMAND_TRANSITIONS, Conflict, NotFound, TransitionError, open_store
from tests.headend.store_support import Clock

A1, A2, A3 = "000000000001", "000000000002", "000000000003"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(store_db: str, clock: Clock):
    s = open_store(store_db, clock=clock)
    for i, a in enumerate((A1, A2, A3)):
        s.add_meter(a, link="tcp://bus-a:1" if i < 2 else "tcp://bus-b:1", customer="000000000042", actor="setup")
    yield s
    s.close()


def test_enqueue_writes_command_and_audit_together(store) -> None:
    cmd = store.enqueue(A1, "recharge", {"amount_fen": 5000}, actor="alice")
    assert (cmd.status, cmd.attempts, cmd.params, cmd.actor) == ("queued", 0, {"amount_fen": 5000}, "alice")
    assert store.get_command(cmd.id) == cmd
    audit = store.audit_entries(limit=1)[0]
    assert (audit.actor, audit.action, audit.target, audit.detail["command"]) == ("alice", "command.recharge", A1,
                                                                                  cmd.id)


def test_enqueue_for_unknown_meter_writes_nothing(store) -> None:
    n_audit = len(store.audit_entries())
    with pytest.raises(NotFound, match="not registered"):
        store.enqueue("000000000099", "trip", actor="alice")
    assert store.list_commands() == []
    assert len(store.audit_entries()) == n_audit


def test_idempotency_key_queues_once(store) -> None:
    a = store.enqueue(A1, "recharge", {"amount_fen": 100}, actor="pay", idem_key="wx:T1")
    b = store.enqueue(A1, "recharge", {"amount_fen": 100}, actor="pay", idem_key="wx:T1")
    assert a == b
    assert len(store.list_commands()) == 1
    with pytest.raises(Conflict, match="belongs to command"):
        store.enqueue(A2, "recharge", {"amount_fen": 100}, actor="pay", idem_key="wx:T1")


def test_enqueue_many_is_all_or_nothing(store) -> None:
    with pytest.raises(NotFound):
        store.enqueue_many([A1, A2, "000000000099"], "trip", {}, actor="ops")
    assert store.list_commands() == []
    cmds = store.enqueue_many([A1, A2], "trip", {}, actor="ops", idem_prefix="bulk-7")
    assert [c.idem_key for c in cmds] == [f"bulk-7:{A1}", f"bulk-7:{A2}"]
    assert store.enqueue_many([A1, A2], "trip", {}, actor="ops", idem_prefix="bulk-7") == cmds


def test_lifecycle_and_compare_and_set(store, clock: Clock) -> None:
    cmd = store.enqueue(A1, "trip", {}, actor="ops")
    clock.t += 5
    sent = store.mark_sent(cmd.id)
    assert (sent.status, sent.attempts, sent.updated_at) == ("sent", 1, clock.t)
    assert store.mark_sent(cmd.id).attempts == 2  # a resend counts
    back = store.retry_later(cmd.id, "timeout", not_before=clock.t + 30)
    assert (back.status, back.last_error, back.not_before, back.attempts) == ("queued", "timeout", clock.t + 30, 2)
    with pytest.raises(TransitionError, match="is queued, not sent"):
        store.confirm(cmd.id, {"ok": True})
    store.mark_sent(cmd.id)
    done = store.confirm(cmd.id, {"status3": "0040"})
    assert (done.status, done.reply) == ("confirmed", {"status3": "0040"})
    for move in (lambda: store.fail(cmd.id, "late"), lambda: store.mark_sent(cmd.id),
                 lambda: store.confirm(cmd.id, {})):
        with pytest.raises(TransitionError):
            move()
    assert store.get_command(cmd.id).status == "confirmed"


def test_progress_of_a_command_in_flight_is_no_attempt(store, clock: Clock) -> None:
    cmd = store.enqueue(A1, "recharge", {"amount_fen": 100}, actor="ops")
    [sent] = store.claim_next()
    assert sent.attempts == 1
    clock.t += 3
    noted = store.note_progress(sent.id, {"purchase_count": 7, "sends": 1})
    assert (noted.status, noted.attempts, noted.reply, noted.updated_at) == \
        ("sent", 1, {"purchase_count": 7, "sends": 1}, clock.t)
    store.confirm(cmd.id, {"purchase_count": 7, "result": "credited"})
    with pytest.raises(TransitionError, match="is confirmed, not sent"):
        store.note_progress(cmd.id, {"purchase_count": 8})
    assert store.get_command(cmd.id).reply["purchase_count"] == 7


def test_failure_keeps_reason_and_reply(store) -> None:
    cmd = store.enqueue(A1, "recharge", {"amount_fen": 1}, actor="ops")
    store.mark_sent(cmd.id)
    f = store.fail(cmd.id, "meter refused: SERR bit 6 (hoarding limit)", reply={"serr": 64})
    assert (f.status, f.last_error, f.reply) == ("failed", "meter refused: SERR bit 6 (hoarding limit)", {"serr": 64})
    with pytest.raises(NotFound):
        store.fail(12345, "x")


@pytest.mark.parametrize("start", ["queued", "sent", "confirmed", "failed"])
@pytest.mark.parametrize("to", ["queued", "sent", "confirmed", "failed"])
def test_transition_table_is_enforced(store, start: str, to: str) -> None:
    cmd = store.enqueue(A1, "trip", actor="ops")
    path = {"queued": [], "sent": ["sent"], "confirmed": ["sent", "confirmed"], "failed": ["failed"]}[start]
    cur = "queued"
    for step in path:
        store.transition(cmd.id, step, expected=cur)
        cur = step
    if to in COMMAND_TRANSITIONS[start]:
        assert store.transition(cmd.id, to, expected=start).status == to
    else:
        with pytest.raises(TransitionError):
            store.transition(cmd.id, to, expected=start)
        assert store.get_command(cmd.id).status == start


def test_claim_next_keeps_order_and_one_in_flight_per_meter(store, clock: Clock) -> None:
    t1 = store.enqueue(A1, "trip", actor="ops")
    c1 = store.enqueue(A1, "close", actor="ops")
    r2 = store.enqueue(A2, "read", {"di": "00010000"}, actor="ops", not_before=clock.t + 60)
    r3 = store.enqueue(A3, "read", actor="ops")
    first = store.claim_next(limit=10)
    assert [c.id for c in first] == [t1.id, r3.id]  # A1's close waits behind its trip; A2 not due
    assert all(c.status == "sent" and c.attempts == 1 for c in first)
    assert store.claim_next(limit=10) == []
    store.confirm(t1.id)
    assert [c.id for c in store.claim_next(limit=10)] == [c1.id]
    clock.t += 60
    assert [c.id for c in store.claim_next(limit=10, link="tcp://bus-b:1")] == []
    assert [c.id for c in store.claim_next(limit=10, link="tcp://bus-a:1")] == [r2.id]


def test_requeue_stale_recovers_after_a_crashed_worker(store, clock: Clock) -> None:
    cmd = store.enqueue(A1, "recharge", {"amount_fen": 1}, actor="ops")
    store.claim_next()
    clock.t += 10
    assert store.requeue_stale(30) == 0
    clock.t += 30
    assert store.requeue_stale(30) == 1
    again = store.get_command(cmd.id)
    assert (again.status, again.attempts) == ("queued", 1)
    assert "requeued" in again.last_error


def test_concurrent_workers_claim_each_command_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "fleet.db"
    setup = open_store(path)
    meters = [f"{i:012d}" for i in range(1, 121)]
    for m in meters:
        setup.add_meter(m, link="tcp://bus:1", customer="000000000001", actor="setup")
    for m in meters:
        setup.enqueue(m, "read", actor="ops")
        setup.enqueue(m, "trip", actor="ops")
    setup.close()

    claimed: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        s = open_store(path)  # its own connection, as a second process would have
        try:
            while True:
                got = s.claim_next(limit=7)
                if not got:
                    if s.count_commands()["queued"] == 0:
                        return
                    continue
                for c in got:
                    s.confirm(c.id, {"by": threading.get_ident()})
                with lock:
                    claimed.extend(c.id for c in got)
        finally:
            s.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    check = open_store(path)
    assert sorted(claimed) == sorted(set(claimed))
    assert len(claimed) == 240
    assert check.count_commands() == {"queued": 0, "sent": 0, "unresolved": 0, "confirmed": 240, "failed": 0,
                                      "rejected": 0, "cancelled": 0}
    for m in meters[:5]:  # per meter, read ran before trip
        cmds = sorted(check.list_commands(meter=m), key=lambda c: c.id)
        assert [c.kind for c in cmds] == ["read", "trip"]
    check.close()


def test_wait_final_returns_on_outcome_or_timeout(store) -> None:
    cmd = store.enqueue(A1, "trip", actor="ops")
    assert store.wait_final(cmd.id, timeout=0.05).status == "queued"
    store.mark_sent(cmd.id)
    store.confirm(cmd.id)
    assert store.wait_final(cmd.id, timeout=5).status == "confirmed"


def test_get_commands_by_ids(store) -> None:
    ids = [store.enqueue(A1, "read", {"n": i}, actor="ops").id for i in range(3)]
    got = store.get_commands(reversed(ids + [9999]))
    assert [c.id for c in got] == ids
    assert [c.params for c in got] == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_an_idempotency_key_reused_with_other_content_is_refused_naming_the_field(store) -> None:
    a = store.enqueue(A1, "recharge", {"amount_fen": 5000}, actor="pay", idem_key="PAY-1")
    with pytest.raises(Conflict, match=r"command %d with amount_fen 5000, not 7000" % a.id):
        store.enqueue(A1, "recharge", {"amount_fen": 7000}, actor="pay", idem_key="PAY-1")
    with pytest.raises(Conflict, match="kind recharge, not trip"):
        store.enqueue(A1, "trip", {}, actor="pay", idem_key="PAY-1")
    assert [c.id for c in store.list_commands()] == [a.id]


def test_a_command_that_moved_nothing_is_queued_again_by_the_same_idempotency_key(store) -> None:
    a = store.enqueue(A1, "recharge", {"amount_fen": 5000}, actor="pay", idem_key="PAY-2")
    [sent] = store.claim_next()
    store.fail(sent.id, "identity authentication failed before the recharge frame was sent")
    again = store.enqueue(A1, "recharge", {"amount_fen": 5000}, actor="pay", idem_key="PAY-2")
    assert (again.id, again.status, again.attempts, again.reply) == (a.id, "queued", 0, None)
    assert store.audit_entries(limit=1)[0].action == "command.requeue"
    [sent] = store.claim_next()
    store.confirm(sent.id, {"result": "credited"})
    assert store.enqueue(A1, "recharge", {"amount_fen": 5000}, actor="pay", idem_key="PAY-2").status == "confirmed"


def test_cancel_and_retry_are_audited_and_never_cancel_a_recharge_that_may_have_been_sent(store) -> None:
    t = store.enqueue(A1, "trip", actor="ops")
    c = store.cancel(t.id, actor="bob")
    assert (c.status, c.last_error) == ("cancelled", "cancelled by bob")
    assert store.audit_entries(limit=1)[0].action == "command.cancel"
    assert store.claim_next() == []
    r = store.retry(t.id, actor="bob")
    assert (r.status, r.attempts) == ("queued", 0)
    assert store.audit_entries(limit=1)[0].action == "command.requeue"
    [sent] = store.claim_next()
    store.confirm(sent.id)
    with pytest.raises(TransitionError, match="already final"):
        store.cancel(t.id, actor="bob")
    rc = store.enqueue(A2, "recharge", {"amount_fen": 100}, actor="ops")
    [sent] = store.claim_next()
    store.note_progress(sent.id, {"purchase_count": 3})
    store.unresolve(sent.id, "reply lost", not_before=store.now() + 60)
    with pytest.raises(TransitionError, match="may already have reached the meter"):
        store.cancel(rc.id, actor="bob")
    assert store.get_command(rc.id).status == "unresolved"


def test_an_unresolved_recharge_holds_back_later_commands_but_not_reads(store, clock: Clock) -> None:
    rc = store.enqueue(A1, "recharge", {"amount_fen": 100}, actor="ops")
    [sent] = store.claim_next()
    store.note_progress(sent.id, {"purchase_count": 1})
    store.unresolve(sent.id, "meter locked", not_before=clock.t + 60)
    later = store.enqueue(A1, "recharge", {"amount_fen": 200}, actor="ops")
    read = store.enqueue(A1, "read", {"dis": ["00900200"]}, actor="ops")
    assert [c.id for c in store.claim_next(limit=10)] == [read.id]  # the read goes past; the recharge waits
    store.confirm(read.id, {})
    clock.t += 60
    [again] = store.claim_next(limit=10)
    assert (again.id, again.status) == (rc.id, "sent")  # the unresolved one is settled first
    store.confirm(rc.id, {"result": "settled"})
    assert [c.id for c in store.claim_next(limit=10)] == [later.id]


def test_a_crashed_worker_leaves_a_chosen_recharge_unresolved(store, clock: Clock) -> None:
    rc = store.enqueue(A1, "recharge", {"amount_fen": 1}, actor="ops")
    tr = store.enqueue(A2, "trip", actor="ops")
    for c in store.claim_next(limit=5):
        if c.id == rc.id:
            store.note_progress(c.id, {"purchase_count": 4})
    assert store.requeue_stale(0) == 2
    assert store.get_command(rc.id).status == "unresolved" and store.get_command(tr.id).status == "queued"


def test_commands_of_one_customer(store) -> None:
    store.add_account("000000000043", actor="setup")
    store.update_meter(A3, actor="setup", customer="000000000043")
    mine = store.enqueue(A3, "trip", actor="ops")
    store.enqueue(A1, "trip", actor="ops")
    assert [c.id for c in store.list_commands(customer="000000000043")] == [mine.id]


def test_the_serve_lease_names_the_serve_and_expires_without_heartbeat(store, clock: Clock) -> None:
    assert store.serve_alive() is None
    store.take_lease(101, "hosta", "/data/h.db")
    assert store.serve_alive()["pid"] == 101
    with pytest.raises(Conflict, match="pid 101 on hosta, working /data/h.db"):
        store.take_lease(202, "hostb", "/mnt/h.db")
    clock.t += 10
    assert store.beat_lease(101, "hosta") and not store.beat_lease(202, "hostb")
    clock.t += 14
    assert store.serve_alive() is not None
    clock.t += 10  # missed its beats: a serve that was killed no longer counts
    assert store.serve_alive() is None
    store.take_lease(202, "hostb", "/mnt/h.db")
    store.release_lease(202, "hostb")
    assert store.serve_alive() is None


def test_commands_keep_their_rows_and_ids_through_the_status_migration(tmp_path: Path) -> None:
    from headend.store import Store
    from headend.store.sqlite import SQLiteBackend

    backend = SQLiteBackend(tmp_path / "old.db")
    backend.migrate(upto=5)
    old = Store(backend)
    with backend.transaction() as tx:  # the rows as that schema had them (today's add_meter writes later columns)
        tx.execute("INSERT INTO accounts (customer, created_at, updated_at) VALUES ('000000000042', 0, 0)")
        tx.execute("INSERT INTO meters (address, link, customer, mode, meter_number, created_at, updated_at)"
                   " VALUES (?, 'tcp://x:1', '000000000042', 'local', ?, 0, 0)", (A1, A1))
    a = old.enqueue(A1, "trip", actor="ops", idem_key="K1")
    old.migrate()
    b = old.enqueue(A1, "trip", actor="ops")
    assert old.get_command(a.id) == a and b.id > a.id
    assert old.cancel(b.id, actor="ops").status == "cancelled"  # the new statuses are allowed
    old.close()
