"""`make demo` (tools/demo.py) as a user runs it: a short run to the end (reports, charts, the
files it names), and Ctrl-C in the middle of the live view leaving no process behind."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tools.proc import alive, descendants
from tools.sim import ROOT


def _demo(tmp_path: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREPAID645_")}
    return subprocess.Popen([sys.executable, "-m", "tools.demo", "--dir", str(tmp_path / "demo"), "--meters", "60",
                             *args], cwd=ROOT, env={**env, "COLUMNS": "120"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_a_short_demo_runs_to_the_reports(tmp_path: Path) -> None:
    proc = _demo(tmp_path, "--duration", "6")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    for words in ("prepaid means", "payments by channel", "notices sent", "Collection rate",
                  "Everything the demo started is stopped", "demo finished", "headend.db"):
        assert words.lower() in out.lower(), words
    # the books cover the days the town's money fell on (the head-end's business days), whatever
    # the machine's time zone and time of day: a report of the wrong day printed "no data"
    books = out[out.index("The books"):]
    assert "Traceback" not in books and "no data for" not in books, books[:3000]
    assert (tmp_path / "demo" / "collection.png").exists() and (tmp_path / "demo" / "channels.png").exists()
    db = tmp_path / "demo" / "headend.db"
    con = sqlite3.connect(db)
    meters = con.execute("SELECT COUNT(*), COUNT(DISTINCT mode) FROM meters").fetchone()
    channels = con.execute("SELECT COUNT(DISTINCT channel), COUNT(*) FROM payments").fetchone()
    con.close()
    assert meters == (60, 2)
    assert channels[1] >= 60  # everyone's opening payment at least
    for log in ("town.log", "headend-serve.log", "payments.log"):
        assert (tmp_path / "demo" / log).exists() and str(tmp_path / "demo" / log) in out
    served = [line for line in (tmp_path / "demo" / "headend-serve.log").read_text().splitlines()
              if "operator console on" in line]
    if served:  # the head-end offers the console: the demo says where, and how to sign in
        url = served[0].split(" console on ", 1)[1].strip()
        assert f"the operator console: {url}" in out and "sign in as" in out


def test_ctrl_c_in_the_live_view_stops_everything(tmp_path: Path) -> None:
    proc = _demo(tmp_path, "--duration", "600")
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "Live for" in line:
            break
    else:
        raise AssertionError("the demo never reached its live view:\n" + "".join(seen))
    time.sleep(2)  # inside the live view
    started = descendants(proc.pid)
    assert len(started) >= 3, started  # the town, headend serve, the customers
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-3000:]
    assert "Everything the demo started is stopped" in out
    left = [p for p in started if alive(p)]
    assert not left, f"still running after Ctrl-C: {left}"
