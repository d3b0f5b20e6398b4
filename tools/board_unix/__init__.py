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

from pathlib import Path

from tools.frozen_unix import make_unix

HERE = Path(__file__).resolve().parent


def build(src: Path, out: Path, c_modules: bool = True) -> Path:
    """Build the unix port of the MicroPython checkout src with the board's machine and esp32
    modules in C (c_modules; else the standard variant from the same checkout, built alike, to run
    the Python fakes under for a comparison of the modules alone), under out; the micropython
    binary's path. Raises RuntimeError with make's last lines when it fails."""
    variant = [f"VARIANT_DIR={HERE / 'board'}", f"USER_C_MODULES={HERE / 'modules'}"] if c_modules else \
        ["VARIANT=standard"]
    return make_unix(src, out, variant)
