"""Money safety of the outbox against real meter cores on loopback TCP: a recharge whose frame may
have reached the meter is never failed (it stays unresolved until the meter's purchase count
settles it, also across a security lock), a meter restarted from an older state record gets back
what the head-end confirmed, and a command that can never work is rejected instead of blocking
its meter."""

from __future__ import annotations

import asyncio
import os

from headend.keys import derive_meter_key
from tests.headend.test_commands import Rig, run


class Clock:
    """The worker's clock, moved by hand (the meters keep their own)."""

    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def _lock(core) -> None:
    """Five failed proofs in a burst: the meter holds proofs back (up to 10 minutes)."""
    t = core.last_t
    for _ in range(5):
        core.sec.failure(t)
    assert core.sec.locked(t)


def _hold_back_ends(core) -> None:
    core.sec.fails = 0  # what 10 minutes of meter time do to a level of 5 after the burst


def test_a_recharge_credited_behind_a_lost_reply_and_a_lock_is_never_failed_nor_paid_twice(tmp_path):
    async def main():
        async with Rig(tmp_path, n=1) as rig:
            a = rig.addresses[0]
            clock = Clock()
            rig.worker.clock = clock
            core = rig.meter(a)
            rig.fleet.fault(a).drop, rig.fleet.fault(a).drop_kind = 2, "recharge"  # the credit's reply is lost
            first = rig.store.enqueue(a, "recharge", {"amount_fen": 700}, actor="pay", idem_key="P1")
            [c] = rig.store.claim_next(now=int(clock.t))
            await rig.worker.execute(c)
            after_loss = rig.store.get_command(first.id)
            _lock(core)  # then an attacker's burst of made-up proofs holds the meter back
            locked = after_loss
            for _ in range(3):  # refused three times in a row: a held-back meter, not a bad line
                clock.t = locked.not_before
                [c] = rig.store.claim_next(now=int(clock.t))
                await rig.worker.execute(c)
                locked = rig.store.get_command(first.id)
            second = rig.store.enqueue(a, "recharge", {"amount_fen": 500}, actor="pay", idem_key="P2")
            held_back = rig.store.claim_next(now=int(clock.t))  # a new payment, due now, waits behind it
            _hold_back_ends(core)
            clock.t = locked.not_before
            await rig.worker.drain(20)
            return (after_loss, locked, held_back, rig.store.get_command(first.id), rig.store.get_command(second.id),
                    core.status(), rig.store.events(a))

    after_loss, locked, held_back, first, second, status, events = run(main())
    assert after_loss.status == "unresolved" and "may have credited it" in after_loss.last_error
    assert core_count(status) == 2 and status["balance_fen"] == 1200  # each payment once
    assert locked.status == "unresolved" and "holds proofs back" in locked.last_error and "11 minutes" in locked.last_error
    assert held_back == []
    assert first.status == "confirmed" and first.reply["result"] == "settled" and first.reply["purchase_count"] == 1
    assert second.status == "confirmed" and second.reply["purchase_count"] == 2
    kinds = [e.kind for e in events]
    assert "recharge.unresolved" in kinds and "security_locked" in kinds


def core_count(status: dict) -> int:
    return status["count"]


def test_a_meter_restarted_from_an_older_record_gets_back_what_was_confirmed(tmp_path):
    from meter.core import Meter  # firmware/ is on sys.path through tools.fleet

    async def main():
        async with Rig(tmp_path, n=1) as rig:
            a = rig.addresses[0]
            assert (await rig.run(a, "recharge", {"amount_fen": 1000})).status == "confirmed"
            older = bytes(rig.fleet.flashes[a].mem)  # the state record after the first credit
            for fen in (200, 30):
                assert (await rig.run(a, "recharge", {"amount_fen": fen})).status == "confirmed"
            # the newest record is damaged: the meter starts from the older one (count 1, 10.00 yuan)
            flash = rig.fleet.flashes[a]
            flash.mem[:] = older
            cfg = {"address": a, "key": derive_meter_key(rig.master, a, 0), "krn": 0, "mode": "local", "bench": False}
            core = Meter(cfg, flash, rig.fleet.clock.now(), os.urandom)
            rig.fleet.meters[a] = core
            rig.fleet.bus_of(a)._by_wire = {k: (x, core if x == a else m)
                                            for k, (x, m) in rig.fleet.bus_of(a)._by_wire.items()}
            assert core.status()["count"] == 1
            new = await rig.run(a, "recharge", {"amount_fen": 4})
            return new, core.status(), rig.store.events(a), rig.store.audit_entries(action="meter.rollback")

    new, status, events, audit = run(main())
    assert new.status == "confirmed", new.last_error
    assert status["count"] == 4 and status["balance_fen"] == 1000 + 200 + 30 + 4  # every payment exactly once
    assert new.reply["purchase_count"] == 4
    [rollback] = [e for e in events if e.kind == "rollback"]
    assert rollback.detail["meter_purchase_count"] == 1 and rollback.detail["known_purchase_count"] == 3
    assert sorted(e.detail["purchase_count"] for e in events if e.kind == "recharge.restored") == [2, 3]
    assert len(audit) == 1 and audit[0].actor == "headend serve"


def test_a_command_that_can_never_work_is_rejected_and_the_meter_queue_moves_on(tmp_path):
    async def main():
        async with Rig(tmp_path, n=1) as rig:
            a = rig.addresses[0]
            # queued by something other than the CLI (which refuses it at entry)
            poison = rig.store.enqueue(a, "recharge", {"amount_fen": 10**14}, actor="script")
            read = rig.store.enqueue(a, "read", {"dis": ["00900200"]}, actor="ops")
            trip = rig.store.enqueue(a, "trip", {}, actor="ops")
            await asyncio.wait_for(rig.worker.drain(20), 30)
            return [rig.store.get_command(c.id) for c in (poison, read, trip)], rig.meter(a).status()

    (poison, read, trip), status = run(main())
    assert poison.status == "rejected" and "out of range" in poison.last_error and "42949672.95 yuan" in poison.last_error
    assert poison.attempts == 1 and status["balance_fen"] == 0 and status["count"] == 0
    assert read.status == "confirmed" and trip.status == "confirmed"
