"""`headend reconcile run|show|resolve`: a channel's daily statement checked against the journal."""

from __future__ import annotations

import argparse
from pathlib import Path

from headend.cli import _common as c
from headend.cli.operators import acting_operator


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `reconcile` command group."""
    rec = sub.add_parser("reconcile", help="check a channel's daily statement against the journal (对账)")
    rsub = rec.add_subparsers(dest="reconcile_command", metavar="ACTION")
    rec.set_defaults(func=lambda a: (rec.print_help(), c.EXIT_USAGE)[1])

    p = rsub.add_parser("run", help="classify every statement line and every payment of CHANNEL on DAY")
    p.add_argument("channel", metavar="CHANNEL", help="channel id")
    p.add_argument("day", metavar="YYYY-MM-DD", help="business day of the statement")
    p.add_argument("file", metavar="FILE", help="the channel's statement file")
    p.add_argument("--profile", default="csv", metavar="NAME|FILE.toml",
                   help="statement layout: a shipped profile (csv, fixed-gbk) or a TOML file (default csv)")
    p.add_argument("--all", action="store_true", help="list matched lines too, not only discrepancies")
    c.add_store_args(p)
    c.add_json_arg(p, csv=True)
    p.set_defaults(func=reconcile_run)

    p = rsub.add_parser("show", help="the kept report of a channel's day, with resolutions")
    p.add_argument("channel", metavar="CHANNEL", help="channel id")
    p.add_argument("day", metavar="YYYY-MM-DD", help="business day")
    c.add_store_args(p)
    c.add_json_arg(p)
    p.set_defaults(func=reconcile_show)

    p = rsub.add_parser("resolve", help="close one discrepancy with a reason (and an adjustment if money moves)")
    p.add_argument("channel", metavar="CHANNEL", help="channel id")
    p.add_argument("day", metavar="YYYY-MM-DD", help="business day")
    p.add_argument("txn", metavar="TXN", help="the discrepancy's channel transaction id")
    p.add_argument("--reason", required=True, help="what explains the difference")
    p.add_argument("--adjust", metavar="YUAN", help="book this +/- amount on --customer's account")
    p.add_argument("--customer", metavar="N", help="whose account the adjustment moves")
    c.add_store_args(p)
    c.add_json_arg(p)
    p.set_defaults(func=reconcile_resolve)


_COLS = ["txn_id", "class", "line", "their_fen", "our_fen", "their_state", "our_state", "payment", "customer"]


@c.cli_command
def reconcile_run(args: argparse.Namespace) -> int:
    """Run a reconciliation and print its classes and totals."""
    from headend.reconcile import StatementError, reconcile_day

    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise c.CliError(f"cannot read statement {args.file}: {exc.strerror}") from None
    with c.open_store_from_args(args, must_exist=True) as store:
        actor = acting_operator(store, args, "reconcile")
        try:
            res = reconcile_day(store, args.channel, args.day, data, profile=args.profile, actor=actor)
        except StatementError as exc:
            raise c.CliError(f"{args.file}: {exc}") from None
        rows = res.rows if args.all else res.problems   # matched rows are read from the store
    if args.json:
        c.print_json(res.to_dict(rows))
    elif args.csv:
        c.print_list(args, "", _COLS, [[r.get(k) for k in _COLS] for r in rows], rows)
    else:
        c.print_table(f"{args.channel} {args.day}: " + ", ".join(f"{k} {v}" for k, v in res.counts.items()),
                      ["txn", "class", "line", "theirs", "ours", "their state", "our state", "payment", "customer"],
                      [(r["txn_id"], r["class"], r["line"] or "", c.fmt_fen(r["their_fen"]), c.fmt_fen(r["our_fen"]),
                        r["their_state"] or "", r["our_state"] or "", r["payment"] or "", r["customer"] or "")
                       for r in rows])
        t = res.totals
        print(f"statement gross {c.fmt_fen(t['their_gross_fen'])}, fees {c.fmt_fen(t['their_fee_fen'])}, net "
              f"{c.fmt_fen(t['their_net_fen'])}; our gross {c.fmt_fen(t['our_gross_fen'])} yuan")
        print("day reconciled" if res.reconciled else
              f"{sum(res.counts[k] for k in res.counts if k != 'matched')} discrepancy(ies) open: "
              "resolve each with `headend reconcile resolve`")
    return c.EXIT_OK if res.reconciled else c.EXIT_FAILED


@c.cli_command
def reconcile_show(args: argparse.Namespace) -> int:
    """Print the kept report."""
    with c.open_store_from_args(args, must_exist=True) as store:
        rep = store.reconciliation(args.channel, args.day)
    if args.json:
        c.print_json(rep)
        return c.EXIT_OK
    c.print_table(f"{args.channel} {args.day}: {rep['status']}", ["txn", "class", "resolved by", "reason", "journal row"],
                  [(i["txn_id"], i["class"], i["resolved_by"] or "", i["reason"] or "", i["ledger_id"] or "")
                   for i in rep["items"]])
    return c.EXIT_OK


@c.cli_command
def reconcile_resolve(args: argparse.Namespace) -> int:
    """Resolve one discrepancy."""
    from headend.reconcile import resolve

    fen = c.parse_yuan(args.adjust, allow_negative=True) if args.adjust else 0
    with c.open_store_from_args(args, must_exist=True) as store:
        actor = acting_operator(store, args, "reconcile")
        out = resolve(store, args.channel, args.day, args.txn, actor=actor, reason=args.reason, adjust_fen=fen,
                      customer=args.customer)
    if args.json:
        c.print_json(out)
    else:
        print(f"{args.txn} resolved; " + ("day reconciled" if out["reconciled"] else f"{out['open_left']} left open"))
    return c.EXIT_OK
