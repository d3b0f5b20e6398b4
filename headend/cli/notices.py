"""`headend notices list|show|resend|send|flags`: the customer notices, their deliveries and receipts;
and the `headend serve` options that run the notice sender (``add_serve_args`` / ``serve_notice_options``)."""

from __future__ import annotations

import argparse
import time

from headend.cli import _common as c
from headend.cli.operators import acting_operator
from headend.notices.config import NoticeConfig, notices_config
from headend.notices.service import build_sender, notice_tick
from headend.notices.templates import TemplateError, load_templates
from headend.store import NOTIFICATION_STATUSES, Notification, Store


def register(sub: argparse._SubParsersAction) -> None:
    """Add `notices list/show/resend/send/flags`."""
    p = sub.add_parser("notices", help="customer notices: list, show, resend, send now, flagged accounts")
    nsub = p.add_subparsers(dest="notices_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), c.EXIT_USAGE)[1])

    ls = nsub.add_parser("list", help="notices, newest first, with their delivery state")
    ls.add_argument("--status", choices=NOTIFICATION_STATUSES, help="only notices in this delivery state")
    ls.add_argument("--customer", metavar="NUMBER", help="only this customer's notices")
    ls.add_argument("--kind", metavar="KIND", help="alarm1_notice, cut_notice, cut, outage_planned, ...")
    ls.add_argument("--provider-id", metavar="ID", help="the notice a provider's message id belongs to")
    ls.add_argument("--since", type=int, metavar="UNIX_S", help="created at or after")
    ls.add_argument("--until", type=int, metavar="UNIX_S", help="created before")
    ls.add_argument("--limit", type=int, default=50, metavar="N", help="newest N (default 50)")
    c.add_store_args(ls)
    c.add_json_arg(ls)
    ls.set_defaults(func=run_list)

    sh = nsub.add_parser("show", help="one notice: its text, every phone's delivery, provider ids, receipts")
    sh.add_argument("id", type=int, help="the notice's number (see `headend notices list`)")
    c.add_store_args(sh)
    c.add_json_arg(sh)
    sh.set_defaults(func=run_show)

    rs = nsub.add_parser("resend", help="queue a failed notice again (phones that got it are not sent to twice)")
    rs.add_argument("id", type=int, help="the notice's number (see `headend notices list`)")
    c.add_store_args(rs)
    c.add_json_arg(rs)
    rs.set_defaults(func=run_resend)

    sd = nsub.add_parser("send", help="send the due notices now, once (what `headend serve` does every few seconds)")
    sd.add_argument("--at", type=int, metavar="UNIX_S", help="as if it were this time (default: now)")
    c.add_store_args(sd)
    c.add_json_arg(sd)
    sd.set_defaults(func=run_send)

    fl = nsub.add_parser("flags", help="accounts flagged because a phone number cannot be used")
    fl.add_argument("--clear", metavar="CUSTOMER", help="clear a customer's flag (after fixing the phone)")
    c.add_store_args(fl)
    c.add_json_arg(fl)
    fl.set_defaults(func=run_flags)


def notice_config_from_args(args: argparse.Namespace) -> NoticeConfig:
    """The [notices] section, checked (templates too); CliError names what is wrong."""
    cfg = c.config_from_args(args)
    try:
        nc = notices_config(cfg.section("notices"), cfg.source.parent if cfg.source else None)
        load_templates(nc.templates, utc_offset_s=nc.policy.utc_offset_s)
    except (ValueError, TemplateError) as exc:
        raise c.CliError(str(exc)) from None
    return nc


def _state(store: Store, notices: list[Notification]) -> dict[int, str]:
    dels = store.notice_deliveries(n.id for n in notices)
    out = {}
    for n in notices:
        d = dels.get(n.id, [])
        out[n.id] = ", ".join(f"{x.phone} {x.state}{' ' + x.provider_id if x.provider_id else ''}" for x in d)
    return out


@c.cli_command
def run_list(args: argparse.Namespace) -> int:
    """Print notices matching the filters."""
    store = c.open_store_from_args(args, must_exist=True)
    rows = store.find_notices(status=args.status, customer=args.customer, kind=args.kind, since=args.since,
                              until=args.until, provider_id=args.provider_id, limit=args.limit)
    state = _state(store, rows)
    if args.json:
        c.print_json([dict(n.to_dict(), deliveries=state[n.id]) for n in rows])
        return c.EXIT_OK
    c.print_table(f"{len(rows)} notice(s)", ["id", "customer", "kind", "status", "tries", "created", "due",
                                             "deliveries (phone state provider-id)", "last error"],
                  [(n.id, n.customer, n.kind, n.status, n.attempts, c.fmt_time(n.created_at),
                    c.fmt_time(n.not_before) if n.status == "queued" else "", state[n.id], n.last_error or "")
                   for n in rows])
    return c.EXIT_OK


@c.cli_command
def run_show(args: argparse.Namespace) -> int:
    """Print one notice with every delivery."""
    store = c.open_store_from_args(args, must_exist=True)
    n = store.get_notification(args.id)
    dels = store.notice_deliveries([n.id])[n.id]
    if args.json:
        c.print_json(dict(n.to_dict(), deliveries=[d.to_dict() for d in dels]))
        return c.EXIT_OK
    print(f"notice {n.id}: {n.kind} for customer {n.customer}, {n.status} after {n.attempts} attempt(s)")
    print(f"  event key: {n.idem_key}")
    print(f"  created {c.fmt_time(n.created_at)}, due {c.fmt_time(n.not_before) or 'at once'}, "
          f"sent {c.fmt_time(n.sent_at) or '-'}, priority {n.priority}")
    print(f"  text: {n.sent_text or n.message}")
    if n.last_error:
        print(f"  last error: {n.last_error}")
    for d in dels:
        receipt = f", receipt {c.fmt_time(d.receipt_at)}" if d.receipt_at else ""
        print(f"  {d.phone}: {d.state} via {d.provider} id {d.provider_id or '-'}{receipt}"
              + (f" ({d.error})" if d.error else ""))
    return c.EXIT_OK


@c.cli_command
def run_resend(args: argparse.Namespace) -> int:
    """Queue a failed notice again."""
    store = c.open_store_from_args(args, must_exist=True)
    actor = acting_operator(store, args, "notices")
    n = store.resend_notice(args.id, actor=actor)
    if args.json:
        c.print_json(n.to_dict())
    else:
        print(f"notice {n.id} queued again; `headend serve` (or `headend notices send`) sends it")
    return c.EXIT_OK


@c.cli_command
def run_send(args: argparse.Namespace) -> int:
    """One sender round now."""
    nc = notice_config_from_args(args)
    store = c.open_store_from_args(args, must_exist=True)
    actor = acting_operator(store, args, "notices")
    rep = notice_tick(store, build_sender(store, nc), int(args.at) if args.at is not None else int(time.time()),
                      actor=actor)
    if args.json:
        c.print_json(rep.__dict__)
    else:
        print(f"{rep.claimed} due, {rep.sent} sent, {rep.failed} failed, {rep.retried} to retry, {rep.waiting} waiting"
              " (quiet hours or rate limit)")
        for cust in rep.flagged:
            print(f"  ! customer {cust}: a phone number is not a number; account flagged (`headend notices flags`)")
    return c.EXIT_OK


@c.cli_command
def run_flags(args: argparse.Namespace) -> int:
    """List (or clear) accounts flagged for an unusable phone."""
    store = c.open_store_from_args(args, must_exist=True)
    if args.clear:
        actor = acting_operator(store, args, "notices")
        if not store.clear_contact_flag(args.clear, actor=actor):
            raise c.CliError(f"customer {args.clear} is not flagged", c.EXIT_NOT_FOUND)
        print(f"customer {args.clear}: flag cleared")
        return c.EXIT_OK
    rows = store.contact_flags()
    if args.json:
        c.print_json([{"customer": r[0], "phone": r[1], "reason": r[2], "at": r[3]} for r in rows])
    else:
        c.print_table(f"{len(rows)} flagged account(s)", ["customer", "phone", "reason", "since"],
                      [(r[0], r[1], r[2], c.fmt_time(r[3])) for r in rows])
    return c.EXIT_OK


def add_serve_args(p: argparse.ArgumentParser) -> None:
    """Add serve's notice options (the rest comes from the [notices] config section)."""
    g = p.add_argument_group("customer notices")
    g.add_argument("--notices", action=argparse.BooleanOptionalAction, default=None,
                   help="send customer notices (default: on, to the gateway in [notices]; the log file"
                        " <db>.notices.log if none; [notices] in_serve = false turns it off)")


def serve_notice_options(args: argparse.Namespace) -> NoticeConfig | None:
    """The notice sender serve should run, or None; CliError names a bad setting or template."""
    nc = notice_config_from_args(args)
    on = args.notices if getattr(args, "notices", None) is not None else nc.in_serve
    return nc if on else None
