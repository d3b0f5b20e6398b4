"""The outbox worker against real meter cores on loopback TCP (in process), with a real SQLite store."""

from __future__ import annotations

import asyncio
import os
from decimal import Decimal

import pytest

from headend.commands import MeterClient, OutboxWorker, parse_di, reading_row
from headend.commands.meter_client import ReadValue
from headend.keys import KeyStore
from headend.store import open_store
from headend.transports import FrontEnd, LinkSettings
from tools.fleet import Fleet, fleet_addresses

CUSTOMER = "000000000042"
FAST = LinkSettings(timeout=0.3, retries=1, backoff=0.02, connect_timeout=1.0, reconnect_backoff=0.05)


class Rig:
    """A store, a fleet of meter cores on loopback and a worker wired like `headend serve`."""

    def __init__(self, tmp_path, n=3, per_bus=1, mode="local", link_settings=FAST):
        self.master = os.urandom(32)
        self.keys = KeyStore.in_memory(self.master)
        self.addresses = fleet_addresses(n)
        self.fleet = Fleet(self.addresses, master=self.master, per_bus=per_bus, mode=mode, load=False)
        self.store = open_store(tmp_path / "h.db")
        self.link_settings = link_settings

    async def __aenter__(self):
        await self.fleet.start()
        for a in self.addresses:
            self.store.add_meter(a, link=self.fleet.link_of(a), customer=CUSTOMER, actor="test")
        self.frontend = FrontEnd(self.link_settings)
        self.client = MeterClient(self.frontend, lambda m: self.keys.meter_key(m.address, m.krn))
        self.worker = OutboxWorker(self.store, self.client, max_attempts=2, retry_backoff_s=0.0)
        return self

    async def __aexit__(self, *exc):
        await self.frontend.close()
        await self.fleet.close()
        self.store.close()

    async def run(self, meter, kind, params=None, timeout=10.0):
        cmd = self.store.enqueue(meter, kind, params or {}, actor="test")
        await self.worker.drain(timeout)
        return self.store.get_command(cmd.id)

    def meter(self, a):
        return self.fleet.meters[a]


def run(coro):
    return asyncio.run(coro)


def test_read_stores_readings_in_base_units(tmp_path):
    async def main():
        async with Rig(tmp_path) as rig:
            a = rig.addresses[0]
            rig.meter(a).add_energy(12345, rig.meter(a).last_t)
            cmd = await rig.run(a, "read", {"dis": ["00010000", "00900200", "04000503", "040005FF"]})
            return rig, a, cmd, rig.store.readings(a)

    rig, a, cmd, readings = run(main())
    assert cmd.status == "confirmed", cmd.last_error
    by_di = {r.di: r for r in readings}
    assert by_di["00010000"].value == 12340  # 0.01 kWh register resolution: 12.34 kWh -> Wh
    assert by_di["00900200"].value == 0
    assert by_di["04000503"].value & 0x0200  # money-prepaid meter type
    assert by_di["040005FF"].value is None and by_di["040005FF"].text.startswith("[")
    assert cmd.reply["values"]["00010000"]["value"] == "12.34"


def test_recharge_opens_account_then_credits_exactly_once(tmp_path):
    async def main():
        async with Rig(tmp_path) as rig:
            a = rig.addresses[0]
            first = await rig.run(a, "recharge", {"amount_fen": 5000})
            second = await rig.run(a, "recharge", {"amount_fen": 1234})
            return rig, a, first, second, rig.meter(a).status(), rig.store.get_meter(a)

    rig, a, first, second, status, meter = run(main())
    assert first.status == "confirmed" and first.reply["open_account"] is True
    assert first.reply["purchase_count"] == 1 and first.reply["balance_fen"] == 5000
    assert second.status == "confirmed" and second.reply["purchase_count"] == 2
    assert second.reply["result"] == "credited" and second.reply["balance_fen"] == 6234
    assert status["balance_fen"] == 6234 and status["count"] == 2
    assert meter.purchase_count == 2 and meter.balance_fen == 6234


