"""`headend decode`: explain DL/T 645 frames given as hex (arguments, or one frame a line on stdin)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Iterable, TextIO

from headend.cli.main import EXIT_OK, EXIT_USAGE
from protocol.annotate import annotate, describe, parse_hex
from protocol.errors import ProtocolError

_TOKEN = re.compile(r"(?:0[xX])?[0-9A-Fa-f]+")
_MIN_FRAME = 12


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `decode` sub-command."""
    p = subparsers.add_parser(
        "decode",
        help="explain DL/T 645 frames given as hex",
        description=(
            "Print each frame annotated: address, direction, function, DI, decoded values with units, "
            "ERR/SERR flags and the checksum verdict. Give frames as arguments ('FE FE 68 ... 16', one "
            "frame per argument; single-byte arguments are joined into one frame) or, with no argument "
            "or '-', one frame per line on stdin (capture-log lines: the longest run of hex bytes is used; "
            "blank lines and lines starting with # are skipped). Exit 2 if any frame is invalid, or sound "
            "but with a payload or value that does not decode."
        ),
    )
    p.add_argument("frames", nargs="*", metavar="HEX", help="a frame as hex bytes")
    p.add_argument("--json", action="store_true", help="one JSON object per frame instead of text")
    p.set_defaults(func=run_decode)


def _from_args(args: list[str]) -> list[str]:
    if len(args) > 1 and all(len(a.strip()) <= 2 for a in args):
        return [" ".join(args)]
    return args


def _from_log_line(line: str) -> str:
    """The hex part of a capture-log line ('10:22:51 RX: 68 12 ...' -> '68 12 ...')."""
    tokens = line.split()
    best: list[str] = []
    run: list[str] = []
    for tok in tokens + [""]:
        if tok and _TOKEN.fullmatch(tok) and len(tok.removeprefix("0x").removeprefix("0X")) % 2 == 0:
            run.append(tok)
            continue
        if sum(len(t) for t in run) > sum(len(t) for t in best):
            best = run
        run = []
    if len(best) != len(tokens) and sum(len(t) // 2 for t in best) >= _MIN_FRAME:
        return " ".join(best)
    return line


def _from_stream(stream: TextIO) -> Iterable[tuple[int, str]]:
    for number, line in enumerate(stream, start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            yield number, _from_log_line(text)


def run_decode(args: argparse.Namespace) -> int:
    """Decode every frame; 0 if all were sound, 2 if any was not (its reason is printed)."""
    if args.frames and args.frames != ["-"]:
        items = list(enumerate(_from_args(args.frames), start=1))
        where = "argument"
    else:
        items = list(_from_stream(sys.stdin))
        where = "line"
        if not items:
            print("headend decode: no frames on stdin; pass hex as an argument or one frame per line", file=sys.stderr)
            return EXIT_USAGE
    bad = 0
    for k, (number, text) in enumerate(items):
        try:
            raw = parse_hex(text)
        except ProtocolError as exc:
            bad += 1
            if args.json:
                print(json.dumps({where: number, "input": text, "valid": False, "reason": exc.reason, "error": str(exc)}))
            else:
                print(f"{where} {number}: {text}\n  INVALID ({exc.reason}): {exc}")
            continue
        desc = describe(raw)
        problem = desc.error or (desc.rejected[0] if desc.rejected else None)
        if problem is not None:
            bad += 1
        if args.json:
            print(
                json.dumps(
                    {
                        where: number,
                        "frame": raw.hex(" ").upper(),
                        "valid": problem is None,
                        "reason": problem.reason if problem else None,
                        "error": str(problem) if problem else None,
                        "fields": dict(desc.lines) if desc.frame else {},
                    },
                    ensure_ascii=False,
                )
            )
        else:
            if k:
                print()
            print(annotate(raw))
    if bad:
        print(f"headend decode: {bad} of {len(items)} frame(s) invalid", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK
