"""The payments API's rows in the store: nonces (replays refused across processes) and callbacks."""

from __future__ import annotations

import pytest

from headend.store import InvalidInput, open_store
from tests.headend.store_support import Clock


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path, clock):
    s = open_store(tmp_path / "s.db", clock=clock)
    yield s
    s.close()


def test_a_nonce_is_used_once_per_channel(store, clock):
    assert store.use_nonce("bank-1", "n" * 16, keep_until=clock.t + 300)
    assert not store.use_nonce("bank-1", "n" * 16, keep_until=clock.t + 300)
    assert store.use_nonce("bank-2", "n" * 16, keep_until=clock.t + 300)  # another channel's nonce space


def test_a_second_process_on_the_same_file_refuses_the_replay(tmp_path, store, clock):
    assert store.use_nonce("bank-1", "a" * 16, keep_until=clock.t + 300)
    with open_store(tmp_path / "s.db", clock=clock) as other:  # a restarted or second serve
        assert not other.use_nonce("bank-1", "a" * 16, keep_until=clock.t + 300)


def test_two_stores_on_one_file_each_refuse_what_the_other_used_since(tmp_path, store, clock):
    keep = clock.t + 300
    with open_store(tmp_path / "s.db", clock=clock) as other:
        assert store.use_nonce("bank-1", "a" * 16, keep_until=keep)
        assert not other.use_nonce("bank-1", "a" * 16, keep_until=keep)
        # each has read the other's rows up to here; what either writes next the other reads too
        assert other.use_nonce("bank-1", "b" * 16, keep_until=keep)
        assert not store.use_nonce("bank-1", "b" * 16, keep_until=keep)
        assert store.use_nonces([("bank-1", "c" * 16, keep), ("bank-1", "d" * 16, keep)]) == [True, True]
        assert other.use_nonces([("bank-1", "d" * 16, keep), ("bank-1", "e" * 16, keep)]) == [False, True]
        assert store.use_nonces([("bank-1", "e" * 16, keep), ("bank-1", "c" * 16, keep)]) == [False, False]


def test_a_nonce_whose_transaction_or_part_rolled_back_is_not_kept(store, clock):
    keep = clock.t + 300
    with pytest.raises(RuntimeError):
        with store.atomic():
            assert store.use_nonce("bank-1", "rolled" * 3, keep_until=keep)
            assert not store.use_nonce("bank-1", "rolled" * 3, keep_until=keep)  # within it: used
            raise RuntimeError("the transaction fails")
    with store.atomic():
        with pytest.raises(RuntimeError):
            with store.part():
                assert store.use_nonce("bank-1", "parted" * 3, keep_until=keep)
                raise RuntimeError("the part fails")
        assert store.use_nonce("bank-1", "kept" * 4, keep_until=keep)   # the transaction itself commits
    assert store.use_nonce("bank-1", "rolled" * 3, keep_until=keep)
    assert store.use_nonce("bank-1", "parted" * 3, keep_until=keep)
    assert not store.use_nonce("bank-1", "kept" * 4, keep_until=keep)


def test_nonces_kept_before_the_upgrade_stay_refused_after_it(tmp_path, clock):
    import sqlite3

    from headend.store.sqlite import SQLiteBackend

    path = tmp_path / "old.db"
    SQLiteBackend(path).migrate(upto=19)  # the schema of a row per nonce
    with sqlite3.connect(path) as c:
        c.executemany("INSERT INTO api_nonces (channel_id, nonce, keep_until) VALUES (?, ?, ?)",
                      [("bank-1", f"old{i:013d}", clock.t + 300) for i in range(1500)])
    with open_store(path, clock=clock) as s:
        assert not s.use_nonce("bank-1", f"old{1499:013d}", keep_until=clock.t + 300)
        assert s.use_nonce("bank-2", f"old{1499:013d}", keep_until=clock.t + 300)
        assert s.purge_nonces(clock.t + 301) == 1501


def test_expired_nonces_are_purged_but_live_ones_kept(store, clock):
    store.use_nonce("bank-1", "old" * 6, keep_until=clock.t + 10)
    store.use_nonce("bank-1", "new" * 6, keep_until=clock.t + 1000)
    clock.t += 11
    assert store.purge_nonces() == 1
    assert not store.use_nonce("bank-1", "new" * 6, keep_until=clock.t + 1000)
    with pytest.raises(InvalidInput):
        store.use_nonce("", "x" * 16, keep_until=0)
    with pytest.raises(InvalidInput):
        store.use_nonce("bank-1", "two\nlines" * 2, keep_until=0)


