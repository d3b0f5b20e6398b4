"""The town (tools/town): planned the same from a seed, registered in one step, household loads,
faults on demand over real TCP, the control commands, and `meter fleet --town --register`."""

from __future__ import annotations

import asyncio
import calendar
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from headend.keys import KeyStore
from headend.store import Conflict, open_store
from protocol import Deframer, build_frame, parse_frame
from tools.fleet import Fleet
from tools.sim import ROOT
from tools.town.control import apply_command
from tools.town.load import HouseholdLoad, season_pct
from tools.town.plan import plan_town
from tools.town.register import LIMITS, register_town

MASTER = bytes(range(32))
READ_ENERGY = bytes.fromhex("00000100")


def test_the_same_seed_plans_the_same_town() -> None:
    a, b, c = plan_town(10_000, seed=7), plan_town(10_000, seed=7), plan_town(10_000, seed=8)
    assert a.homes == b.homes and a.buses == b.buses
    assert a.homes != c.homes
    addresses = [h.address for h in a.homes]
    assert sorted(x for bus in a.buses for x in bus) == sorted(addresses) and len(set(addresses)) == 10_000
    shared = [bus for bus in a.buses if len(bus) > 1]
    assert len(shared) >= 40 and all(32 <= len(bus) <= 256 for bus in shared)
    solo = [h for h in a.homes if h.own_link]
    assert solo and all(a.buses[h.bus] == [h.address] for h in solo)
    kinds = Counter(h.kind for h in a.homes)
    assert kinds["heavy"] > 100 and kinds["empty"] > 100 and kinds["family"] > kinds["single"]
    modes = Counter(h.mode for h in a.homes)
    assert 2500 < modes["remote"] < 3500
    assert all(h.mode == "remote" for h in a.homes if h.protected) and any(h.protected for h in a.homes)
    # the grid is a tree: an area sits on one feeder, every meter of a shared bus in one area
    feeder_of_area: dict[str, set[str]] = {}
    for h in a.homes:
        feeder_of_area.setdefault(h.area, set()).add(h.feeder)
    assert all(len(f) == 1 for f in feeder_of_area.values())
    assert all(len({a.home(x).area for x in bus}) == 1 for bus in shared)
    assert len({h.customer for h in a.homes}) == 10_000 and len({h.phone for h in a.homes}) > 9_900


def test_small_towns_still_have_several_buses() -> None:
    t = plan_town(200, seed=1)
    assert len([b for b in t.buses if len(b) > 1]) >= 4
    with pytest.raises(ValueError, match="at least one meter"):
        plan_town(0)
    with pytest.raises(ValueError, match="bus sizes"):
        plan_town(100, bus_min=50, bus_max=10)


def test_household_loads_differ_by_kind_season_and_hour() -> None:
    t = plan_town(2_000, seed=3)
    empty = next(h for h in t.homes if h.kind == "empty")
    heavy = next(h for h in t.homes if h.kind == "heavy")
    evening = calendar.timegm((2026, 1, 15, 19, 0, 0))  # meter time: the local wall clock
    night = calendar.timegm((2026, 1, 15, 3, 0, 0))
    assert HouseholdLoad(heavy).power_w(evening) > 20 * HouseholdLoad(empty).power_w(evening)
    family = next(h for h in t.homes if h.kind == "family" and h.shape == "evening")
    load = HouseholdLoad(family)
    assert load.power_w(evening) > 3 * load.power_w(night)
    assert load.power_w(evening) == HouseholdLoad(family).power_w(evening)  # deterministic
    april = calendar.timegm((2026, 4, 15, 19, 0, 0))
    assert season_pct(evening) > season_pct(april)


def test_register_puts_the_whole_town_in_one_step_or_nothing(tmp_path: Path) -> None:
    town = plan_town(1_000, seed=5)
    links = {h.address: f"tcp://127.0.0.1:{20000 + h.bus}" for h in town.homes}
    store = open_store(tmp_path / "h.db")
    got = register_town(store, town, links)
    assert got["meters"] == 1_000 and got["buses"] == len(town.buses)
    h = town.homes[17]
    acc = store.get_account(h.customer)
    assert (acc.name, acc.phone, acc.district, acc.tariff, acc.alarm1_fen, acc.protected) == (
        h.name, h.phone, h.district, "beijing", LIMITS["alarm1_fen"], h.protected)
    m = store.get_meter(h.address)
    assert (m.link, m.customer, m.mode) == (links[h.address], h.customer, h.mode)
    on_feeder = {x for x in store.grid_meters(feeder=h.feeder)}
    assert {x.address for x in town.homes if x.feeder == h.feeder} == {getattr(r, "meter", r) if not isinstance(r, tuple) else r[0] for r in on_feeder}
    # again: the first meter is taken, and nothing of the second try is kept
    bigger = plan_town(1_001, seed=6)
    with pytest.raises(Conflict):
        register_town(store, bigger, {x.address: "tcp://127.0.0.1:1" for x in bigger.homes})
    assert len(store.find_meters()) == 1_000
    with pytest.raises(ValueError, match="no link"):
        register_town(store, town, {})
    store.close()


