"""Start-up of the operator's command line: `headend --help` against a bare `python -c pass`.

Both are fresh processes of the same interpreter, run interleaved (pass, help, pass, help ...), so
the figure is what the head-end adds to Python's own start-up. `headend --help` lists the commands
from headend/cli/_index.py and imports none of their modules (numba alone takes seconds).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tools.bench.interleave import interleaved

HEADEND = Path(sys.executable).parent / "headend"


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def run(report) -> None:  # noqa: ANN001
    help_cmd = (str(HEADEND),) if HEADEND.exists() else (sys.executable, "-m", "headend")
    # rates are runs per second: the ratio pass/help is help's wall time over python's
    r = interleaved(lambda: _run(sys.executable, "-c", "pass"), lambda: _run(*help_cmd, "--help"), rounds=9)
    report("cli: `headend --help` wall time vs `python -c pass` (fresh processes, same interpreter)",
           1e3 / r.b, "ms", 1e3 / r.a, pairs=r)