def test_recharge_to_a_healthy_meter_takes_one_attempt(tmp_path):
    # attempts counts the times the worker took the command on (the operations report's
    # retries are attempts - 1): recording the chosen purchase count before the frame goes out
    # is part of the first attempt, not a second one
    async def main():
        async with Rig(tmp_path) as rig:
            a = rig.addresses[0]
            first = await rig.run(a, "recharge", {"amount_fen": 5000})  # opens the account
            second = await rig.run(a, "recharge", {"amount_fen": 1234})
            return first, second

    first, second = run(main())
    assert (first.status, first.attempts) == ("confirmed", 1), first.last_error
    assert (second.status, second.attempts) == ("confirmed", 1), second.last_error
    assert first.reply["sends"] == 1 and second.reply["sends"] == 1


def test_recharge_with_lost_replies_credits_once(tmp_path):
    async def main():
        async with Rig(tmp_path) as rig:
            a = rig.addresses[0]
            bus = rig.fleet.bus_of(a)
            # every attempt of the link (1 + 1 retry) loses the recharge reply: the frame may have
            # reached the meter, so the command is unresolved until the meter's purchase count, read
            # in a fresh session, settles it
            bus.drop, bus.drop_kind = 2, "recharge"
            cmd = await rig.run(a, "recharge", {"amount_fen": 700})
            return rig, a, cmd, rig.meter(a).status(), rig.store.events(a, kind="recharge.unresolved")

    rig, a, cmd, status, told = run(main())
    assert cmd.status == "confirmed", cmd.last_error
    # one attempt lost its replies, the next settled it from the purchase count
    assert cmd.reply["result"] == "settled" and cmd.attempts == 2
    assert [e.detail["command"] for e in told] == [cmd.id]  # the operator was told it was in doubt
    assert status["balance_fen"] == 700 and status["count"] == 1


def test_recharge_resumes_after_head_end_crash_with_recorded_count(tmp_path):
    async def main():
        async with Rig(tmp_path) as rig:
            a = rig.addresses[0]
            rig.fleet.bus_of(a).drop, rig.fleet.bus_of(a).drop_kind = 10, "recharge"
            cmd = rig.store.enqueue(a, "recharge", {"amount_fen": 900}, actor="test")
            [claimed] = rig.store.claim_next()
            task = asyncio.create_task(rig.worker.execute(claimed))
            # let the count be chosen and the first frame go out, then "crash" mid-flight
            for _ in range(200):
                await asyncio.sleep(0.01)
                if (rig.store.get_command(cmd.id).reply or {}).get("purchase_count"):
                    break
            await asyncio.sleep(0.05)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            rig.fleet.bus_of(a).drop = 0
            # a new worker (restart) recovers it
            worker2 = OutboxWorker(rig.store, MeterClient(rig.frontend, lambda m: rig.keys.meter_key(m.address, m.krn)),
                                   retry_backoff_s=0.0)
            worker2.recover()
            await worker2.drain(10)
            return rig.store.get_command(cmd.id), rig.meter(a).status()

    cmd, status = run(main())
    assert cmd.status == "confirmed", cmd.last_error
    assert cmd.reply["purchase_count"] == 1
    assert status["balance_fen"] == 900 and status["count"] == 1


def test_relay_commands_confirmed_by_status_word_3(tmp_path):
    async def main():
        async with Rig(tmp_path) as rig:
            a = rig.addresses[0]
            out = {}
            await rig.run(a, "recharge", {"amount_fen": 10000})
            out["trip"] = await rig.run(a, "trip")
            out["permit"] = await rig.run(a, "close_permitted")
            out["after_permit"] = rig.meter(a).relay_open
            rig.meter(a).button(rig.meter(a).last_t)
            out["after_button"] = rig.meter(a).relay_open
            out["hold"] = await rig.run(a, "hold_on")
            out["trip_in_hold"] = await rig.run(a, "trip")
            out["unhold"] = await rig.run(a, "hold_off")
            out["trip2"] = await rig.run(a, "trip")
            out["direct"] = await rig.run(a, "close_direct")
            out["alarm"] = await rig.run(a, "alarm_on")
            return out, rig.store.get_meter(a), rig.store.events(a)

    out, meter, events = run(main())
    assert out["trip"].status == "confirmed" and out["trip"].reply["relay"] == "open"
    assert "relay_command_open" in out["trip"].reply["flags"]
    assert out["permit"].status == "confirmed" and out["after_permit"] is True
    assert out["after_button"] is False
    assert out["hold"].status == "confirmed" and "power_hold" in out["hold"].reply["flags"]
    assert out["trip_in_hold"].status == "failed" and "refused trip" in out["trip_in_hold"].last_error
    assert "power hold is on" in out["trip_in_hold"].last_error
    assert out["unhold"].status == "confirmed" and "power_hold" not in out["unhold"].reply["flags"]
    assert out["trip2"].reply["relay"] == "open"
    assert out["direct"].status == "confirmed" and out["direct"].reply["relay"] == "closed"
    assert out["alarm"].status == "confirmed"
    assert meter.relay == "closed"
    kinds = [e.kind for e in events]
    assert "trip.failed" in kinds and "close_direct" in kinds


