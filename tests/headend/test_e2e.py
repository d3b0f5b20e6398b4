"""End to end: the `headend` CLI and `headend serve` against simulated meters (`meter run` child
processes over TCP and a pty serial port, and tools.fleet for buses and faulty meters)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.headend.headend_proc import ROOT, HeadEnd
from tools.sim.launch import start_meter

A1, A2, A3 = "000000000001", "000000000002", "000000000003"
CUST = "000000000042"


@pytest.fixture
def he(tmp_path):
    h = HeadEnd(tmp_path)
    yield h
    h.stop_serve()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_bus(he: HeadEnd, *args: str) -> tuple[subprocess.Popen, list[dict]]:
    env = {**os.environ, "PREPAID645_MASTER_KEY": he.master.hex()}  # never on the command line
    proc = subprocess.Popen([sys.executable, "-m", "tools.fleet", *args], env=env,
                            cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(proc.stderr.read())
    return proc, json.loads(line)["buses"]


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _nothing_half_done(he: HeadEnd) -> None:
    with he.store() as s:
        counts = s.count_commands()
    assert counts["sent"] == 0, counts


def test_walkthrough_over_tcp_with_the_simulator(he, tmp_path):
    with start_meter(A1, he.key_hex(A1), str(tmp_path / "m1.state")) as m:
        host, port = m.tcp
        code, out, err = he.cli("meter", "add", A1, "--link", f"tcp://{host}:{port}", "--customer", CUST)
        assert code == 0, err
        he.start_serve()

        code, out, err = he.cli("read", A1, "forward_active_total", "remaining_money", "status_word_3")
        assert code == 0, err
        assert "forward_active_total" in out and "remaining_money" in out

        code, out, err = he.cli("recharge", A1, "50", "--idem", "pay-1")
        assert code == 0, err
        assert "50.00 yuan credited" in out and "balance 50.00" in out
        # the same payment again: same command, no second credit
        code, out, err = he.cli("recharge", A1, "50", "--idem", "pay-1")
        assert code == 0 and "balance 50.00" in out
        assert m.command("status")["balance_fen"] == 5000

        code, out, err = he.cli("trip", A1)
        assert code == 0, err
        assert "relay open" in out and m.command("status")["relay_open"] is True
        code, out, err = he.cli("close", A1)
        assert code == 0 and "close permitted" in out
        assert "relay open" in out  # waits for the customer's button
        assert m.command("status")["relay_open"] is True
        m.press_button()
        time.sleep(0.6)
        code, out, err = he.cli("read", A1, "status_word_3", "--json")
        assert code == 0
        word = int(json.loads(out)[0]["reply"]["values"]["04000503"]["value"])
        assert not word & 0x10  # relay closed by the button
        assert m.command("status")["relay_open"] is False

        code, out, err = he.cli("hold", "on", A1)
        assert code == 0 and "power hold on" in out
        code, out, err = he.cli("trip", A1)
        assert code == 1
        assert "refused trip" in err and "power hold" in err
        code, out, err = he.cli("hold", "off", A1)
        assert code == 0

        code, out, err = he.cli("commands", "--meter", A1, "--json")
        statuses = [c["status"] for c in json.loads(out)]
        assert statuses.count("failed") == 1 and set(statuses) <= {"confirmed", "failed"}
        code, out, err = he.cli("audit", "--json")
        actions = [a["action"] for a in json.loads(out)]
        assert "command.recharge" in actions and "command.trip" in actions
        assert all(a["actor"] == "operator-test" for a in json.loads(out) if a["action"].startswith("command."))
    he.stop_serve()
    _nothing_half_done(he)


def test_serial_over_pty_with_the_simulator(he, tmp_path):
    with start_meter(A2, he.key_hex(A2), str(tmp_path / "m2.state"), listen=None, pty=True) as m:
        code, _, err = he.cli("meter", "add", A2, "--link", f"serial://{m.pty}?baud=2400&parity=E", "--customer", CUST)
        assert code == 0, err
        he.start_serve()
        code, out, err = he.cli("recharge", A2, "12.34")
        assert code == 0, err
        assert "12.34 yuan credited" in out
        code, out, err = he.cli("read", A2, "remaining_money", "--json")
        assert code == 0 and json.loads(out)[0]["reply"]["values"]["00900200"]["value"] == "12.34"


def test_bus_of_meters_bulk_read_and_faulty_meters(he):
    bus, buses = _start_bus(he, "--count", "5", "--per-bus", "3", "--drop", "000000000004=2",
                            "--garbage", "000000000005")
    try:
        for b in buses:
            for a in b["meters"]:
                assert he.cli("meter", "add", a, "--link", b["link"], "--customer", CUST)[0] == 0
        he.start_serve()
        code, out, err = he.cli("read", "--where", f"link={buses[0]['link']}", "remaining_money", "--json")
        assert code == 0, err
        got = json.loads(out)
        assert [c["meter"] for c in got] == [A1, A2, A3] and {c["status"] for c in got} == {"confirmed"}
        # meter 4 loses two replies: the link's retries and the outbox's retry get it
        code, out, err = he.cli("read", "000000000004", "remaining_money")
        assert code == 0, err
        # meter 5 answers noise: a clear failure, exit 1
        code, out, err = he.cli("read", "000000000005")
        assert code == 1
        assert "no answer from meter 000000000005" in err
        with he.store() as s:
            assert all(s.latest_reading(a, "00900200") is not None for a in (A1, A2, A3, "000000000004"))
    finally:
        _stop(bus)
    he.stop_serve()
    _nothing_half_done(he)


def test_retried_recharge_credits_once(he):
    bus, buses = _start_bus(he, "--count", "1", "--drop", f"{A1}=recharge:3")
    try:
        he.cli("meter", "add", A1, "--link", buses[0]["link"], "--customer", CUST)
        he.start_serve()
        code, out, err = he.cli("recharge", A1, "20")
        assert code == 0, err
        # the reply was lost: the meter's purchase count, read in a fresh session, settled it
        assert "settled: the meter's purchase count shows it credited" in out
        code, out, err = he.cli("read", A1, "remaining_money", "--json")
        assert json.loads(out)[0]["reply"]["values"]["00900200"]["value"] == "20.00"
        code, out, err = he.cli("commands", "--meter", A1, "--kind", "recharge", "--json")
        [rc] = json.loads(out)
        assert rc["status"] == "confirmed" and rc["attempts"] >= 2 and rc["reply"]["purchase_count"] == 1
    finally:
        _stop(bus)


def test_bad_input_unknown_meter_unreachable_link_wrong_key(he, tmp_path):
    dead = f"tcp://127.0.0.1:{_free_port()}"
    assert he.cli("meter", "add", A1, "--link", dead, "--customer", CUST)[0] == 0
    with start_meter(A2, he.key_hex(A2, krn=0), str(tmp_path / "m2.state")) as m:
        host, port = m.tcp
        # registered with KRN 1 while the meter holds the KRN 0 key: a wrong key
        assert he.cli("meter", "add", A2, "--link", f"tcp://{host}:{port}", "--customer", CUST, "--krn", "1")[0] == 0
        he.start_serve()

        code, out, err = he.cli("read", "000000009999")
        assert code == 4 and "000000009999 is not registered" in err

        code, out, err = he.cli("read", A1)
        assert code == 1 and "connection refused" in err and dead in err

        code, out, err = he.cli("recharge", A1, "10", "--wait", "2")
        assert code == 3
        assert "still" in err and "keeps trying" in err and "connection refused" in err

        # nothing can be sent: the recharge waits (a hold-back ends within 10 minutes; a wrong key
        # is tried every 11 minutes, so it never holds the meter back), said so, and can be cancelled
        code, out, err = he.cli("recharge", A2, "10", "--wait", "5")
        assert code == 3
        assert "identity authentication" in err and "key store" in err and "11 minutes" in err
        assert m.command("status")["balance_fen"] == 0
        code, out, err = he.cli("commands", "--meter", A2, "--kind", "recharge", "--json")
        [waiting] = json.loads(out)
        assert he.cli("commands", "cancel", str(waiting["id"]))[0] == 0

        code, out, err = he.cli("recharge", A2, "-5")
        assert code == 2 and "negative" in err
        code, out, err = he.cli("read", A2, "no_such_item")
        assert code == 2 and "no_such_item" in err
    he.stop_serve()
    with he.store() as s:
        cmds = s.list_commands()
        by_kind = {(c.meter, c.kind): c.status for c in cmds}
        assert by_kind[(A1, "recharge")] == "queued"  # never lost, never half-done
        assert by_kind[(A2, "recharge")] == "cancelled"
        assert s.count_commands()["sent"] == 0


def test_bulk_and_parameter_commands(he):
    bus, buses = _start_bus(he, "--count", "3")
    try:
        for b in buses:
            for a in b["meters"]:
                mode = "remote" if a == A3 else "local"
                assert he.cli("meter", "add", a, "--link", b["link"], "--customer", CUST, "--mode", mode)[0] == 0
        he.start_serve()
        code, out, err = he.cli("limits", "set", A1, "--alarm1", "20", "--alarm2", "5", "--close-ok", "1")
        assert code == 0, err
        assert "read back" in out and "alarm money limit 1 20.00 yuan" in out and "{" not in out
        # every value in the operator's words: no Python reprs, every status word decoded
        code, out, err = he.cli("read", A1, "date_week", "time", *(f"status_word_{k}" for k in range(1, 8)))
        assert code == 0, err
        assert "DateWeek(" not in out and "datetime." not in out and "(weekday " in out
        assert out.count("no flag set") >= 5 and "money_prepaid" in out  # words 1, 2, 4..7 clear; 3 names its bits
        code, out, err = he.cli("read", A1, "alarm_money_1", "--json")
        assert json.loads(out)[0]["reply"]["values"]["04001001"]["value"] == "20.00"
        code, out, err = he.cli("tariff", "set", A1, "--prices", "0.5680,0.5380,0.4880,0.2880",
                                "--day-table", "00:00=4,08:00=2,22:00=4")
        assert code == 0, err
        code, out, err = he.cli("read", A1, "price_set1_t2", "--json")
        assert json.loads(out)[0]["reply"]["values"]["04050102"]["value"] == "0.5380"
        code, out, err = he.cli("commands", "--kind", "set_tariff", "--json")
        [table] = [v for v in json.loads(out)[0]["reply"]["written"].values() if isinstance(v, list)]
        assert table[:2] == [{"hour": 0, "minute": 0, "tariff": 4}, {"hour": 8, "minute": 0, "tariff": 2}]
        code, out, err = he.cli("read", A1, "day_table_set1_1")
        assert "SlotEntry(" not in out and "08:00 tariff 2" in out
        code, out, err = he.cli("sync-time", A1)
        assert code == 0, err
        code, out, err = he.cli("alarm", "on", A2)
        assert code == 0 and "alarm on confirmed" in out
        code, out, err = he.cli("trip", "--where", "mode=local", "--json")
        assert code == 0, err
        got = json.loads(out)
        assert [c["meter"] for c in got] == [A1, A2] and all(c["reply"]["relay"] == "open" for c in got)
        code, out, err = he.cli("close", "--all", "--direct")
        assert code == 0, err
        assert out.count("confirmed") >= 3 or "closed" in out
        code, out, err = he.cli("read", "--all", "status_word_3", "--json")
        assert all(not int(c["reply"]["values"]["04000503"]["value"]) & 0x10 for c in json.loads(out))
        code, out, err = he.cli("tariff", "set", A1, "--prices", "abc")
        assert code == 2 and "bad price" in err
        code, out, err = he.cli("limits", "set", A1)
        assert code == 2 and "at least one" in err
    finally:
        _stop(bus)


def test_without_serve_the_command_stays_queued_and_says_so(he):
    assert he.cli("meter", "add", A1, "--link", "tcp://127.0.0.1:9", "--customer", CUST)[0] == 0
    code, out, err = he.cli("trip", A1, "--wait", "0.3")
    assert code == 3
    assert "no `headend serve` is running on" in err and "queued" in err
    with he.store() as s:
        [cmd] = s.list_commands()
        assert cmd.status == "queued" and cmd.kind == "trip"


def test_only_one_serve_per_database(he):
    he.start_serve()
    code, out, err = he.cli("serve")
    assert code == 1 and "already working" in err


def test_serve_collects_readings_periodically(he):
    bus, buses = _start_bus(he, "--count", "2", "--per-bus", "2")
    try:
        for a in buses[0]["meters"]:
            assert he.cli("meter", "add", a, "--link", buses[0]["link"], "--customer", CUST)[0] == 0
        he.start_serve("--collect-every", "0.5")
        deadline = time.monotonic() + 10
        seen: list = []
        while time.monotonic() < deadline:
            with he.store() as s:
                seen = [s.latest_reading(a, "04000503") for a in (A1, A2)]
                n = len(s.readings(A1, "00010000"))
            if all(seen) and n >= 2:
                break
            time.sleep(0.2)
        assert all(seen) and n >= 2  # at least two cycles, every meter
    finally:
        _stop(bus)


def test_serve_killed_mid_recharge_resumes_and_credits_once(he):
    bus, buses = _start_bus(he, "--count", "1", "--drop", f"{A1}=recharge:4")
    try:
        he.cli("meter", "add", A1, "--link", buses[0]["link"], "--customer", CUST)
        he.start_serve()
        code, out, err = he.cli("recharge", A1, "7", "--wait", "0.8")
        assert code == 3  # replies lost so far: still queued, safely
        he.serve_proc.kill()  # no clean shutdown: whatever was in flight stays "sent"
        he.serve_proc.wait()
        he.serve_proc = None
        with he.store() as s:
            [rc] = s.list_commands(kind="recharge")
            assert rc.status in ("sent", "queued") and rc.reply["purchase_count"] == 1
        he.start_serve()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with he.store() as s:
                rc = s.get_command(rc.id)
            if rc.status in ("confirmed", "failed"):
                break
            time.sleep(0.2)
        assert rc.status == "confirmed", rc.last_error
        assert rc.reply["purchase_count"] == 1
        code, out, err = he.cli("read", A1, "remaining_money", "--json")
        assert json.loads(out)[0]["reply"]["values"]["00900200"]["value"] == "7.00"
    finally:
        _stop(bus)
