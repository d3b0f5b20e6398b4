"""`headend bank agreement add/show/remove`, `headend bank export`, `headend bank import`: batch withholding.

Agreements and exports unlock the key file (the account number is sealed under the master key);
the batch file goes to stdout or --out, a return file is applied whole or not at all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from headend.bank import (BankFileError, ProfileError, add_agreement, agreement_of, export_batch, import_return,
                          known_profiles, load_profile, pick_profile, remove_agreement)
from headend.cli import _common as c
from headend.cli.operators import acting_operator


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `bank` command group."""
    bank = sub.add_parser("bank", help="bank batch withholding: agreements, debit-request files, return files")
    bsub = bank.add_subparsers(dest="bank_command", metavar="ACTION")
    bank.set_defaults(func=lambda a: (bank.print_help(), c.EXIT_USAGE)[1])

    ag = bsub.add_parser("agreement", help="a customer's withholding agreement")
    asub = ag.add_subparsers(dest="agreement_command", metavar="ACTION")
    ag.set_defaults(func=lambda a: (ag.print_help(), c.EXIT_USAGE)[1])
    p = asub.add_parser("add", help="put an agreement on an account (replaces an earlier one)")
    p.add_argument("customer", metavar="CUSTOMER", help="12-digit customer number")
    p.add_argument("--bank", required=True, help="bank code of a profile, e.g. ICBC")
    p.add_argument("--account", required=True, help="bank account number (stored sealed, shown masked)")
    p.add_argument("--holder", required=True, help="account holder's name as the bank has it")
    p.add_argument("--agreement", required=True, metavar="NUMBER", help="the bank's agreement (mandate) number")
    rule = p.add_mutually_exclusive_group(required=True)
    rule.add_argument("--topup", metavar="YUAN", help="debit this much when the balance is below --below")
    rule.add_argument("--settle-month", action="store_true", help="debit what a remote account owes")
    p.add_argument("--below", metavar="YUAN", help="the balance level of a --topup rule")
    _common(p, keys=True)
    p.set_defaults(func=agreement_add)
    for name, func, text in (("show", agreement_show, "show an account's agreement (account masked)"),
                             ("remove", agreement_remove, "end an account's agreement")):
        p = asub.add_parser(name, help=text)
        p.add_argument("customer", metavar="CUSTOMER", help="12-digit customer number")
        _common(p)
        p.set_defaults(func=func)

    p = bsub.add_parser("export", help="the day's debit-request file of a bank (made once, then the same file)")
    p.add_argument("--bank", required=True, help="bank code of a profile, e.g. ICBC")
    p.add_argument("--date", required=True, metavar="YYYY-MM-DD", help="the batch day")
    p.add_argument("--out", metavar="PATH", help="write the file here (default: stdout)")
    _common(p, keys=True)
    p.set_defaults(func=bank_export)

    p = bsub.add_parser("import", help="apply a bank's return file (all rows or none; once)")
    p.add_argument("file", metavar="FILE", help="the return file as the bank sent it")
    p.add_argument("--bank", help="the bank's profile (default: the one that reads the file's header)")
    _common(p)
    p.set_defaults(func=bank_import)


def _common(p: argparse.ArgumentParser, *, keys: bool = False) -> None:
    c.add_store_args(p)
    c.add_json_arg(p)
    p.add_argument("--profiles", metavar="DIR", type=Path, action="append", default=[],
                   help="another directory of bank profiles (*.toml)")
    if keys:
        p.add_argument("--key-file", metavar="PATH", help="the master key file (default: config, next to the database)")


def _profile(args: argparse.Namespace, bank: str):
    try:
        return load_profile(bank, args.profiles)
    except ProfileError as exc:
        raise c.CliError(str(exc)) from None


def _show(args: argparse.Namespace, ag: dict | None, customer: str) -> int:
    if args.json:
        c.print_json(ag)
    elif ag is None:
        print(f"customer {customer} has no withholding agreement")
    else:
        rule = (f"top up {c.fmt_fen(ag['amount_fen'])} yuan when below {c.fmt_fen(ag['below_fen'])} yuan"
                if ag["rule"] == "topup" else "settle what the account owes")
        c.print_table(f"withholding agreement of {customer}", ["bank", "account", "holder", "agreement", "rule"],
                      [(ag["bank"], ag["account"], ag["holder"], ag["agreement"], rule)])
    return c.EXIT_OK


