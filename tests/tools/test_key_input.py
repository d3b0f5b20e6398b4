"""Keys never travel on a command line: `meter run/build/fleet` and `python -m tools.fleet` take
them from a file, the environment or a prompt, refuse the old argv flags, and a running simulated
meter's /proc/PID/cmdline holds no key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools.sim import ROOT
from tools.sim.launch import start_meter

ADDR = "000000000001"
KEY = "8f1e2d3c4b5a69788796a5b4c3d2e1f0"
MASTER = "a1" * 32


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREPAID645_")}
    return {**env, **extra}


def _run(*argv: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=_clean_env(**env), stdin=subprocess.DEVNULL)


def test_a_running_meter_shows_no_key_in_its_command_line(tmp_path: Path) -> None:
    with start_meter(ADDR, KEY, str(tmp_path / "m.state")) as m:
        cmdline = Path(f"/proc/{m.proc.pid}/cmdline").read_bytes()
        ps = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(m.proc.pid)], capture_output=True, text=True).stdout
    assert b"tools.meter_cli" in cmdline and ADDR.encode() in cmdline  # it is the right process
    assert KEY.encode() not in cmdline.lower() and KEY not in ps.lower()


@pytest.mark.parametrize("argv, flag", [
    (("tools.meter_cli", "run", "--address", ADDR, "--key-hex", KEY), "--key-hex"),
    (("tools.meter_cli", "run", "--address", ADDR, "--master-key-hex", MASTER), "--master-key-hex"),
    (("tools.meter_cli", "build", "--board", "rp2", "--address", ADDR, "--key-hex", KEY, "--out", "x"), "--key-hex"),
    (("tools.meter_cli", "fleet", "--count", "2", "--master-key-hex", MASTER), "--master-key-hex"),
    (("tools.fleet", "--count", "2", "--master-hex", MASTER), "--master-hex"),
])
def test_keys_on_the_command_line_are_refused_saying_how_instead(argv, flag) -> None:
    r = _run(*argv)
    assert r.returncode == 2, r.stderr
    assert f"{flag} is not accepted" in r.stderr and "/proc/PID/cmdline" in r.stderr
    assert "PREPAID645_" in r.stderr or "FILE" in r.stderr


def test_meter_key_from_a_file_and_from_the_environment_give_the_same_image(tmp_path: Path) -> None:
    kf = tmp_path / "m1.key"
    kf.write_text(KEY + "\n")
    kf.chmod(0o600)
    a = _run("tools.meter_cli", "build", "--board", "rp2", "--address", ADDR, "--key-file", str(kf),
             "--out", str(tmp_path / "a"))
    b = _run("tools.meter_cli", "build", "--board", "rp2", "--address", ADDR, "--out", str(tmp_path / "b"),
             PREPAID645_METER_KEY=KEY)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    keys = {(tmp_path / d / "meter.key").read_text() for d in "ab"}  # the key apart from config.json
    assert keys == {KEY}


def test_two_keys_at_once_are_refused(tmp_path: Path) -> None:
    kf = tmp_path / "m1.key"
    kf.write_text(KEY)
    r = _run("tools.meter_cli", "build", "--board", "rp2", "--address", ADDR, "--out", str(tmp_path / "x"),
             PREPAID645_METER_KEY=KEY, PREPAID645_MASTER_KEY=MASTER)
    assert r.returncode == 2 and "exactly one way" in r.stderr
    assert not (tmp_path / "x").exists()