def test_limits_and_tariff_written_and_read_back(tmp_path):
    async def main():
        async with Rig(tmp_path) as rig:
            a = rig.addresses[0]
            lim = await rig.run(a, "set_limits", {"alarm1_fen": 2000, "alarm2_fen": 500, "close_ok_fen": 100})
            tar = await rig.run(a, "set_tariff", {"prices": [5680, 5380, 4880, 2880]})
            v = await rig.client.read(_target(rig, a), 0x04001001)
            p = await rig.client.read(_target(rig, a), 0x04050102)
            return lim, tar, v, p

    lim, tar, v, p = run(main())
    assert lim.status == "confirmed", lim.last_error
    assert lim.reply["written"]["04001001"] == "20.00"
    assert tar.status == "confirmed", tar.last_error
    assert v.value == Decimal("20.00") and p.value == Decimal("0.5380")


def _target(rig, a):
    from headend.commands import target_of

    return target_of(rig.store.get_meter(a))


def test_sync_time_sets_a_clock_that_is_far_off(tmp_path):
    async def main():
        async with Rig(tmp_path) as rig:
            a = rig.addresses[0]
            rig.meter(a).offset -= 3600  # an hour slow: too far for a broadcast
            cmd = await rig.run(a, "sync_time", {"mode": "auto"})
            return cmd, rig.meter(a).offset

    cmd, offset = run(main())
    assert cmd.status == "confirmed", cmd.last_error
    assert cmd.reply["method"] == "set" and abs(cmd.reply["offset_s"] - 3600) < 5
    assert abs(offset) < 3


def test_wrong_key_fails_cleanly_without_sending_a_recharge(tmp_path):
    async def main():
        async with Rig(tmp_path) as rig:
            a = rig.addresses[0]
            rig.store.update_meter(a, actor="test", krn=1)  # the meter still holds the KRN 0 key
            cmd = await rig.run(a, "recharge", {"amount_fen": 100})
            return cmd, rig.meter(a).status()

    cmd, status = run(main())
    # nothing was sent; after three refusals in a row it waits (a hold-back ends within 10
    # minutes), one try per 11 minutes, so a wrong key never holds the meter back by itself
    assert cmd.status == "queued" and cmd.not_before >= cmd.updated_at + 600
    assert "identity authentication" in cmd.last_error and "key store" in cmd.last_error
    assert "11 minutes" in cmd.last_error
    assert "purchase_count" not in (cmd.reply or {})
    assert status["balance_fen"] == 0 and status["mac_fails"] <= 3  # below the hold-back's 5, then one per 11 min


def test_unreachable_meter_read_fails_after_attempts_recharge_stays_queued(tmp_path):
    async def main():
        async with Rig(tmp_path) as rig:
            a = rig.addresses[0]
            rig.fleet.buses[0].server.close()
            await rig.fleet.buses[0].server.wait_closed()
            read = await rig.run(a, "read", {"dis": ["00010000"]})
            rc = rig.store.enqueue(a, "recharge", {"amount_fen": 100}, actor="test")
            for _ in range(3):
                for c in rig.store.claim_next(limit=5, now=2**40):
                    await rig.worker.execute(c)
            return read, rig.store.get_command(rc.id)

    read, rc = run(main())
    assert read.status == "failed" and "connection refused" in read.last_error and "gave up after 2" in read.last_error
    assert rc.status == "queued" and rc.attempts == 3 and "tcp://127.0.0.1" in rc.last_error


