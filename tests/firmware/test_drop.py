"""meter.drop: a job's module is let go on MicroPython (a board's heap needs its code back) and
kept under CPython, where the simulated meters would otherwise import it again for every command."""

import sys

from tests.mpy import FIRMWARE, run_micropython

if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))

from meter import drop  # noqa: E402 - firmware/ must be on sys.path first


def test_cpython_keeps_a_jobs_module_loaded():
    from meter import protected

    drop("meter.protected")
    from meter import protected as again

    assert sys.modules["meter.protected"] is protected and again is protected


def test_micropython_lets_a_jobs_module_go():
    proc = run_micropython(
        "from meter import drop\n"
        "from meter import protected\n"
        "drop('meter.protected')\n"
        "import meter\n"
        "print('LOADED' if 'meter.protected' in sys.modules or hasattr(meter, 'protected') else 'GONE')\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == ["GONE"]
