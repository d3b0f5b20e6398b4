"""`headend serve` sends notices: a real serve process, the fake SMS provider, receipts by callback."""

from __future__ import annotations

import time

from headend.notices import notify_event
from tests.headend.headend_proc import HeadEnd
from tests.notices.fake_provider import FakeSmsProvider


def _wait(what, cond, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_serve_sends_queued_notices_and_records_receipts(tmp_path):
    provider = FakeSmsProvider()
    he = HeadEnd(tmp_path)
    cfg = tmp_path / "p.toml"
    cfg.write_text(f"""
[notices]
gateway = "sms"
sms_url = "{provider.url}"
sms_token = "{provider.token}"
quiet = ""
interval_s = 0.1
receipt_listen = "127.0.0.1:0"
receipt_token = "r3ceipt"
""")
    with he.store() as s:
        s.add_meter("000000000001", link="tcp://127.0.0.1:9", customer="000000000042", actor="t")
        s.update_account("000000000042", actor="t", phone="13800138000")
        notify_event(s, "000000000042", "payment_received", {"amount_fen": 100, "balance_fen": 250, "channel": "app"},
                     "pay:app:1")
    try:
        he.start_serve("--config", str(cfg), "--no-costctl")
        _wait("the provider to get the notice", lambda: provider.delivered)
        assert "callback_url" in provider.delivered[0] and "/receipts/r3ceipt" in provider.delivered[0]["callback_url"]

        def recorded():
            with he.store() as s:
                n = s.find_notices()[0]
                return n.status == "sent" and s.notice_deliveries([n.id])[n.id]
        _wait("the send to be recorded", recorded)
        assert provider.send_receipts("delivered") == 1

        def delivered():
            with he.store() as s:
                n = s.find_notices()[0]
                return [d for d in s.notice_deliveries([n.id])[n.id] if d.state == "delivered"]
        [d] = _wait("the receipt", delivered)
        assert d.provider_id == provider.delivered[0]["id"]
        code, out, _err = he.cli("notices", "show", "1")
        assert code == 0 and "delivered via sms id SM000001" in out and "2.50元" in out
    finally:
        he.stop_serve()
        provider.close()
    assert len(provider.delivered) == 1


def test_a_payment_to_a_local_meter_notifies_received_then_confirmed_once_each(tmp_path):
    """A real serve, a simulated meter that loses its first two recharge replies, the operator's
    payment: the customer hears "received" once and "on your meter" once, whatever the retries."""
    from tests.headend.test_e2e import _start_bus, _stop

    provider = FakeSmsProvider()
    he = HeadEnd(tmp_path)
    cfg = tmp_path / "p.toml"
    cfg.write_text(f"""
[notices]
gateway = "sms"
sms_url = "{provider.url}"
sms_token = "{provider.token}"
quiet = ""
interval_s = 0.1
watch_every_s = 0.1
""")
    meter, cust = "000000000001", "000000000101"
    bus, buses = _start_bus(he, "--count", "1", "--drop", f"{meter}=recharge:2")
    try:
        assert he.cli("meter", "add", meter, "--link", buses[0]["link"], "--customer", cust)[0] == 0
        with he.store() as s:
            s.update_account(cust, actor="t", phones=["13800138000", "13900139000"])
        he.start_serve("--config", str(cfg), "--no-costctl")
        code, out, err = he.cli("recharge", meter, "50", "--idem", "hall-1")
        assert code == 0, err
        assert he.cli("recharge", meter, "50", "--idem", "hall-1")[0] == 0          # the same payment again

        def both():
            kinds = [m["text"] for m in provider.delivered]
            return len(kinds) >= 4 and kinds
        _wait("both notices on both phones", both)
        assert he.stop_serve() == 0           # nothing more can go out: what the provider has is final
        assert provider.requests == 4
        with he.store() as s:
            sent = sorted((n.kind, n.status) for n in s.find_notices(customer=cust))
        assert sent == [("payment_confirmed", "sent"), ("payment_received", "sent")]
        assert sorted(m["to"] for m in provider.delivered) == ["13800138000", "13800138000", "13900139000",
                                                               "13900139000"]
        assert all("50.00元" in m["text"] for m in provider.delivered)
    finally:
        he.stop_serve()
        _stop(bus)
        provider.close()
