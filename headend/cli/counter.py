"""`headend counter ...`: the business-hall counter for cashiers.

    headend counter open [--channel hall]          # start the shift
    headend counter find 13800000001               # customer number, meter, phone or name
    headend counter pay 000000000101 50 --tender cash
    headend counter pay 000000000101 80 --tender pos --terminal 12345678 --trace 000123 --ref 000000123456
    headend counter receipt 17                     # reprint (shows when the meter confirmed)
    headend counter void 17 --reason "wrong customer"
    headend counter close --cash 50.00 --cash-count 1 --pos 80 --pos-count 1   # 日结
    headend counter shifts --differences           # closed shifts whose count differed
"""

from __future__ import annotations

import argparse
import time
import unicodedata

from headend.cli import _common as c
from headend.cli.operators import acting_operator
from headend.operators import allowed
from headend.payments import counter as ctr
from headend.payments import mask_name
from headend.store import NotFound, Store

_TENDER = {"cash": "cash", "cheque": "cheque", "pos": "unionpay_pos"}
_FIND_SHOWN = 20


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `counter` command group."""
    co = sub.add_parser("counter", help="business-hall counter: shift, payments by tender, receipts, voids, close")
    csub = co.add_subparsers(dest="counter_command", metavar="ACTION")
    co.set_defaults(func=lambda a: (co.print_help(), c.EXIT_USAGE)[1])

    p = csub.add_parser("open", help="open your shift at a counter")
    p.add_argument("--channel", default=ctr.DEFAULT_COUNTER, help="the counter channel (default hall)")
    _common(p)
    p.set_defaults(func=counter_open)

    p = csub.add_parser("find", help="look up a customer by number, meter, phone or name")
    p.add_argument("text", metavar="TEXT", help="customer number, meter number, phone or name")
    _common(p)
    p.set_defaults(func=counter_find)

    p = csub.add_parser("pay", help="take a payment and print the receipt")
    p.add_argument("customer", metavar="N", help="customer number, or the number of the meter to top up")
    p.add_argument("amount", metavar="YUAN", help="amount paid, in yuan (e.g. 50 or 50.00)")
    p.add_argument("--meter", metavar="ADDRESS", help="which meter, if the customer has several")
    p.add_argument("--tender", choices=sorted(_TENDER), default="cash", help="how the customer paid (default cash)")
    p.add_argument("--cheque-no", metavar="N", help="cheque number (with --tender cheque)")
    p.add_argument("--terminal", metavar="ID", help="UnionPay POS terminal id (8)")
    p.add_argument("--trace", metavar="N", help="UnionPay POS trace number (6 digits)")
    p.add_argument("--ref", metavar="N", help="UnionPay POS reference number (12)")
    p.add_argument("--wait", type=float, default=10.0, metavar="S",
                   help="seconds to wait for the meter's confirmation before printing (default 10)")
    _common(p)
    p.set_defaults(func=counter_pay)

    p = csub.add_parser("receipt", help="print a payment's receipt again")
    p.add_argument("payment", type=int, metavar="ID", help="payment id (on the receipt)")
    _common(p)
    p.set_defaults(func=counter_receipt)

    p = csub.add_parser("void", help="void a payment of your open shift (before it reached the meter)")
    p.add_argument("payment", type=int, metavar="ID", help="payment id (on the receipt)")
    p.add_argument("--reason", required=True, help="why it is voided (kept in the audit log)")
    _common(p)
    p.set_defaults(func=counter_void)

    p = csub.add_parser("close", help="close your shift: what you counted against what was taken, per tender")
    p.add_argument("--cashier", metavar="NAME",
                   help="close this cashier's shift instead of your own (admins: a cashier who cannot, e.g. has left)")
    for t in ("cash", "cheque", "pos"):
        p.add_argument(f"--{t}", default="0", metavar="YUAN", help=f"{t} you counted (default 0)")
        p.add_argument(f"--{t}-count", type=int, default=None, metavar="N",
                       help=f"number of {t} payments you counted (default: as taken)")
    _common(p)
    p.set_defaults(func=counter_close)

    p = csub.add_parser("shifts", help="shifts with what was taken, counted and the differences (newest first)")
    p.add_argument("--cashier", metavar="NAME", help="only this cashier's shifts")
    p.add_argument("--open", action="store_true", help="only shifts still open")
    p.add_argument("--differences", action="store_true", help="only closed shifts whose count differed (among the --limit newest)")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N shifts (default 100)")
    _common(p)
    p.set_defaults(func=counter_shifts)


def _common(p: argparse.ArgumentParser) -> None:
    c.add_store_args(p)
    c.add_json_arg(p)


@c.cli_command
def counter_open(args: argparse.Namespace) -> int:
    """Open the cashier's shift."""
    with c.open_store_from_args(args, must_exist=True) as store:
        cashier = acting_operator(store, args, "counter")
        shift = ctr.open_shift(store, cashier, args.channel)
    if args.json:
        c.print_json(shift.to_dict())
    else:
        print(f"shift {shift.id} open for {cashier} at counter {shift.channel}")
    return c.EXIT_OK


