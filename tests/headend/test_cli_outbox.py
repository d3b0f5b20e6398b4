"""The operator's outbox through the `headend` CLI: values that could never work are refused at
entry (exit 2, naming the field and the allowed range), an idempotency key cannot stand for two
different payments, commands can be cancelled and retried (audited) and listed per customer, an
unresolved recharge is said to be so (exit 5), and "is serve running?" is asked only when it is not."""

from __future__ import annotations

import json

import pytest

from tests.headend.headend_proc import HeadEnd

A1, A2 = "000000000001", "000000000002"
CUST, OTHER = "000000000042", "000000000043"


@pytest.fixture
def he(tmp_path):
    h = HeadEnd(tmp_path)
    assert h.cli("customer", "add", CUST)[0] == 0
    assert h.cli("customer", "add", OTHER)[0] == 0
    assert h.cli("meter", "add", A1, "--link", "tcp://127.0.0.1:9", "--customer", CUST)[0] == 0
    assert h.cli("meter", "add", A2, "--link", "tcp://127.0.0.1:9", "--customer", OTHER)[0] == 0
    yield h
    h.stop_serve()


@pytest.mark.parametrize("argv, words", [
    (("recharge", A1, "1000000000"), ["recharge amount", "out of range", "0.01 to 42949672.95 yuan"]),
    (("recharge", A1, "99999999"), ["out of range", "42949672.95 yuan"]),
    (("recharge", A1, "0"), ["out of range", "0.01 to"]),
    (("limits", "set", A1, "--alarm1", "1000000000"), ["alarm1", "out of range", "999999.99 yuan"]),
    (("tariff", "set", A1, "--prices", "10000"), ["price 1", "out of range"]),
    (("tariff", "set", A1, "--day-table", "08:00=9"), ["tariff must be 1..4"]),
    (("tariff", "set", A1, "--day-table", "08:00=1,07:00=2"), ["must rise"]),
])
def test_a_value_that_could_never_work_is_refused_at_entry_and_nothing_is_queued(he, argv, words):
    code, out, err = he.cli(*argv, "--wait", "0")
    assert code == 2, err
    for w in words:
        assert w in err
    with he.store() as s:
        assert s.list_commands() == []


def test_an_idempotency_key_reused_for_another_amount_is_refused_naming_the_field(he):
    assert he.cli("recharge", A1, "50", "--idem", "PAY-9", "--wait", "0")[0] == 3
    code, out, err = he.cli("recharge", A1, "70", "--idem", "PAY-9", "--wait", "0")
    assert code == 2 and "PAY-9" in err and "5000, not 7000" in err
    assert he.cli("recharge", A1, "50", "--idem", "PAY-9", "--wait", "0")[0] == 3  # the same payment: fine
    with he.store() as s:
        assert len(s.list_commands()) == 1


def test_cancel_retry_and_customer_filter(he):
    assert he.cli("trip", A1, "--wait", "0")[0] == 3
    assert he.cli("trip", A2, "--wait", "0")[0] == 3
    code, out, err = he.cli("commands", "--customer", OTHER, "--json")
    [only] = json.loads(out)
    assert code == 0 and only["meter"] == A2
    code, out, err = he.cli("commands", "cancel", str(only["id"]))
    assert code == 0 and "cancelled" in out
    code, out, err = he.cli("commands", "cancel", str(only["id"]))
    assert code == 1 and "already final" in err
    code, out, err = he.cli("commands", "retry", str(only["id"]))
    assert code == 0 and "queued" in out
    code, out, err = he.cli("audit", "--target", A2, "--json")
    actions = [e["action"] for e in json.loads(out)]
    assert {"command.cancel", "command.requeue"} <= set(actions)
    assert he.cli("commands", "cancel", "9999")[0] == 4


def test_an_unresolved_recharge_exits_5_and_says_not_to_pay_again(he):
    assert he.cli("recharge", A1, "7", "--idem", "PAY-U", "--wait", "0")[0] == 3
    with he.store() as s:  # its frame went out and the answer was lost
        [cmd] = s.list_commands(kind="recharge")
        [sent] = s.claim_next()
        s.note_progress(sent.id, {"purchase_count": 3})
        s.unresolve(sent.id, "no answer from the meter after the recharge frame", not_before=s.now() + 3600)
    code, out, err = he.cli("recharge", A1, "7", "--idem", "PAY-U", "--wait", "0.3")
    assert code == 5
    assert f"command {cmd.id}" in err and "UNRESOLVED" in err and "do not pay it again" in err
    code, out, err = he.cli("commands")
    assert "unresolved" in out and "1 recharge(s) unresolved" in err
    code, out, err = he.cli("commands", "cancel", str(cmd.id))
    assert code == 1 and "may already have reached the meter" in err


def test_serve_running_is_not_mistaken_for_serve_missing(he):
    code, out, err = he.cli("trip", A1, "--wait", "0.2")
    assert code == 3 and "no `headend serve` is running" in err
    with he.store() as s:  # A2's queue is held by a recharge waiting for its meter's hold-back to end
        s.enqueue(A2, "recharge", {"amount_fen": 100}, actor="pay")
        [w] = [c for c in s.claim_next(limit=5) if c.meter == A2]
        s.retry_later(w.id, "the meter refuses authentication", not_before=s.now() + 86400)
    he.start_serve()
    code, out, err = he.cli("trip", A2, "--wait", "0.5")
    assert code == 3
    assert "no `headend serve` is running" not in err and f"(pid {he.serve_proc.pid}) is running" in err
