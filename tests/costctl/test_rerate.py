"""`headend rate` against a real SQLite store: dry run, --apply once, repeat-safe, tier crossings."""

import json
from datetime import datetime, timedelta, timezone

import pytest

from headend.cli.main import main
from headend.costctl.rerate import rerate
from headend.store import open_store
from headend.tariff.catalog import load_catalog
from headend.tariff.model import TariffError

CST = timezone(timedelta(hours=8))
DAY0 = int(datetime(2025, 6, 10, tzinfo=CST).timestamp())     # the window: 10 June 00:00 .. 11 June 00:00 local
CUST, CUST2, CUST3 = "000000000042", "000000000043", "000000000044"

TINY_LADDER = """
[[tariff]]
name = "tiny"
version = 1
effective = "2020-01-01"
prices = [4883, 4883, 4883, 4883]
[tariff.ladder]
thresholds_wh = [30000]
increments = [0, 500]
settlements = [[1, 1, 0]]
"""


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "headend.db"
    now = [DAY0 + 3600]
    store = open_store(path, clock=lambda: now[0])
    for addr, cust, tariff, first in (("000000000001", CUST, "beijing", DAY0), ("000000000002", CUST2, "tiny", DAY0 - 2 * 86400),
                                      ("000000000003", CUST3, "nowhere", DAY0)):
        store.add_meter(addr, link="tcp://127.0.0.1:9", customer=cust, actor="test", mode="remote")
        store.update_account(cust, actor="test", tariff=tariff)
        hours = (DAY0 + 86400 - first) // 3600 + 1
        store.add_readings((addr, "00010000", 5_000_000 + 1000 * h, first + 3600 * h) for h in range(hours + 5))
    store.charge_accounts("day-2025-06-10", [(CUST, 1000, 0, 0), (CUST2, 1000, 0, 0)], actor="test")
    store.close()
    (tmp_path / "tariffs.toml").write_text(TINY_LADDER)
    return path, tmp_path / "tariffs.toml"


