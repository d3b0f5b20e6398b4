"""The notice sender against a real HTTP fake SMS provider on loopback (time injected, never slept)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from headend.notices import notify_event
from headend.notices.gateways import LogGateway, WebhookGateway
from headend.notices.receipts import ReceiptServer
from headend.notices.sender import NoticeSender, Policy
from headend.notices.templates import load_templates
from headend.store import InvalidInput, TransitionError, open_store
from tests.notices.conftest import NOON, customer, local, make_sender
from tests.notices.fake_provider import WebhookReceiver

C1, C2 = "000000000042", "000000000043"
PAY = {"amount_fen": 5000, "balance_fen": 7350, "channel": "counter"}


def test_each_event_is_delivered_once_per_phone_with_the_provider_id_recorded(store, provider):
    customer(store, C1, "13800138000, 13900139000")
    customer(store, C2, "+8613700137000")
    notify_event(store, C1, "payment_received", PAY, "pay:counter:T1")
    notify_event(store, C1, "payment_received", PAY, "pay:counter:T1")       # the channel retried: same event
    notify_event(store, C2, "withholding_failed", {"amount_fen": 10000, "bank": "ICBC", "reason": "insufficient funds"},
                 "bank:ICBC:B7:3")
    sender = make_sender(store, provider)
    rep = sender.run_once(NOON)
    assert (rep.claimed, rep.sent, rep.messages) == (2, 2, 3)
    assert sorted(provider.phones()) == ["+8613700137000", "13800138000", "13900139000"]
    # nothing left: further passes send nothing, whatever the time
    assert sender.run_once(NOON + 60).claimed == 0 and sender.run_once(NOON + 86400).claimed == 0
    assert len(provider.delivered) == 3 and provider.requests == 3
    [n] = store.find_notices(customer=C1)
    assert n.status == "sent" and n.sent_at == NOON
    # the customer's language (default zh) and integer yuan
    assert "50.00元" in n.sent_text and "73.50元" in n.sent_text and "counter" in n.sent_text
    dels = store.notice_deliveries([n.id])[n.id]
    assert {d.phone for d in dels} == {"13800138000", "13900139000"}
    ids = {m["to"]: m["id"] for m in provider.delivered}
    assert all(d.provider_id == ids[d.phone] and d.state == "accepted" and d.key == f"pay:counter:T1:{d.phone}"
               for d in dels)


def test_transient_failures_back_off_then_deliver_once(store, provider):
    customer(store, C1, "13800138000")
    notify_event(store, C1, "payment_received", PAY, "pay:1")
    provider.fail(2, 503)
    sender = make_sender(store, provider, backoff_s=30)
    rep = sender.run_once(NOON)
    assert rep.retried == 1 and not provider.delivered
    n = store.find_notices()[0]
    assert n.status == "queued" and n.not_before == NOON + 30 and "503" in n.last_error and n.attempts == 1
    assert sender.run_once(NOON + 29).claimed == 0                      # not before its time
    sender.run_once(NOON + 30)
    n = store.find_notices()[0]
    assert n.not_before == NOON + 30 + 60 and n.attempts == 2           # doubled
    sender.run_once(NOON + 90)
    assert store.find_notices()[0].status == "sent" and len(provider.delivered) == 1


def test_accepted_but_the_answer_lost_is_resolved_by_the_idempotency_key(store, provider):
    customer(store, C1, "13800138000")
    notify_event(store, C1, "payment_received", PAY, "pay:2")
    provider.drop_after_accept(2)           # the first try and its immediate reconnect both lose the answer
    sender = make_sender(store, provider)
    rep = sender.run_once(NOON)
    assert rep.retried == 1 and len(provider.delivered) == 1            # the provider has it already
    assert store.find_notices()[0].status == "queued"
    sender.run_once(NOON + 3600)
    n = store.find_notices()[0]
    assert n.status == "sent" and len(provider.delivered) == 1 and provider.requests == 3
    [d] = store.notice_deliveries([n.id])[n.id]
    assert d.provider_id == provider.delivered[0]["id"]


def test_a_sender_killed_between_send_and_record_costs_no_second_delivery(tmp_path, provider):
    db = tmp_path / "crash.db"
    with open_store(db) as s:
        customer(s, C1, "13800138000")
        notify_event(s, C1, "payment_received", PAY, "pay:crash")
    (tmp_path / "p.toml").write_text(textwrap.dedent(f"""
        [notices]
        gateway = "sms"
        sms_url = "{provider.url}"
        sms_token = "{provider.token}"
        quiet = ""
    """))
    provider.hold()                          # the provider takes the message and keeps the answer back
    proc = subprocess.Popen([sys.executable, "-m", "headend.cli.main", "notices", "send", "--db", str(db),
                             "--config", str(tmp_path / "p.toml"), "--at", str(NOON)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert provider.holding.wait(60), "the sender never reached the provider"
        os.kill(proc.pid, signal.SIGKILL)    # dies with the message accepted and nothing recorded
        proc.wait(30)
    finally:
        provider.release()
    assert len(provider.delivered) == 1
    with open_store(db) as s:
        n = s.find_notices()[0]
        assert n.status == "queued" and not s.notice_deliveries([n.id])[n.id]
        sender = make_sender(s, provider)
        assert sender.run_once(NOON + 60).claimed == 0                    # the dead sender's lease still holds
        [claimed] = s.claim_notices("probe", now=NOON + 301, limit=1, lease_s=1)
        assert claimed.in_doubt                                           # its lease ran out mid-send
    with open_store(db) as s:
        rep = make_sender(s, provider).run_once(NOON + 400)
        assert rep.sent == 1
        n = s.find_notices()[0]
        [d] = s.notice_deliveries([n.id])[n.id]
    assert len(provider.delivered) == 1 and d.provider_id == provider.delivered[0]["id"]
    assert provider.requests == 1               # resolved by looking the key up: no second send at all


def test_quiet_hours_hold_non_urgent_notices_but_not_urgent_ones(store, provider):
    customer(store, C1, "13800138000", alarm1_fen=2000)
    night = local("2026-12-01 23:30")
    notify_event(store, C1, "payment_received", PAY, "pay:night")
    notify_event(store, C1, "cut", {"balance_fen": -120}, "cut:night")
    sender = make_sender(store, provider)          # quiet 21:00-08:00 by default
    rep = sender.run_once(night)
    assert (rep.sent, rep.waiting) == (1, 1)
    assert [m["text"] for m in provider.delivered][0].startswith("【停电通知】")
    waiting = store.find_notices(kind="payment_received")[0]
    assert waiting.status == "queued" and waiting.not_before == local("2026-12-02 08:00") and waiting.attempts == 0
    assert sender.run_once(local("2026-12-02 07:59")).claimed == 0
    assert sender.run_once(local("2026-12-02 08:00")).sent == 1 and len(provider.delivered) == 2


def test_rate_limit_per_customer(store, provider):
    customer(store, C1, "13800138000")
    customer(store, C2, "13900139000")
    for i in range(7):
        notify_event(store, C1, "payment_received", PAY, f"pay:c1:{i}")
    notify_event(store, C2, "payment_received", PAY, "pay:c2")
    notify_event(store, C1, "cut", {"balance_fen": -1}, "cut:c1")            # urgent: never held
    sender = make_sender(store, provider, rate_n=3, rate_window_s=3600)
    rep = sender.run_once(NOON)
    assert rep.sent == 5 and rep.waiting == 4       # C1: 3 + the cut; C2: 1
    assert provider.phones().count("13800138000") == 4
    held = store.find_notices(status="queued")
    assert {n.not_before for n in held} == {NOON + 3600} and all("rate limit" in n.last_error for n in held)
    assert sender.run_once(NOON + 3599).claimed == 0
    rep = sender.run_once(NOON + 3600)
    assert rep.sent == 3 and rep.waiting == 1       # 3 per hour again
    assert sender.run_once(NOON + 7200).sent == 1
    assert provider.phones().count("13800138000") == 8 and len(provider.delivered) == 9


def test_a_phone_that_is_not_a_number_is_reported_once_and_the_account_flagged(store, provider):
    customer(store, C1, "13800138000, call me maybe")
    sender = make_sender(store, provider)
    notify_event(store, C1, "payment_received", PAY, "pay:a")
    rep = sender.run_once(NOON)
    assert rep.sent == 1 and rep.flagged == [C1] and provider.phones() == ["13800138000"]
    notify_event(store, C1, "payment_received", PAY, "pay:b")
    rep = sender.run_once(NOON + 60)
    assert rep.sent == 1 and rep.flagged == []                           # reported once
    assert [f[0] for f in store.contact_flags()] == [C1]
    assert len(store.audit_entries(action="customer.contact_flagged")) == 1
    n = store.find_notices()[0]
    bad = [d for d in store.notice_deliveries([n.id])[n.id] if d.state == "bad_number"]
    assert bad and bad[0].phone == "call me maybe" and "not a number" in bad[0].error


def test_only_bad_numbers_fail_the_notice_for_good(store, provider):
    customer(store, C1, "12345678901")
    provider.bad_numbers.add("12345678901")
    notify_event(store, C1, "payment_received", PAY, "pay:bad")
    sender = make_sender(store, provider)
    rep = sender.run_once(NOON)
    assert rep.failed == 1 and rep.flagged == [C1]
    n = store.find_notices()[0]
    assert n.status == "failed" and "invalid_number" in n.last_error
    assert sender.run_once(NOON + 86400).claimed == 0                    # never retried
    notify_event(store, C1, "payment_received", PAY, "pay:bad2")          # the flagged phone is not tried again
    rep = sender.run_once(NOON + 86400)
    assert rep.failed == 1 and rep.flagged == [] and provider.requests == 1
    assert "flagged as undeliverable" in store.find_notices()[0].last_error
    store.clear_contact_flag(C1, actor="ops")
    notify_event(store, C1, "payment_received", PAY, "pay:bad3")
    sender.run_once(NOON + 86400)
    assert provider.requests == 2 and [f[0] for f in store.contact_flags()] == [C1]   # flagged again, reported


def test_a_gateway_answering_garbage_leaves_the_notice_queued_with_the_reason(store, provider):
    customer(store, C1, "13800138000")
    notify_event(store, C1, "payment_received", PAY, "pay:g")
    provider.garbage(1)
    rep = make_sender(store, provider).run_once(NOON)
    n = store.find_notices()[0]
    assert rep.retried == 1 and n.status == "queued"
    assert "not JSON" in n.last_error and "gateway maintenance" in n.last_error


def test_one_phone_failing_transiently_is_retried_alone(store, provider):
    customer(store, C1, "13800138000,13900139000")
    notify_event(store, C1, "payment_received", PAY, "pay:two")
    provider.busy_for["13800138000"] = 1       # the first phone's request fails, the second gets through
    sender = make_sender(store, provider)
    sender.run_once(NOON)
    n = store.find_notices()[0]
    assert n.status == "queued" and provider.phones() == ["13900139000"]
    sender.run_once(NOON + 3600)
    assert store.find_notices()[0].status == "sent"
    assert sorted(provider.phones()) == ["13800138000", "13900139000"] and provider.requests == 3


def test_delivery_receipts_are_recorded_from_the_callback(store, provider):
    customer(store, C1, "13800138000")
    receipts = ReceiptServer(store, "127.0.0.1", 0, "s3cret").start()
    try:
        notify_event(store, C1, "payment_received", PAY, "pay:r")
        make_sender(store, provider, callback_url=receipts.url).run_once(NOON)
        assert provider.send_receipts("delivered") == 1
        assert provider.send_receipts("delivered") == 1                  # a repeat changes nothing
        n = store.find_notices()[0]
        [d] = store.notice_deliveries([n.id])[n.id]
        assert d.state == "delivered" and d.receipt_at == NOON
        assert store.find_notices(provider_id=d.provider_id)[0].id == n.id
        import urllib.error
        import urllib.request
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(receipts.url.replace("s3cret", "guess"), data=b"{}",
                                                          method="POST"), timeout=10)
        assert e.value.code == 403
    finally:
        receipts.close()


def test_two_senders_never_take_the_same_notice(store, provider):
    customer(store, C1, "13800138000")
    for i in range(200):
        notify_event(store, C1, "payment_received", PAY, f"pay:{i}")
    got: dict[str, list[int]] = {}

    def claim(owner: str) -> None:
        ids = []
        while batch := store.claim_notices(owner, now=NOON, limit=7):
            ids += [n.id for n in batch]
        got[owner] = ids

    threads = [threading.Thread(target=claim, args=(f"s{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    every = [i for ids in got.values() for i in ids]
    assert len(every) == 200 and len(set(every)) == 200


def test_resend_only_a_failed_notice(store, provider):
    customer(store, C1, "12345678901")
    provider.bad_numbers.add("12345678901")
    notify_event(store, C1, "payment_received", PAY, "pay:rs")
    sender = make_sender(store, provider)
    sender.run_once(NOON)
    n = store.find_notices()[0]
    store.update_account(C1, actor="t", phone="13800138000")              # the operator fixes the phone
    store.resend_notice(n.id, actor="alice")
    sender.run_once(NOON + 10)
    assert store.get_notification(n.id).status == "sent" and provider.phones() == ["13800138000"]
    with pytest.raises(TransitionError, match="delivered once already"):
        store.resend_notice(n.id, actor="alice")


def test_notify_event_refuses_missing_or_float_facts(store):
    customer(store, C1, "13800138000")
    with pytest.raises(InvalidInput, match="balance_fen"):
        notify_event(store, C1, "payment_received", {"amount_fen": 5000, "channel": "x"}, "k1")
    with pytest.raises(InvalidInput, match="integer"):
        notify_event(store, C1, "payment_received", {**PAY, "amount_fen": 50.0}, "k2")
    with pytest.raises(InvalidInput, match="unknown notice kind"):
        notify_event(store, C1, "lottery_win", {}, "k3")
    assert store.find_notices() == []


def test_log_gateway_is_idempotent_across_restarts(store, tmp_path):
    customer(store, C1, "13800138000")
    notify_event(store, C1, "payment_received", PAY, "pay:log")
    path = tmp_path / "out.log"
    LogGateway(path)
    sender = NoticeSender(store, LogGateway(path), load_templates(), Policy(), owner="a")
    sender.run_once(NOON)
    n = store.find_notices()[0]
    [d] = store.notice_deliveries([n.id])[n.id]
    assert d.state == "delivered" and d.provider_id == "log-1"
    from headend.notices.gateways import Outgoing
    again = LogGateway(path).send([Outgoing(d.key, "13800138000", "x", "payment_received", C1, n.id)])
    assert again[0].provider_id == "log-1" and len(path.read_text(encoding="utf-8").splitlines()) == 1


def test_webhook_gateway_signs_and_the_receiver_drops_repeats(store):
    customer(store, C1, "13800138000")
    hook = WebhookReceiver(b"k" * 32)
    try:
        for i in range(3):
            notify_event(store, C1, "payment_received", PAY, f"pay:w{i}")
        sender = NoticeSender(store, WebhookGateway(hook.url, b"k" * 32), load_templates(), Policy(), owner="w")
        assert sender.run_once(NOON).sent == 3
        assert len(hook.messages) == 3 and hook.bad_signatures == 0
        ids = {d.provider_id for ds in store.notice_deliveries(n.id for n in store.find_notices()).values() for d in ds}
        assert ids == {f"Wpay:w{i}:13800138000" for i in range(3)}
        wrong = WebhookGateway(hook.url, b"x" * 32)
        notify_event(store, C1, "payment_received", PAY, "pay:w9")
        rep = NoticeSender(store, wrong, load_templates(), Policy(), owner="w2").run_once(NOON)
        assert rep.retried == 1 and hook.bad_signatures == 1 and "401" in store.find_notices()[0].last_error
    finally:
        hook.close()


def test_a_sender_whose_lease_ran_out_records_nothing(store):
    customer(store, C1, "13800138000")
    notify_event(store, C1, "payment_received", PAY, "pay:lease")
    [a] = store.claim_notices("a", now=NOON, lease_s=60)
    assert store.claim_notices("b", now=NOON + 59) == []
    [b] = store.claim_notices("b", now=NOON + 60, lease_s=60)
    assert b.id == a.id and b.in_doubt
    assert store.record_notice_results("a", [{"id": a.id, "status": "sent", "attempted": True}]) == [a.id]
    assert store.get_notification(a.id).status == "queued"
    assert store.record_notice_results("b", [{"id": b.id, "status": "sent", "attempted": True,
                                              "deliveries": [("13800138000", "pay:lease:13800138000", "sms", "X1",
                                                              "accepted", None)]}]) == []
    assert store.get_notification(a.id).status == "sent"
