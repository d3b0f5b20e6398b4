"""Group commit (headend/api/commit.py): the requests of one loop turn in one transaction, each
keeping its own meaning. Real payments on a real SQLite file, through the API's own service."""

from __future__ import annotations

import asyncio
import os
from contextlib import contextmanager

import pytest

from headend.api.commit import GroupCommit, Later
from headend.api.problems import ApiProblem
from headend.api.service import PaymentAsk, StorePayments
from headend.keys import KeyStore
from headend.payments import PaymentRequest
from headend.store import StoreError, open_store
from tests.headend.store_support import Clock

CUSTOMERS = [f"{100 + i:012d}" for i in range(5)]
PAID_AT = 1_700_000_000


@pytest.fixture
def port(tmp_path):
    store = open_store(tmp_path / "s.db", clock=Clock())
    for c in CUSTOMERS:
        store.add_account(c, actor="test")
    store.add_channel("bank-1", "online_banking", actor="test", max_amount_fen=10_000)
    yield StorePayments(store, KeyStore.in_memory(os.urandom(32)), clock=store.now)
    store.close()


def _payment(port: StorePayments, txn: str, customer: str, amount: int):
    def work():
        port.use_nonce("bank-1", f"nonce-{txn}-{customer}-{amount}", 2 * PAID_AT)
        return port.accept(channel_id="bank-1", txn_id=txn, amount_fen=amount, paid_at=PAID_AT, customer=customer,
                           meter=None, actor="channel:bank-1", tender=None)
    return work


def _round(commits: GroupCommit, works) -> list:
    async def go():
        return await asyncio.gather(*(commits.run(w) for w in works), return_exceptions=True)
    return asyncio.run(go())


def _money(port: StorePayments) -> dict[str, int]:
    return {a.customer: a.balance_fen for a in port.store.list_accounts()}


def test_a_round_with_refused_payments_accepts_the_others_exactly_once(port):
    commits = GroupCommit(port.transaction, port.part)
    works = [_payment(port, "T1", CUSTOMERS[0], 100),
             _payment(port, "T2", "000000000999", 200),       # no such customer
             _payment(port, "T3", CUSTOMERS[1], 300),
             _payment(port, "T4", CUSTOMERS[2], 20_000),       # above the channel's maximum
             _payment(port, "T1", CUSTOMERS[0], 100),          # T1 again in the same round: its receipt
             _payment(port, "T1", CUSTOMERS[0], 101),          # T1 with another amount: a conflict
             _payment(port, "T5", CUSTOMERS[3], 500)]
    out = _round(commits, works)
    assert (commits.rounds, commits.requests) == (1, len(works))
    codes = [r.code if isinstance(r, ApiProblem) else r[1] for r in out]
    assert codes == [True, "unknown_customer", True, "amount_too_large", False, "duplicate_conflict", True]
    assert out[4][0] == out[0][0]
    assert _money(port) == {CUSTOMERS[0]: 100, CUSTOMERS[1]: 300, CUSTOMERS[2]: 0, CUSTOMERS[3]: 500,
                            CUSTOMERS[4]: 0}
    assert sorted(p.txn_id for p in port.store.list_payments(limit=100)) == ["T1", "T3", "T5"]
    assert port.store.check_ledger() == []
    # each refused request's own writes went with it: its nonce can be used again (the API then
    # records it with the refusal's audit row), the accepted ones' cannot
    assert port.use_nonce("bank-1", "nonce-T2-000000000999-200", 2 * PAID_AT)
    assert not port.use_nonce("bank-1", f"nonce-T3-{CUSTOMERS[1]}-300", 2 * PAID_AT)


def test_a_failed_commit_answers_every_request_of_the_round_and_writes_nothing(port):
    @contextmanager
    def commit_fails(row_locked=False):
        with port.transaction(row_locked=row_locked):
            yield
            raise StoreError("database s.db: commit failed: disk I/O error")

    commits = GroupCommit(commit_fails, port.part)
    out = _round(commits, [_payment(port, f"T{i}", CUSTOMERS[i], 100) for i in range(3)])
    assert [str(r) for r in out] == ["database s.db: commit failed: disk I/O error"] * 3
    assert port.store.list_payments(limit=100) == [] and set(_money(port).values()) == {0}
    # and the next round works
    commits = GroupCommit(port.transaction, port.part)
    assert _round(commits, [_payment(port, "T0", CUSTOMERS[0], 100)])[0][1] is True


