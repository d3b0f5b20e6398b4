"""The operator's lists: meters with what they last reported, customers with their tariff and
meters, tariffs; each also as CSV (for a spreadsheet) and JSON (for scripts)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from pathlib import Path

import pytest

from headend.cli.main import main as headend_main
from headend.store import open_store

M1, M2, C1, C2 = "000000000001", "000000000002", "000000000101", "000000000102"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for k in list(os.environ):
        if k.startswith("PREPAID645_"):
            monkeypatch.delenv(k)
    path = tmp_path / "h.db"
    monkeypatch.setenv("PREPAID645_DB", str(path))
    monkeypatch.chdir(tmp_path)
    with open_store(path) as s:
        s.add_account(C1, actor="t", tariff="beijing", name="Wang")
        s.add_account(C2, actor="t")
        s.add_meter(M1, link="tcp://127.0.0.1:8645", customer=C1, actor="t")
        s.add_meter(M2, link="tcp://127.0.0.1:8646", customer=C1, actor="t", mode="remote")
        s.record_meter_state(M1, balance_fen=2941, relay="open", seen_at=1_772_590_200)
    return path


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = headend_main(list(argv))
    return code, out.getvalue()


def test_meter_list_shows_last_known_balance_and_relay_also_as_csv(db: Path) -> None:
    code, out = cli("meter", "list")
    assert code == 0 and "29.41" in out and "open" in out
    code, out = cli("meter", "list", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["address"] for r in rows] == [M1, M2]
    assert (rows[0]["relay"], rows[0]["meter balance"], rows[0]["customer"]) == ("open", "29.41", C1)
    assert (rows[1]["relay"], rows[1]["meter balance"], rows[1]["mode"]) == ("", "", "remote")


def test_customer_list_shows_tariff_and_meters(db: Path) -> None:
    code, out = cli("customer", "list", "--csv")
    rows = {r["customer"]: r for r in csv.DictReader(io.StringIO(out))}
    assert code == 0 and rows[C1]["tariff"] == "beijing" and rows[C1]["meters"] == f"{M1} {M2}"
    assert rows[C2]["meters"] == "" and rows[C1]["name"] == "Wang"
    code, out = cli("customer", "list", "--json")
    assert {a["customer"]: a["meters"] for a in json.loads(out)} == {C1: [M1, M2], C2: []}
    code, out = cli("customer", "list")
    assert "beijing" in out and M2 in out


def test_tariff_list_names_what_accounts_can_use(db: Path, tmp_path: Path) -> None:
    (tmp_path / "tariffs.toml").write_text(
        '[[tariff]]\nname = "village"\nversion = 1\neffective = "2026-01-01"\nprices = [5000, 5000, 5000, 5000]\n')
    (tmp_path / "prepaid645.toml").write_text('[costctl]\ntariffs = "tariffs.toml"\n')
    code, out = cli("tariff", "list", "--csv")
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(out))}
    assert code == 0 and {"beijing", "beijing-tou", "zhejiang", "village"} <= set(rows)
    assert rows["village"]["prices"] == "0.5000 flat rate" and rows["village"]["from"].endswith("tariffs.toml")
    assert rows["beijing-tou"]["prices"].startswith("sharp 0.") and rows["beijing"]["from"] == "built in"
    # a tariff the list shows is one an account can name
    assert cli("customer", "set", C2, "--tariff", "village")[0] == 0


def test_csv_and_json_do_not_mix(db: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        cli("meter", "list", "--csv", "--json")
    assert exc.value.code == 2
