"""Attacks on the line, with no key, against a real `meter run` through a scripted man in the
middle, with the real head-end behind it: each must leave money, credit, the meter's identity
and the head-end's view of them intact (protocol/SECURITY.md, "Threat model")."""

from __future__ import annotations

import asyncio
import os

from headend.commands import MeterRefused, OutboxWorker
from headend.store import open_store
from protocol import payloads
from protocol.frame import WILDCARD, address_to_wire
from tests.security.support import ADDR, CUSTOMER, Rig, Station, running_meter
from tools.mitm import DOWN, UP

STATUS_QUERY = 0x078102FF


def _keyless_proof() -> bytes:
    """An identity authentication with a made-up C1 (what anyone on the bus can send)."""
    return payloads.identity_auth_request(0, os.urandom(8), os.urandom(8), b"\x00\x00" + address_to_wire(ADDR))


def test_address_rewrite_without_a_key_is_refused(tmp_path):
    """A 15H to AAAAAAAAAAAA while the head-end has a session open must not re-address the meter."""
    with running_meter(tmp_path) as m:
        async def main():
            async with Rig(m) as rig:
                await rig.client.wallet(rig.target)  # the head-end's session is open now
                reply = await rig.attack(0x15, address_to_wire("000000000777"), address=WILDCARD)
                value = await rig.client.read(rig.target, 0x04000401)  # the meter still answers at its address
                return reply, value.value

        reply, still = asyncio.run(main())
        assert reply is not None and reply.control == 0xD5, reply
        assert still == ADDR
        assert m.command("status")["address"] == ADDR


def test_replayed_status_reply_cannot_hide_a_recharge(tmp_path):
    """Three payments through the outbox; the man in the middle answers the third one's wallet
    query with an earlier reply (count 1). The head-end must not take the new recharge as a
    repeat: every payment ends on the meter exactly once."""
    with running_meter(tmp_path) as m:
        async def main():
            async with Rig(m) as rig:
                store = open_store(tmp_path / "h.db")
                try:
                    store.add_meter(ADDR, link=rig.proxy.link, customer=CUSTOMER, actor="test")
                    worker = OutboxWorker(store, rig.client, max_attempts=3, retry_backoff_s=0.0)

                    async def pay(fen):
                        cmd = store.enqueue(ADDR, "recharge", {"amount_fen": fen}, actor="test")
                        await worker.drain(30)
                        return store.get_command(cmd.id)

                    first = await pay(10000)  # opens the account: count 1
                    second = await pay(2000)  # count 2; its first wallet reply says count 1
                    old = rig.proxy.frames(DOWN, control=0x83, di=STATUS_QUERY)[2].raw
                    rig.proxy.replace(DOWN, lambda seen: old, control=0x83, di=STATUS_QUERY)
                    third = await pay(3000)
                    return first, second, third
                finally:
                    store.close()

        first, second, third = asyncio.run(main())
        assert first.status == second.status == "confirmed"
        st = m.command("status")
        assert (st["count"], st["balance_fen"]) == (3, 15000), (st, third.status, third.reply)
        assert third.status == "confirmed"


def test_keyless_burst_does_not_stop_recharges_for_the_day(tmp_path):
    """Five made-up proofs in a row hold the meter's checks back for a while (that is what
    bounds guessing); ten minutes later the head-end's recharge goes through."""
    with running_meter(tmp_path) as m:
        async def main():
            async with Rig(m) as rig:
                for _ in range(5):
                    await rig.attack(0x03, payloads.challenge_request(0))
                    await rig.attack(0x03, _keyless_proof())
                m.command("advance 600")
                return await rig.client.recharge(rig.target, 10000, 1, CUSTOMER, open_account=True)

        assert asyncio.run(main()) == "credited"
        assert m.command("status")["balance_fen"] == 10000


def test_captured_identity_authentication_cannot_open_a_session(tmp_path):
    with running_meter(tmp_path) as m:
        async def main():
            async with Rig(m) as rig:
                await rig.client.wallet(rig.target)
                captured = rig.proxy.frames(UP, function=0x03, di=0x070000FF)[-1]
                replayed = await rig.attack(0x03, captured.frame.data)
                return replayed

        replayed = asyncio.run(main())
        assert replayed is not None and replayed.is_abnormal, replayed


