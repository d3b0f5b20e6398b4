"""What the tariff kernel's hot loops compile to: instructions per reading and vector width.

The machine code is read from numba's own assembly (``inspect_asm``), which numba gives only
for a fresh compile, so the inspection runs in a child process with an empty ``NUMBA_CACHE_DIR``::

    .venv/bin/python -m tools.bench.kernel_asm

For each kernel (and the streaming read the bench compares it with) the innermost loops that
read the energy are found: their instructions, how many readings one pass covers (int32 loads
widened to int64 lanes, or scalar loads), and so instructions per reading, with the vector
registers used.  Printed as one JSON object; ``tools/bench/bench_tariff.py`` reports it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _blocks(asm: str) -> list[tuple[str, list[str]]]:
    blocks: list[tuple[str, list[str]]] = []
    name, body = "", []
    for line in asm.splitlines():
        if line and not line.startswith(("\t", " ")) and line.endswith(":"):
            blocks.append((name, body))
            name, body = line[:-1], []
        elif line.startswith("\t") and not line.startswith("\t."):
            body.append(line.strip())
    blocks.append((name, body))
    return blocks


def hot_loops(asm: str) -> list[dict]:
    """Self-looping blocks that read the energy: instructions, readings per pass, vector registers."""
    out = []
    for name, body in _blocks(asm):
        jumps_back = any(i.split()[0].startswith("j") and i.endswith(name) for i in body)
        if not name or not jumps_back:
            continue
        loop = body[: next(k for k, i in enumerate(body) if i.endswith(name)) + 1]
        # one reading is one int32 energy load: widened (vpmovsxdq, 4 or 8 lanes) or scalar (movslq)
        lanes = {"ymm": 4, "zmm": 8, "xmm": 2}
        readings = 0
        for i in loop:
            if i.startswith("vpmovsxdq") and "(" in i:
                readings += lanes[i.rsplit("%", 1)[1][:3]]
            elif i.startswith("movslq") and "(" in i:
                readings += 1
        if not readings:
            continue
        width = "zmm (512-bit)" if "zmm" in " ".join(loop) else "ymm (256-bit)" if "ymm" in " ".join(loop) else "scalar"
        out.append({"block": name, "instructions": len(loop), "readings": readings, "vector": width,
                    "per_reading": len(loop) / readings if readings else None})
    return out


def _inspect() -> dict:
    import numpy as np

    from headend.tariff.kernel import _rate_rows, _rate_rows_per_interval, rate
    from tools.bench.bench_tariff import _stream_sum, day_batch

    energy, args = day_batch(64)
    rate(energy, *args)
    rate(energy, *args, per_interval=True)
    _stream_sum(energy, np.empty(64, dtype=np.int64))
    return {k.py_func.__name__: hot_loops(next(iter(k.inspect_asm().values())))
            for k in (_rate_rows, _rate_rows_per_interval, _stream_sum)}


def inspect_in_subprocess(timeout: float = 300) -> dict:
    """Run this module with a fresh numba cache (so the assembly is available); its JSON result."""
    with tempfile.TemporaryDirectory() as cache:
        got = subprocess.run([sys.executable, "-m", "tools.bench.kernel_asm"], cwd=ROOT, capture_output=True,
                             text=True, timeout=timeout, check=True,
                             env={**os.environ, "NUMBA_CACHE_DIR": cache, _CHILD: "1"})
    return json.loads(got.stdout)


_CHILD = "PREPAID645_KERNEL_ASM_CHILD"

if __name__ == "__main__":
    # run directly, the kernels would come from numba's cache, which keeps no assembly: the
    # inspection runs in a child with a cache folder of its own
    print(json.dumps(_inspect() if os.environ.get(_CHILD) else inspect_in_subprocess()))