def run_cli(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().out


def by_customer(out):
    return {a["customer"]: a for a in json.loads(out)["accounts"]}


def test_dry_run_shows_differences_and_apply_books_them_once(db, capsys):
    path, tariffs = db
    args = ("rate", "--from", "2025-06-10", "--to", "2025-06-11", "--db", str(path), "--tariffs", str(tariffs),
            "--actor", "ops")
    code, out = run_cli(capsys, *args, "--json")
    assert code == 0
    acc = by_customer(out)
    # 24 hours x 1000 Wh at 0.4883 yuan/kWh from rem 0: floor(24 * 4,883,000 / 100,000) fen
    assert acc[CUST]["rated_fen"] == 1171 and acc[CUST]["charged_fen"] == 1000
    assert acc[CUST]["difference_fen"] == 171 and acc[CUST]["intervals"] == 24
    # tiny ladder: 48 kWh before the window put the account above 30 kWh: every window Wh is tier 1.
    # rem at the window = (30 * 4,883,000 + 18 * 5,383,000) mod 100,000 = 84,000
    assert acc[CUST2]["rated_fen"] == (84_000 + 24 * 5_383_000) // 100_000
    assert acc[CUST3]["skipped"] and "not in the catalog" in acc[CUST3]["skipped"]
    store = open_store(path)
    assert store.get_account(CUST).balance_fen == -1000              # dry run: untouched
    store.close()

    code, out = run_cli(capsys, *args, "--apply", "--json")
    assert code == 0 and json.loads(out)["applied"] == 2
    store = open_store(path)
    assert store.get_account(CUST).balance_fen == -1171
    assert store.ledger(CUST, limit=1)[0].kind == "rerate"
    store.close()

    code, out = run_cli(capsys, *args, "--apply", "--json")              # repeat: nothing new
    assert json.loads(out)["applied"] == 0
    assert by_customer(out)[CUST]["difference_fen"] == 0
    store = open_store(path)
    assert store.get_account(CUST).balance_fen == -1171
    store.close()


def test_table_output_and_bad_usage(db, capsys):
    path, tariffs = db
    code, out = run_cli(capsys, "rate", "--from", "2025-06-10", "--to", "2025-06-11", "--db", str(path))
    assert code == 0 and "dry run" in out and CUST in out
    code, _ = run_cli(capsys, "rate", "--from", "2025-06-11", "--to", "2025-06-10", "--db", str(path))
    assert code == 2
    code, _ = run_cli(capsys, "rate", "--from", "June", "--to", "2025-06-10", "--db", str(path))
    assert code == 2
    code, _ = run_cli(capsys, "rate", "--from", "2025-06-10", "--to", "2025-06-11", "--db", str(path.parent / "x.db"))
    assert code == 2  # no such database: bad input (4 is an unknown meter)


def test_a_meter_exchange_and_a_backwards_reading_are_reported(tmp_path):
    store = open_store(tmp_path / "h.db", clock=lambda: DAY0)
    store.add_meter("000000000001", link="tcp://127.0.0.1:9", customer=CUST, actor="t", mode="remote")
    store.add_meter("000000000009", link="tcp://127.0.0.1:9", customer=CUST, actor="t", mode="remote")
    store.update_account(CUST, actor="t", tariff="beijing")
    store.add_readings([("000000000001", "00010000", 1000, DAY0), ("000000000001", "00010000", 2000, DAY0 + 3600),
                        ("000000000001", "00010000", 1500, DAY0 + 7200), ("000000000009", "00010000", 10, DAY0 + 10800),
                        ("000000000009", "00010000", 1010, DAY0 + 14400)])
    (row,) = rerate(store, load_catalog(), DAY0, DAY0 + 86400)
    text = " ".join(row.problems)
    assert "backwards" in text and "meter_replaced" in text
    # 1000 Wh before the exchange, 0 for the exchange interval (no record), 1000 Wh after
    assert row.rated_fen == (2000 * 4883) // 100_000
    store.close()


def test_tariff_file_errors_name_the_entry(tmp_path):
    bad = tmp_path / "t.toml"
    bad.write_text(TINY_LADDER.replace("thresholds_wh = [30000]", "thresholds_wh = [30000, 20000]"))
    with pytest.raises(TariffError, match="entry 1 \\(tiny\\).*strictly ascending"):
        load_catalog(bad)
    bad.write_text(TINY_LADDER.replace('prices = [', 'colour = "red"\nprices = ['))
    with pytest.raises(TariffError, match="unknown field"):
        load_catalog(bad)
    with pytest.raises(TariffError, match="does not exist"):
        load_catalog(tmp_path / "none.toml")


FLAT = """
[[tariff]]
name = "flat"
version = 1
effective = "2020-01-01"
prices = [4883, 4883, 4883, 4883]
"""


def test_rerating_starts_from_the_remainder_the_ledger_holds(tmp_path):
    from headend.costctl.cycle import run_cycle

    (tmp_path / "t.toml").write_text(FLAT)
    catalog = load_catalog(tmp_path / "t.toml")
    store = open_store(tmp_path / "h.db", clock=lambda: DAY0)
    store.add_meter("000000000001", link="tcp://127.0.0.1:9", customer=CUST, actor="t", mode="remote")
    store.update_account(CUST, actor="t", tariff="flat")
    # day 0: 20 Wh (0 fen, 97,660 sub-fen carried); day 1: 1000 Wh
    store.add_readings(("000000000001", "00010000", v, DAY0 + d * 86400) for d, v in enumerate((0, 20, 1020)))
    run_cycle(store, catalog, DAY0 + 86400 + 9 * 3600)
    run_cycle(store, catalog, DAY0 + 2 * 86400 + 9 * 3600)
    assert store.remainder_at(CUST, DAY0 + 86400) == 20 * 4883
    charged = -store.get_account(CUST).balance_fen
    assert charged == (20 + 1000) * 4883 // 100_000 == 49
    (row,) = rerate(store, catalog, DAY0 + 86400, DAY0 + 2 * 86400)
    # from the account's own remainder: the same 49 fen the cycle took (from 0 it would be 48)
    assert (row.rated_fen, row.charged_fen, row.difference_fen) == (49, 49, 0)
    assert row.problems == [] and 1000 * 4883 // 100_000 == 48
    # a window starting where no charge ended (a reading at noon): carried from 0, and said so
    store.add_readings([("000000000001", "00010000", 520, DAY0 + 86400 + 12 * 3600)])
    (row,) = rerate(store, catalog, DAY0 + 86400 + 12 * 3600, DAY0 + 2 * 86400)
    assert row.rated_fen == 500 * 4883 // 100_000
    assert any("no remainder" in p for p in row.problems)
    store.close()