@c.cli_command
def counter_find(args: argparse.Namespace) -> int:
    """Customers matching the text, with balance and meters."""
    with c.open_store_from_args(args, must_exist=True) as store:
        acting_operator(store, args, "counter")
        # one more than shown: whether the list is cut short, which the cashier must be told
        accounts = store.find_accounts(_typed(args.text), limit=_FIND_SHOWN + 1)
        more = len(accounts) > _FIND_SHOWN
        found = [(a, store.meters_of_customer(a.customer)) for a in accounts[:_FIND_SHOWN]]
    if args.json:
        c.print_json([dict(a.to_dict(), meters=[m.to_dict() for m in ms]) for a, ms in found])
        return c.EXIT_OK if found else c.EXIT_NOT_FOUND
    if not found:
        c.err(f"no customer matches {args.text!r}")
        return c.EXIT_NOT_FOUND
    c.print_table(f"{len(found)} customer(s)", ["customer", "name", "phone", "address", "balance", "meters"],
                  [(a.customer, mask_name(a.name), a.phone, a.address, c.fmt_fen(a.balance_fen),
                    ", ".join(f"{m.address} ({m.mode}, {c.fmt_fen(m.balance_fen) or '?'} yuan, relay {m.relay or '?'})"
                              for m in ms)) for a, ms in found])
    if more:
        c.err(f"more customers match {args.text!r}: these are the first {_FIND_SHOWN}; narrow the search"
              " (customer or meter number, phone, a longer part of the name)")
    return c.EXIT_OK


@c.cli_command
def counter_pay(args: argparse.Namespace) -> int:
    """Take a payment, wait a little for the meter, print the receipt."""
    fen = c.parse_yuan(args.amount)
    # a slip detail with another tender means the tender was forgotten: booked as given, the payment
    # would count under the wrong tender at the close
    slip = {"pos": [("--terminal", args.terminal), ("--trace", args.trace), ("--ref", args.ref)],
            "cheque": [("--cheque-no", args.cheque_no)]}
    for tender_opt, fields in slip.items():
        given = [opt for opt, v in fields if v is not None]
        if given and args.tender != tender_opt:
            raise c.CliError(f"{', '.join(given)} belong{'s' if len(given) == 1 else ''} to --tender {tender_opt},"
                             f" but the tender is {args.tender}: give --tender {tender_opt} or leave"
                             f" {'it' if len(given) == 1 else 'them'} out")
    tender = {"kind": _TENDER[args.tender], "cheque_no": args.cheque_no, "terminal_id": args.terminal,
              "trace_no": args.trace, "ref_no": args.ref}
    with c.open_store_from_args(args, must_exist=True) as store:
        cashier = acting_operator(store, args, "counter")
        customer, meter = _payee(store, _typed(args.customer), None if args.meter is None else _typed(args.meter))
        p = ctr.take_payment(store, cashier, customer=customer, amount_fen=fen, tender=tender, meter=meter)
        deadline = time.monotonic() + max(args.wait, 0)
        while p.state == "sent_to_meter" and time.monotonic() < deadline:
            time.sleep(0.1)
            p = store.get_payment(p.id)
        text = ctr.receipt_text(store, p.id, c.fmt_time)
    if args.json:
        c.print_json(dict(p.to_dict(), receipt=text))
    else:
        print(text)
    return c.EXIT_OK


def _typed(text: str) -> str:
    """What the cashier typed, as stored: full-width digits and letters (a Chinese input method)
    as ASCII, without spaces around."""
    return unicodedata.normalize("NFKC", text).strip()


