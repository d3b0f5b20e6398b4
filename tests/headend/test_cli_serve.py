"""`headend serve` as an operator watches it: what it says while it works and when it stops."""

from __future__ import annotations

import time

import pytest

from tests.headend.headend_proc import HeadEnd
from tools.sim.launch import start_meter

A1, A2, CUST = "000000000001", "000000000002", "000000000042"


@pytest.fixture
def he(tmp_path):
    h = HeadEnd(tmp_path)
    yield h
    h.stop_serve()


def _wait_output(he: HeadEnd, text: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = [ln for ln in he.serve_output if text in ln]
        if got:
            return got[-1]
        time.sleep(0.1)
    raise AssertionError(f"serve never said {text!r}:\n" + "".join(he.serve_output))


def test_serve_summarises_the_outbox_counts_meters_anew_and_says_when_it_stops(he, tmp_path):
    with start_meter(A1, he.key_hex(A1), str(tmp_path / "m1.state")) as m1, \
            start_meter(A2, he.key_hex(A2), str(tmp_path / "m2.state")) as m2:
        assert he.cli("meter", "add", A1, "--link", "tcp://%s:%d" % m1.tcp, "--customer", CUST)[0] == 0
        he.start_serve("--no-costctl", "--summary-every", "0.3")
        assert "(1 meters now" in he.serve_output[-1]
        # a meter registered while serve runs is served, and the next summary counts it
        assert he.cli("meter", "add", A2, "--link", "tcp://%s:%d" % m2.tcp, "--customer", CUST)[0] == 0
        code, out, err = he.cli("read", A2, "remaining_money")
        assert code == 0, err
        line = _wait_output(he, "outbox: 1 confirmed")
        assert "outbox: 1 confirmed, 0 failed in the last 0.3 s; 0 queued, 0 in flight; 2 meters" in line
        assert he.cli("trip", A1)[0] == 0
    assert he.stop_serve() == 0
    last = [ln for ln in he.serve_output if ln.strip()][-1]
    assert last.startswith("headend serve: stopped (SIGTERM); 2 confirmed, 0 failed while it ran"), last


def test_meter_at_speed_60_and_serve_at_speed_60_agree_on_the_time(he, tmp_path):
    """A simulated meter run 60 times faster and `serve --speed 60`: after one time set, relay
    commands are not refused as stale however long the two run (12 real seconds are 12 minutes of
    both clocks; on the wall clock the meter would be 12 minutes ahead), and the meter's clock
    read over DL/T 645 stays with the head-end's."""
    with start_meter(A1, he.key_hex(A1), str(tmp_path / "m1.state"), speed=60) as m:
        assert he.cli("meter", "add", A1, "--link", "tcp://%s:%d" % m.tcp, "--customer", CUST)[0] == 0
        he.start_serve("--no-costctl", "--speed", "60")
        code, out, err = he.cli("sync-time", A1, "--set")
        assert code == 0, err
        time.sleep(12)  # the meter would now be 12 minutes ahead of a head-end on the wall clock
        for cmd in (("trip", A1), ("close", A1, "--direct")):
            code, out, err = he.cli(*cmd)
            assert code == 0, err
            assert "stale" not in err
        code, out, err = he.cli("sync-time", A1, "--json")
        assert code == 0, err
        import json
        [reply] = [x["reply"] for x in json.loads(out)]
        # both clocks ran at 60x for 12 s and more: still within the tolerance of a time set at 60x
        assert abs(reply["offset_s"]) <= 120, reply


def test_serve_listen_errors_name_the_endpoint(he):
    import socket

    code, _, err = he.cli("serve", "--no-costctl", "--listen", "udp://127.0.0.1:8700")
    assert code == 2 and "link 'udp://127.0.0.1:8700': unknown scheme" in err and "Traceback" not in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = he.cli("serve", "--no-costctl", "--listen", f"listen://127.0.0.1:{port}")
    assert code == 1 and f"listen://127.0.0.1:{port}" in err and "in use" in err, err
