"""Two `headend serve` processes on one PostgreSQL database split the meters between them.

A fleet of simulated meters, each behind its own TCP port (its own link), is read every half
second by whichever serve's share holds its link: every meter is connected to exactly one serve.
Payments to the meters' customers go to both serves' APIs; mid-storm one serve is SIGKILLed.
Its lease (3 s here, ``--lease``) lapses and the other serve takes every meter and finishes the
dead one's recharges; a serve started again gets a share back.  At the end every payment reached
its meter exactly once: each meter's money and purchase count are what the journal and the
confirmed recharges say."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from headend.api.signing import ChannelAuth
from headend.store import open_store
from tests.api.support import FleetThread
from tests.api.serve_procs import PaymentStorm, start_serve, stop_serves
from tests.api.test_e2e import FINAL, _local, pay
from tests.headend.headend_proc import HeadEnd

N_METERS = 16
LEASE_S = 3


def _serve(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    return start_serve(env, "--no-notices", "--collect-every", "0.5", "--lease", str(LEASE_S))


def _meter_ports(proc: subprocess.Popen, ports: set[int]) -> set[int]:
    """The meter ports this serve has a TCP connection to now."""
    try:
        conns = psutil.Process(proc.pid).net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return set()
    return {c.raddr.port for c in conns if c.raddr and c.raddr.port in ports and c.status == psutil.CONN_ESTABLISHED}


def _until(what: str, ok, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(0.1)


def _split(procs: list[subprocess.Popen], ports: set[int]) -> bool:
    """Every meter connected by exactly one of ``procs``, and each of them has some."""
    held = [_meter_ports(p, ports) for p in procs]
    return all(held) and sum(len(h) for h in held) == len(ports) and set().union(*held) == ports


def test_two_serves_split_the_meters_one_killed_hands_them_over_and_no_payment_is_lost_or_doubled(
        tmp_path: Path, pg_server, pg_template) -> None:
    url = pg_server.create_db(pg_template)
    he = HeadEnd(tmp_path)
    he.env["PREPAID645_DB"] = url
    meters = [_local(i)[0] for i in range(N_METERS)]
    fleet = FleetThread(meters, master=he.master).start()
    ports = {fleet.fleet.ports[m] for m in meters}
    procs: list[subprocess.Popen] = []
    try:
        with open_store(url) as s:
            for i, m in enumerate(meters):
                s.add_account(_local(i)[1], actor="test")
                s.add_meter(m, link=fleet.link_of(m), customer=_local(i)[1], mode="local", actor="test")
        code, out, err = he.cli("channel", "add", "bank", "--kind", "online_banking", "--json")
        assert code == 0, err
        doc = json.loads(out)
        auth = ChannelAuth(doc["key_id"], doc["secret"].encode())

        a, url_a = _serve(he.env)
        procs.append(a)
        _until("the first serve reads every meter", lambda: _meter_ports(a, ports) == ports)
        b, url_b = _serve(he.env)
        procs.append(b)
        # the first serve hands half the links over: each meter is connected to one serve only
        _until("the meters split between the two serves", lambda: _split([a, b], ports))
        for _ in range(10):  # and stays so while both read every half second
            assert _split([a, b], ports)
            time.sleep(0.2)
        with open_store(url) as s:
            assert s.serves_alive() == 2
            views = {json.dumps(json.loads(v)) for v, _ in s.live_leases().values()}
        assert len(views) == 1  # both work by the same live set

        bodies = [pay("bank", f"S-{i}-{j}", 100 * (i + 1) + j, customer=_local(i)[1])
                  for i in range(N_METERS) for j in range(3)]
        storm = PaymentStorm(auth)
        receipts = storm.receipts

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(storm.post, base, body) for body in bodies for base in (url_a, url_b)]
            _until("some payments are taken", lambda: len(receipts) >= 6)
            a.send_signal(signal.SIGKILL)  # mid-storm: recharges to a's meters in flight
            a.wait()
            for f in futures:
                f.result()
        storm.retry_all(url_b, bodies)
        assert all(len(ids) == 1 for ids in receipts.values()), receipts

        # a's lease lapses: b takes every meter and finishes a's recharges
        _until("the serve left reads every meter", lambda: _meter_ports(b, ports) == ports)
        with open_store(url) as s:
            assert s.serves_alive() == 1 and json.loads(next(iter(s.live_leases().values()))[0]) == \
                [f"{os.uname().nodename} pid {b.pid}"]

        def settled() -> bool:
            with open_store(url) as s:
                return all(p.state in FINAL for p in s.list_payments(limit=10**6))

        _until("every payment reaches its meter", settled, 180)

        c_, _url_c = _serve(he.env)  # a serve started again gets its share back
        procs.append(c_)
        _until("the meters split between the two serves again", lambda: _split([b, c_], ports))

        with open_store(url) as s:
            assert s.check_ledger() == []
            assert sorted(p.txn_id for p in s.list_payments(limit=10**6)) == sorted(x["txn_id"] for x in bodies)
            recharges = [c for c in s.list_commands(kind="recharge", limit=10**6)]
            assert all(c.status == "confirmed" for c in recharges), [(c.id, c.status) for c in recharges]
            assert len(recharges) == len(bodies)  # one command per payment, none queued twice
            to_meter = {m: 0 for m in meters}
            for e in s.journal(limit=10**6):
                if e.meter in to_meter:
                    to_meter[e.meter] += e.meter_fen
        assert to_meter == {_local(i)[0]: sum(100 * (i + 1) + j for j in range(3)) for i in range(N_METERS)}
        # each meter applied each of its recharges once: the money to the fen, one purchase per payment
        on_meters = {m: fleet.fleet.meters[m].status() for m in meters}
        assert {m: st["total_bought"] for m, st in on_meters.items()} == to_meter
        assert {m: st["count"] for m, st in on_meters.items()} == {m: 3 for m in meters}
    finally:
        stop_serves(procs)
        fleet.stop()