def test_a_long_turn_is_cut_into_rounds(port):
    commits = GroupCommit(port.transaction, port.part, max_round=2)
    out = _round(commits, [_payment(port, f"T{i}", CUSTOMERS[i], 100 + i) for i in range(5)])
    assert [r[1] for r in out] == [True] * 5
    assert (commits.rounds, commits.requests) == (3, 5)
    assert _money(port) == {c: 100 + i for i, c in enumerate(CUSTOMERS)}


def test_a_round_is_row_locked_only_when_every_request_of_it_is(port):
    # PostgreSQL takes payments side by side in row-locked transactions; one request that relies
    # on being the only writer (a reversal) makes its whole round a plain writer transaction
    opened = []

    def transaction(row_locked=False):
        opened.append(row_locked)
        return port.transaction(row_locked=row_locked)

    commits = GroupCommit(transaction, port.part)

    async def go(locks):
        return await asyncio.gather(*(commits.run(_payment(port, f"L{len(opened)}-{i}", CUSTOMERS[i], 100),
                                                  row_locked=locked) for i, locked in enumerate(locks)))

    asyncio.run(go([True, True, True]))
    asyncio.run(go([True, False, True]))
    asyncio.run(go([False]))
    assert opened == [True, False, False]
    assert _money(port) == dict(zip(CUSTOMERS, [300, 200, 200, 0, 0]))


def test_payments_left_to_the_round_are_taken_in_one_pass_each_with_its_own_answer(port):
    steps: list[int] = []

    def accept_many(asks):  # the service's own batch call, counted
        steps.append(len(asks))
        return port.accept_many(asks)

    def later(txn: str, customer: str, amount: int):
        def work():
            port.use_nonce("bank-1", f"nonce-{txn}-{customer}-{amount}", 2 * PAID_AT)
            ask = PaymentAsk(PaymentRequest("bank-1", txn, amount, PAID_AT, customer), "channel:bank-1")
            return Later(accept_many, ask, lambda result: ("answer", result))
        return work

    commits = GroupCommit(port.transaction, port.part)
    out = _round(commits, [later("T1", CUSTOMERS[0], 100),
                           later("T2", "000000000999", 200),       # no such customer
                           later("T3", CUSTOMERS[1], 300),
                           later("T4", CUSTOMERS[2], 20_000),       # above the channel's maximum
                           later("T1", CUSTOMERS[0], 100),          # T1 again: its receipt
                           later("T1", CUSTOMERS[0], 101),          # T1 with another amount: a conflict
                           later("T5", CUSTOMERS[3], 500)])
    assert steps == [7]  # one call for the round (its refusals are answered inside it)
    codes = [r.code if isinstance(r, ApiProblem) else r[1][1] for r in out]
    assert codes == [True, "unknown_customer", True, "amount_too_large", False, "duplicate_conflict", True]
    assert out[0][0] == "answer" and out[4][1][0] == out[0][1][0]
    assert _money(port) == {CUSTOMERS[0]: 100, CUSTOMERS[1]: 300, CUSTOMERS[2]: 0, CUSTOMERS[3]: 500,
                            CUSTOMERS[4]: 0}
    assert sorted(p.txn_id for p in port.store.list_payments(limit=100)) == ["T1", "T3", "T5"]
    assert len(port.store.journal(limit=100)) == 3
    assert port.store.check_ledger() == []


def test_a_step_that_fails_as_a_whole_answers_its_requests_and_leaves_the_others(port):
    def broken(asks):
        port.store.add_account("000000000777", actor="test")  # written, then undone with the step
        raise RuntimeError("the payment service failed")

    def later(txn: str):
        return lambda: Later(broken, txn, lambda result: result)

    commits = GroupCommit(port.transaction, port.part)
    out = _round(commits, [later("A"), _payment(port, "T1", CUSTOMERS[0], 100), later("B")])
    assert [str(out[0]), str(out[2])] == ["the payment service failed"] * 2
    assert out[1][1] is True
    assert _money(port)[CUSTOMERS[0]] == 100 and "000000000777" not in _money(port)


