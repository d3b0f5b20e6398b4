"""`headend outage plan|change|cancel|list|announce`: planned outages and the notices they send."""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from headend.cli import _common as c
from headend.cli.notices import notice_config_from_args
from headend.cli.operators import acting_operator
from headend.grid import outages
from headend.store import Outage


def register(sub: argparse._SubParsersAction) -> None:
    """Add the outage commands."""
    p = sub.add_parser("outage", help="planned outages: plan, change, cancel, list, the hotline announcement")
    osub = p.add_subparsers(dest="outage_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), c.EXIT_USAGE)[1])

    pl = osub.add_parser("plan", help="record a planned outage and notify every affected customer ahead of time")
    where = pl.add_mutually_exclusive_group(required=True)
    where.add_argument("--feeder", metavar="F", help="a feeder (see `headend grid show`)")
    where.add_argument("--area", metavar="A", help="a transformer area")
    pl.add_argument("--from", dest="start", required=True, metavar="TIME", help="YYYY-MM-DDTHH:MM (local) or Unix s")
    pl.add_argument("--to", dest="end", required=True, metavar="TIME", help="when supply returns: YYYY-MM-DDTHH:MM (local) or Unix s")
    pl.add_argument("--reason", required=True, help="told to customers and on the hotline")
    _common(pl)
    pl.set_defaults(func=run_plan)

    ch = osub.add_parser("change", help="move or re-word a planned outage; customers already told get an update")
    ch.add_argument("id", type=int, help="the outage's number (see `headend outage list`)")
    ch.add_argument("--from", dest="start", metavar="TIME", help="the new start: YYYY-MM-DDTHH:MM (local) or Unix s")
    ch.add_argument("--to", dest="end", metavar="TIME", help="the new end: YYYY-MM-DDTHH:MM (local) or Unix s")
    ch.add_argument("--reason", help="the new reason, told to customers and on the hotline")
    _common(ch)
    ch.set_defaults(func=run_change)

    ca = osub.add_parser("cancel", help="cancel a planned outage; customers already told hear it is off")
    ca.add_argument("id", type=int, help="the outage's number (see `headend outage list`)")
    _common(ca)
    ca.set_defaults(func=run_cancel)

    ls = osub.add_parser("list", help="outages by start time")
    ls.add_argument("--active", action="store_true", help="only those in progress now (or --at)")
    _common(ls)
    ls.set_defaults(func=run_list)

    an = osub.add_parser("announce", help="write the hotline announcement for each outage in progress")
    an.add_argument("--out", metavar="FILE", help="write here (default: stdout)")
    an.add_argument("--lang", choices=("zh", "en"), action="append", help="languages (default: both)")
    _common(an)
    an.set_defaults(func=run_announce)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--at", type=int, metavar="UNIX_S", help="as if it were this time (default: now)")
    c.add_store_args(p)
    c.add_json_arg(p)


def _now(args: argparse.Namespace) -> int:
    return int(args.at) if getattr(args, "at", None) is not None else int(time.time())


def parse_time(text: str, utc_offset_s: int) -> int:
    """Unix seconds from "YYYY-MM-DDTHH:MM" (local, the [notices] utc_offset_h) or from Unix seconds."""
    t = text.strip()
    if t.isdigit():
        return int(t)
    try:
        d = datetime.fromisoformat(t)
    except ValueError:
        raise c.CliError(f"bad time {text!r}: write YYYY-MM-DDTHH:MM (local) or Unix seconds") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone(timedelta(seconds=utc_offset_s)))
    return int(d.timestamp())


def _describe(o: Outage, offset: int) -> str:
    tz = timezone(timedelta(seconds=offset))
    f = "%Y-%m-%d %H:%M"
    return (f"outage {o.id} ({o.status}, v{o.version}) on {o.scope}: {datetime.fromtimestamp(o.start_at, tz):{f}}"
            f" to {datetime.fromtimestamp(o.end_at, tz):{f}}, {o.reason}")


