"""`headend meter/customer/commands/events/audit/keys` run as real subprocesses on a real SQLite file."""

from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from headend.cli import _common as c
from headend.store import open_store

ROOT = Path(__file__).resolve().parents[2]
HEADEND = ROOT / ".venv" / "bin" / "headend"
A1, A2, A3 = "000000000001", "000000000002", "000000000003"
C1 = "000000000042"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("PREPAID645_")}
    e.update(PREPAID645_DB=str(tmp_path / "h.db"), USER="opsuser")
    return e


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [str(HEADEND)] if HEADEND.exists() else [sys.executable, "-m", "headend.cli.main"]
    return subprocess.run(cmd + list(args), env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
                          input=stdin if stdin is not None else "")


def test_meter_add_list_show_and_audit(env: dict[str, str], tmp_path: Path) -> None:
    r = run(env, "meter", "add", A1, "--link", "tcp://127.0.0.1:9001", "--customer", C1, "--mode", "remote",
            "--krn", "2", "--protected", "--actor", "alice")
    assert r.returncode == 0, r.stderr
    assert A1 in r.stdout
    r = run(env, "meter", "add", A2, "--link", "serial:///dev/ttyUSB0?baud=2400&parity=E", "--customer", C1)
    assert r.returncode == 0, r.stderr

    r = run(env, "meter", "list", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [(m["address"], m["mode"], m["krn"], m["protected"]) for m in rows] == [(A1, "remote", 2, True),
                                                                                 (A2, "local", 0, False)]
    r = run(env, "meter", "list", "--where", "mode=remote", "--json")
    assert [m["address"] for m in json.loads(r.stdout)] == [A1]
    r = run(env, "meter", "list", "--where", "link=serial:*", "--json")
    assert [m["address"] for m in json.loads(r.stdout)] == [A2]

    r = run(env, "meter", "show", A1, "--json")
    shown = json.loads(r.stdout)
    assert shown["meter"]["link"] == "tcp://127.0.0.1:9001" and shown["account"]["customer"] == C1
    r = run(env, "meter", "show", A1)
    assert r.returncode == 0 and "tcp://127.0.0.1:9001" in r.stdout and "remote" in r.stdout

    r = run(env, "audit", "--json")
    who = [(a["actor"], a["action"], a["target"]) for a in json.loads(r.stdout)]
    assert who == [("opsuser", "meter.add", A2), ("alice", "meter.add", A1), ("alice", "customer.add", C1)]
    assert run(env, "audit").returncode == 0


def test_bad_input_and_unknown_meter_exit_codes(env: dict[str, str]) -> None:
    r = run(env, "meter", "add", "12345", "--link", "tcp://x:1", "--customer", C1)
    assert r.returncode == 2 and "12 decimal digits" in r.stderr
    r = run(env, "meter", "add", A1, "--link", "tcp://x:1", "--customer", C1, "--mode", "both")
    assert r.returncode == 2  # argparse choices
    assert run(env, "meter", "add", A1, "--link", "tcp://x:1", "--customer", C1).returncode == 0
    r = run(env, "meter", "add", A1, "--link", "tcp://y:1", "--customer", C1)
    assert r.returncode == 2 and "already registered" in r.stderr
    r = run(env, "meter", "show", A3)
    assert r.returncode == 4 and f"meter {A3} is not registered" in r.stderr
    r = run(env, "events", A3)
    assert r.returncode == 4 and "not registered" in r.stderr
    r = run(env, "events", "abc")
    assert r.returncode == 2
    r = run(env, "meter", "list", "--where", "colour=red")
    assert r.returncode == 2 and "unknown field" in r.stderr


def test_read_only_commands_do_not_create_a_database(env: dict[str, str], tmp_path: Path) -> None:
    r = run(env, "meter", "list", "--db", str(tmp_path / "typo.db"))
    assert r.returncode == 2 and "no database" in r.stderr
    assert not (tmp_path / "typo.db").exists()


def test_commands_and_events_views(env: dict[str, str]) -> None:
    store = open_store(env["PREPAID645_DB"])
    store.add_meter(A1, link="tcp://x:1", customer=C1, actor="setup")
    store.add_meter(A2, link="tcp://x:1", customer=C1, actor="setup")
    c1 = store.enqueue(A1, "trip", {}, actor="alice")
    c2 = store.enqueue(A2, "recharge", {"amount_fen": 5000}, actor="bob")
    store.mark_sent(c1.id)
    store.confirm(c1.id, {"status3": "0040"})
    store.add_event(A1, "relay.open", {"by": "command"})
    store.close()

    r = run(env, "commands", "--json")
    assert [(x["id"], x["status"], x["actor"]) for x in json.loads(r.stdout)] == [(c2.id, "queued", "bob"),
                                                                                 (c1.id, "confirmed", "alice")]
    r = run(env, "commands", "--status", "queued", "--json")
    assert [x["id"] for x in json.loads(r.stdout)] == [c2.id]
    r = run(env, "commands")
    assert r.returncode == 0 and "1 queued" in r.stdout and "recharge" in r.stdout
    r = run(env, "commands", "--meter", A3)
    assert r.returncode == 4
    r = run(env, "events", A1, "--json")
    assert [(e["kind"], e["detail"]) for e in json.loads(r.stdout)] == [("relay.open", {"by": "command"})]


def test_customer_limits_in_yuan(env: dict[str, str]) -> None:
    r = run(env, "customer", "add", C1, "--alarm1", "20", "--alarm2", "5.5", "--overdraft", "10.05",
            "--restore", "direct", "--json")
    assert r.returncode == 0, r.stderr
    a = json.loads(r.stdout)
    assert (a["alarm1_fen"], a["alarm2_fen"], a["overdraft_fen"], a["restore_policy"]) == (2000, 550, 1005, "direct")
    r = run(env, "customer", "set", C1, "--alarm1", "1.001")
    assert r.returncode == 2 and "2 decimals" in r.stderr
    r = run(env, "customer", "show", "000000000099")
    assert r.returncode == 4


def test_keys_init_check_and_wrong_passphrase(env: dict[str, str], tmp_path: Path) -> None:
    no_pass = run(env, "keys", "init")
    assert no_pass.returncode == 2 and "PREPAID645_KEY_PASSPHRASE" in no_pass.stderr
    env = dict(env, PREPAID645_KEY_PASSPHRASE="operator passphrase")
    r = run(env, "keys", "init", "--actor", "sec-officer")
    assert r.returncode == 0, r.stderr
    key = tmp_path / "h.key"  # next to the database by default
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert run(env, "keys", "check").returncode == 0
    again = run(env, "keys", "init")
    assert again.returncode == 2 and "already exists" in again.stderr
    wrong = run(dict(env, PREPAID645_KEY_PASSPHRASE="something else"), "keys", "check")
    assert wrong.returncode == 2 and "wrong passphrase" in wrong.stderr
    audit = json.loads(run(env, "audit", "--json").stdout)
    assert [(a["actor"], a["action"]) for a in audit] == [("sec-officer", "keys.init")]
    # nothing the commands printed contains key material
    from headend.keys import KeyStore

    ks = KeyStore.open(key, "operator passphrase")
    secret = ks.meter_key(A1, 0).hex()
    assert all(secret not in out for out in (r.stdout, r.stderr, again.stderr, wrong.stderr))


# ----------------------------------------------------------------------------- helpers, in process
def test_parse_where() -> None:
    assert c.parse_where(["mode=remote", "protected=no", "krn!=3", "link=tcp://10.0.0.*"]) == [
        ("mode", "=", "remote"), ("protected", "=", False), ("krn", "!=", 3), ("link", "like", "tcp://10.0.0.%")]
    for bad in ("mode", "krn=x", "protected=maybe", "link!=tcp*", "link=a_b*"):
        with pytest.raises(c.CliError):
            c.parse_where([bad])


def test_select_meters(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    store.add_meter(A1, link="tcp://x:1", customer=C1, actor="t", mode="remote")
    store.add_meter(A2, link="tcp://x:1", customer=C1, actor="t")

    def ns(**kw: object) -> argparse.Namespace:
        return argparse.Namespace(**{"meter": None, "all": False, "where": [], **kw})

    assert [m.address for m in c.select_meters(store, ns(all=True))] == [A1, A2]
    assert [m.address for m in c.select_meters(store, ns(where=["mode=remote"]))] == [A1]
    assert [m.address for m in c.select_meters(store, ns(meter=A2))] == [A2]
    for bad, code in ((ns(), 2), (ns(meter=A1, all=True), 2), (ns(meter="1"), 2), (ns(all=True, where=["mode=local"]), 2),
                      (ns(where=["customer=000000000099"]), 4)):
        with pytest.raises(c.CliError) as info:
            c.select_meters(store, bad)
        assert info.value.code == code
    store.close()


def test_parse_yuan_and_fmt_fen() -> None:
    assert [c.parse_yuan(x) for x in ("20", "20.5", "0.01", "1.500", "２０．５")] == [2000, 2050, 1, 150, 2050]
    for bad in ("-1", "0.001", "abc", "nan", "inf", "1e2", "1_0", "٢٠"):
        with pytest.raises(c.CliError):
            c.parse_yuan(bad)
    assert c.parse_yuan("-1.5", allow_negative=True) == -150
    assert [c.fmt_fen(x) for x in (0, 5, -105, 123456)] == ["0.00", "0.05", "-1.05", "1234.56"]


def test_meter_import_is_all_or_nothing(env: dict[str, str], tmp_path: Path) -> None:
    good = "address,link,customer,mode,krn,protected\n" + "".join(
        f"{i:012d},tcp://127.0.0.1:{9000 + i},{i:012d},{'remote' if i % 2 else 'local'},{i % 3},{'yes' if i == 4 else ''}\n"
        for i in range(1, 6))
    bad = good + "000000000007,tcp://x:1,42,local,0,\n"  # customer number too short
    (tmp_path / "bad.csv").write_text(bad)
    r = run(env, "meter", "import", str(tmp_path / "bad.csv"))
    assert r.returncode == 2 and "meter row 6" in r.stderr and "customer number" in r.stderr
    assert json.loads(run(env, "meter", "list", "--json").stdout) == []
    r = run(env, "meter", "import", "-", "--json", stdin=good)
    assert r.returncode == 0, r.stderr
    listed = json.loads(run(env, "meter", "list", "--json").stdout)
    assert [(m["address"], m["mode"], m["krn"], m["protected"]) for m in listed] == [
        (f"{i:012d}", "remote" if i % 2 else "local", i % 3, i == 4) for i in range(1, 6)]
    r = run(env, "meter", "import", "-", stdin=good)
    assert r.returncode == 2 and "meter row 1" in r.stderr and "already registered" in r.stderr


def test_keys_rotate_starts_above_the_fleet(env: dict[str, str], tmp_path: Path) -> None:
    env = dict(env, PREPAID645_KEY_PASSPHRASE="operator passphrase")
    assert run(env, "keys", "init").returncode == 0
    assert run(env, "meter", "add", A1, "--link", "tcp://x:1", "--customer", C1, "--krn", "3").returncode == 0
    from headend.keys import KeyStore

    before = KeyStore.open(tmp_path / "h.key", "operator passphrase")
    r = run(env, "keys", "rotate")
    assert r.returncode == 0, r.stderr
    assert "key revisions 4 and up" in r.stdout
    after = KeyStore.open(tmp_path / "h.key", "operator passphrase")
    assert after.generations == [0, 4]
    assert after.meter_key(A1, 3) == before.meter_key(A1, 3) and after.meter_key(A1, 4) != before.meter_key(A1, 4)
    r = run(env, "keys", "rotate", "--from-krn", "2")
    assert r.returncode == 2 and "5..255" in r.stderr
    assert json.loads(run(env, "audit", "--json", "--action", "keys.rotate").stdout)[0]["detail"] == {"from_krn": 4}


def test_progress_bar_on_a_terminal_passes_every_item(tmp_path: Path) -> None:
    master, slave = os.openpty()
    code = ("from headend.cli._common import progress\n"
            "print([x for x in progress(list(range(50)), 'trip', enabled=True)])\n")
    try:
        r = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=slave, text=True,
                           timeout=60, cwd=ROOT)
    finally:
        os.close(slave)
    drawn = b""
    try:
        while chunk := os.read(master, 65536):
            drawn += chunk
    except OSError:
        pass  # the pty is drained once its last writer is gone
    os.close(master)
    assert r.returncode == 0
    assert r.stdout.strip() == str(list(range(50)))
    assert b"trip" in drawn  # the bar went to the terminal, not into the output
