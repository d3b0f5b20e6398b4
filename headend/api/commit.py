"""Group commit: the signed requests that reach the store in one turn of the event loop share one
transaction, each in its own part of it.

A request's work (its nonce, its checks, its payment) used to be a transaction of its own, and
the commit was the largest single cost of a payment.  Now the first request of a loop turn opens
a round (``call_soon``); every request that reaches the store before the round runs joins it (with
many connections busy, uvicorn hands the loop a whole turn of them); the round runs each one's
work inside ``store.part()`` (a savepoint), in arrival order, and commits once.  The round's
transaction is ``row_locked`` (see ``Store.atomic``) only when every work in it is: one plain
work (a reversal) makes it a plain writer transaction, which is stricter.

Each request keeps exactly its old meaning:

* a refused request (ApiProblem, or any error) undoes only its own part: the others of the round
  are untouched, and its refusal is audited afterwards as before (``_Api.refuse``);
* nothing is answered before the commit: a receipt always stands for money that is in the store;
  if the commit itself fails, every request of the round gets that error (none of them was
  written; each is retried with the same txn_id, which is idempotent);
* the parts run one after the other in one writer transaction, so a later request of the round
  sees an earlier one's writes (the same txn_id twice in a round is one payment and one 200).

A work may leave the costly half of its job to the round (``Later``): a payment's work checks
the signature, the nonce and the body in its part, and hands back the payment to take; after
the parts, the round takes all of its payments in one call (``step``, here StorePayments.
accept_many: one pass of the payment rules over the batch, each refusal still that request's
own), and each request's answer is made from its own result (``finish``).

The nonces of a round are recorded in one statement: each request's checks before its nonce
(``first``) run for the whole round, then one ``claim``; then each request's work.  A work that
writes nothing itself (a payment's: its writes are the round's step) runs without a part.

Under load a round waits ``hold_s`` for more requests before it runs (only when the last round
had more than one: a lone request is not held): from 32 connections, rounds of ~11 requests
became ~20 in the payments benchmark with 1 ms, and ~25 with 2 ms (the 32 requests in flight
come back as two interleaved waves, and a longer hold takes in more of the second); the
per-round cost (the commit, the batch's queries) is the larger half of a payment's store work at
~10 a round.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, NamedTuple, TypeVar

from headend.store import TransactionLost

__all__ = ["GroupCommit", "Later", "MAX_ROUND"]

_T = TypeVar("_T")

# requests per transaction at most: a longer round would hold its first request's answer longer
MAX_ROUND = 64


# NamedTuples, not frozen dataclasses, for what every request makes: as immutable, and a quarter
# of the cost to make (a frozen dataclass sets each field through object.__setattr__)
class Later(NamedTuple):
    """A work's result when the rest of its job is done for the whole round at once: ``step`` is
    called once per round with every ``item`` handed back for it (in arrival order) and returns one
    result per item, or an exception for an item it refuses; ``finish(result)`` is then this
    work's result."""

    step: Callable[[list[Any]], list[Any]]
    item: Any
    finish: Callable[[Any], Any]


class _Waiting(NamedTuple):
    work: Callable[..., Any]
    fut: asyncio.Future[Any]
    row_locked: bool
    first: Callable[[], tuple[Any, Any]] | None
    writes: bool