def test_many_nonces_at_once_refuse_replays_within_the_batch_and_before_it(store, clock):
    keep = clock.t + 300
    assert store.use_nonce("bank-1", "early" * 4, keep_until=keep)
    # more than one statement's worth, with a replay of an earlier nonce, one within the batch,
    # and the same nonce under another channel
    batch = [("bank-1", f"n{i:020d}", keep) for i in range(700)]
    batch[350] = ("bank-1", "early" * 4, keep)
    batch[600] = ("bank-1", f"n{5:020d}", keep)
    batch[650] = ("bank-2", f"n{5:020d}", keep)
    fresh = store.use_nonces(batch)
    assert [i for i, ok in enumerate(fresh) if not ok] == [350, 600]
    assert store.use_nonces([("bank-1", f"n{699:020d}", keep), ("bank-3", "x" * 16, keep)]) == [False, True]


def test_one_callback_per_payment_and_state(store, clock):
    row = (7, "bank-1", "confirmed", "http://127.0.0.1:1/cb", {"payment": {"payment_id": 7}})
    assert store.add_callbacks([row, row]) == 1
    assert store.add_callbacks([row]) == 0
    [cb] = store.due_callbacks()
    assert (cb.payment_id, cb.state, cb.status, cb.attempts, cb.body) == (7, "confirmed", "pending", 0, row[4])

    cb = store.callback_attempted(cb.id, delivered=False, error="HTTP 503", next_at=clock.t + 5)
    assert (cb.status, cb.attempts, cb.last_error) == ("pending", 1, "HTTP 503")
    assert store.due_callbacks() == []                      # not before its back-off
    clock.t += 5
    [cb] = store.due_callbacks()
    cb = store.callback_attempted(cb.id, delivered=True)
    assert (cb.status, cb.attempts, cb.delivered_at, cb.last_error) == ("delivered", 2, clock.t, None)
    clock.t += 1000
    assert store.due_callbacks() == []
    assert store.add_callbacks([row]) == 0                  # a later sweep does not bring it back
    with pytest.raises(InvalidInput):
        store.callback_attempted(cb.id, delivered=True)     # a delivered callback is never attempted again


def test_a_callback_given_up_is_kept_as_failed(store, clock):
    store.add_callbacks([(8, "bank-1", "confirmed", "http://127.0.0.1:1/cb", {})])
    [cb] = store.due_callbacks()
    cb = store.callback_attempted(cb.id, delivered=False, error="refused", give_up=True)
    assert cb.status == "failed" and store.due_callbacks(now=clock.t + 10**6) == []
    assert [c.id for c in store.callbacks(payment_id=8)] == [cb.id]


def test_the_callback_sweep_finds_confirmed_payments_of_channels_with_a_url(store, clock):
    store.add_account("000000000042", actor="t")
    store.add_meter("000000000001", link="tcp://127.0.0.1:9", customer="000000000042", actor="t")
    store.add_channel("bank-1", "online_banking", actor="t", callback_url="http://127.0.0.1:1/cb")
    store.add_channel("bank-2", "online_banking", actor="t")  # no URL: never a callback
    ids = []
    for ch in ("bank-1", "bank-2", "bank-1"):
        p = store.record_payment(channel=ch, txn_id=f"T{len(ids)}", customer="000000000042", meter="000000000001",
                                 amount_fen=100, fee_fen=0, paid_at=clock.t, actor="t", to_meter=True, request={})
        ids.append(p.id)
    assert store.confirmed_for_callbacks(since=0) == []          # sent, not yet confirmed
    clock.t += 10
    [cmd] = store.claim_next(limit=10)                           # one in flight per meter: the first
    store.confirm(cmd.id, reply={})
    [found] = store.confirmed_for_callbacks(since=clock.t)
    assert (found.id, found.state, found.confirmed_at) == (ids[0], "confirmed_on_meter", clock.t)
    assert store.confirmed_for_callbacks(since=clock.t + 1) == []
    store.add_callbacks([(found.id, "bank-1", found.state, "http://127.0.0.1:1/cb", {})])
    assert store.confirmed_for_callbacks(since=0) == []          # told already


def test_a_claimed_callback_is_not_claimed_again_until_its_lease_passes(store, clock):
    store.add_callbacks([(9, "bank-1", "confirmed", "http://127.0.0.1:1/cb", {}),
                         (10, "bank-1", "confirmed", "http://127.0.0.1:1/cb", {})])
    first = store.claim_callbacks(lease_s=60, limit=1)
    assert [cb.payment_id for cb in first] == [9]
    assert [cb.payment_id for cb in store.claim_callbacks(lease_s=60)] == [10]  # another sender: the rest
    assert store.claim_callbacks(lease_s=60, now=clock.t + 59) == []
    # its sender died holding it: taken again once the lease has passed
    [again] = store.claim_callbacks(lease_s=60, now=clock.t + 60, limit=1)
    assert again.id == first[0].id and again.attempts == 0
    store.callback_attempted(again.id, delivered=True)
    assert [cb.payment_id for cb in store.claim_callbacks(lease_s=60, now=clock.t + 10**6)] == [10]
