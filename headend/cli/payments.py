"""`headend payment list/show/reverse`: payments as operators follow them."""

from __future__ import annotations

import argparse

from headend.cli import _common as c
from headend.cli.operators import acting_operator
from headend.payments import get_payment, reverse_payment
from headend.store import PAYMENT_STATES, Payment, check_customer


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `payment` command group."""
    pay = sub.add_parser("payment", help="payments through every channel: list, show, reverse")
    psub = pay.add_subparsers(dest="payment_command", metavar="ACTION")
    pay.set_defaults(func=lambda a: (pay.print_help(), c.EXIT_USAGE)[1])

    p = psub.add_parser("list", help="payments, newest first")
    p.add_argument("--customer", metavar="N", help="only this customer's payments")
    p.add_argument("--channel", metavar="ID", help="only this channel's payments")
    p.add_argument("--state", choices=PAYMENT_STATES, help="only payments in this state")
    p.add_argument("--day", metavar="YYYY-MM-DD", help="business day")
    p.add_argument("--limit", type=int, default=100, help="at most this many payments (default 100)")
    _common(p)
    p.set_defaults(func=payment_list)

    p = psub.add_parser("show", help="one payment: state with its times, and its journal rows")
    p.add_argument("id", type=int, metavar="ID", help="payment id")
    _common(p)
    p.set_defaults(func=payment_show)

    p = psub.add_parser("reverse", help="void a payment the same day, before its money reached the meter")
    p.add_argument("id", type=int, metavar="ID", help="payment id")
    p.add_argument("--reason", required=True, help="why it is reversed (kept in the audit log)")
    _common(p)
    p.set_defaults(func=payment_reverse)


def _common(p: argparse.ArgumentParser) -> None:
    c.add_store_args(p)
    c.add_json_arg(p)


def _row(p: Payment) -> tuple:
    return (p.id, p.day, p.channel_id, p.txn_id, p.customer, p.meter or "", c.fmt_fen(p.amount_fen),
            c.fmt_fen(p.fee_fen), p.state, c.fmt_time(p.confirmed_at or p.credited_at or p.reversed_at), p.actor)


_COLS = ["id", "day", "channel", "txn", "customer", "meter", "amount", "fee", "state", "settled", "by"]


@c.cli_command
def payment_list(args: argparse.Namespace) -> int:
    """List payments."""
    with c.open_store_from_args(args, must_exist=True) as store:
        pays = store.list_payments(customer=check_customer(args.customer) if args.customer else None,
                                   channel=args.channel, state=args.state, day=args.day, limit=args.limit)
    if args.json:
        c.print_json([p.to_dict() for p in pays])
    else:
        c.print_table(f"{len(pays)} payment(s)", _COLS, [_row(p) for p in pays])
    return c.EXIT_OK


@c.cli_command
def payment_show(args: argparse.Namespace) -> int:
    """Show a payment and its journal rows."""
    with c.open_store_from_args(args, must_exist=True) as store:
        p = get_payment(store, args.id)
        rows = store.journal(payment_id=p.id)
    if args.json:
        c.print_json(dict(p.to_dict(), journal=[e.to_dict() for e in rows]))
        return c.EXIT_OK
    c.print_table(f"payment {p.id}", ["field", "value"], [
        ("channel", p.channel_id), ("transaction id", p.txn_id), ("customer", p.customer), ("meter", p.meter or ""),
        ("amount", c.fmt_fen(p.amount_fen)), ("fee", c.fmt_fen(p.fee_fen)), ("state", p.state),
        ("paid at (channel)", c.fmt_time(p.paid_at)), ("accepted", c.fmt_time(p.accepted_at)),
        ("sent to meter", c.fmt_time(p.sent_at)), ("confirmed on meter", c.fmt_time(p.confirmed_at)),
        ("credited", c.fmt_time(p.credited_at)), ("reversed", c.fmt_time(p.reversed_at)),
        ("recharge command", p.command_id or ""), ("business day", p.day), ("by", p.actor),
        ("tender", "" if not p.tender else ", ".join(f"{k} {v}" for k, v in p.tender.items())),
        ("note", p.note or "")])
    c.print_table("journal", ["id", "kind", "amount", "to meter", "balance after", "by"],
                  [(e.id, e.kind, c.fmt_fen(e.amount_fen), c.fmt_fen(e.meter_fen) if e.meter_fen else "",
                    c.fmt_fen(e.balance_after), e.actor) for e in rows])
    return c.EXIT_OK


@c.cli_command
def payment_reverse(args: argparse.Namespace) -> int:
    """Reverse a payment (an operator, any channel)."""
    with c.open_store_from_args(args, must_exist=True) as store:
        actor = acting_operator(store, args, "correct")
        p = reverse_payment(store, args.id, channel_id=None, actor=actor, reason=args.reason,
                            rules=c.trip_rules_from_args(args))
    if args.json:
        c.print_json(p.to_dict())
    else:
        print(f"payment {p.id} reversed ({c.fmt_fen(p.amount_fen)} yuan back off customer {p.customer}'s account)")
    return c.EXIT_OK
