"""`headend ledger check/show/adjust/refund` and `headend close-day DAY`: the journal.

`ledger check` proves every account's balance equals the sum of its journal rows and that money
on its way to meters belongs to payments still on their way (exit 1 if not).
"""

from __future__ import annotations

import argparse

from headend.cli import _common as c
from headend.cli.operators import acting_operator
from headend.store import check_customer


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `ledger` command group and `close-day`."""
    led = sub.add_parser("ledger", help="the money journal: check it, show it, correct an account")
    lsub = led.add_subparsers(dest="ledger_command", metavar="ACTION")
    led.set_defaults(func=lambda a: (led.print_help(), c.EXIT_USAGE)[1])

    p = lsub.add_parser("check", help="prove journal sums == cached balances (exit 1 and the accounts if not)")
    _common(p)
    p.set_defaults(func=ledger_check)

    p = lsub.add_parser("show", help="journal rows of a day, a customer or a payment")
    p.add_argument("--day", metavar="YYYY-MM-DD", help="only rows of this business day")
    p.add_argument("--customer", metavar="N", help="only rows of this customer")
    p.add_argument("--payment", type=int, metavar="ID", help="only rows of this payment")
    p.add_argument("--limit", type=int, default=200, help="at most this many rows (default 200)")
    _common(p)
    p.set_defaults(func=ledger_show)

    for kind, text in (("adjust", "correct an account by +/- YUAN (operator and reason recorded)"),
                       ("refund", "pay YUAN back to a customer (the account goes down; reason recorded)")):
        p = lsub.add_parser(kind, help=text)
        p.add_argument("customer", metavar="N", help="customer number")
        p.add_argument("amount", metavar="YUAN", help="amount in yuan")
        p.add_argument("--reason", required=True, help="what it corrects or why it is paid back")
        p.add_argument("--idem", metavar="KEY", help="idempotency key: a repeat with it books nothing new")
        _common(p)
        p.set_defaults(func=ledger_correct, kind="adjustment" if kind == "adjust" else "refund")

    p = sub.add_parser("close-day", help="freeze a business day: later movements go to the next open day")
    p.add_argument("day", metavar="YYYY-MM-DD", help="the business day to close")
    p.add_argument("--force", action="store_true",
                   help="close although a statement channel of the day is not reconciled (needs --reason)")
    p.add_argument("--reason", help="why the day is closed unreconciled (with --force; kept in the audit log)")
    _common(p)
    p.set_defaults(func=close_day)


def _common(p: argparse.ArgumentParser) -> None:
    c.add_store_args(p)
    c.add_json_arg(p)


@c.cli_command
def ledger_check(args: argparse.Namespace) -> int:
    """Check the journal against the cached balances."""
    with c.open_store_from_args(args, must_exist=True) as store:
        problems = store.check_ledger()
        accounts = len(store.list_accounts())
    if args.json:
        c.print_json({"ok": not problems, "accounts": accounts, "problems": problems})
    elif problems:
        for p in problems:
            c.err(p)
    else:
        print(f"ledger consistent: {accounts} account(s), every balance equals its journal")
    return c.EXIT_FAILED if problems else c.EXIT_OK


@c.cli_command
def ledger_show(args: argparse.Namespace) -> int:
    """Print journal rows."""
    with c.open_store_from_args(args, must_exist=True) as store:
        if args.customer:
            rows = list(reversed(store.ledger(check_customer(args.customer), limit=args.limit)))
            if args.day:
                rows = [e for e in rows if e.day == args.day]
        else:
            rows = store.journal(day=args.day, payment_id=args.payment, limit=args.limit)
    if args.json:
        c.print_json([e.to_dict() for e in rows])
    else:
        c.print_table(f"{len(rows)} journal row(s)", ["id", "day", "when", "customer", "kind", "amount", "balance after",
                                                      "meter", "to meter", "channel", "txn", "payment", "by"],
                      [(e.id, e.day, c.fmt_time(e.at), e.customer, e.kind, c.fmt_fen(e.amount_fen),
                        c.fmt_fen(e.balance_after), e.meter or "", c.fmt_fen(e.meter_fen) if e.meter_fen else "",
                        e.channel or "", e.txn_id or "", e.payment_id or "", e.actor) for e in rows])
    return c.EXIT_OK


@c.cli_command
def ledger_correct(args: argparse.Namespace) -> int:
    """Book an adjustment or a refund."""
    fen = c.parse_yuan(args.amount, allow_negative=args.kind == "adjustment")
    with c.open_store_from_args(args, must_exist=True) as store:
        actor = acting_operator(store, args, "correct")
        entry, new = store.adjust(check_customer(args.customer), fen, actor=actor, reason=args.reason, kind=args.kind,
                                  idem_key=args.idem)
    if args.json:
        c.print_json(dict(entry.to_dict(), new=new))
    else:
        print(f"{entry.kind} of {c.fmt_fen(entry.amount_fen)} yuan booked on {entry.day} for customer {entry.customer}"
              f" (balance {c.fmt_fen(entry.balance_after)})" + ("" if new else " - already booked, nothing new"))
    return c.EXIT_OK


@c.cli_command
def close_day(args: argparse.Namespace) -> int:
    """Close a business day: refused while a statement channel of the day is unreconciled."""
    from headend.reconcile import STATEMENT_KINDS

    if args.force and not (args.reason or "").strip():
        raise c.CliError("--force needs --reason: why the day is closed unreconciled")
    with c.open_store_from_args(args, must_exist=True) as store:
        actor = acting_operator(store, args, "close_day")
        open_channels = store.unreconciled_channels(args.day, STATEMENT_KINDS)
        if open_channels and not args.force:
            raise c.CliError(f"day {args.day} is not reconciled for channel(s) {', '.join(open_channels)}: run "
                             "`headend reconcile run` for each (or close with --force --reason)")
        if open_channels:
            store.log_action(actor, "ledger.close_day_forced", args.day,
                             {"unreconciled": open_channels, "reason": args.reason})
        totals = store.close_day(args.day, actor=actor)
        summary = store.day_payment_summary(args.day)
        # a shift still open has not been counted: the day's counter takings are not yet checked
        # against the drawers, and its voids of this day are now refused
        open_shifts = []
        for shift in store.list_shifts(state="open", limit=10_000):
            n = sum(1 for p in store.list_payments(shift_id=shift.id, day=args.day, limit=1_000_000))
            if n:
                open_shifts.append({"shift": shift.id, "cashier": shift.cashier, "counter": shift.channel,
                                    "payments": n})
    totals["payments"] = [{"channel": ch, "tender": t, "count": int(n), "amount_fen": int(f),
                           "reversed": int(rn), "reversed_fen": int(rf)} for ch, t, n, f, rn, rf in summary]
    totals["unreconciled"] = open_channels
    totals["open_shifts"] = open_shifts
    for x in open_shifts:
        c.err(f"shift {x['shift']} of {x['cashier']} at {x['counter']} is still open with {x['payments']} payment(s)"
              f" of {args.day}: its drawer is not counted yet (`headend counter close`)")
    if args.json:
        c.print_json(totals)
    else:
        c.print_table(f"day {totals['day']} closed: {totals['rows']} row(s)", ["kind", "rows", "account yuan",
                                                                              "meter yuan"],
                      [(k, v["rows"], c.fmt_fen(v["amount_fen"]), c.fmt_fen(v["meter_fen"]))
                       for k, v in totals["kinds"].items()])
        c.print_table("payments by channel and tender", ["channel", "tender", "payments", "yuan", "reversed",
                                                         "reversed yuan"],
                      [(p["channel"], p["tender"], p["count"], c.fmt_fen(p["amount_fen"]), p["reversed"],
                        c.fmt_fen(p["reversed_fen"])) for p in totals["payments"]])
        if open_channels:
            print(f"closed unreconciled ({', '.join(open_channels)}): {args.reason}")
    return c.EXIT_OK
