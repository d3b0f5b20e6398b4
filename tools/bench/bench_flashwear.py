"""Flash wear of one meter over simulated household days, on real littlefs.

The meter runs under the MicroPython unix port on a littlefs filesystem (vfs.VfsLfs2) over a
RAM block device of 4096-byte blocks sized as a Pico's 1.4 MB filesystem, mounted as the rp2
port mounts it (progsize 256) and as the esp32 port does (littlefs defaults); the image's files
take their blocks first. A day is 10 kWh of a residential profile in 1 Wh pulses, two remote
trips each closed again, and a recharge a week (tools/bench/wear_day.py). Figures:

* block erases and KB programmed per day, and how many distinct blocks took them;
* flash life in years: free blocks x 100,000 erase cycles / erases per day (littlefs spreads
  its writes over the free blocks), and the most-worn block's share of a week;
* the longest main-loop pass (MeterApp.poll: a record is written in one pass and committed in
  the next, so a pass erases at most one block) on the unix port, and the most erases and bytes
  programmed in one pass, turned into a worst pass on real flash at the W25Q16JV's typical 45 ms
  per 4 KB sector erase and 0.4 ms per 256-byte page (aim: no stall over 50 ms; writing and
  committing in one pass took two erases whenever littlefs compacted its metadata, ~92 ms).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Callable

from tools import mpy

ROOT = Path(__file__).resolve().parents[2]
Report = Callable[..., None]
CYCLES = 100_000          # erase cycles a NOR flash block is rated for
BUDGET_YEARS = 15
ERASE_MS = 45.0           # W25Q16JV typical sector (4 KB) erase
PAGE_MS = 0.4             # W25Q16JV typical page (256 B) program
IMAGE_BYTES = 100 * 1024  # the meter image's files on the board (meter build, .mpy)
PROGSIZE = {"rp2": 256, "esp32": 32}


def simulate(days: int = 7, step_s: int = 5, erase_limit: int = 10**9, port: str = "rp2") -> dict:
    """Run wear_day.py for `days` simulated days; its figures as a dict. It stops once
    erase_limit erases are counted ("stopped": true)."""
    env = {"MICROPYPATH": f"{ROOT / 'firmware'}:{ROOT / 'tools' / 'bench'}", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([mpy.micropython(), "-X", "heapsize=4M", str(ROOT / "tools/bench/wear_day.py"), str(days),
                        str(step_s), str(erase_limit), str(PROGSIZE[port]), str(IMAGE_BYTES)],
                       capture_output=True, text=True, timeout=900, env=env)
    for line in r.stdout.splitlines():
        if line.startswith("wear "):
            return json.loads(line[5:])
    raise RuntimeError(f"wear_day.py gave no figures: {r.stderr[-2000:]}")


def stall_ms(w: dict) -> float:
    """The longest main-loop pass on real NOR flash, modelled from its erases and bytes programmed."""
    return w["max_step_erases"] * ERASE_MS + w["max_step_prog"] / 256 * PAGE_MS


def budget_erases_per_day(free_blocks: int, years: int = BUDGET_YEARS) -> float:
    """Erases a day that the free blocks take for `years` at CYCLES each, spread evenly."""
    return free_blocks * CYCLES / (years * 365)


def run(report: Report) -> None:
    for port in ("rp2", "esp32"):
        w = simulate(7, 5, port=port)
        days = w["seconds"] / 86400
        per_day = w["erases"] / days
        report(f"flash wear ({port} mount): kWh metered per simulated day", w["wh"] / 1000 / days, "kWh")
        report(f"flash wear ({port} mount): state records saved per day", w["saves"] / days, "records")
        report(f"flash wear ({port} mount): block erases per day (budget {budget_erases_per_day(w['free_blocks']):,.0f} "
               f"for {BUDGET_YEARS} years)", per_day, "erases")
        report(f"flash wear ({port} mount): KB programmed per day", w["prog"] / 1024 / days, "KB")
        report(f"flash wear ({port} mount): distinct blocks erased in {days:.0f} days (of {w['free_blocks']} free)",
               w["blocks_erased"], "blocks")
        life = w["free_blocks"] * CYCLES / per_day / 365 if per_day else float("inf")
        report(f"flash wear ({port} mount): flash life at {CYCLES:,} cycles, {w['free_blocks']} free blocks", life,
               "years")
        report(f"flash wear ({port} mount): erases of the most-worn block in {days:.0f} days", w["most_worn"], "erases")
        report(f"flash wear ({port} mount): longest main-loop pass, MicroPython x86 unix port (RAM flash)",
               w["max_step_us"] / 1000, "ms")
        report(f"flash wear ({port} mount): most erases in one main-loop pass", w["max_step_erases"], "erases")
        report(f"flash wear ({port} mount): worst main-loop pass on real NOR flash (45 ms/erase, 0.4 ms/page; "
               f"aim <= 50)", stall_ms(w), "ms")


if __name__ == "__main__":
    def _print(name, value, unit, baseline=None):
        print(f"{name:<90} {value:>12,.1f} {unit}")

    run(_print)