def test_bus_with_several_meters_reads_all(tmp_path):
    async def main():
        async with Rig(tmp_path, n=4, per_bus=4) as rig:
            cmds = [rig.store.enqueue(a, "read", {"dis": ["00900200"]}, actor="t") for a in rig.addresses]
            await rig.worker.drain(10)
            stored = [rig.store.latest_reading(a, "00900200") for a in rig.addresses]
            return rig, [rig.store.get_command(c.id) for c in cmds], stored

    rig, cmds, stored = run(main())
    assert len(rig.fleet.buses) == 1
    assert [c.status for c in cmds] == ["confirmed"] * 4
    assert all(r is not None and r.value == 0 for r in stored)


def test_block_read_with_follow_ups(tmp_path):
    from protocol.formats import SlotEntry

    async def main():
        async with Rig(tmp_path) as rig:
            a = rig.addresses[0]
            m = _target(rig, a)
            # eight full day tables (14 slots x 3 bytes each) make the set-1 block longer than one reply
            for k in range(1, 9):
                table = [SlotEntry(h, 0, 1 + (h + k) % 4) for h in range(0, 14)]
                await rig.client.write(m, 0x04010000 | k, table)
            parts = [await rig.client.read_raw(m, 0x04010000 | k) for k in range(0, 9)]
            link = await rig.frontend.link_for(m.link, a)
            before = link.session.stats.requests
            big = await rig.client.read_raw(m, 0x040100FF)
            return big, parts, link.session.stats.requests - before

    big, parts, requests = run(main())
    assert big == b"".join(parts) and len(big) > 200
    assert requests >= 2  # the 11H read and at least one 12H follow-up


def test_parse_di_and_reading_rows():
    assert parse_di("00010000") == 0x00010000
    assert parse_di("0001 0000") == 0x00010000
    assert parse_di("remaining_money") == 0x00900200
    with pytest.raises(ValueError, match="neither"):
        parse_di("no_such_item")
    assert reading_row("1", ReadValue(0x00900200, Decimal("-1.05"), "yuan", "x"), 5)[2] == -105
    assert reading_row("1", ReadValue(0x02800020, Decimal("0.4883"), "yuan/kWh", "x"), 5)[2] == 4883
    assert reading_row("1", ReadValue(1, b"\x01\xff", "", "x"), 5)[4] == "01ff"


def test_dial_in_meter_behind_a_dtu_is_read_and_recharged(tmp_path):
    """A DTU dials the head-end's listening port and bridges it to a meter bus."""

    async def main():
        async with Rig(tmp_path, n=1) as rig:
            a = rig.addresses[0]
            url = "listen://127.0.0.1:0"
            port = await rig.frontend.listen(url)
            rig.store.update_meter(a, actor="test", link=url)
            bus = rig.fleet.bus_of(a)
            h_reader, h_writer = await asyncio.open_connection("127.0.0.1", port)  # DTU -> head-end
            m_reader, m_writer = await asyncio.open_connection("127.0.0.1", bus.port)  # DTU -> meter bus

            async def pump(r, w):
                while chunk := await r.read(4096):
                    w.write(chunk)

            pumps = [asyncio.create_task(pump(h_reader, m_writer)), asyncio.create_task(pump(m_reader, h_writer))]
            read = await rig.run(a, "read", {"dis": ["00900200"]})
            rc = await rig.run(a, "recharge", {"amount_fen": 4200})
            for p in pumps:
                p.cancel()
            h_writer.close()
            m_writer.close()
            return read, rc, rig.meter(a).status()

    read, rc, status = run(main())
    assert read.status == "confirmed", read.last_error
    assert rc.status == "confirmed", rc.last_error
    assert status["balance_fen"] == 4200


