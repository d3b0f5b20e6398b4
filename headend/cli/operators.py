"""`headend operator add/list/passwd/disable`, and the login every state-changing command goes through.

Once an operator exists, every command that changes something (money, meters and their commands,
the registry and grid, outages, notices, channels, operators, keys, the database; the actions of
``headend.operators.PERMISSIONS``) asks who is acting: ``--actor NAME`` (or
``$PREPAID645_OPERATOR``) and the password from ``$PREPAID645_OPERATOR_PASSWORD`` or a prompt.
Before the first operator is added (a fresh install) they run as ``--actor`` / ``$USER``, as the
read-only commands always do; the first operator added must be an admin.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from headend.cli import _common as c
from headend.operators import AuthError, authenticate, hash_password
from headend.store import ROLES, Store

ENV_OPERATOR = "PREPAID645_OPERATOR"
ENV_PASSWORD = "PREPAID645_OPERATOR_PASSWORD"
ENV_NEW_PASSWORD = "PREPAID645_NEW_PASSWORD"


def acting_operator(store: Store, args: argparse.Namespace, action: str) -> str:
    """The name to record as actor, after checking the operator may do ``action`` (an action of
    PERMISSIONS). Call it before the command changes anything: a refusal (CliError, exit 2) is
    audited and leaves everything as it was."""
    if store.count_operators() == 0:
        return c.actor_of(args)
    name = getattr(args, "actor", None) or os.environ.get(ENV_OPERATOR)
    if not name:
        # audited like a wrong password: the account the shell runs under is all we know of who tried
        store.log_action(c.actor_of(args), "operator.login_refused", None, {"action": action, "why": "no operator"})
        raise c.CliError(f"log in: give --actor NAME (or set {ENV_OPERATOR}) and the password in {ENV_PASSWORD}")
    password = os.environ.get(ENV_PASSWORD)
    if password is None:
        if not sys.stdin.isatty():
            store.log_action(name, "operator.login_refused", name, {"action": action, "why": "no password"})
            raise c.CliError(f"operator {name}: no password (set {ENV_PASSWORD} or run from a terminal)")
        password = getpass.getpass(f"password for operator {name}: ")
    try:
        return authenticate(store, name, password, action).name
    except AuthError as exc:
        raise c.CliError(str(exc)) from None


def _new_password(name: str) -> str:
    pw = os.environ.get(ENV_NEW_PASSWORD)
    if pw is None:
        if not sys.stdin.isatty():
            raise c.CliError(f"no password for {name}: set {ENV_NEW_PASSWORD} or run from a terminal")
        pw = getpass.getpass(f"new password for {name}: ")
        if getpass.getpass("again: ") != pw:
            raise c.CliError("the two passwords differ; nothing was changed")
    try:
        return hash_password(pw)
    except AuthError as exc:
        raise c.CliError(str(exc)) from None


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `operator` command group."""
    op = sub.add_parser("operator", help="operator accounts and roles (admin, operator, cashier, auditor)")
    osub = op.add_subparsers(dest="operator_command", metavar="ACTION")
    op.set_defaults(func=lambda a: (op.print_help(), c.EXIT_USAGE)[1])

    p = osub.add_parser("add", help=f"add an operator (password from a prompt or ${ENV_NEW_PASSWORD})")
    p.add_argument("name", metavar="NAME", help="operator name (a-z 0-9 _ . -)")
    p.add_argument("--role", required=True, choices=ROLES, help="what the operator may do")
    p.add_argument("--full-name", default="", metavar="TEXT", help="the person's full name")
    c.add_store_args(p)
    c.add_json_arg(p)
    p.set_defaults(func=operator_add)

    p = osub.add_parser("list", help="list operators (never their password hashes)")
    c.add_store_args(p)
    c.add_json_arg(p)
    p.set_defaults(func=operator_list)

    p = osub.add_parser("passwd", help="set an operator's password (an admin, or the operator themself)")
    p.add_argument("name", metavar="NAME", help="operator name (a-z 0-9 _ . -)")
    c.add_store_args(p)
    c.add_json_arg(p)
    p.set_defaults(func=operator_passwd)

    p = osub.add_parser("disable", help="stop an operator from logging in (kept for the record)")
    p.add_argument("name", metavar="NAME", help="operator name (a-z 0-9 _ . -)")
    c.add_store_args(p)
    c.add_json_arg(p)
    p.set_defaults(func=operator_disable)


@c.cli_command
def operator_add(args: argparse.Namespace) -> int:
    """Add an operator (the first one must be an admin)."""
    with c.open_store_from_args(args) as store:
        if store.count_operators() == 0 and args.role != "admin":
            raise c.CliError("the first operator must be an admin (--role admin): it manages the others")
        actor = acting_operator(store, args, "operators")
        op = store.add_operator(args.name, args.role, _new_password(args.name), actor=actor, full_name=args.full_name)
    if args.json:
        c.print_json(op.to_dict())
    else:
        print(f"operator {op.name} added ({op.role})")
    return c.EXIT_OK


@c.cli_command
def operator_list(args: argparse.Namespace) -> int:
    """List operators."""
    with c.open_store_from_args(args, must_exist=True) as store:
        ops = store.list_operators()
    if args.json:
        c.print_json([o.to_dict() for o in ops])
    else:
        c.print_table(f"{len(ops)} operator(s)", ["name", "role", "full name", "enabled", "since"],
                      [(o.name, o.role, o.full_name, "yes" if o.enabled else "no", c.fmt_time(o.created_at))
                       for o in ops])
    return c.EXIT_OK


@c.cli_command
def operator_passwd(args: argparse.Namespace) -> int:
    """Set a password: admins for anyone, an operator for themself."""
    with c.open_store_from_args(args, must_exist=True) as store:
        target = store.get_operator(args.name)
        acting = getattr(args, "actor", None) or os.environ.get(ENV_OPERATOR)
        actor = acting_operator(store, args, "read_books" if acting == target.name else "operators")
        if actor != target.name and store.get_operator(actor).role != "admin":
            raise c.CliError(f"only an admin may set another operator's password ({actor} is not one)")
        op = store.update_operator(target.name, actor=actor, pw_hash=_new_password(target.name))
    if args.json:
        c.print_json(op.to_dict())
    else:
        print(f"password of {op.name} changed")
    return c.EXIT_OK


@c.cli_command
def operator_disable(args: argparse.Namespace) -> int:
    """Disable an operator (admins only)."""
    with c.open_store_from_args(args, must_exist=True) as store:
        actor = acting_operator(store, args, "operators")
        if actor == args.name:
            raise c.CliError("an admin cannot disable themself (another admin must)")
        shift = store.current_shift(args.name)
        if shift is not None:
            # disabled, they could not log in to close it, and its takings would stay uncounted
            raise c.CliError(f"{args.name} has open shift {shift.id} at counter {shift.channel}: close it first"
                             f" ({args.name} with `headend counter close`, or an admin who counted the drawer with"
                             f" `headend counter close --cashier {args.name}`)")
        op = store.update_operator(args.name, actor=actor, enabled=False)
    if args.json:
        c.print_json(op.to_dict())
    else:
        print(f"operator {op.name} disabled")
    return c.EXIT_OK
