"""`headend voucher`: vend keypad vouchers (20-digit tokens, protocol/TOKENS.md) and list them."""

from __future__ import annotations

import argparse

from headend.cli import _common as c


def register(sub: argparse._SubParsersAction) -> None:
    """Add `voucher issue`, `voucher key-change` and `voucher list`."""
    p = sub.add_parser("voucher", help="recharge vouchers: 20-digit tokens the customer types on the meter")
    vs = p.add_subparsers(dest="voucher_command", metavar="ACTION", required=True)
    q = vs.add_parser("issue", help="vend a token for a local-cost-control meter: the payment is booked now,"
                                    " the money reaches the meter when the customer types the token")
    q.add_argument("meter", metavar="METER", help="12-digit meter address")
    q.add_argument("amount", metavar="YUAN", help="amount in yuan, e.g. 50 or 1000 (above 163.83 in whole jiao,"
                                                  " above 1,638.30 in whole yuan)")
    q.add_argument("--channel", default="voucher", metavar="ID",
                   help="the voucher channel to vend through (default: voucher, created on first use)")
    q.add_argument("--key-file", metavar="PATH", help="the master key file (default: config, next to the database)")
    c.add_store_args(q)
    c.add_json_arg(q)
    q.set_defaults(func=voucher_issue)
    q = vs.add_parser("key-change", help="the four tokens that move a meter to a new token key (enter them"
                                         " before any voucher vended after this)")
    q.add_argument("meter", metavar="METER", help="12-digit meter address (refused while it has unused vouchers)")
    q.add_argument("--key-file", metavar="PATH", help="the master key file (default: config, next to the database)")
    c.add_store_args(q)
    c.add_json_arg(q)
    q.set_defaults(func=voucher_key_change)
    q = vs.add_parser("list", help="issued vouchers and whether their meter has used them")
    q.add_argument("--meter", metavar="METER", help="only this meter's")
    q.add_argument("--state", choices=("issued", "used"), help="only vouchers in this state")
    c.add_store_args(q)
    c.add_json_arg(q, csv=True)
    q.set_defaults(func=voucher_list)


def _grouped(token: str) -> str:
    return " ".join(token[i:i + 4] for i in range(0, 20, 4))


@c.cli_command
def voucher_issue(args: argparse.Namespace) -> int:
    """Vend one voucher and print its 20 digits (grouped in fours, as on a receipt)."""
    from headend.cli.operators import acting_operator
    from headend.vouchers.issue import VOUCHER_CHANNEL, ensure_voucher_channel, issue_voucher

    fen = c.parse_yuan(args.amount)
    keys = c.unlock_keys_from_args(args)
    with c.open_store_from_args(args, must_exist=True) as store:
        actor = acting_operator(store, args, "recharge")
        if args.channel == VOUCHER_CHANNEL:
            ensure_voucher_channel(store, actor=actor)
        v, p, token = issue_voucher(store, keys, meter=args.meter, amount_fen=fen, actor=actor,
                                    channel_id=args.channel)
    if args.json:
        c.print_json({**v.to_dict(), "token": token, "payment": p.id})
    else:
        print(f"voucher {v.id} for meter {v.meter}: {c.fmt_fen(v.amount_fen)} yuan, payment {p.id}")
        print(f"token: {_grouped(token)}")
    return c.EXIT_OK


@c.cli_command
def voucher_key_change(args: argparse.Namespace) -> int:
    """Issue a token-key change and print its four tokens."""
    from headend.cli.operators import acting_operator
    from headend.vouchers.issue import issue_key_change

    keys = c.unlock_keys_from_args(args)
    with c.open_store_from_args(args, must_exist=True) as store:
        actor = acting_operator(store, args, "recharge")
        tkrn, tokens = issue_key_change(store, keys, meter=args.meter, actor=actor)
    if args.json:
        c.print_json({"meter": args.meter, "tkrn": tkrn, "tokens": tokens})
    else:
        print(f"key change for meter {args.meter} to token-key revision {tkrn}: enter all four (any order),"
              " then the vouchers vended from now on")
        for i, t in enumerate(tokens, 1):
            print(f"token {i}: {_grouped(t)}")
    return c.EXIT_OK


@c.cli_command
def voucher_list(args: argparse.Namespace) -> int:
    """List vouchers (never their digits)."""
    with c.open_store_from_args(args, must_exist=True) as store:
        vs = store.list_vouchers(meter=args.meter, state=args.state)
    c.print_list(args, "vouchers", ["id", "meter", "tid", "yuan", "state", "issued", "used", "payment"],
                 [[v.id, v.meter, v.tid, c.fmt_fen(v.amount_fen), v.state, c.fmt_time(v.issued_at),
                   c.fmt_time(v.used_at), v.payment_id] for v in vs], vs)
    return c.EXIT_OK
