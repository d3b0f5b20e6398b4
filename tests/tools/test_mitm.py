"""tools.mitm between the head-end's real front-end and real meter cores on loopback TCP:
frames are captured, dropped, duplicated, replaced and injected by rule."""

from __future__ import annotations

import asyncio
import os

import pytest

from headend.commands import MeterClient
from headend.commands.meter_client import MeterRefused, MeterTarget
from headend.keys import KeyStore
from headend.transports import FrontEnd, LinkSettings
from headend.transports.base import LinkError
from protocol import build_frame, parse_frame
from tools.fleet import Fleet
from tools.mitm import DOWN, UP, MitmProxy, ProxyThread, Rule, _rule

ADDR = "000000000001"
ENERGY = 0x00010000
FAST = LinkSettings(timeout=0.3, retries=0, backoff=0.0, connect_timeout=1.0, reconnect_backoff=0.05)


class Rig:
    def __init__(self) -> None:
        self.master = os.urandom(32)
        self.fleet = Fleet([ADDR], master=self.master, port=0, load=False)

    async def __aenter__(self) -> Rig:
        await self.fleet.start()
        self.proxy = MitmProxy(("127.0.0.1", self.fleet.port))
        await self.proxy.start()
        self.frontend = FrontEnd(FAST)
        keys = KeyStore.in_memory(self.master)
        self.client = MeterClient(self.frontend, lambda m: keys.meter_key(m.address, m.krn))
        self.target = MeterTarget(ADDR, self.proxy.link)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.frontend.close()
        await self.proxy.close()
        await self.fleet.close()


def test_frames_are_captured_both_ways_and_parsed():
    async def main():
        async with Rig() as rig:
            await rig.client.read(rig.target, ENERGY)
            return rig.proxy.seen

    seen = asyncio.run(main())
    assert [s.direction for s in seen] == [UP, DOWN]
    assert seen[0].frame.function == 0x11 and seen[0].di == ENERGY and seen[0].action == "pass"
    assert seen[1].frame.control == 0x91 and seen[1].di == ENERGY


def test_drop_loses_a_frame_then_the_rule_is_spent():
    async def main():
        async with Rig() as rig:
            rule = rig.proxy.drop(DOWN, function=0x11, di=ENERGY)
            with pytest.raises(LinkError):
                await rig.client.read(rig.target, ENERGY)
            value = await rig.client.read(rig.target, ENERGY)  # times=1: the next reply passes
            return rig, rule, value

    rig, rule, value = asyncio.run(main())
    assert rule.hits == 1 and rule.spent and value.di == ENERGY
    assert [s.action for s in rig.proxy.frames(DOWN)] == ["drop", "pass"]


def test_duplicate_replays_a_request_to_the_meter():
    async def main():
        async with Rig() as rig:
            rig.proxy.duplicate(UP, function=0x11)
            await rig.client.read(rig.target, ENERGY)
            await rig.proxy.wait_for(DOWN, count=2, function=0x11)
            return rig.proxy

    proxy = asyncio.run(main())
    assert len(proxy.frames(UP)) == 1 and proxy.frames(UP)[0].action == "duplicate"
    assert len(proxy.frames(DOWN, control=0x91)) == 2  # the meter answered the copy too


def test_replace_sends_an_earlier_reply_instead():
    async def main():
        async with Rig() as rig:
            meter = rig.fleet.meters[ADDR]
            first = await rig.client.read(rig.target, ENERGY)
            old = rig.proxy.frames(DOWN, control=0x91)[-1].raw
            meter.add_energy(5000, meter.last_t)
            rig.proxy.replace(DOWN, lambda seen: old, function=0x11, di=ENERGY)
            replayed = await rig.client.read(rig.target, ENERGY)
            fresh = await rig.client.read(rig.target, ENERGY)
            return first.value, replayed.value, fresh.value

    first, replayed, fresh = asyncio.run(main())
    assert replayed == first and fresh > first  # reads are open: only the rule made them equal


def test_answer_replies_in_the_meters_place():
    async def main():
        async with Rig() as rig:
            forged = build_frame(ADDR, 0x91, ENERGY.to_bytes(4, "little") + bytes.fromhex("99999900"))
            rule = rig.proxy.answer(UP, lambda seen: forged, function=0x11, di=ENERGY)
            value = await rig.client.read(rig.target, ENERGY)
            return value.value, rule.hits, rig.proxy.frames(DOWN)

    value, hits, down = asyncio.run(main())
    assert str(value) == "9999.99" and hits == 1 and down == []  # the meter never saw the read


