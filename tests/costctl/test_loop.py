"""The cost-control loop's grid and clock, and how `headend serve` options turn it on."""

import argparse
import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from headend.cli import _common as c
from headend.cli.costctl import add_serve_args, serve_loop_options
from headend.costctl.loop import LoopClock, next_boundary

CST = timezone(timedelta(hours=8))


def test_boundaries_follow_local_midnight():
    t = datetime(2026, 3, 4, 9, 50, 7, tzinfo=CST).timestamp()
    assert next_boundary(t, 86400, 8 * 3600) == datetime(2026, 3, 5, tzinfo=CST).timestamp()
    assert next_boundary(t, 900, 8 * 3600) == datetime(2026, 3, 4, 10, 0, tzinfo=CST).timestamp()
    on = datetime(2026, 3, 4, 10, 0, tzinfo=CST).timestamp()
    assert next_boundary(on, 3600, 8 * 3600) == on + 3600          # strictly after


def test_an_accelerated_clock_sleeps_in_its_own_time():
    async def go():
        clock = LoopClock(1_000_000, speed=600)
        stop = asyncio.Event()
        assert await clock.sleep_until(1_000_000 + 60, stop)      # 60 s at 600x: 0.1 s
        assert clock.now() >= 1_000_060
        stop.set()
        assert not await clock.sleep_until(2_000_000, stop)
    asyncio.run(go())
    with pytest.raises(ValueError, match="speed"):
        LoopClock(0, speed=0)


def _args(tmp_path, config, *argv):
    (tmp_path / "p.toml").write_text(f'[store]\ndb = "{tmp_path / "h.db"}"\n' + config)
    p = argparse.ArgumentParser()
    c.add_store_args(p)
    add_serve_args(p)
    return p.parse_args(["--config", str(tmp_path / "p.toml"), *argv])


def test_serve_runs_cost_control_unless_turned_off(tmp_path):
    assert serve_loop_options(_args(tmp_path, "[costctl]\nin_serve = false\n"), "costctl") is None
    assert serve_loop_options(_args(tmp_path, "", "--no-costctl"), "costctl") is None
    on = serve_loop_options(_args(tmp_path, ""), "costctl")
    assert on is not None and on.config.interval_s == 86400 and on.start is None and "beijing" in on.catalog
    opts = serve_loop_options(_args(tmp_path, "", "--costctl", "--costctl-interval", "900", "--costctl-clock",
                                    "2026-03-04T09:50", "--costctl-speed", "600"), "costctl")
    assert opts.config.interval_s == 900 and opts.speed == 600
    assert opts.start == datetime(2026, 3, 4, 9, 50, tzinfo=CST).timestamp()
    assert serve_loop_options(_args(tmp_path, "[costctl]\nin_serve = true\n", "--no-costctl"), "costctl") is None
    for bad, words in ((("--costctl", "--costctl-interval", "7000"), "divide a day"),
                       (("--costctl", "--costctl-clock", "soon"), "--clock"),
                       (("--costctl", "--costctl-speed", "0"), "speed")):
        with pytest.raises(c.CliError, match=words):
            serve_loop_options(_args(tmp_path, "", *bad), "costctl")


def test_the_meters_clock_starts_where_clock_says_in_naive_local_time(tmp_path):
    from headend.cli.costctl import meter_clock

    assert meter_clock(_args(tmp_path, "")) is None                       # the wall clock
    at = meter_clock(_args(tmp_path, "", "--costctl-clock", "2026-03-04T09:50", "--costctl-speed", "600"))
    assert timedelta(0) <= at() - datetime(2026, 3, 4, 9, 50) < timedelta(hours=1)
    at = meter_clock(_args(tmp_path, "", "--costctl-clock", "1772589000"))
    assert timedelta(0) <= at() - datetime.fromtimestamp(1772589000) < timedelta(minutes=1)
    with pytest.raises(c.CliError, match="--clock 'soon'"):
        meter_clock(_args(tmp_path, "", "--costctl-clock", "soon"))