@c.cli_command
def agreement_add(args: argparse.Namespace) -> int:
    """Put a withholding agreement on an account."""
    if args.topup is not None and args.below is None:
        raise c.CliError("--topup needs --below YUAN (the balance below which to debit)")
    if args.settle_month and args.below is not None:
        raise c.CliError("--below goes with --topup only")
    profile = _profile(args, args.bank)
    with c.open_store_from_args(args, must_exist=True) as store:
        actor = acting_operator(store, args, "bank")
        ag = add_agreement(store, c.unlock_keys_from_args(args), args.customer, bank=profile.bank,
                           account=args.account, holder=args.holder, agreement=args.agreement,
                           rule="topup" if args.topup is not None else "settle_month",
                           amount_fen=None if args.topup is None else c.parse_yuan(args.topup),
                           below_fen=None if args.below is None else c.parse_yuan(args.below), actor=actor)
    return _show(args, ag, args.customer)


@c.cli_command
def agreement_show(args: argparse.Namespace) -> int:
    """Show an account's agreement."""
    with c.open_store_from_args(args, must_exist=True) as store:
        acting_operator(store, args, "read_books")
        return _show(args, agreement_of(store, args.customer), args.customer)


@c.cli_command
def agreement_remove(args: argparse.Namespace) -> int:
    """End an account's agreement."""
    with c.open_store_from_args(args, must_exist=True) as store:
        remove_agreement(store, args.customer, actor=acting_operator(store, args, "bank"))
    print(f"customer {args.customer}: withholding agreement removed")
    return c.EXIT_OK


@c.cli_command
def bank_export(args: argparse.Namespace) -> int:
    """Write (or print again) the day's batch file."""
    profile = _profile(args, args.bank)
    with c.open_store_from_args(args, must_exist=True) as store:
        actor = acting_operator(store, args, "bank")
        kept = store.bank_batch(profile.bank, args.date)
        if kept is not None:
            batch, made = kept, False
        else:  # only a new batch unseals account numbers: the key file is unlocked for it alone
            batch, made = export_batch(store, c.unlock_keys_from_args(args), profile, args.date, actor=actor)
    if args.out:
        Path(args.out).write_bytes(batch.content)
    else:
        sys.stdout.buffer.write(batch.content)
        sys.stdout.flush()
    note = (f"batch {batch.id}: {profile.bank} {batch.day}, {batch.rows} row(s), {c.fmt_fen(batch.total_fen)} yuan"
            f"{'' if made else ' (exported before: the same file)'}")
    print(note, file=sys.stderr)
    return c.EXIT_OK


@c.cli_command
def bank_import(args: argparse.Namespace) -> int:
    """Apply a return file."""
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise c.CliError(f"cannot read {args.file}: {exc.strerror}") from None
    try:
        profile = (_profile(args, args.bank) if args.bank
                   else pick_profile(known_profiles(args.profiles).values(), data))
        with c.open_store_from_args(args, must_exist=True) as store:
            actor = acting_operator(store, args, "bank")
            res = import_return(store, profile, data, actor=actor, source=args.file)
    except BankFileError as exc:
        raise c.CliError(str(exc).replace("return file", args.file, 1)) from None
    s = res.summary
    if args.json:
        c.print_json({"batch": res.batch, "bank": res.bank, "day": res.day, "already": res.already, **s})
    elif res.already:
        print(f"{args.file}: already imported (batch {res.batch}, {res.bank} {res.day}); nothing changed")
    else:
        print(f"{args.file}: batch {res.batch} ({res.bank} {res.day}) applied: {s['debited']} debited,"
              f" {s['partial']} partial, {s['insufficient']} insufficient funds, {s['closed']} closed;"
              f" {s['payments']} payment(s) of {c.fmt_fen(s['debited_fen'])} yuan, {s['notices']} notice(s)")
    return c.EXIT_OK