def test_a_round_reads_each_signing_channel_once_and_the_next_round_reads_it_again(port):
    from headend.payments import issue_credentials

    keys = KeyStore.in_memory(os.urandom(32))
    key_id, secret, sealed = issue_credentials(keys, "bank-2")
    port.store.add_channel("bank-2", "online_banking", actor="test", key_id=key_id, secret=sealed)
    service = StorePayments(port.store, keys, clock=port.store.now)
    reads = []
    by_key = port.store.channel_by_key

    def counted(k):
        reads.append(k)
        return by_key(k)

    port.store.channel_by_key = counted
    with service.transaction():
        found = [service.channel_for_key(key_id) for _ in range(3)] + [service.channel_for_key("nobody-1")] * 2
    assert reads == [key_id, "nobody-1"]
    assert [f.channel_id if f else None for f in found] == ["bank-2"] * 3 + [None] * 2
    assert found[0].secret == secret.encode() and found[0].enabled
    # a change made between rounds (`headend channel disable`) is what the next round sees
    port.store.update_channel("bank-2", actor="test", enabled=False)
    with service.transaction():
        assert service.channel_for_key(key_id).enabled is False
    assert reads == [key_id, "nobody-1", key_id]
    # outside a transaction nothing is kept
    service.channel_for_key(key_id)
    service.channel_for_key(key_id)
    assert len(reads) == 5


def test_a_round_claims_its_nonces_in_one_call_and_a_replay_hears_its_own_refusal(port):
    claims: list[list] = []

    def claim(keys):  # the API's claim_nonces: the store's batch call, counted
        claims.append(list(keys))
        return [None if fresh else ApiProblem(401, "nonce_replayed", f"nonce {k[1]} again")
                for k, fresh in zip(keys, port.use_nonces(keys))]

    def signed(nonce: str, txn: str, customer: str, amount: int, refuse_first: bool = False):
        def first():
            if refuse_first:  # e.g. a bad signature: refused before its nonce is looked at
                raise ApiProblem(401, "signature_invalid", "bad signature")
            return ("bank-1", nonce, 2 * PAID_AT), txn

        def work(value):
            ask = PaymentAsk(PaymentRequest("bank-1", value, amount, PAID_AT, customer), "channel:bank-1")
            return Later(port.accept_many, ask, lambda result: result)
        return first, work

    port.use_nonce("bank-1", "n-used-before", 2 * PAID_AT)
    commits = GroupCommit(port.transaction, port.part, claim)
    asks = [signed("n-1", "T1", CUSTOMERS[0], 100),
            signed("n-used-before", "T2", CUSTOMERS[1], 200),   # replayed from an earlier round
            signed("n-3", "T3", CUSTOMERS[2], 300),
            signed("n-1", "T4", CUSTOMERS[3], 400),             # replayed within the round
            signed("n-5", "T5", CUSTOMERS[4], 500, refuse_first=True)]

    async def go():
        return await asyncio.gather(*(commits.run(work, first=first, writes=False) for first, work in asks),
                                    return_exceptions=True)

    out = asyncio.run(go())
    assert len(claims) == 1 and [k[1] for k in claims[0]] == ["n-1", "n-used-before", "n-3", "n-1"]
    assert [r.code if isinstance(r, ApiProblem) else r[1] for r in out] == [
        True, "nonce_replayed", True, "nonce_replayed", "signature_invalid"]
    assert _money(port) == {CUSTOMERS[0]: 100, CUSTOMERS[1]: 0, CUSTOMERS[2]: 300, CUSTOMERS[3]: 0, CUSTOMERS[4]: 0}
    # the round's fresh nonces were kept; the one refused before its nonce was looked at was not
    assert not port.use_nonce("bank-1", "n-3", 2 * PAID_AT)
    assert port.use_nonce("bank-1", "n-5", 2 * PAID_AT)


def test_under_load_a_round_holds_for_the_requests_on_their_way(port):
    def rounds_of(hold_s: float) -> int:
        commits = GroupCommit(port.transaction, port.part, hold_s=hold_s)

        async def go():
            await asyncio.gather(*(commits.run(lambda: None) for _ in range(2)))   # a busy round
            first = asyncio.ensure_future(commits.run(lambda: None))
            await asyncio.sleep(0)                                # the next request, a loop turn later
            await asyncio.gather(first, commits.run(lambda: None))
        asyncio.run(go())
        assert commits.requests == 4
        return commits.rounds

    assert rounds_of(0.0) == 3      # without a hold the late one is a round of its own
    assert rounds_of(0.05) == 2     # held: it joins the first one's round
