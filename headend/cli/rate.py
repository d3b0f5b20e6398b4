"""`headend rate`: re-rate history after a tariff correction; touch balances only with --apply."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone

from headend.cli import _common as c
from headend.cli.operators import acting_operator
from headend.costctl.rerate import CHINA_UTC_OFFSET, apply_rerate, rerate
from headend.tariff.catalog import load_catalog
from headend.tariff.model import TariffError


def register(sub: argparse._SubParsersAction) -> None:
    """Add `rate`."""
    p = sub.add_parser("rate", help="re-rate remote accounts' readings for a period and show (or --apply) "
                                    "the difference to what was charged")
    p.add_argument("--from", dest="since", required=True, metavar="DATE", help="first day, YYYY-MM-DD[THH:MM] local")
    p.add_argument("--to", dest="until", required=True, metavar="DATE", help="end (exclusive), YYYY-MM-DD[THH:MM]")
    p.add_argument("--tariffs", metavar="TOML", help="tariff file (default: built-in tariffs only)")
    p.add_argument("--utc-offset", type=float, default=CHINA_UTC_OFFSET / 3600, metavar="HOURS",
                   help="local time of the tariffs and dates (default +8, China)")
    p.add_argument("--apply", action="store_true", help="book each difference in the ledger (once; repeat-safe)")
    c.add_store_args(p)
    c.add_json_arg(p)
    p.set_defaults(func=run_rate)


def _unix(text: str, offset_s: int) -> int:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise c.CliError(f"bad date {text!r}: write YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None
    return int(dt.replace(tzinfo=timezone(timedelta(seconds=offset_s))).timestamp())


@c.cli_command
def run_rate(args: argparse.Namespace) -> int:
    """Re-rate, print per-account differences, optionally apply them."""
    offset = int(round(args.utc_offset * 3600))
    since, until = _unix(args.since, offset), _unix(args.until, offset)
    if until <= since:
        raise c.CliError(f"--to {args.until} must be after --from {args.since}")
    try:
        catalog = load_catalog(args.tariffs)
    except TariffError as exc:
        raise c.CliError(str(exc)) from None
    store = c.open_store_from_args(args, must_exist=True)
    # before the re-rating, so that a refused --apply does not wait for it first
    actor = acting_operator(store, args, "correct") if args.apply else None
    rows = rerate(store, catalog, since, until, offset)
    applied = apply_rerate(store, rows, since, until, actor=actor) if actor is not None else 0
    if args.json:
        c.print_json({"from": since, "to": until, "applied": applied if args.apply else None,
                      "accounts": [r.to_dict() for r in rows]})
    else:
        c.print_table(f"re-rating {args.since} .. {args.until}" + (" (applied)" if args.apply else " (dry run)"),
                      ["customer", "tariff", "intervals", "charged", "rated", "difference", "notes"],
                      [(r.customer, r.tariff or "", r.intervals, c.fmt_fen(r.charged_fen), c.fmt_fen(r.rated_fen),
                        c.fmt_fen(r.difference_fen), r.skipped or "; ".join(r.problems)) for r in rows])
        if args.apply:
            print(f"{applied} account(s) corrected")
        elif any(r.difference_fen for r in rows):
            print("dry run: balances unchanged; add --apply to book the differences")
    return c.EXIT_OK
