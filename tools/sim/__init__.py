"""Desktop side of the simulated meter: live display, MicroPython launcher, test/demo helpers."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