def test_exchange_talks_to_the_meter_on_its_own_connection():
    async def main():
        async with Rig() as rig:
            reply = await rig.proxy.exchange(build_frame(ADDR, 0x11, ENERGY.to_bytes(4, "little")))
            silent = await rig.proxy.exchange(build_frame("999999999999", 0x11, ENERGY.to_bytes(4, "little")), 0.3)
            return reply, silent, rig.proxy.seen

    reply, silent, seen = asyncio.run(main())
    assert parse_frame(reply).control == 0x91 and silent is None
    assert not seen  # the attacker's own traffic does not cross the head-end's path


def test_inject_into_the_head_ends_stream():
    async def main():
        async with Rig() as rig:
            await rig.client.read(rig.target, ENERGY)  # the head-end connects through the proxy
            await rig.proxy.inject(build_frame(ADDR, 0x11, (0x00900200).to_bytes(4, "little")))
            got = await rig.proxy.wait_for(DOWN, di=0x00900200)
            return got

    got = asyncio.run(main())
    assert got[0].frame.control == 0x91  # the meter answered; the reply went to the head-end as a stray


def test_chance_fires_at_random_with_the_seeded_rng():
    p = MitmProxy(("127.0.0.1", 1), seed=1)
    rule = p.add(Rule("drop", UP, times=None, chance=0.5))
    frame = build_frame(ADDR, 0x11, ENERGY.to_bytes(4, "little"))
    kept = sum(bool(p._decide(UP, frame, 1)[0]) for _ in range(400))
    assert 150 < kept < 250 and rule.hits == 400 - kept


def test_bad_rules_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="action"):
        Rule("mangle")
    with pytest.raises(ValueError, match="make"):
        Rule("replace")
    assert _rule("drop", "down:03:070102FF:2") == Rule("drop", DOWN, function=3, di=0x070102FF, times=2)


def test_proxy_thread_for_synchronous_callers():
    async def fleet_up(f: Fleet) -> None:
        await f.start()

    loop = asyncio.new_event_loop()
    import threading

    fleet = Fleet([ADDR], master=os.urandom(32), port=0, load=False)
    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(fleet_up(fleet), loop).result(10)
    try:
        with ProxyThread(("127.0.0.1", fleet.port)) as p:
            assert p.link.startswith("tcp://127.0.0.1:")
            reply = p.call(p.proxy.exchange(build_frame(ADDR, 0x11, ENERGY.to_bytes(4, "little"))))
            assert parse_frame(reply).control == 0x91
    finally:
        asyncio.run_coroutine_threadsafe(fleet.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)


def test_lossy_proxy_loses_recharge_replies_only():
    """tools.fleet.LossyProxy (the demo's lossy link) is this proxy with one rule."""
    from tools.fleet import LossyProxy

    async def main():
        master = os.urandom(32)
        fleet = Fleet([ADDR], master=master, port=0, load=False)
        await fleet.start()
        hop = LossyProxy("127.0.0.1", fleet.port, drop_recharge=1)
        port = await asyncio.to_thread(hop.start)
        frontend = FrontEnd(LinkSettings(timeout=0.3, retries=2, backoff=0.0, connect_timeout=1.0))
        try:
            keys = KeyStore.in_memory(master)
            client = MeterClient(frontend, lambda m: keys.meter_key(m.address, m.krn))
            target = MeterTarget(ADDR, f"tcp://127.0.0.1:{port}")
            await client.read(target, ENERGY)
            result = await client.recharge(target, 500, 1, "000000000042", open_account=True)
            return result, hop.dropped, fleet.meters[ADDR].status()
        finally:
            await frontend.close()
            await asyncio.to_thread(hop.stop)
            await fleet.close()

    result, dropped, status = asyncio.run(main())
    assert result == "credited" and dropped == 1  # the re-sent frame got the meter's cached reply
    assert (status["balance_fen"], status["count"]) == (500, 1)


def test_storm_loses_and_replays_but_one_credit_per_recharge():
    """Through a seeded storm (a fifth of the frames lost, a fifth of the rest sent twice) the
    head-end's retries and the meter's sequence rule still credit each recharge exactly once."""

    async def main():
        async with Rig() as rig:
            drop, dup = rig.proxy.storm(drop=0.2, duplicate=0.2)
            credited = 0
            for fen in (100, 200, 300, 400, 500, 600):
                count = None  # as the outbox does: the count is chosen once, then every retry carries it
                for _ in range(30):
                    try:
                        if count is None:
                            count = (await rig.client.wallet(rig.target)).purchase_count + 1
                        await rig.client.recharge(rig.target, fen, count, "000000000042", open_account=count == 1)
                        credited += fen
                        break
                    except (LinkError, MeterRefused):
                        continue
            rig.proxy.clear()
            return drop.hits, dup.hits, credited, await rig.client.wallet(rig.target)

    dropped, duplicated, credited, wallet = asyncio.run(main())
    assert dropped > 0 and duplicated > 0
    assert credited == 2100 and (wallet.balance_fen, wallet.purchase_count) == (2100, 6)