async def _ask(port: int, request: bytes, timeout: float = 1.0) -> list:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    d = Deframer()
    try:
        writer.write(request)
        while True:
            chunk = await asyncio.wait_for(reader.read(4096), timeout)
            if not chunk:
                return []
            d.feed(chunk)
            got = []
            for f in d.frames():
                try:
                    got.append(parse_frame(f))
                except ValueError:
                    got.append(None)  # noise
            if got:
                return got
    except asyncio.TimeoutError:
        return []
    finally:
        writer.close()


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.read(4096), 10)
    finally:
        writer.close()


def test_faults_on_demand_over_tcp() -> None:
    async def go() -> None:
        town = plan_town(80, seed=2, bus_min=32, bus_max=40, solo_share=0.05)
        fleet = Fleet([h.address for h in town.homes], master=MASTER, groups=town.buses, load=False)
        await fleet.start()
        try:
            a = town.buses[0][3]
            port = fleet.bus_of(a).port
            read = build_frame(a, 0x11, READ_ENERGY)
            assert [f.address for f in await _ask(port, read)] == [a]
            # delay: nothing within a short wait, the reply after the delay
            assert apply_command(fleet, f"delay {a} 1.5") == {"ok": True}
            assert await _ask(port, read, timeout=0.3) == []
            assert [f.address for f in await _ask(port, read, timeout=10)] == [a]
            apply_command(fleet, f"delay {a} 0")
            # drop: the next two replies are lost, the third comes
            apply_command(fleet, f"drop {a} 2")
            assert await _ask(port, read, timeout=0.3) == [] and await _ask(port, read, timeout=0.3) == []
            assert [f.address for f in await _ask(port, read)] == [a]
            # power loss: silent while down, back from its saved state with its clock an hour behind
            before = fleet.meters[a]
            assert apply_command(fleet, f"power-loss {a} 0.5 3600") == {"ok": True}
            assert await _ask(port, read, timeout=0.2) == []
            for _ in range(100):
                if a not in fleet.down:
                    break
                await asyncio.sleep(0.1)
            assert fleet.meters[a] is not before and fleet.restarts == 1
            assert [f.address for f in await _ask(port, read)] == [a]
            now = fleet.clock.now()
            assert 3590 <= now - fleet.meters[a].time(now) <= 3600
            # a bus returning garbage: noise instead of the reply, for a while; the others' buses answer
            b = town.buses[1][0]
            assert apply_command(fleet, "bus-garbage 0 30")["ok"]
            noise = await _raw(port, read)
            assert noise and not any(f.address == a for f in (await _ask(port, read)) if f is not None)
            assert [f.address for f in await _ask(fleet.bus_of(b).port, build_frame(b, 0x11, READ_ENERGY))] == [b]
            assert apply_command(fleet, "clear") == {"ok": True}
            assert [f.address for f in await _ask(port, read)] == [a]
            # a flapping link: hung up on while down, answers again after
            assert apply_command(fleet, "flap 0 0.5")["ok"]
            assert await _ask(port, read) == []
            for _ in range(100):
                if not fleet.buses[0].down:
                    break
                await asyncio.sleep(0.1)
            assert [f.address for f in await _ask(port, read)] == [a]
            solo = next(h for h in town.homes if h.own_link).address
            assert fleet.bus_of(solo).addresses == [solo]
            assert [f.address for f in await _ask(fleet.bus_of(solo).port, build_frame(solo, 0x11, READ_ENERGY))] == [solo]
        finally:
            await fleet.close()

    asyncio.run(go())


def test_control_commands_name_what_is_wrong() -> None:
    async def go() -> None:
        fleet = Fleet(["000000000001", "000000000002"], master=MASTER, groups=[["000000000001", "000000000002"]],
                      load=False)
        await fleet.start()
        try:
            assert "no meter '000000000009'" in apply_command(fleet, "delay 000000000009 1")["error"]
            assert "bus index 0..0" in apply_command(fleet, "flap 3 1")["error"]
            assert "seconds must be a number" in apply_command(fleet, "delay 000000000001 soon")["error"]
            assert "commands:" in apply_command(fleet, "explode")["error"]
            s = apply_command(fleet, "status 000000000001")["status"]
            assert s["relay"] is not None and s["down"] is False and s["total_bought"] == 0
            assert set(apply_command(fleet, "statuses")["statuses"]) == {"000000000001", "000000000002"}
            assert apply_command(fleet, "stats")["ok"]
        finally:
            await fleet.close()

    asyncio.run(go())


def test_meter_fleet_town_registers_and_serves(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    KeyStore.create(tmp_path / "h.key", "correct horse battery staple", scrypt_n=2**12)
    env = {**os.environ, "PREPAID645_KEY_PASSPHRASE": "correct horse battery staple"}
    proc = subprocess.Popen([sys.executable, "-m", "tools.meter_cli", "fleet", "--town", "--count", "120",
                             "--register", str(db), "--seed", "4", "--no-load"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["meters"] == 120 and info["registered"]["accounts"] == 120
        store = open_store(db)
        meters = store.find_meters()
        assert len(meters) == 120 and {m.link for m in meters} == {b["link"] for b in info["buses"]}
        store.close()
        host, port = info["control"].removeprefix("tcp://").rsplit(":", 1)

        async def ask() -> dict:
            r, w = await asyncio.open_connection(host, int(port))
            w.write(b"status 000000000005\n")
            line = await r.readline()
            w.close()
            return json.loads(line)

        assert asyncio.run(ask())["status"]["address"] == "000000000005"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "town stopped" in out