def test_sync_time_small_offset(tmp_path):
    async def main():
        async with Rig(tmp_path) as rig:
            a = rig.addresses[0]
            rig.meter(a).offset -= 60  # a minute slow: within broadcast limits (unless near midnight)
            cmd = await rig.run(a, "sync_time", {"mode": "auto"})
            return cmd, rig.meter(a).offset

    cmd, offset = run(main())
    assert cmd.status == "confirmed", cmd.last_error
    # broadcast is refused near midnight and across quarter hours: then the authenticated set is used
    assert cmd.reply["method"].startswith(("broadcast", "set"))
    assert abs(offset) < 3


def test_session_is_reused_within_validity(tmp_path):
    async def main():
        async with Rig(tmp_path) as rig:
            a = rig.addresses[0]
            m = _target(rig, a)
            link = await rig.frontend.link_for(m.link, a)
            await rig.client.control(m, "alarm_on")
            n1 = link.session.stats.requests
            await rig.client.control(m, "alarm_off")
            await rig.client.control(m, "alarm_on")
            n2 = link.session.stats.requests
            rig.meter(a).sec.end()  # the meter forgets the session (power cycle): one re-authentication
            await rig.client.control(m, "alarm_off")
            return n1, n2 - n1, link.session.stats.requests - n2

    first, two_more, after_reset = run(main())
    assert first == 3  # challenge, authentication, the command
    assert two_more == 2  # no new authentication
    assert after_reset == 4  # refused, challenge, authenticate, resend


@pytest.mark.parametrize("drop_all,drop_recharge", [(1, 0), (3, 0), (5, 0), (0, 1), (0, 4), (2, 3)])
def test_exactly_one_credit_whatever_replies_are_lost(tmp_path, drop_all, drop_recharge):
    """Lose the next replies of every kind (authentication, wallet query, recharge) or only the
    recharge's; however many retries it takes, the meter is credited once and the count is 1."""

    async def main():
        async with Rig(tmp_path, n=1) as rig:
            a = rig.addresses[0]
            rig.fleet.fault(a).drop = drop_all
            cmd = rig.store.enqueue(a, "recharge", {"amount_fen": 1500}, actor="test")
            await rig.worker.drain(30)
            if drop_recharge:
                rig.fleet.fault(a).drop, rig.fleet.fault(a).drop_kind = drop_recharge, "recharge"
                cmd = rig.store.enqueue(a, "recharge", {"amount_fen": 500}, actor="test")
                await rig.worker.drain(30)
            return rig.store.get_command(cmd.id), rig.meter(a).status(), rig.store.count_commands()

    cmd, status, counts = run(main())
    assert cmd.status == "confirmed", cmd.last_error
    want_fen, want_count = (2000, 2) if drop_recharge else (1500, 1)
    assert status["balance_fen"] == want_fen and status["count"] == want_count
    assert counts == {"queued": 0, "sent": 0, "unresolved": 0, "confirmed": want_count, "failed": 0, "rejected": 0,
                      "cancelled": 0}


async def _meter_with_a_hoarding_limit(rig):
    """The rig's first meter with a hoarding limit of 100 yuan set and 10 yuan on it: (address,
    the limits command, the opening recharge)."""
    a = rig.addresses[0]
    lim = await rig.run(a, "set_limits", {"hoarding_fen": 10_000})
    first = await rig.run(a, "recharge", {"amount_fen": 1000})  # opens the account
    return a, lim, first


def test_a_recharge_whose_wallet_read_back_is_lost_still_leaves_the_meter_with_less_headroom(tmp_path):
    # the meter confirmed the credit, then every reply of the courtesy read-back was lost: the
    # head-end must not keep the balance from before the recharge, or the next payment is
    # checked against headroom the meter no longer has (and is accepted, then refused by it)
    from headend.payments.service import headroom_fen

    async def main():
        async with Rig(tmp_path, n=1) as rig:
            a, lim, first = await _meter_with_a_hoarding_limit(rig)
            bus = rig.fleet.bus_of(a)
            send = rig.client.recharge

            async def recharge_then_lose_the_line(*args, **kwargs):
                result = await send(*args, **kwargs)
                bus.drop = 2  # the link's try and its one retry of the read-back that follows
                return result

            rig.client.recharge = recharge_then_lose_the_line
            second = await rig.run(a, "recharge", {"amount_fen": 6000})
            return lim, first, second, rig.meter(a).status(), headroom_fen(rig.store, rig.store.get_meter(a))

    lim, first, second, status, room = run(main())
    assert (lim.status, first.status, second.status) == ("confirmed",) * 3, second.last_error
    assert "readback_error" in second.reply and status["balance_fen"] == 7000
    assert room == 3000


