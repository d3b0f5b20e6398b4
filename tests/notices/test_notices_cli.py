"""`headend notices list|show|resend|send|flags` on a real store file, log-file gateway."""

from __future__ import annotations

import json

from headend.cli.main import main as headend
from headend.notices import notify_event
from headend.store import open_store

C1, C2 = "000000000042", "000000000043"
PAY = {"amount_fen": 5000, "balance_fen": 7350, "channel": "counter"}


def test_list_show_resend_send_and_flags(tmp_path, capsys):
    db = str(tmp_path / "n.db")
    cfg = tmp_path / "p.toml"
    cfg.write_text('[notices]\nquiet = ""\nlanguage = "en"\n')
    with open_store(db) as s:
        s.add_meter("000000000001", link="tcp://127.0.0.1:9", customer=C1, actor="t")
        s.add_meter("000000000002", link="tcp://127.0.0.1:9", customer=C2, actor="t")
        s.update_account(C1, actor="t", phone="13800138000")
        s.update_account(C2, actor="t", phone="not-a-phone")
        notify_event(s, C1, "payment_received", PAY, "pay:1")
        notify_event(s, C2, "payment_received", PAY, "pay:2")
    base = ["--db", db, "--config", str(cfg)]
    assert headend(["notices", "send", *base, "--at", "1800000000"]) == 0
    out = capsys.readouterr().out
    assert "2 due, 1 sent, 1 failed" in out and f"customer {C2}" in out
    assert (tmp_path / "n.db.notices.log").read_text(encoding="utf-8").count("\n") == 1
    assert headend(["notices", "list", *base, "--status", "failed", "--json"]) == 0
    [failed] = json.loads(capsys.readouterr().out)
    assert failed["customer"] == C2 and "not a number" in failed["last_error"]
    assert headend(["notices", "list", *base, "--customer", C1]) == 0
    assert "log-1" in capsys.readouterr().out
    assert headend(["notices", "show", "1", *base]) == 0
    shown = capsys.readouterr().out
    assert "13800138000: delivered via log id log-1" in shown and "50.00 yuan" in shown
    assert headend(["notices", "flags", *base, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["customer"] == C2
    assert headend(["notices", "resend", "1", *base]) == 2                 # sent: never twice
    assert "delivered once already" in capsys.readouterr().err
    with open_store(db) as s:
        s.update_account(C2, actor="t", phone="13900139000")
    assert headend(["notices", "resend", str(failed["id"]), *base]) == 0
    assert headend(["notices", "send", *base, "--at", "1800000060"]) == 0
    assert "1 sent" in capsys.readouterr().out
    assert headend(["notices", "flags", *base, "--clear", C2]) == 0
    assert headend(["notices", "show", "99", *base]) == 4
    bad = tmp_path / "bad.toml"
    bad.write_text('[notices]\ntemplates = "t.toml"\n')
    (tmp_path / "t.toml").write_text('[cut]\nen = "{balanse}"\n')
    assert headend(["notices", "send", "--db", db, "--config", str(bad)]) == 2
    assert "{balanse}" in capsys.readouterr().err
