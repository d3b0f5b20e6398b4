"""`headend report NAME`: collection rate, channels, speed, accounts and operations.

Tables for people (money in yuan, rates in %), `--csv` and `--json` for programs (money in
integer fen), `--chart FILE.png|.svg` for the manager's slide. The figures are defined in
headend/reports/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from headend.cli import _common as c


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `report` command."""
    from headend.reports import REPORTS

    p = sub.add_parser("report", help="collection rate, channels, speed, accounts and operations reports",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(REPORTS), help="which report")
    p.add_argument("--from", dest="first", metavar="YYYY-MM-DD",
                   help="first business day (default: 30 days before --to)")
    p.add_argument("--to", dest="last", metavar="YYYY-MM-DD", help="last business day, included (default: today)")
    p.add_argument("--by", choices=("day", "week", "month"), default="day", help="period of each row (default day)")
    p.add_argument("--district", metavar="D", help="only accounts of this district")
    p.add_argument("--segment", metavar="S", help="only accounts of this customer segment")
    p.add_argument("--channel", metavar="C", help="only payments through this channel id")
    p.add_argument("--group", choices=("district", "segment"), help="collection: one row per district or segment "
                                                                    "and period")
    p.add_argument("--stale-days", type=c.number(int, 1, 3650), default=3, metavar="N",
                   help="operations: list meters not read for N days (default 3)")
    p.add_argument("--chart", metavar="FILE", help="also draw the report's chart into FILE (.png or .svg)")
    c.add_store_args(p)
    c.add_json_arg(p, csv=True)
    p.set_defaults(func=report)


def _cell(col: str, v: Any) -> str:
    if v is None:
        return ""
    if col.endswith("_fen") or col in ("0-30", "31-60", "61-90", ">90"):
        return c.fmt_fen(int(v))
    if col in ("rate", "current_rate", "prepaid_share", "share"):
        return f"{100 * v:.2f}%"
    if col == "rate_change":
        return f"{100 * v:+.2f} pt"
    return str(v)


def _head(col: str) -> str:
    return (col[:-4] + " (yuan)" if col.endswith("_fen") else col).replace("_", " ")


def _print(rep: Any) -> None:
    c.print_table(rep.title, [_head(k) for k in rep.columns],
                  [[_cell(k, r.get(k)) for k in rep.columns] for r in rep.rows])
    if rep.totals:
        print("totals: " + ", ".join(f"{_head(k)} {_cell(k, v) if not isinstance(v, dict) else v}"
                                     for k, v in rep.totals.items()))
    for note in rep.notes:
        print(f"  {note}")
    for sec in rep.sections.values():
        print()
        _print(sec)


@c.cli_command
def report(args: argparse.Namespace) -> int:
    """Run one report and print it."""
    from headend.reports import Query, ReportError, run_report

    with c.open_store_from_args(args, must_exist=True) as store:
        today = dt.datetime.fromtimestamp(store.now(), dt.timezone.utc) + dt.timedelta(seconds=store.utc_offset_s)
        last = args.last or today.date().isoformat()
        first = args.first
        if first is None:
            try:
                first = (dt.date.fromisoformat(last) - dt.timedelta(days=30)).isoformat()
            except ValueError:
                first = last  # the bad --to is reported by the report's own check
        q = Query(first=first, last=last, by=args.by, district=args.district, segment=args.segment,
                  channel=args.channel, group=args.group, stale_days=args.stale_days)
        try:
            rep = run_report(store, args.name, q)
        except ReportError as exc:
            raise c.CliError(str(exc)) from None
    if args.chart:
        from headend.reports.charts import draw

        path = draw(rep, Path(args.chart))
        print(f"chart written to {path}", file=sys.stderr)
    if args.json:
        c.print_json(rep.to_dict())
    elif args.csv:
        c.print_list(args, rep.title, rep.columns, [[r.get(k) for k in rep.columns] for r in rep.rows], rep.rows)
    else:
        if not rep.rows:
            print(f"no data for {args.name} from {q.first} to {q.last}")
        _print(rep)
    return c.EXIT_OK
