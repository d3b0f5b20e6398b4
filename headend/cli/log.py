"""`headend commands` (and `commands cancel|retry ID`), `headend events METER`, `headend audit`:
what was asked, what happened, who did it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from headend.cli import _common as c
from headend.cli.operators import acting_operator
from headend.store import COMMAND_STATUSES, TransitionError, check_address, check_customer


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `commands`, `events` and `audit` commands."""
    p = sub.add_parser("commands", help="the command outbox with each command's status; cancel or retry one")
    p.add_argument("--status", choices=COMMAND_STATUSES, help="only commands in this status")
    p.add_argument("--meter", metavar="METER", help="only commands for this meter")
    p.add_argument("--customer", metavar="CUSTOMER", help="only commands for this customer's meters")
    p.add_argument("--kind", help="only commands of this kind (recharge, trip, ...)")
    p.add_argument("--limit", type=c.number(int, 1), default=50, metavar="N", help="newest N (default 50)")
    c.add_store_args(p)
    c.add_json_arg(p, csv=True)
    p.set_defaults(func=commands)
    act = p.add_subparsers(dest="commands_action", metavar="ACTION")
    q = act.add_parser("cancel", help="take a queued command out of the queue (audited; never a recharge that "
                                      "may have reached its meter)")
    q.add_argument("id", type=int, metavar="ID", help="command id (see `headend commands`)")
    c.add_store_args(q)
    c.add_json_arg(q)
    q.set_defaults(func=_act("cancel"))
    q = act.add_parser("retry", help="put a failed, rejected or cancelled command back in the queue, or try a "
                                     "waiting or unresolved one now (audited)")
    q.add_argument("id", type=int, metavar="ID", help="command id (see `headend commands`)")
    c.add_store_args(q)
    c.add_json_arg(q)
    q.set_defaults(func=_act("retry"))

    p = sub.add_parser("events", help="events at one meter, newest first")
    p.add_argument("meter", metavar="METER", help="12-digit meter address")
    p.add_argument("--kind", help="only events of this kind")
    p.add_argument("--limit", type=c.number(int, 1), default=50, metavar="N", help="newest N (default 50)")
    c.add_store_args(p)
    c.add_json_arg(p, csv=True)
    p.set_defaults(func=events)

    p = sub.add_parser("audit", help="the audit log: who did what, when")
    p.add_argument("--by", dest="by", metavar="ACTOR", help="only actions by this actor")
    p.add_argument("--target", metavar="ID", help="only actions on this meter or customer")
    p.add_argument("--action", help="only this action (meter.add, command.trip, ...)")
    p.add_argument("--limit", type=c.number(int, 1), default=50, metavar="N", help="newest N (default 50)")
    c.add_store_args(p)
    c.add_json_arg(p, csv=True)
    p.set_defaults(func=audit)


def _brief(obj: object, width: int = 60) -> str:
    if obj is None:
        return ""
    text = obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


@c.cli_command
def commands(args: argparse.Namespace) -> int:
    """List outbox entries with their status."""
    meter = customer = None
    try:
        if args.meter:
            meter = check_address(args.meter)
        if args.customer:
            customer = check_customer(args.customer)
    except ValueError as exc:
        raise c.CliError(str(exc)) from None
    with c.open_store_from_args(args, must_exist=True) as store:
        if meter:
            store.get_meter(meter)  # unknown meter: exit 4, not an empty list
        if customer:
            store.get_account(customer)
        rows = store.list_commands(status=args.status, meter=meter, kind=args.kind, customer=customer,
                                   limit=args.limit)
        counts = store.count_commands()
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    # one line per command at any width: the detail column gives way; --json has everything
    c.print_list(
        args,
        f"commands ({summary})",
        ["id", "meter", "kind", "status", "tries", "by", "updated", "detail"],
        [(r.id, r.meter, r.kind, r.status, r.attempts, r.actor, _short_time(r.updated_at), _detail(r)) for r in rows],
        rows,
        squeeze="detail",
    )
    if counts.get("unresolved"):
        c.err(f"{counts['unresolved']} recharge(s) unresolved: they may have reached their meters; `headend serve` "
              "settles each from the meter's purchase count (see `headend commands --status unresolved`)")
    return c.EXIT_OK


def _short_time(ts: int | None) -> str:
    return c.fmt_time(ts)[5:]  # MM-DD HH:MM:SS: the year is rarely news in an outbox


def _detail(r: Any) -> str:
    """What the operator wants to know first: the error, the reply, else what was asked."""
    if r.last_error and r.status != "confirmed":
        return r.last_error
    if r.reply:
        return _brief(r.reply, 200)
    return _brief(r.params, 200)


def _act(action: str):  # noqa: ANN202 - a command function, like the others here
    """`headend commands cancel|retry ID`."""

    @c.cli_command
    def run(args: argparse.Namespace) -> int:
        with c.open_store_from_args(args, must_exist=True) as store:
            try:
                cmd = getattr(store, action)(args.id, actor=acting_operator(store, args, "meters"))
            except TransitionError as exc:
                raise c.CliError(str(exc), c.EXIT_FAILED) from None
        if args.json:
            c.print_json(cmd.to_dict())
        else:
            print(f"command {cmd.id} ({cmd.kind} on {cmd.meter}) is now {cmd.status}"
                  + ("; `headend serve` carries it out" if cmd.status in ("queued", "unresolved") else ""))
        return c.EXIT_OK

    return run


@c.cli_command
def events(args: argparse.Namespace) -> int:
    """List one meter's events."""
    try:
        meter = check_address(args.meter)
    except ValueError as exc:
        raise c.CliError(str(exc)) from None
    with c.open_store_from_args(args, must_exist=True) as store:
        store.get_meter(meter)
        rows = store.events(meter, limit=args.limit, kind=args.kind)
    c.print_list(args, f"events at meter {meter}", ["when", "kind", "source", "detail"],
                 [(c.fmt_time(e.at), e.kind, e.source, _brief(e.detail, 80)) for e in rows], rows)
    return c.EXIT_OK


@c.cli_command
def audit(args: argparse.Namespace) -> int:
    """List the audit log, newest first."""
    with c.open_store_from_args(args, must_exist=True) as store:
        rows = store.audit_entries(actor=args.by, target=args.target, action=args.action, limit=args.limit)
    c.print_list(args, "audit log", ["id", "when", "who", "action", "on", "detail"],
                 [(r.id, c.fmt_time(r.at), r.actor, r.action, r.target or "", _brief(r.detail, 80)) for r in rows], rows)
    return c.EXIT_OK
