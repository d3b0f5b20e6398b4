"""`headend channel add/list/rotate-secret/disable/enable`: payment channels as records.

A channel's API secret is shown once, when it is made (add, rotate-secret), and stored sealed
under the head-end master key (so these commands unlock the key file).
"""

from __future__ import annotations

import argparse

from headend.cli import _common as c
from headend.cli.operators import acting_operator
from headend.payments import MAX_PAYMENT_FEN, issue_credentials
from headend.store import CHANNEL_KINDS, Channel


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `channel` command group."""
    ch = sub.add_parser("channel", help="payment channels: kind, API credentials, fees, settlement, enabled")
    csub = ch.add_subparsers(dest="channel_command", metavar="ACTION")
    ch.set_defaults(func=lambda a: (ch.print_help(), c.EXIT_USAGE)[1])

    p = csub.add_parser("add", help="add a channel; prints its API key id and secret once")
    p.add_argument("id", metavar="ID", help="channel id, e.g. icbc-online (a-z 0-9 _ . -)")
    p.add_argument("--kind", required=True, choices=CHANNEL_KINDS, help="what kind of channel it is")
    p.add_argument("--name", default="", help="what people call it")
    p.add_argument("--fee-rule", default="none", metavar="RULE",
                   help="none, fixed:FEN or bp:BASIS_POINTS[,min:FEN][,max:FEN] (default none)")
    p.add_argument("--settle-days", type=int, default=0, metavar="N", help="settlement delay T+N days (default 0)")
    p.add_argument("--max", metavar="YUAN", help="largest single payment (default 100000)")
    p.add_argument("--callback", metavar="URL", help="where payment results are posted")
    p.add_argument("--no-api", action="store_true", help="no API credentials (a counter used through the CLI only)")
    _common(p)
    p.set_defaults(func=channel_add)

    p = csub.add_parser("list", help="list channels (never their secrets)")
    _common(p)
    p.set_defaults(func=channel_list)

    p = csub.add_parser("rotate-secret", help="issue a new key id and secret (the old ones stop working); printed once")
    p.add_argument("id", metavar="ID", help="channel id")
    _common(p)
    p.set_defaults(func=channel_rotate)

    for name, flag, text in (("disable", False, "stop a channel taking payments"),
                             ("enable", True, "let a disabled channel take payments again")):
        p = csub.add_parser(name, help=text)
        p.add_argument("id", metavar="ID", help="channel id")
        _common(p)
        p.set_defaults(func=lambda a, flag=flag: channel_enable(a, flag))


def _common(p: argparse.ArgumentParser) -> None:
    c.add_store_args(p)
    c.add_json_arg(p)
    p.add_argument("--key-file", metavar="PATH", help="the master key file (default: config, next to the database)")


def _show(args: argparse.Namespace, ch: Channel, secret: str | None, what: str) -> int:
    if args.json:
        d = ch.to_dict()
        if secret is not None:
            d["secret"] = secret
        c.print_json(d)
    else:
        print(f"channel {ch.id} ({ch.kind}) {what}")
        if secret is not None:
            print(f"  key id: {ch.key_id}\n  secret: {secret}\n  (the secret is shown only now: hand it to the"
                  " channel over a safe route)")
    return c.EXIT_OK


@c.cli_command
def channel_add(args: argparse.Namespace) -> int:
    """Add a channel with new API credentials (unless --no-api)."""
    max_fen = None if args.max is None else c.parse_yuan(args.max)
    with c.open_store_from_args(args) as store:
        actor = acting_operator(store, args, "channels")
        key_id = secret = sealed = None
        if not args.no_api:
            key_id, secret, sealed = issue_credentials(c.unlock_keys_from_args(args), args.id)
        ch = store.add_channel(args.id, args.kind, actor=actor, name=args.name, key_id=key_id, secret=sealed,
                               fee_rule=args.fee_rule, settle_days=args.settle_days, max_amount_fen=max_fen,
                               callback_url=args.callback)
    return _show(args, ch, secret, "added")


@c.cli_command
def channel_list(args: argparse.Namespace) -> int:
    """List channels."""
    with c.open_store_from_args(args, must_exist=True) as store:
        chans = store.list_channels()
    if args.json:
        c.print_json([ch.to_dict() for ch in chans])
    else:
        c.print_table(f"{len(chans)} channel(s)", ["id", "kind", "name", "key id", "fee rule", "settle", "max",
                                                   "enabled"],
                      [(ch.id, ch.kind, ch.name, ch.key_id or "(no API)", ch.fee_rule, f"T+{ch.settle_days}",
                        c.fmt_fen(ch.max_amount_fen or MAX_PAYMENT_FEN), "yes" if ch.enabled else "no")
                       for ch in chans])
    return c.EXIT_OK


@c.cli_command
def channel_rotate(args: argparse.Namespace) -> int:
    """New key id and secret for a channel."""
    with c.open_store_from_args(args, must_exist=True) as store:
        actor = acting_operator(store, args, "channels")
        store.get_channel(args.id)
        key_id, secret, sealed = issue_credentials(c.unlock_keys_from_args(args), args.id)
        ch = store.update_channel(args.id, actor=actor, key_id=key_id, secret=sealed)
    return _show(args, ch, secret, "has a new secret")


def channel_enable(args: argparse.Namespace, flag: bool) -> int:
    """Enable or disable a channel."""
    @c.cli_command
    def run(a: argparse.Namespace) -> int:
        with c.open_store_from_args(a, must_exist=True) as store:
            ch = store.update_channel(a.id, actor=acting_operator(store, a, "channels"), enabled=flag)
        return _show(a, ch, None, "enabled" if flag else "disabled")
    return run(args)
