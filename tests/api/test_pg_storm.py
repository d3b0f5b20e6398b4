"""Two `headend serve --api` processes on one PostgreSQL database (a real server the tests start),
a storm of signed payments posted to both at once, one serve SIGKILLed mid-storm: every payment
is applied exactly once, the journal proves every balance, and each meter holds to the fen what
the journal says reached it (the killed serve's recharges are finished by the other one)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from headend.api.signing import ChannelAuth
from headend.store import open_store
from tests.api.support import FleetThread
from tests.api.serve_procs import PaymentStorm, start_serve, stop_serves
from tests.api.test_e2e import FINAL, _local, _remote, pay
from tests.headend.headend_proc import HeadEnd


def test_two_serves_one_killed_mid_storm_apply_every_payment_exactly_once(tmp_path: Path, pg_server,
                                                                          pg_template) -> None:
    url = pg_server.create_db(pg_template)
    he = HeadEnd(tmp_path)  # the key file and the CLI's environment, pointed at the PostgreSQL database
    he.env["PREPAID645_DB"] = url
    n_local, n_remote = 4, 6
    meters = [_local(i)[0] for i in range(n_local)]
    fleet = FleetThread(meters, master=he.master).start()
    procs: list[subprocess.Popen] = []
    try:
        with open_store(url) as s:
            for i, m in enumerate(meters):
                s.add_account(_local(i)[1], actor="test")
                s.add_meter(m, link=fleet.link_of(m), customer=_local(i)[1], mode="local", actor="test")
            for i in range(n_remote):
                s.add_account(_remote(i), actor="test")
        code, out, err = he.cli("channel", "add", "bank", "--kind", "online_banking", "--json")
        assert code == 0, err
        doc = json.loads(out)
        auth = ChannelAuth(doc["key_id"], doc["secret"].encode())
        (a, url_a), (b, url_b) = start_serve(he.env), start_serve(he.env)
        procs += [a, b]
        with open_store(url) as s:
            assert s.serves_alive() == 2

        bodies = [pay("bank", f"S-{i}-{j}", 100 * (i + 1) + j, customer=_local(i)[1])
                  for i in range(n_local) for j in range(4)]
        bodies += [pay("bank", f"R-{j}", 50 + j, customer=_remote(j % n_remote)) for j in range(30)]
        storm = PaymentStorm(auth)
        receipts = storm.receipts

        with ThreadPoolExecutor(8) as pool:
            # every payment goes to both head-ends at once (a channel retrying on another address)
            futures = [pool.submit(storm.post, base, body) for body in bodies for base in (url_a, url_b)]
            deadline = time.monotonic() + 120
            while len(receipts) < 8 and time.monotonic() < deadline:
                time.sleep(0.001)
            a.send_signal(signal.SIGKILL)  # mid-storm: requests, transactions and recharges in flight
            a.wait()
            for f in futures:
                f.result()
        storm.retry_all(url_b, bodies)
        assert all(len(ids) == 1 for ids in receipts.values()), receipts  # one payment per transaction

        deadline = time.monotonic() + 180  # the killed serve's recharges come back after its lease lapses
        while True:
            with open_store(url) as s:
                pending = [p for p in s.list_payments(limit=10**6) if p.state not in FINAL]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert pending == []
        with open_store(url) as s:
            assert s.check_ledger() == []
            payments = s.list_payments(limit=10**6)
            assert sorted(p.txn_id for p in payments) == sorted(b["txn_id"] for b in bodies)
            for j in range(n_remote):
                assert s.get_account(_remote(j)).balance_fen == sum(50 + k for k in range(30) if k % n_remote == j)
            to_meter = {m: 0 for m in meters}
            for e in s.journal(limit=10**6):
                if e.meter in to_meter:
                    to_meter[e.meter] += e.meter_fen
        assert to_meter == {_local(i)[0]: sum(100 * (i + 1) + j for j in range(4)) for i in range(n_local)}
        code, out, err = he.cli("read", "--where", "mode=local", "remaining_money", "--json")
        assert code == 0, err
        on_meters = {c["meter"]: round(float(c["reply"]["values"]["00900200"]["value"]) * 100)
                     for c in json.loads(out)}
        assert on_meters == to_meter
    finally:
        stop_serves(procs)
        fleet.stop()


