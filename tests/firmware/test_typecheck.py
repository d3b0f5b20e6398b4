"""The firmware type-checks against the MicroPython stubs, not CPython's typeshed: a call that
machine.UART, Pin or time on a board does not have is an error here, before it is one on site.

firmware/pyrightconfig.json checks everything with the ESP32 stubs; firmware/pyrightconfig.rp2.json
checks the RP2 HAL with the RP2 stubs (the two ports' `machine` differ, so each gets its own small
venv under .venv/mpy-<board>, made here from requirements.lock on first use). pyright's PyPI
wrapper fetches node and pyright from npm on its first run."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
BIN = Path(sys.executable).parent


def _stubs(board: str) -> None:
    site = ROOT / ".venv" / f"mpy-{board}" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    with open(site.parent / ".lock", "w") as lock:  # test workers run in parallel
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ((site / "stdlib" / "VERSIONS").exists() and (site / "machine.pyi").exists()):
            _install(board, site)


def _install(board: str, site: Path) -> None:
    r = subprocess.run([str(BIN / "pip"), "install", "-q", "--no-deps", "--target", str(site), "-c",
                        str(ROOT / "requirements.lock"), "micropython-stdlib-stubs", f"micropython-{board}-stubs"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"installing the {board} stubs failed: {r.stderr}"


def _run_pyright(*args: str) -> subprocess.CompletedProcess:
    # one at a time across test workers: a first run installs node and pyright from npm
    with open(ROOT / ".venv" / ".pyright.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return subprocess.run([str(BIN / "pyright"), "--outputjson", *args], cwd=FIRMWARE, capture_output=True,
                              text=True, timeout=600)


def _pyright(config: str) -> list[dict]:
    r = _run_pyright("-p", config)
    try:
        report = json.loads(r.stdout)
    except ValueError:
        pytest.fail(f"pyright did not run: {r.stdout[-2000:]} {r.stderr[-2000:]}")
    return [d for d in report["generalDiagnostics"] if d["severity"] == "error"]


def _show(errors: list[dict]) -> str:
    return "\n".join(f"{Path(e['file']).relative_to(FIRMWARE)}:{e['range']['start']['line'] + 1}: {e['message']}"
                     for e in errors)


@pytest.fixture(scope="module")
def diagnostics() -> dict[str, list[dict]]:
    # one pyright run per board, in one test process: two first runs in parallel race on npm
    _stubs("esp32")
    _stubs("rp2")
    return {"esp32": _pyright("pyrightconfig.json"), "rp2": _pyright("pyrightconfig.rp2.json")}


def test_hal_and_main_typecheck_against_board_stubs(diagnostics: dict[str, list[dict]]) -> None:
    mine = [e for errs in diagnostics.values() for e in errs
            if not Path(e["file"]).is_relative_to(FIRMWARE / "meter")]
    assert not mine, _show(mine)


def test_meter_logic_typechecks_against_micropython_stubs(diagnostics: dict[str, list[dict]]) -> None:
    core = [e for e in diagnostics["esp32"] if Path(e["file"]).is_relative_to(FIRMWARE / "meter")]
    assert not core, _show(core)


def test_stubs_catch_a_call_boards_do_not_have(tmp_path: Path) -> None:
    # the check has teeth: a UART method only CPython-minded code would call is an error
    # (outside firmware/, so a parallel run over firmware/ never sees it)
    probe = tmp_path / "probe.py"
    probe.write_text("import machine\nmachine.UART(1).wait_tx_done(10)\nmachine.Pin(2).toggle_fast()\n")
    _stubs("esp32")
    r = _run_pyright("-p", "pyrightconfig.json", str(probe))
    errors = [d for d in json.loads(r.stdout)["generalDiagnostics"] if d["severity"] == "error"]
    assert [e["range"]["start"]["line"] for e in errors] == [1, 2]
