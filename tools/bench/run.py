"""Run every benchmark module (tools/bench/bench_*.py) and write bench-results.json.

Each module defines ``run(report)``.  It calls ``report(name, value, unit, baseline=None,
pairs=None)`` once per figure; where a baseline measured in the same run is given, the ratio is
printed and stored, because absolute numbers on a shared machine are noise and only same-run
ratios compare.  A ratio measured interleaved (``tools.bench.interleave``) is passed as
``pairs``: the row then keeps the median of the pair ratios as ``ratio`` and its spread as
``ratio_low``/``ratio_high`` over ``pairs`` pairs; without it the ratio is value/baseline.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path
from typing import Callable

import tools.bench as bench_pkg
from tools.bench.interleave import Interleaved


def reporter(results: list[dict], emit: Callable[[str], None] = print) -> Callable[..., None]:
    """The ``report`` function benchmarks call: appends one row per figure and prints it."""

    def report(name: str, value: float, unit: str, baseline: float | None = None,
               pairs: Interleaved | None = None) -> None:
        row: dict = {"name": name, "value": value, "unit": unit}
        line = f"  {name:<58} {value:>14,.1f} {unit}"
        if pairs is not None:
            row.update(baseline=baseline, ratio=pairs.ratio, ratio_low=pairs.low, ratio_high=pairs.high,
                       pairs=pairs.rounds)
            line += (f"   ({pairs.describe()}" + (f"; baseline {baseline:,.1f}" if baseline is not None else "")
                     + ")")
        elif baseline is not None:
            row["baseline"] = baseline
            row["ratio"] = value / baseline if baseline else None
            line += f"   ({row['ratio']:.2f}x baseline {baseline:,.1f})" if baseline else ""
        results.append(row)
        emit(line)

    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("only", nargs="*", help="run only modules whose name contains one of these")
    parser.add_argument("--out", default="bench-results.json", help="where to write the figures")
    args = parser.parse_args(argv)

    results: list[dict] = []
    report = reporter(results, lambda line: print(line, flush=True))

    names = sorted(m.name for m in pkgutil.iter_modules(bench_pkg.__path__) if m.name.startswith("bench_"))
    if args.only:
        names = [n for n in names if any(o in n for o in args.only)]
    failed = []
    for name in names:
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            importlib.import_module(f"tools.bench.{name}").run(report)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            failed.append(name)
            print(f"  !! {name} failed: {exc!r}", file=sys.stderr)
        print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {len(results)} figures to {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
