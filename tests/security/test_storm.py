"""A storm of payments through a line that loses and replays frames at random, while `headend
serve` and a meter are killed and restarted: every payment lands on its meter exactly once, and
every recharge whose outcome was in doubt was said to be so (an unresolved event) before the
meter's purchase count settled it."""

from __future__ import annotations

import json
import signal
import socket
import time

from tests.headend.headend_proc import HeadEnd
from tools.mitm import ProxyThread
from tools.sim.launch import start_meter

METERS = ["000000000001", "000000000002", "000000000003"]
CUST = "000000000042"
PAYMENTS_PER_METER = 4
METER_ARGS = ("--start", "2026-03-02T10:00", "--load-w", "0", "--mode", "local")  # exact balances


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_serve(he: HeadEnd) -> None:
    assert he.serve_proc is not None
    he.serve_proc.send_signal(signal.SIGKILL)  # no clean stop: whatever was in flight stays in flight
    he.serve_proc.wait()
    he.serve_proc = None


def _commands(he: HeadEnd) -> list[dict]:
    code, out, err = he.cli("commands", "--kind", "recharge", "--limit", "500", "--json")
    assert code == 0, err
    return json.loads(out)


def test_a_storm_of_payments_through_a_lossy_replaying_line_with_kills_lands_each_exactly_once(tmp_path):
    he = HeadEnd(tmp_path)
    ports = {a: _free_port() for a in METERS}
    meters = {a: start_meter(a, he.key_hex(a), str(tmp_path / f"{a}.state"), listen=f"tcp://127.0.0.1:{ports[a]}",
                             extra=METER_ARGS) for a in METERS}
    proxies = {a: ProxyThread(("127.0.0.1", ports[a]), seed=i + 1).start() for i, a in enumerate(METERS)}
    paid: dict[str, int] = dict.fromkeys(METERS, 0)
    try:
        assert he.cli("customer", "add", CUST)[0] == 0
        for a in METERS:
            assert he.cli("meter", "add", a, "--link", proxies[a].link, "--customer", CUST)[0] == 0
            proxies[a].proxy.storm(drop=0.15, duplicate=0.15)
        he.start_serve()
        n = 0
        for round_ in range(PAYMENTS_PER_METER):
            for a in METERS:
                n += 1
                fen = 100 * n + round_  # every payment a different amount
                code, out, err = he.cli("recharge", a, f"{fen // 100}.{fen % 100:02d}", "--idem", f"PAY-{n}",
                                        "--wait", "0")
                assert code in (0, 3, 5), err
                paid[a] += fen
            if round_ == 1:
                _kill_serve(he)
                he.start_serve()
            if round_ == 2:  # a meter dies mid-storm and comes back on its state file
                a = METERS[1]
                meters[a].stop(signal.SIGKILL)
                meters[a] = start_meter(a, he.key_hex(a), str(tmp_path / f"{a}.state"),
                                        listen=f"tcp://127.0.0.1:{ports[a]}", extra=METER_ARGS)
                _kill_serve(he)
                he.start_serve()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            cmds = _commands(he)
            if len(cmds) == n and all(c["status"] == "confirmed" for c in cmds):
                break
            time.sleep(1)
        assert len(cmds) == n and {c["status"] for c in cmds} == {"confirmed"}, \
            [(c["id"], c["status"], c["last_error"]) for c in cmds if c["status"] != "confirmed"]
        for a in METERS:
            status = meters[a].command("status")
            assert status["balance_fen"] == paid[a], a  # each payment exactly once
            assert status["count"] == PAYMENTS_PER_METER, a
            mine = [c for c in cmds if c["meter"] == a]
            assert sorted(c["reply"]["purchase_count"] for c in mine) == list(range(1, PAYMENTS_PER_METER + 1))
            # every recharge whose outcome was in doubt was flagged before it was settled
            code, out, err = he.cli("events", a, "--kind", "recharge.unresolved", "--limit", "500", "--json")
            flagged = {e["detail"]["command"] for e in json.loads(out)}
            settled = {c["id"] for c in mine if c["reply"]["result"] == "settled"}
            assert settled <= flagged, settled - flagged
        dropped = sum(1 for p in proxies.values() for s in p.proxy.seen if s.action == "drop")
        assert dropped > 0  # the storm did blow
    finally:
        he.stop_serve()
        for p in proxies.values():
            p.stop()
        for m in meters.values():
            m.stop()
