"""The cost-control scenarios of logic_scenarios.py, under CPython and inside the real
MicroPython binary (the firmware runs on both)."""

import pytest

from tests.firmware import logic_scenarios
from tests.mpy import FIRMWARE, ROOT, run_micropython
from tools import mpy

HERE = ROOT / "tests" / "firmware"


@pytest.mark.parametrize("scenario", logic_scenarios.SCENARIOS, ids=lambda s: s.__name__)
def test_scenario_cpython(scenario):
    scenario()


def test_scenarios_micropython():
    proc = run_micropython("import logic_scenarios\nlogic_scenarios.run_all()\n", heapsize="256K",
                           path=[str(HERE)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    passed = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("PASS ")]
    assert passed == [s.__name__ for s in logic_scenarios.SCENARIOS]


def test_firmware_logic_compiles_with_mpy_cross(tmp_path):
    for name in ("tariff", "wallet", "relay"):
        out = tmp_path / (name + ".mpy")
        proc = mpy.cross_compile(FIRMWARE / "meter" / (name + ".py"), out, check=False)
        assert proc.returncode == 0, proc.stderr
        assert out.stat().st_size > 0
