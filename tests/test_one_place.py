"""One obvious place for each concept: what used to be written several times (README, "Where things
live") has one home, and a new copy of its telltale line fails here naming the file. Where the
`duplicates` command is installed (it is not part of the project), its report over those homes
must name no pair of them either."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("micropython", "mpy-cross", "mpremote")

# concept: (telltale pattern, the files allowed to hold it, the folders it is looked for in)
ONE_PLACE = {
    "finding the MicroPython programs": (
        rf'(parent\s*/\s*|which\()("({"|".join(TOOLS)})"|name\b)', {"tools/mpy.py"}, ("headend", "tools", "tests", "prepaid645")),
    "the broadcast address": (r"^BROADCAST\s*=", {"protocol/frame.py"}, ("headend", "protocol", "tools", "tests")),
    "status word 3's DI": (r"^STATUS3\s*=", {"protocol/di.py"}, ("headend", "protocol", "tools", "tests")),
    # the vector generator stays independent of protocol/ on purpose; the protocol bench's baseline
    # is the hand-written codec ours is measured against
    "an address to wire bytes": (r"fromhex\([^)]*addr[^)]*\)\[::-1\]",
                                 {"protocol/frame.py", "protocol/vectors/make_vectors.py", "tools/bench/bench_protocol.py"},
                                 ("headend", "protocol", "tools")),
    "the retry back-off formula": (r"\*\*\s*max\(", {"headend/link/session.py"}, ("headend", "tools")),
    "fen written as yuan": (r"cents:02d|%\s*100:02d|/\s*100:,?\.2f|def _?yuan\(", {"headend/money.py"},
                            ("headend", "tools")),
    "where the firmware sources are": (r'/\s*"firmware"', {"prepaid645/__init__.py"},
                                       ("headend", "prepaid645", "tools/sim", "tools/fleet.py", "tools/meter_cli.py",
                                        "tools/meter_image.py")),
    "reading bank files and statements": (r"tomllib\.loads|csv\.reader\(|UnicodeDecodeError|\.splitlines\(",
                                          {"headend/flatfile.py"}, ("headend/bank", "headend/reconcile", "headend/flatfile.py")),
    # a module's logger is named by its module (getLogger(__name__)), never by a string written by hand
    "a logger's name": (r'getLogger\(["\']', set(), ("headend", "protocol", "tools", "prepaid645")),
}


def _sources(where: tuple[str, ...]) -> list[Path]:
    out = []
    for w in where:
        p = ROOT / w
        out += [p] if p.is_file() else [f for f in p.rglob("*.py") if "__pycache__" not in f.parts]
    return out


@pytest.mark.parametrize("concept", ONE_PLACE)
def test_each_concept_is_written_once(concept: str) -> None:
    pattern, homes, where = ONE_PLACE[concept]
    rx = re.compile(pattern, re.M)
    found = {str(f.relative_to(ROOT)) for f in _sources(where) if rx.search(f.read_text(encoding="utf-8"))}
    assert found - homes == set(), f"{concept} is written again outside {sorted(homes)}"
    assert found & homes or not homes, f"the pattern for {concept} no longer finds its home: update this test"


HOMES = sorted({h for _, homes, _ in ONE_PLACE.values() for h in homes} | {
    "headend/keys.py", "headend/link/security.py", "headend/transports/frontend.py", "headend/commands/worker.py",
    "headend/commands/meter_client.py", "headend/commands/collect.py", "headend/commands/params.py",
    "headend/cli/_common.py", "headend/bank/layout.py", "headend/bank/returns.py", "headend/reconcile/statement.py",
    "headend/notices/sender.py", "headend/costctl/cycle.py", "protocol/deframer.py", "tools/fleet.py",
    "tools/meter_image.py", "tools/sim/runner.py", "tools/sim/display.py", "tests/mpy.py", "firmware/hal/sim.py",
    "firmware/hal/board.py", "firmware/meter/app.py", "firmware/meter/codec.py"})


@pytest.mark.skipif(shutil.which("duplicates") is None, reason="the duplicates command is not installed here")
def test_duplicates_names_no_pair_of_the_homes() -> None:
    r = subprocess.run(["duplicates", "--most", "200", "--seconds", "300"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert "incomplete:" not in r.stdout, r.stdout[-2000:]
    pairs = re.findall(r"^D\d+ (\S+?):\d+-\d+ ~ (\S+?):\d+-\d+(.*)$", r.stdout, re.M)
    # shape-only rows here are constructors storing their arguments; the same lines are what counts
    same = [(a, b) for a, b, rest in pairs if a in HOMES and b in HOMES and "shape" not in rest]
    assert same == [], same
