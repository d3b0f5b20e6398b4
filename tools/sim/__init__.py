"""Desktop side of the simulated meter: live display, MicroPython launcher, test/demo helpers."""

from __future__ import annotations

from pathlib import Path

from prepaid645 import firmware_dir

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = firmware_dir()