def test_a_recharge_refused_over_a_hoarding_limit_lowered_on_the_meter_teaches_the_head_end_the_limit(tmp_path):
    # the limit was lowered at the meter (a handheld, a parameter reset) after the head-end last
    # set it: without learning it, every later payment is checked against the old limit, accepted,
    # and refused by the meter again, its money left on the account instead of the meter
    from headend.payments.service import headroom_fen

    async def main():
        async with Rig(tmp_path, n=1) as rig:
            a, lim, first = await _meter_with_a_hoarding_limit(rig)
            rig.meter(a).wallet.hoard = 5000
            over = await rig.run(a, "recharge", {"amount_fen": 6000})
            meter = rig.store.get_meter(a)
            return lim, first, over, rig.meter(a).status(), meter, headroom_fen(rig.store, meter)

    lim, first, over, status, meter, room = run(main())
    assert (lim.status, first.status) == ("confirmed", "confirmed")
    assert over.status == "rejected" and "hoarding limit" in over.last_error and status["balance_fen"] == 1000
    assert meter.hoarding_fen == 5000 and meter.balance_fen == 1000 and room == 4000


def test_meter_refusals_are_final_with_the_meters_reason(tmp_path):
    async def main():
        async with Rig(tmp_path, n=1) as rig:
            a = rig.addresses[0]
            lim = await rig.run(a, "set_limits", {"hoarding_fen": 1000})
            over = await rig.run(a, "recharge", {"amount_fen": 2000})
            unknown = await rig.run(a, "read", {"dis": ["04800001"]})
            return lim, over, unknown, rig.meter(a).status()

    lim, over, unknown, status = run(main())
    assert lim.status == "confirmed", lim.last_error
    # refused for good, and its purchase count shows it was not applied: rejected, no money moved
    assert over.status == "rejected" and "hoarding limit" in over.last_error and "not applied" in over.last_error
    assert over.reply["purchase_count"] == 1 and over.attempts <= 3
    assert unknown.status == "failed" and "no such data item" in unknown.last_error
    assert status["balance_fen"] == 0


def test_read_cycle_stores_every_reading_and_names_failures(tmp_path):
    from headend.commands.collect import read_cycle

    async def main():
        async with Rig(tmp_path, n=6, per_bus=2) as rig:
            dead = rig.addresses[5]
            rig.fleet.fault(dead).garbage = True
            meters = rig.store.find_meters()
            res = await read_cycle(rig.client, rig.store, meters, [0x00010000, 0x00900200], batch=3)
            rows = {(r[0], r[1]) for r in rig.store.readings_for_di("00010000", since=0, until=2**40)}
            rows |= {(r[0], r[1]) for r in rig.store.readings_for_di("00900200", since=0, until=2**40)}
            return res, rows, dead, rig.addresses

    res, rows, dead, addresses = run(main())
    assert res.meters == 6 and res.stored == 10 and set(res.failed) == {dead}
    assert "no answer from meter" in res.failed[dead]
    assert {a for a, _ in rows} == set(addresses) - {dead}