def _payee(store: Store, number: str, meter: str | None) -> tuple[str, str | None]:
    """(customer, meter) from what the cashier typed: a customer number, or the number on the
    meter the customer brought (its owner then pays to that meter)."""
    try:
        store.get_account(number)
        return number, meter
    except NotFound:
        pass
    try:
        m = store.get_meter(number)
    except NotFound:
        return number, meter    # refused (and audited) as an unknown customer where payments are taken
    if meter is not None and meter != m.address:
        raise c.CliError(f"{number} is a meter of customer {m.customer}, and --meter names another ({meter}):"
                         " give the customer number with --meter, or the meter alone")
    return m.customer, m.address


@c.cli_command
def counter_receipt(args: argparse.Namespace) -> int:
    """Reprint a receipt."""
    with c.open_store_from_args(args, must_exist=True) as store:
        acting_operator(store, args, "counter")
        text = ctr.receipt_text(store, args.payment, c.fmt_time)
    print(text)
    return c.EXIT_OK


@c.cli_command
def counter_void(args: argparse.Namespace) -> int:
    """Void a payment of the open shift."""
    with c.open_store_from_args(args, must_exist=True) as store:
        cashier = acting_operator(store, args, "counter")
        p = ctr.void_payment(store, cashier, args.payment, reason=args.reason, rules=c.trip_rules_from_args(args))
        text = ctr.receipt_text(store, p.id, c.fmt_time)
    if args.json:
        c.print_json(p.to_dict())
    else:
        print(text)
    return c.EXIT_OK


@c.cli_command
def counter_close(args: argparse.Namespace) -> int:
    """Close the shift with the cashier's count."""
    with c.open_store_from_args(args, must_exist=True) as store:
        actor = cashier = acting_operator(store, args, "counter")
        if args.cashier and args.cashier != actor:
            role = store.get_operator(actor).role if store.count_operators() else None
            if role is not None and not allowed(role, "close_shift_for"):
                raise c.CliError(f"only an admin may close another cashier's shift; {actor} is {role}")
            cashier = args.cashier
        shift = store.current_shift(cashier)
        expected = ctr.shift_totals(store, shift.id) if shift else {}
        counted = {}
        for opt, tender in _TENDER.items():
            n = getattr(args, f"{opt}_count")
            counted[tender] = {"fen": c.parse_yuan(getattr(args, opt)),
                               "count": n if n is not None else expected.get(tender, {}).get("count", 0)}
        shift = ctr.close_shift(store, cashier, counted, actor=actor)
    if args.json:
        c.print_json(shift.to_dict())
        return c.EXIT_OK
    rows = []
    for t in ("cash", "cheque", "unionpay_pos"):
        e, g = shift.expected[t], shift.counted[t]
        d = (shift.differences or {}).get(t, {"count": 0, "fen": 0})
        rows.append((t, e["count"], c.fmt_fen(e["fen"]), g["count"], c.fmt_fen(g["fen"]), d["count"],
                     c.fmt_fen(d["fen"])))
    c.print_table(f"shift {shift.id} of {cashier} closed", ["tender", "taken", "taken yuan", "counted",
                                                            "counted yuan", "count diff", "yuan diff"], rows)
    if shift.differences:
        c.err(f"differences recorded for shift {shift.id}: {', '.join(shift.differences)}")
    return c.EXIT_OK


@c.cli_command
def counter_shifts(args: argparse.Namespace) -> int:
    """List shifts with their totals and differences."""
    with c.open_store_from_args(args, must_exist=True) as store:
        acting_operator(store, args, "read_books")
        shifts = store.list_shifts(cashier=args.cashier, state="open" if args.open else None, limit=args.limit)
    if args.differences:
        shifts = [x for x in shifts if x.differences]
    if args.json:
        c.print_json([x.to_dict() for x in shifts])
        return c.EXIT_OK

    def total(by_tender: dict[str, dict[str, int]] | None) -> str:
        return "" if by_tender is None else c.fmt_fen(sum(v["fen"] for v in by_tender.values()))

    c.print_table(f"{len(shifts)} shift(s)", ["shift", "cashier", "counter", "state", "opened", "closed", "taken yuan",
                                              "counted yuan", "yuan diff", "tenders differing"],
                  [(x.id, x.cashier, x.channel, x.state, c.fmt_time(x.opened_at), c.fmt_time(x.closed_at),
                    total(x.expected), total(x.counted), total(x.differences),
                    ", ".join(f"{t} {c.fmt_fen(d['fen'])} ({d['count']:+d})" for t, d in (x.differences or {}).items()))
                   for x in shifts])
    return c.EXIT_OK
