import json
from datetime import datetime, timedelta, timezone

import pytest

from headend.cli.main import main
from headend.costctl.config import costctl_config
from headend.store import open_store
from headend.tariff.catalog import load_catalog
from headend.tariff.model import FLAT, PEAK, VALLEY, meter_time

CST = timezone(timedelta(hours=8))
D0 = int(datetime(2025, 6, 2, tzinfo=CST).timestamp())

TARIFFS = """
[[tariff]]
name = "town"
version = 1
effective = "2024-01-01"
prices = [9000, 7000, 5000, 3000]
day_tables = [[["00:00", 3], ["08:00", 2], ["18:00", 1], ["22:00", 3]], [["00:00", 2]]]
zones = [[1, 1, 0]]
weekend_days = [0, 6]
weekend_table = 1
holidays = [["2025-10-01", 1]]
daily_fen = 12
[tariff.ladder]
thresholds_wh = [200000]
increments = [0, 500]
settlements = [[0, 1, 0]]

[[tariff]]
name = "town"
version = 2
effective = "2025-07-01T00:00"
prices = [9000, 7500, 5500, 3500]
day_tables = [[["00:00", 2]]]
daily_fen = 12
"""


def test_tariff_file_round_trip(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text(TARIFFS)
    book = load_catalog(f)["town"]
    v1, v2 = book.versions
    assert v2.effective == meter_time(2025, 7, 1) and v2.prices == (9000, 7500, 5500, 3500)
    assert v1.ladder.monthly and v1.daily_fen == 12
    assert v1.slot_at(meter_time(2025, 6, 3, 7, 59)) == VALLEY        # Tuesday
    assert v1.slot_at(meter_time(2025, 6, 3, 19)) == PEAK
    assert v1.slot_at(meter_time(2025, 6, 7, 19)) == FLAT              # Saturday: weekend table
    assert v1.slot_at(meter_time(2025, 10, 1, 19)) == FLAT             # holiday
    assert "beijing" in load_catalog(f)                                 # built-ins stay


def test_costctl_section_parsing(tmp_path):
    cc = costctl_config({"interval_s": 3600, "tariffs": "t.toml", "night": "21:30-07:00", "notice_period_h": 2,
                         "holidays": ["2025-10-01"], "no_trip_weekdays": [0], "trips": False}, tmp_path)
    assert cc.interval_s == 3600 and cc.tariffs == tmp_path / "t.toml"
    assert (cc.rules.night_start_min, cc.rules.night_end_min) == (21 * 60 + 30, 7 * 60)
    assert cc.rules.notice_period_s == 7200 and cc.rules.holidays == ((2025, 10, 1),) and not cc.rules.trips
    assert costctl_config({"snap_s": 300}).snap_s == 300
    served = costctl_config({"in_serve": True, "interval_s": 900, "collect_window_s": 120})
    assert served.in_serve and served.collect_window_s == 120 and costctl_config({}).in_serve
    assert not costctl_config({"in_serve": False}).in_serve
    assert costctl_config({"interval_s": 900}).collect_window_s == 300     # default, under half the interval
    with pytest.raises(ValueError, match="collect_window_s"):
        costctl_config({"interval_s": 900, "collect_window_s": 450})
    with pytest.raises(ValueError, match="snap_s"):
        costctl_config({"snap_s": 50_000})
    assert costctl_config({"night": ""}).rules.night_start_min == costctl_config({"night": ""}).rules.night_end_min
    for bad, words in (({"interval_s": 7000}, "divide a day"), ({"night": "8pm"}, "HH:MM-HH:MM"),
                       ({"holidays": ["1 Oct"]}, "YYYY-MM-DD"), ({"colour": 1}, "unknown key")):
        with pytest.raises(ValueError, match=words):
            costctl_config(bad)


def test_headend_costctl_run_uses_the_config(tmp_path, capsys):
    (tmp_path / "tariffs.toml").write_text(TARIFFS)
    cfg = tmp_path / "prepaid645.toml"
    db = tmp_path / "h.db"
    cfg.write_text(f'[store]\ndb = "{db}"\n\n[costctl]\ntariffs = "tariffs.toml"\ninterval_s = 86400\n')
    store = open_store(db)
    store.add_meter("000000000001", link="tcp://127.0.0.1:9", customer="000000000042", actor="t", mode="remote")
    store.update_account("000000000042", actor="t", tariff="town")
    store.credit("000000000042", 10_000, actor="t", idem_key="open")
    store.add_readings(("000000000001", "00010000", 10_000 * d, D0 + d * 86400) for d in range(3))
    store.close()
    code = main(["costctl", "run", "--config", str(cfg), "--at", str(D0 + 2 * 86400 + 3600), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["rated"] == 1
    # two days at 00:00 start in the valley (0.3000 yuan/kWh): 20 kWh -> 600 fen, plus 2 x 12 fen fixed
    # (this account's first batch pays its first day too)
    assert out["charged_fen"] == 20_000 * 3000 // 100_000 + 2 * 12
    with open_store(db) as s:      # the journal keeps the rating charge and the fixed charge apart
        rows = [(e.kind, e.amount_fen) for e in reversed(s.ledger("000000000042")) if e.kind != "payment"]
        assert rows == [("charge", -600), ("fixed_charge", -24)] and s.check_ledger() == []
    code = main(["costctl", "run", "--config", str(cfg), "--at", str(D0 + 2 * 86400 + 3600)])
    assert code == 0 and "0 rated" in capsys.readouterr().out
    cfg.write_text(f'[store]\ndb = "{db}"\n\n[costctl]\ninterval_s = 7\n')
    assert main(["costctl", "run", "--config", str(cfg)]) == 2
