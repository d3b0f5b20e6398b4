"""The load-and-fault run at a small size (tools/loadrun.py): a storm of payments through the API
while `headend serve` is SIGKILLed twice, a bus answers noise and meters lose power; money is
conserved to the fen and no recharge is lost or applied twice; and a SIGTERM to the run alone
stops everything it started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tools.loadrun import ROOT, run_load
from tools.proc import alive, descendants


def test_conservation_and_no_lost_or_double_command_under_faults(tmp_path: Path) -> None:
    out = run_load(240, seed=5, workdir=tmp_path / "run", rounds=1, window_s=0.3, kills=2, garbage_s=5,
                   power_loss_share=0.02, concurrency=32, log=lambda s: None)
    assert out["faults"]["kills"] == 2 and out["faults"]["power_loss"] == 4 and out["faults"]["garbage_bus"] >= 32
    assert out["town_stats"]["restarts"] == 4
    assert out["payments_confirmed"] == out["payments"] == 240 and not out["payment_refused"]
    assert out["posted_fen"] == out["expected_fen"] == out["on_local_meters_fen"] + out["remote_balances_fen"]
    assert out["conservation_ok"] and out["local_balances_fen"] == out["on_local_meters_fen"]
    assert out["meters_wrong_count"] == 0, out["meters_wrong"]
    assert out["commands_not_confirmed"] == 0 and out["commands_confirmed"] > 0
    assert set(out["payment_states"]) <= {"confirmed_on_meter", "credited"}
    assert all(v < 1024 for v in out["peak_mb"].values())
    # the CPU the meters, the head-end and the API clients used during the storm, each measured
    assert all(v > 0 for v in out["storm_cpu_s"].values()) and 0 < out["meters_cpu_share"] < 1


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_sigterm_to_the_run_alone_stops_everything_it_started(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "tools.loadrun", "--meters", "100", "--rounds", "1", "--kills", "0",
                             "--dir", str(tmp_path / "run")], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # each line as it is said
    assert proc.stdout is not None
    town: set[int] = set()
    started: set[int] = set()
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("cost control:"):
                break
        else:
            raise AssertionError("the run never reached its storm:\n" + "".join(seen))
        # the town held still, so the storm cannot end before headend serve is seen running; only
        # the town and what it started: the run may already be starting serve, and a child stopped
        # between its fork and its exec would hold the run (and serve) still as well
        town = {p for p in descendants(proc.pid) if "tools.town" in _cmdline(p)}
        town |= {d for p in town for d in descendants(p)}
        assert any("tools.town" in _cmdline(p) for p in town), [_cmdline(p) for p in descendants(proc.pid)]
        for p in town:
            os.kill(p, signal.SIGSTOP)
        deadline = time.monotonic() + 120
        while not any(" serve " in _cmdline(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.1)
            started = descendants(proc.pid)
        assert any(" serve " in _cmdline(p) for p in started), [_cmdline(p) for p in started]
        proc.send_signal(signal.SIGTERM)  # the run alone, as `kill PID` or a supervisor does: not its group
        for p in town:
            os.kill(p, signal.SIGCONT)
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 128 + signal.SIGTERM, "".join(seen) + out[-3000:]
        assert "stopped by SIGTERM; everything it started is stopped" in out
        left = [(p, _cmdline(p)) for p in started | town if alive(p)]
        assert not left, f"still running after SIGTERM: {left}"
    finally:
        for p in started | town:
            if alive(p):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