class GroupCommit:
    """``await commits.run(work)``: ``work()`` runs in the next round's transaction, in a part of its own."""

    def __init__(self, transaction: Callable[..., AbstractContextManager[Any]],
                 part: Callable[[], AbstractContextManager[Any]],
                 claim: Callable[[list[Any]], Sequence[Exception | None]] | None = None, max_round: int = MAX_ROUND,
                 hold_s: float = 0.0) -> None:
        self._transaction = transaction
        self._hold = hold_s
        self._last = 0  # requests in the last round
        self._part = part
        self._claim = claim
        self._max = max_round
        self._waiting: list[_Waiting] = []
        self.rounds = 0  # transactions committed (or tried)
        self.requests = 0  # works run in them

    async def run(self, work: Callable[..., _T], *, row_locked: bool = False,
                  first: Callable[[], tuple[Any, Any]] | None = None, writes: bool = True) -> _T:
        """Run ``work`` in the next round; its result, or its exception, once the round committed.
        ``row_locked``: the work locks what it reads before it changes it (see ``Store.atomic``).
        ``first``: run before every work of the round, it reads only and returns (key, value); the
        round claims all its keys with one ``claim`` call, and a request whose key is refused
        hears that refusal; the others' works are called with their value. ``writes=False``: the
        work writes nothing, so it needs no part of its own (a savepoint) to undo."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[_T] = loop.create_future()
        if not self._waiting:
            if self._hold and self._last > 1:
                # busy: others are on their way (a round is a commit's fixed cost shared, and
                # under load a bigger round costs less per request than the moment waited)
                loop.call_later(self._hold, self._round)
            else:
                loop.call_soon(self._round)
        self._waiting.append(_Waiting(work, fut, row_locked, first, writes))
        return await fut

    def _round(self) -> None:
        batch, self._waiting = self._waiting[:self._max], self._waiting[self._max:]
        if self._waiting:
            asyncio.get_running_loop().call_soon(self._round)
        if not batch:
            return
        self.rounds += 1
        self.requests += len(batch)
        self._last = len(batch)
        done: list[tuple[asyncio.Future[Any], bool, Any]] = []
        later: dict[Any, list[tuple[int, Later]]] = {}
        try:
            with self._transaction(row_locked=all(w.row_locked for w in batch)):
                firsts = self._firsts(batch)
                for w, got in zip(batch, firsts):
                    value: Any = got
                    if not isinstance(got, Exception):
                        args = () if w.first is None else (got,)
                        try:
                            with self._part() if w.writes else nullcontext():
                                value = w.work(*args)
                        except TransactionLost:
                            raise
                        except Exception as exc:  # noqa: BLE001 - this request's own failure, answered to it alone
                            value = exc
                    if isinstance(value, Later):
                        later.setdefault(value.step, []).append((len(done), value))
                    done.append((w.fut, not isinstance(value, Exception), value))
                for step, items in later.items():
                    self._finish(step, items, done)
        except BaseException as exc:  # the transaction failed: nothing of the round was written
            for w in batch:
                if not w.fut.done():
                    w.fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for fut, ok, value in done:
            if fut.done():  # its client went away (the task was cancelled): the work stands, unanswered
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def _firsts(self, batch: list[_Waiting]) -> list[Any]:
        """Each work's ``first`` value (None without one), or the exception that refuses it; the
        keys of the round claimed in one call."""
        out: list[Any] = [None] * len(batch)
        keys: list[tuple[int, Any]] = []
        for i, w in enumerate(batch):
            if w.first is None:
                continue
            try:
                key, out[i] = w.first()
            except TransactionLost:
                raise
            except Exception as exc:  # noqa: BLE001 - this request's own refusal
                out[i] = exc
                continue
            keys.append((i, key))
        if keys:
            if self._claim is None:
                raise TypeError("a work with `first` needs a GroupCommit made with `claim`")
            for (i, _), refused in zip(keys, self._claim([k for _, k in keys])):
                if refused is not None:
                    out[i] = refused
        return out

    def _finish(self, step: Callable[[list[Any]], list[Any]], items: list[tuple[int, Later]],
                done: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
        try:
            with self._part():
                results: list[Any] = step([x.item for _, x in items])
        except TransactionLost:
            raise
        except Exception as exc:  # noqa: BLE001 - the step failed as a whole: each of its requests hears it
            results = [exc] * len(items)
        for (i, x), result in zip(items, results):
            if not isinstance(result, Exception):
                try:
                    result = x.finish(result)
                except Exception as exc:  # noqa: BLE001 - this request's own failure
                    result = exc
            done[i] = (done[i][0], not isinstance(result, Exception), result)
