"""A town for scenario tests: `python -m tools.town` (a real process, real TCP buses) registered
into a real head-end database, with `headend serve` beside it (tests.headend.headend_proc)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from tests.headend.headend_proc import HeadEnd
from tools.sim import ROOT
from tools.town import control as town_control

CONFIG = """
[costctl]
interval_s = 900
collect_window_s = 240
notice_period_h = 0
night = ""
holidays = []
no_trip_weekdays = []

[notices]
quiet = ""
language = "en"
interval_s = 1
watch_every_s = 1
"""


class Town:
    """``with Town(tmp, count=..., speed=..., start=...) as town:`` a registered town and its head-end."""

    def __init__(self, tmp: Path, *, count: int = 40, seed: int = 3, speed: int = 600, start: str,
                 extra: tuple[str, ...] = ()) -> None:
        self.he = HeadEnd(tmp)
        cfg = tmp / "prepaid645.toml"
        cfg.write_text(f'[store]\ndb = "{self.he.db}"\n' + CONFIG)
        self.he.env["PREPAID645_CONFIG"] = str(cfg)
        self.args = ("--count", str(count), "--seed", str(seed), "--speed", str(speed), "--start", start,
                     "--register", str(self.he.db), *extra)
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}
        self.err = tmp / "town.err"

    def __enter__(self) -> "Town":
        self.proc = subprocess.Popen([sys.executable, "-m", "tools.town", *self.args], cwd=ROOT,
                                     env={**os.environ, **self.he.env}, stdout=subprocess.PIPE,
                                     stderr=self.err.open("w"), text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the town did not start: " + self.err.read_text())
        self.info = json.loads(line)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.he.stop_serve()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()

    def control(self, command: str) -> dict[str, Any]:
        host, port = self.info["control"].removeprefix("tcp://").rsplit(":", 1)
        got = town_control.ask((host, int(port)), command)
        assert got["ok"], got
        return got

    def status(self, address: str) -> dict[str, Any]:
        return self.control(f"status {address}")["status"]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0, poll: float = 0.2) -> Any:
    """Poll until check() is truthy (a generous wait, never a timed assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")