@c.cli_command
def run_plan(args: argparse.Namespace) -> int:
    """Plan an outage."""
    nc = notice_config_from_args(args)
    off = nc.policy.utc_offset_s
    start_at, end_at = parse_time(args.start, off), parse_time(args.end, off)
    store = c.open_store_from_args(args, must_exist=True)
    actor = acting_operator(store, args, "outages")
    o, n = outages.plan_outage(store, feeder=args.feeder, area=args.area, start_at=start_at, end_at=end_at,
                               reason=args.reason, actor=actor, now=_now(args), policy=nc.outages)
    customers = store.outage_customers(o.id)
    important = sum(1 for _c, i in customers if i)
    if args.json:
        c.print_json(dict(o.to_dict(), customers=len(customers), important=important, notices=n))
    else:
        print(_describe(o, off))
        print(f"  {len(customers)} customer(s) to notify ({important} important first, "
              f"{nc.outages.important_lead_s // 3600} h ahead; others {nc.outages.lead_s // 3600} h ahead)")
    return c.EXIT_OK


@c.cli_command
def run_change(args: argparse.Namespace) -> int:
    """Change a planned outage."""
    nc = notice_config_from_args(args)
    off = nc.policy.utc_offset_s
    start_at = parse_time(args.start, off) if args.start else None
    end_at = parse_time(args.end, off) if args.end else None
    store = c.open_store_from_args(args, must_exist=True)
    actor = acting_operator(store, args, "outages")
    o, n = outages.change_outage(store, args.id, actor=actor, now=_now(args), start_at=start_at, end_at=end_at,
                                 reason=args.reason, policy=nc.outages)
    if args.json:
        c.print_json(dict(o.to_dict(), notices=n))
    else:
        print(_describe(o, off))
        print(f"  {n} notice(s) queued (updates for customers already told, the new plan for the others)")
    return c.EXIT_OK


@c.cli_command
def run_cancel(args: argparse.Namespace) -> int:
    """Cancel a planned outage."""
    nc = notice_config_from_args(args)
    store = c.open_store_from_args(args, must_exist=True)
    actor = acting_operator(store, args, "outages")
    o, n = outages.cancel_outage(store, args.id, actor=actor, now=_now(args), policy=nc.outages)
    if args.json:
        c.print_json(dict(o.to_dict(), notices=n))
    else:
        print(_describe(o, nc.policy.utc_offset_s))
        print(f"  {n} cancellation notice(s) queued for customers already told")
    return c.EXIT_OK


@c.cli_command
def run_list(args: argparse.Namespace) -> int:
    """List outages."""
    nc = notice_config_from_args(args)
    store = c.open_store_from_args(args, must_exist=True)
    rows = store.list_outages(active_at=_now(args) if args.active else None)
    if args.json:
        c.print_json([o.to_dict() for o in rows])
    else:
        for o in rows:
            print(_describe(o, nc.policy.utc_offset_s))
        if not rows:
            print("no outages")
    return c.EXIT_OK


@c.cli_command
def run_announce(args: argparse.Namespace) -> int:
    """Write the hotline text of every outage in progress."""
    nc = notice_config_from_args(args)
    from headend.notices.templates import load_templates

    store = c.open_store_from_args(args, must_exist=True)
    catalog = load_templates(nc.templates, utc_offset_s=nc.policy.utc_offset_s)
    got = outages.announce(store, _now(args), catalog, tuple(args.lang or ("zh", "en")))
    if args.json:
        text = None
        c.print_json([{"outage": o.id, **texts} for o, texts in got])
    else:
        text = "".join(f"[outage {o.id}]\n" + "".join(f"{t}\n" for t in texts.values()) + "\n" for o, texts in got)
        if not got:
            text = ""
    if text is not None:
        if args.out:
            Path(args.out).write_text(text, encoding="utf-8")
            print(f"{len(got)} announcement(s) written to {args.out}")
        else:
            print(text or "no outage in progress", end="" if text else "\n")
    return c.EXIT_OK
