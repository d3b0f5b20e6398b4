"""`headend card`: prepaid recharge cards (serial + PIN) in batches: make, activate, void, expire, list."""

from __future__ import annotations

import argparse
import csv
import sys
from datetime import date, datetime, time, timezone

from headend.cli import _common as c


def register(sub: argparse._SubParsersAction) -> None:
    """Add `card batch|activate|void|expire|list|batches`."""
    p = sub.add_parser("card", help="prepaid recharge cards: serial + PIN, printed in batches, redeemed once online")
    cs = p.add_subparsers(dest="card_command", metavar="ACTION", required=True)
    q = cs.add_parser("batch", help="make a batch of cards and print serial,PIN lines once (CSV for the printer)")
    q.add_argument("amount", metavar="YUAN", help="face value of each card, e.g. 50")
    q.add_argument("count", metavar="COUNT", type=int, help="how many cards (1..100000)")
    q.add_argument("--expires", required=True, metavar="YYYY-MM-DD", help="last day the cards can be redeemed")
    q.add_argument("--note", default="", metavar="TEXT", help="what the batch is for (printer order, shop)")
    q.add_argument("--key-file", metavar="PATH", help="the master key file (default: config, next to the database)")
    c.add_store_args(q)
    q.set_defaults(func=card_batch)
    for name, what in (("activate", "make printed cards redeemable (sold, or handed to a shop)"),
                       ("void", "void cards not redeemed (lost, stolen, unsold)")):
        q = cs.add_parser(name, help=what)
        q.add_argument("serials", metavar="SERIAL", nargs="*", help="12-digit card serials")
        q.add_argument("--batch", type=int, metavar="N", help="every card of batch N instead")
        if name == "void":
            q.add_argument("--reason", required=True, metavar="TEXT", help="why (kept in the audit log)")
        c.add_store_args(q)
        q.set_defaults(func=card_activate if name == "activate" else card_void)
    q = cs.add_parser("expire", help="expire every card not redeemed whose batch's last day has passed")
    c.add_store_args(q)
    q.set_defaults(func=card_expire)
    q = cs.add_parser("list", help="cards with their state (never their PINs)")
    q.add_argument("--batch", type=int, metavar="N", help="only batch N")
    q.add_argument("--state", choices=("issued", "active", "redeemed", "expired", "voided"), help="only this state")
    c.add_store_args(q)
    c.add_json_arg(q, csv=True)
    q.set_defaults(func=card_list)
    q = cs.add_parser("batches", help="the batches: face value, count, expiry")
    c.add_store_args(q)
    c.add_json_arg(q, csv=True)
    q.set_defaults(func=card_batches)


def _end_of(day: str, utc_offset_s: int) -> int:
    try:
        d = date.fromisoformat(day)
    except ValueError:
        raise c.CliError(f"--expires takes a day as YYYY-MM-DD, got {day!r}") from None
    return int(datetime.combine(d, time(23, 59, 59), timezone.utc).timestamp()) - utc_offset_s + 1


@c.cli_command
def card_batch(args: argparse.Namespace) -> int:
    """Make a batch; print its cards as CSV (serial, pin, yuan, expires) on stdout, once."""
    from headend.cli.operators import acting_operator
    from headend.vouchers.cards import make_batch

    fen = c.parse_yuan(args.amount)
    keys = c.unlock_keys_from_args(args)
    with c.open_store_from_args(args, must_exist=True) as store:
        actor = acting_operator(store, args, "recharge")
        try:
            batch, cards = make_batch(store, keys, face_fen=fen, count=args.count,
                                      expires_at=_end_of(args.expires, store.utc_offset_s), actor=actor, note=args.note)
        except ValueError as exc:
            raise c.CliError(str(exc)) from None
    w = csv.writer(sys.stdout)
    w.writerow(["serial", "pin", "yuan", "expires"])
    for serial, pin in cards:
        w.writerow([serial, pin, c.fmt_fen(fen), args.expires])
    c.err(f"batch {batch.id}: {len(cards)} cards of {c.fmt_fen(fen)} yuan, not yet active (`headend card activate"
          f" --batch {batch.id}`); the PINs above are not shown again")
    return c.EXIT_OK


def _changed(args: argparse.Namespace, what: str, cards: list) -> int:
    print(f"{len(cards)} card(s) {what}")
    return c.EXIT_OK


def _which(args: argparse.Namespace) -> None:
    if (args.batch is None) == (not args.serials):
        raise c.CliError("name the cards: SERIAL... or --batch N (not both)")


@c.cli_command
def card_activate(args: argparse.Namespace) -> int:
    """Activate cards (all or none)."""
    from headend.cli.operators import acting_operator
    from headend.vouchers.cards import activate

    _which(args)
    with c.open_store_from_args(args, must_exist=True) as store:
        actor = acting_operator(store, args, "recharge")
        return _changed(args, "active", activate(store, batch_id=args.batch, serials=args.serials, actor=actor))


@c.cli_command
def card_void(args: argparse.Namespace) -> int:
    """Void cards (all or none)."""
    from headend.cli.operators import acting_operator
    from headend.vouchers.cards import void

    _which(args)
    with c.open_store_from_args(args, must_exist=True) as store:
        actor = acting_operator(store, args, "recharge")
        try:
            cards = void(store, batch_id=args.batch, serials=args.serials, actor=actor, reason=args.reason)
        except ValueError as exc:
            raise c.CliError(str(exc)) from None
        return _changed(args, "voided", cards)


@c.cli_command
def card_expire(args: argparse.Namespace) -> int:
    """Expire the cards past their batch's last day."""
    from headend.cli.operators import acting_operator
    from headend.vouchers.cards import expire_due

    with c.open_store_from_args(args, must_exist=True) as store:
        actor = acting_operator(store, args, "recharge")
        return _changed(args, "expired", expire_due(store, actor=actor))


@c.cli_command
def card_list(args: argparse.Namespace) -> int:
    """List cards."""
    with c.open_store_from_args(args, must_exist=True) as store:
        cards = store.list_cards(batch_id=args.batch, state=args.state)
    c.print_list(args, "cards", ["serial", "batch", "yuan", "state", "expires", "changed", "payment"],
                 [[k.serial, k.batch_id, c.fmt_fen(k.face_fen), k.state, c.fmt_time(k.expires_at),
                   c.fmt_time(k.changed_at), k.payment_id] for k in cards], cards)
    return c.EXIT_OK


@c.cli_command
def card_batches(args: argparse.Namespace) -> int:
    """List batches."""
    with c.open_store_from_args(args, must_exist=True) as store:
        bs = store.list_card_batches()
    c.print_list(args, "card batches", ["batch", "yuan", "count", "expires", "made", "by", "note"],
                 [[b.id, c.fmt_fen(b.face_fen), b.count, c.fmt_time(b.expires_at), c.fmt_time(b.created_at), b.actor,
                   b.note] for b in bs], bs)
    return c.EXIT_OK
