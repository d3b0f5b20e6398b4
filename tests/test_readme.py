"""The README's examples for the head-end and the simulator run as written.

Every ```sh block that follows an `<!-- example: tests/test_readme.py ... -->` line, and the blocks
that line says come after it, are run in order as one bash script (`set -e`: every command must
succeed) in an empty directory, with `headend` and `meter` from this checkout's .venv, its own
database and real simulated meters. Only the fixed ports are swapped for free ones, so a busy
machine's other tests cannot collide with them. A README that drifts from the code fails here.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARK = re.compile(r"<!-- example: tests/test_readme\.py runs this block(?: and the next (\w+))?")
COUNTS = {"one": 1, "two": 2, "three": 3, "four": 4}
PORTS = (8645, 8700)


def readme_examples(text: str) -> list[str]:
    """The marked shell blocks, in README order."""
    blocks: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = MARK.match(lines[i].strip())
        i += 1
        if not m:
            continue
        want = 1 + COUNTS.get(m.group(1) or "", 0)
        while want and i < len(lines):
            if lines[i].strip() == "```sh":
                end = lines.index("```", i + 1)
                blocks.append("\n".join(lines[i + 1:end]))
                i = end + 1
                want -= 1
            else:
                i += 1
    return blocks


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _free_range(n: int) -> int:
    for base in range(20000, 60000, 97):
        try:
            socks = []
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def test_the_readme_finds_its_examples() -> None:
    blocks = readme_examples((ROOT / "README.md").read_text())
    assert len(blocks) >= 4
    text = "\n".join(blocks)
    for must in ("headend keys init", "headend serve", "headend recharge", "meter run", "--speed 60", "meter fleet"):
        assert must in text


# The walkthrough starts a head-end, meters and a fleet; on a busy 2-core machine it has taken
# over 300 s (the suite's default timeout), so it gets its own, above communicate()'s.
@pytest.mark.timeout(1300)
def test_the_readme_examples_run_as_written(tmp_path: Path) -> None:
    script = "\n".join(readme_examples((ROOT / "README.md").read_text()))
    ports = dict(zip(PORTS, _free_ports(len(PORTS))))
    base = _free_range(20)
    for old, new in ports.items():
        script = re.sub(rf"\b{old}\b", str(new), script)
    script = re.sub(r"--port-base 9000\b", f"--port-base {base}", script)
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "readme.sh").write_text("set -e\nset -x\n" + script + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREPAID645_")}
    env.update(PATH=f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}", USER="readme", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(["bash", "readme.sh"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError("the README's examples did not finish:\n" + out[-6000:]) from None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything the script left running
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, out[-6000:]
    # what the walkthrough promises, in the words it prints
    assert "50.00 yuan credited" in out and "trip confirmed" in out and "direct close confirmed" in out
    assert "headend serve: stopped" in out and "meter 000000000001 stopped" in out
    assert '"address": "000000000001"' in out  # the control socket's status line
    assert out.count("fleet stopped") == 2  # both fleets stopped by the one SIGTERM each