def test_read_cycle_stores_what_single_reads_give(tmp_path):
    """The cycle's fast path (values turned into rows in the link callback) and its async path
    (block DIs) store exactly what a single read and reading_row give, for every kind of value."""
    from headend.commands.collect import read_cycle

    dis_ = ["00010000", "00010100", "00900200", "04000503", "040005FF", "04000401"]

    async def main():
        async with Rig(tmp_path, n=2) as rig:
            for k, a in enumerate(rig.addresses):
                rig.meter(a).add_energy(12345 + 7000 * k, rig.meter(a).last_t)
            meters = rig.store.find_meters()
            res = await read_cycle(rig.client, rig.store, meters, [parse_di(d) for d in dis_], clock=lambda: 1000)
            single = {}
            for a in rig.addresses:
                for d in dis_:
                    rv = await rig.client.read(_target(rig, a), parse_di(d))
                    single[(a, d)] = reading_row(a, rv, 1000)
            stored = {(r.meter, r.di): r for a in rig.addresses for r in rig.store.readings(a)}
            return res, single, stored, rig.addresses

    res, single, stored, addresses = run(main())
    assert res.failed == {} and res.stored == 2 * len(dis_)
    assert set(stored) == set(single)
    for key, row in single.items():
        got = stored[key]
        assert (got.value, got.text, got.read_at) == (row[2], row[4], row[3]), (key, got, row)
    assert stored[(addresses[0], "00010000")].value == 12340  # Wh, from the 0.01 kWh register
    assert stored[(addresses[1], "00010000")].value == 19340
    assert stored[(addresses[0], "040005FF")].text.startswith("[")  # a block: the async path


def test_read_cycle_and_single_read_refuse_alike(tmp_path):
    """A refused read (an item the meter does not have) fails a cycle's meter with the same
    words as MeterClient.read's MeterRefused: one read path, one way to say no."""
    from headend.commands import MeterRefused
    from headend.commands.collect import read_cycle

    missing = 0x0F0F0F0F

    async def main():
        async with Rig(tmp_path, n=1) as rig:
            a = rig.addresses[0]
            res = await read_cycle(rig.client, rig.store, rig.store.find_meters(), [0x00010000, missing])
            with pytest.raises(MeterRefused) as refused:
                await rig.client.read(_target(rig, a), missing)
            return a, res, refused.value

    a, res, refused = run(main())
    assert refused.flags == ["no_data"]
    assert res.stored == 1 and res.failed == {a: str(refused)}


def test_read_cycle_batches_grow_with_the_cycle_within_bounds():
    """Rows per transaction follow the cycle's size (readings are keyed by meter, so a wide
    fleet's batch spreads over the whole table) between a floor and a cap."""
    from headend.commands.collect import BATCH_MAX, BATCH_MIN, batch_size

    assert batch_size(0) == batch_size(1000) == BATCH_MIN == 500
    assert batch_size(4200) == 2100 and batch_size(20_000) == 10_000
    assert batch_size(3 * 20_000) == batch_size(1_000_000) == BATCH_MAX == 20_000


def test_read_cycle_commits_a_large_cycle_in_fewer_larger_batches(tmp_path):
    from headend.commands.collect import read_cycle

    async def main():
        async with Rig(tmp_path, n=6, per_bus=3) as rig:
            sizes = []
            add = rig.store.add_readings

            def counted(rows):
                sizes.append(len(rows))
                return add(rows)

            rig.store.add_readings = counted
            meters = rig.store.find_meters() * 700  # 4,200 meter reads: batch_size gives 2,100 rows
            res = await read_cycle(rig.client, rig.store, meters, [0x00010000], clock=lambda: 1000)
            return res, sizes, len(rig.store.readings_for_di("00010000", since=0, until=2**40))

    res, sizes, stored = run(main())
    assert res.stored == 4200 and not res.failed and sum(sizes) == 4200
    assert sizes == [2100] * 2
    assert stored == 6  # the same meter read again in the same second is stored once



def test_read_cycle_lets_the_wal_hold_about_a_cycle_before_a_checkpoint(tmp_path):
    """SQLite's WAL threshold follows the cycle's readings (a floor of its default, a cap), so a
    wide fleet's pages are copied back once for several rewrites, as a small fleet's are."""
    from headend.commands.collect import read_cycle, wal_pages

    assert wal_pages(10) == wal_pages(1000) == 1000
    assert wal_pages(20_000) == 20_000 and wal_pages(10**7) == 65_536

    async def main():
        async with Rig(tmp_path, n=6, per_bus=3) as rig:
            meters = rig.store.find_meters() * 700   # 4,200 meter reads
            res = await read_cycle(rig.client, rig.store, meters, [0x00010000], clock=lambda: 1000)
            with rig.store._db.transaction(write=False) as tx:
                return res, tx.one("PRAGMA wal_autocheckpoint")

    res, threshold = run(main())
    assert res.stored == 4200 and not res.failed
    assert threshold == (4200,)
