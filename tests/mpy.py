"""Run code under the real MicroPython unix port with the firmware importable."""

import subprocess
from pathlib import Path

from tools import mpy

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"


def run_micropython(code: str, heapsize: str = "256K", cwd: Path = FIRMWARE, timeout: float = 120,
                    path: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run `code` with firmware/ (and `path`) on sys.path; returns the completed process."""
    prelude = "import sys\n" + "".join(f"sys.path.insert(0, {p!r})\n" for p in [str(FIRMWARE), *(path or [])])
    return mpy.run(prelude + code, heapsize=heapsize, path=[FIRMWARE, *(path or []), ".frozen"], cwd=cwd,
                   timeout=timeout)
