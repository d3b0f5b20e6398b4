"""A MicroPython unix port with the meter frozen in, so the heap of a frozen image is measured on
the same 64-bit port as the .mpy figures (tools/bench/bench_image.py), not estimated.

It freezes what firmware/manifest.py freezes for a board (the meter package and the board's hal
modules) and the test fakes of `machine` and `esp32`, which a board has in ROM, and builds the
unix port from a MicroPython checkout with its lib/micropython-lib submodule (`make -C ports/unix
submodules`). The frozen modules are the sources as they are at build time: build again after a
change (make rebuilds only the frozen code).

    python -m tools.frozen_unix /path/to/micropython [build-dir]   # prints the binary's path
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tools.meter_image import HAL_MODULES
from tools.sim import FIRMWARE, ROOT

FAKES = ROOT / "tests" / "firmware" / "fakes"
# what the unix port would otherwise build and this measurement does not need (nor have the
# sources for in a checkout without every submodule)
_OFF = ("MICROPY_PY_BTREE=0", "MICROPY_PY_SSL=0", "MICROPY_PY_FFI=0", "MICROPY_USE_READLINE=0")


def manifest(board: str = "esp32") -> str:
    """The freeze manifest: the board image's modules (-O3, as `meter build` compiles them) and
    the fake machine and esp32 modules."""
    hal = [*HAL_MODULES, f"{board}.py"]
    return (f"package('meter', base_path={str(FIRMWARE)!r}, opt=3)\n"
            f"package('hal', files={hal!r}, base_path={str(FIRMWARE)!r}, opt=3)\n"
            f"module('machine.py', base_path={str(FAKES)!r})\n"
            f"module('esp32.py', base_path={str(FAKES)!r})\n")


def build(src: Path, out: Path) -> Path:
    """Build the unix port of the MicroPython checkout src with the meter frozen in, under out;
    the micropython binary's path. Raises RuntimeError with make's last lines when it fails."""
    return make_unix(src, out, ["VARIANT=standard"], manifest())


def make_unix(src: Path, out: Path, variant: list[str], frozen: str = "") -> Path:
    """Build mpy-cross and the unix port of the MicroPython checkout src under out, with make's
    variant arguments and the freeze manifest whose text is frozen ("": nothing frozen); the
    micropython binary's path. Raises RuntimeError with make's last lines when it fails."""
    src = src.resolve()
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not (src / "lib" / "micropython-lib" / "README.md").exists():
        raise RuntimeError(f"{src} has no lib/micropython-lib: run `make -C {src}/ports/unix submodules` first")
    man: Path | str = ""
    if frozen:
        man = out / "manifest.py"
        if not man.exists() or man.read_text() != frozen:  # unchanged: make rebuilds nothing
            man.write_text(frozen)
    for cmd in (["make", "-C", str(src / "mpy-cross")],
                ["make", "-C", str(src / "ports" / "unix"), *variant, f"BUILD={out / 'build'}",
                 f"FROZEN_MANIFEST={man}", *_OFF]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n" + "\n".join((r.stdout + r.stderr).splitlines()[-15:]))
    return out / "build" / "micropython"


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    print(build(Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) == 3 else "build/frozen-unix")))
