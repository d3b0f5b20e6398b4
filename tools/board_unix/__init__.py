"""A MicroPython unix port whose `machine` and `esp32` modules are C, as in a board's firmware, so
the heap of a board's boot is measured on the 64-bit port without the Python fakes' classes,
functions and names (tests/firmware/fakes), which a board does not have on its heap.

The C modules (modules/board/, a USER_C_MODULES directory; a bench tool, not firmware) offer
what the meter's HAL uses (Pin, UART, RTC, WDT, disable_irq/enable_irq/reset, esp32.NVS reading
nvs.json as the fake does) and the bench's hooks: machine.bench_rx (bytes arriving on the line),
bench_sent/bench_take (what the meter sent), bench_level (an edge on a pin), bench_fed (the
watchdog). The variant (board/) is the unix port's standard variant with its own `machine`
module left out. Nothing of the meter is frozen: it loads from .mpy files as on a board.

    python -m tools.board_unix /path/to/micropython [build-dir]   # prints the binary's path
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tools.frozen_unix import _OFF

HERE = Path(__file__).resolve().parent


def build(src: Path, out: Path, c_modules: bool = True) -> Path:
    """Build the unix port of the MicroPython checkout src with the board's machine and esp32
    modules in C (c_modules; else the standard variant from the same checkout, built alike, to run
    the Python fakes under for a comparison of the modules alone), under out; the micropython
    binary's path. Raises RuntimeError with make's last lines when it fails."""
    src = src.resolve()
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not (src / "lib" / "micropython-lib" / "README.md").exists():
        raise RuntimeError(f"{src} has no lib/micropython-lib: run `make -C {src}/ports/unix submodules` first")
    variant = [f"VARIANT_DIR={HERE / 'board'}", f"USER_C_MODULES={HERE / 'modules'}"] if c_modules else \
        ["VARIANT=standard"]
    for cmd in (["make", "-C", str(src / "mpy-cross")],
                ["make", "-C", str(src / "ports" / "unix"), *variant, f"BUILD={out / 'build'}", "FROZEN_MANIFEST=",
                 *_OFF]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n" + "\n".join((r.stdout + r.stderr).splitlines()[-15:]))
    return out / "build" / "micropython"