def test_keyless_end_session_and_status_query_reveal_nothing(tmp_path):
    """While the head-end has a session open, a frame with no MAC neither reads the wallet nor
    ends the session."""
    with running_meter(tmp_path) as m:
        async def main():
            async with Rig(m) as rig:
                await rig.client.recharge(rig.target, 10000, 1, CUSTOMER, open_account=True)
                query = await rig.attack(0x03, payloads.status_query_request(0, os.urandom(4)))
                end = await rig.attack(0x03, payloads.end_session_request(0, os.urandom(4)))
                auths = len(rig.proxy.frames(UP, di=0x070000FF))
                await rig.client.recharge(rig.target, 500, 2, CUSTOMER)
                return query, end, auths, len(rig.proxy.frames(UP, di=0x070000FF))

        query, end, auths_before, auths_after = asyncio.run(main())
        for reply in (query, end):
            assert reply is not None and reply.control == 0xC3 and len(reply.data) == 2, reply
        assert auths_after == auths_before  # the head-end's session survived: no new authentication
        assert m.command("status")["balance_fen"] == 10500


def test_validity_window_ends_with_its_session(tmp_path):
    """A 1-minute window set in one session does not shorten the next one."""
    with running_meter(tmp_path) as m:
        async def main():
            async with Rig(m) as rig:
                one = Station(rig)
                await one.authenticate()
                assert (await one.set_validity(1)).control == 0x83
                two = Station(rig)
                await two.authenticate()
                m.command("advance 120")
                return await two.status()

        reply = asyncio.run(main())
        assert reply.control == 0x83, reply


def test_a_made_up_repeat_recharge_is_not_taken_as_credited(tmp_path):
    """The man in the middle keeps the recharge from the meter and answers 'repeat recharge'
    (C3 02 00) itself: the head-end must not report the payment as credited."""
    from protocol import build_frame

    with running_meter(tmp_path) as m:
        async def main():
            async with Rig(m) as rig:
                await rig.client.recharge(rig.target, 10000, 1, CUSTOMER, open_account=True)
                forged = build_frame(ADDR, 0xC3, b"\x02\x00")
                rule = rig.proxy.answer(UP, lambda seen: forged, function=0x03, di=0x070102FF, times=None)
                try:
                    outcome = await rig.client.recharge(rig.target, 2000, 2, CUSTOMER)
                except MeterRefused as exc:
                    outcome = exc.flags
                rule.times = 0  # the attacker leaves: the same recharge now reaches the meter
                after = await rig.client.recharge(rig.target, 2000, 2, CUSTOMER)
                return outcome, rule.hits, after

        outcome, forged_answers, after = asyncio.run(main())
        assert outcome == ["mac_failed"] and forged_answers == 2  # refused twice, never "repeat"
        assert after == "credited"
        assert m.command("status")["balance_fen"] == 12000


def test_replayed_recharge_frames_credit_nothing(tmp_path):
    """Every recharge frame the head-end sent, sent again by the attacker: nothing is credited twice."""
    with running_meter(tmp_path) as m:
        async def main():
            async with Rig(m) as rig:
                await rig.client.recharge(rig.target, 10000, 1, CUSTOMER, open_account=True)
                await rig.client.recharge(rig.target, 2000, 2, CUSTOMER)
                sent = [s.frame.data for s in rig.proxy.frames(UP, function=0x03)
                        if s.di in (0x070101FF, 0x070102FF)]
                replies = [await rig.attack(0x03, data) for data in sent]
                return sent, replies

        sent, replies = asyncio.run(main())
        assert len(sent) == 2
        st = m.command("status")
        assert (st["balance_fen"], st["count"]) == (12000, 2)
        # the last one is answered from the meter's cache (a retry), the older one refused
        assert replies[0].control == 0xC3 and replies[1].control == 0x83
