"""`headend meter add/list/show/set` and `headend customer add/list/show/set`: the registry."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from typing import Any

from headend.bank.agreements import shown
from headend.cli import _common as c
from headend.cli import costctl as costctl_cli
from headend.cli.operators import acting_operator
from headend.store import MODES, Account, Meter, check_address, check_customer

_RESTORE = {"close-permitted": "close_permitted", "direct": "direct"}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `meter` and `customer` command groups."""
    meter = sub.add_parser("meter", help="register and inspect meters")
    msub = meter.add_subparsers(dest="meter_command", metavar="ACTION")
    meter.set_defaults(func=lambda args: _help(meter))

    p = msub.add_parser("add", help="register a meter")
    p.add_argument("address", metavar="ADDRESS", help="12-digit meter address")
    p.add_argument("--link", required=True, metavar="URL",
                   help="how to reach it: tcp://host:port, serial:///dev/ttyUSB0?baud=2400, socket://..., rfc2217://...")
    p.add_argument("--customer", required=True, metavar="N", help="12-digit customer number (account created if new)")
    p.add_argument("--mode", choices=MODES, default="local",
                   help="local: the meter holds the balance; remote: the head-end does (default local)")
    p.add_argument("--krn", type=int, default=0, metavar="K", help="key revision the meter holds (default 0)")
    p.add_argument("--protected", action="store_true", help="never cut this meter automatically")
    p.add_argument("--meter-number", metavar="N", help="meter number if it differs from the address")
    p.add_argument("--purchase-count", type=int, default=0, metavar="N",
                   help="purchase count the meter already has (default 0: a new meter)")
    _store_command(p, meter_add)

    p = msub.add_parser("import", help="register many meters from a CSV file, all or none")
    p.add_argument("file", metavar="CSV", help="CSV with a header: address,link,customer[,mode,krn,protected,"
                                               "meter_number,purchase_count]; - reads stdin")
    _store_command(p, meter_import)

    p = msub.add_parser("list", help="list meters")
    p.add_argument("--where", action="append", default=[], metavar="FIELD=VALUE",
                   help="filter (repeatable): e.g. mode=remote, link=tcp://10.0.0.5:8899, customer=000000000042")
    p.add_argument("--limit", type=c.number(int, 1), default=None, metavar="N", help="show at most N meters")
    _store_command(p, meter_list, listing=True)

    p = msub.add_parser("show", help="one meter with its account, recent commands and events")
    p.add_argument("address", metavar="ADDRESS", help="12-digit meter address")
    _store_command(p, meter_show)

    p = msub.add_parser("set", help="change a meter's link, customer, mode, KRN or protection")
    p.add_argument("address", metavar="ADDRESS", help="12-digit meter address")
    p.add_argument("--link", metavar="URL", help="how to reach it now (as for `meter add`)")
    p.add_argument("--customer", metavar="N", help="move it to this customer (account created if new)")
    p.add_argument("--mode", choices=MODES, help="who holds the balance: the meter (local) or the head-end (remote)")
    p.add_argument("--krn", type=int, metavar="K", help="key revision the meter now holds")
    prot = p.add_mutually_exclusive_group()
    prot.add_argument("--protected", dest="protected", action="store_true", default=None,
                      help="never cut this meter automatically")
    prot.add_argument("--unprotected", dest="protected", action="store_false", help="cost control may cut it again")
    _store_command(p, meter_set)

    cust = sub.add_parser("customer", help="customer accounts and their limits")
    csub = cust.add_subparsers(dest="customer_command", metavar="ACTION")
    cust.set_defaults(func=lambda args: _help(cust))

    for action, helptext in (("add", "create an account"), ("set", "change an account's limits or details")):
        p = csub.add_parser(action, help=helptext)
        p.add_argument("customer", metavar="N", help="12-digit customer number")
        p.add_argument("--name", help="the customer's name, as on notices")
        p.add_argument("--phone", help="where notices go (replaces the first number)")
        p.add_argument("--phones", metavar="N,N,..", help="every phone number, the first gets the notices")
        p.add_argument("--address", help="supply address")
        p.add_argument("--district", help="district (for reports)")
        p.add_argument("--segment", help="customer segment, e.g. residential, commercial (for reports)")
        p.add_argument("--language", help="language of notices, e.g. zh, en")
        imp = p.add_mutually_exclusive_group()
        imp.add_argument("--important", dest="important", action="store_true", default=None,
                         help="an important customer (handled with care by operators)")
        imp.add_argument("--not-important", dest="important", action="store_false",
                         help="no longer an important customer")
        p.add_argument("--withholding", metavar="...",
                       help="replaced by `headend bank agreement add` (which seals the account number)")
        p.add_argument("--alarm1", metavar="YUAN", help="first low-balance warning level")
        p.add_argument("--alarm2", metavar="YUAN", help="second (stronger) warning level")
        p.add_argument("--overdraft", metavar="YUAN", help="how far below zero before supply is cut")
        p.add_argument("--close-ok", metavar="YUAN", help="balance above which supply is restored after payment")
        prot = p.add_mutually_exclusive_group()
        prot.add_argument("--protected", dest="protected", action="store_true", default=None,
                          help="never cut (vulnerable customer, hospital)")
        prot.add_argument("--unprotected", dest="protected", action="store_false",
                          help="cost control may cut this customer's supply")
        p.add_argument("--restore", choices=sorted(_RESTORE), help="after payment: allow close (button) or close directly")
        p.add_argument("--tariff", metavar="NAME", help="the tariff remote cost control rates with "
                                                        "(see `headend tariff list`)")
        _store_command(p, customer_add if action == "add" else customer_set)

    p = csub.add_parser("list", help="list accounts with their balance, limits, tariff and meters")
    p.add_argument("--limit", type=c.number(int, 1), default=None, metavar="N", help="show at most N accounts")
    _store_command(p, customer_list, listing=True)

    p = csub.add_parser("show", help="one account with its meters and recent money movements")
    p.add_argument("customer", metavar="N", help="12-digit customer number")
    _store_command(p, customer_show)


def _store_command(p: argparse.ArgumentParser, func: Any, *, listing: bool = False) -> None:
    # every registry command works on the store and can answer in JSON; lists also in CSV
    c.add_store_args(p)
    c.add_json_arg(p, csv=listing)
    p.set_defaults(func=func)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return c.EXIT_USAGE


def _address(text: str) -> str:
    try:
        return check_address(text)
    except ValueError as exc:
        raise c.CliError(str(exc)) from None


def _answer(args: argparse.Namespace, record: Meter | Account, text: str) -> int:
    """A command's one changed record: as JSON with --json, else the line of text."""
    if args.json:
        c.print_json(record.to_dict())
    else:
        print(text)
    return c.EXIT_OK


def _meter_rows(meters: list[Meter]) -> list[list[Any]]:
    # what each meter last told us (a read, a recharge, a relay command): "" until it has
    return [
        [m.address, m.customer, m.mode, m.relay or "", c.fmt_fen(m.balance_fen), c.fmt_time(m.last_seen), m.link,
         m.krn, m.purchase_count, "yes" if m.protected else ""]
        for m in meters
    ]


_METER_COLS = ["address", "customer", "mode", "relay", "meter balance", "last seen", "link", "KRN", "purchases",
               "protected"]


@c.cli_command
def meter_add(args: argparse.Namespace) -> int:
    """Register a meter (audited)."""
    address = _address(args.address)
    try:
        customer = check_customer(args.customer)
    except ValueError as exc:
        raise c.CliError(str(exc)) from None
    with c.open_store_from_args(args) as store:
        actor = acting_operator(store, args, "meters")
        m = store.add_meter(address, link=args.link, customer=customer, actor=actor, mode=args.mode, krn=args.krn,
                            protected=args.protected, meter_number=args.meter_number,
                            purchase_count=args.purchase_count)
    return _answer(args, m, f"registered meter {m.address} ({m.mode} cost control) for customer {m.customer}"
                            f" on {m.link}")


_TRUE = {"1", "yes", "true", "y", "on"}
_FALSE = {"", "0", "no", "false", "n", "off"}


def _csv_rows(text: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    rows: list[dict[str, Any]] = []
    for n, raw in enumerate(reader, 1):
        row: dict[str, Any] = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if None in raw:
            raise c.CliError(f"CSV row {n}: more values than header columns")
        for key in ("krn", "purchase_count"):
            if row.get(key, "") == "":
                row.pop(key, None)
            else:
                try:
                    row[key] = int(row[key])
                except ValueError:
                    raise c.CliError(f"CSV row {n}: {key} must be a whole number, got {row[key]!r}") from None
        if "protected" in row:
            flag = str(row["protected"]).lower()
            if flag not in _TRUE | _FALSE:
                raise c.CliError(f"CSV row {n}: protected is yes or no, got {row['protected']!r}")
            row["protected"] = flag in _TRUE
        for key in ("mode", "meter_number"):
            if row.get(key) == "":
                row.pop(key)
        rows.append(row)
    return rows


@c.cli_command
def meter_import(args: argparse.Namespace) -> int:
    """Register every meter of a CSV file in one transaction (audited per meter)."""
    try:
        text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()
    except OSError as exc:
        raise c.CliError(f"cannot read {args.file}: {exc.strerror}") from None
    rows = _csv_rows(text)
    if not rows:
        raise c.CliError(f"{args.file} holds no meters (it needs a header line and one line per meter)")
    with c.open_store_from_args(args) as store:
        meters = store.add_meters(rows, actor=acting_operator(store, args, "meters"))
    if args.json:
        c.print_json([m.to_dict() for m in meters])
    else:
        print(f"registered {len(meters)} meter(s)")
    return c.EXIT_OK


@c.cli_command
def meter_list(args: argparse.Namespace) -> int:
    """List meters, optionally filtered."""
    with c.open_store_from_args(args, must_exist=True) as store:
        meters = store.find_meters(c.parse_where(args.where), limit=args.limit)
    c.print_list(args, f"{len(meters)} meter(s) (relay and meter balance as last seen)", _METER_COLS,
                 _meter_rows(meters), meters)
    return c.EXIT_OK


@c.cli_command
def meter_show(args: argparse.Namespace) -> int:
    """Show one meter, its account, its latest commands and events."""
    address = _address(args.address)
    with c.open_store_from_args(args, must_exist=True) as store:
        m = store.get_meter(address)
        acct = store.get_account(m.customer)
        cmds = store.list_commands(meter=address, limit=10)
        events = store.events(address, limit=10)
    if args.json:
        c.print_json({"meter": m.to_dict(), "account": acct.to_dict(), "commands": [x.to_dict() for x in cmds],
                      "events": [e.to_dict() for e in events]})
        return c.EXIT_OK
    rows = [
        ("address", m.address), ("meter number", m.meter_number), ("link", m.link), ("customer", m.customer),
        ("mode", m.mode), ("key revision", m.krn), ("purchase count", m.purchase_count),
        ("protected", "yes" if m.protected else "no"), ("relay (last seen)", m.relay or "unknown"),
        ("meter balance (last seen)", c.fmt_fen(m.balance_fen) or "unknown"), ("last seen", c.fmt_time(m.last_seen)),
        ("registered", c.fmt_time(m.created_at)),
    ]
    if m.mode == "remote":
        rows.append(("account balance", c.fmt_fen(acct.balance_fen)))
    c.print_table(f"meter {m.address}", ["field", "value"], rows)
    if cmds:
        c.print_table("latest commands", ["id", "kind", "status", "attempts", "updated", "error"],
                      [(x.id, x.kind, x.status, x.attempts, c.fmt_time(x.updated_at), x.last_error or "") for x in cmds])
    if events:
        c.print_table("latest events", ["when", "kind", "source", "detail"],
                      [(c.fmt_time(e.at), e.kind, e.source, "" if e.detail is None else e.detail) for e in events])
    return c.EXIT_OK


@c.cli_command
def meter_set(args: argparse.Namespace) -> int:
    """Change a meter's registration (audited)."""
    address = _address(args.address)
    changes = {k: getattr(args, k) for k in ("link", "customer", "mode", "krn", "protected")}
    if all(v is None for v in changes.values()):
        raise c.CliError("nothing to change: give --link, --customer, --mode, --krn or --protected/--unprotected")
    with c.open_store_from_args(args, must_exist=True) as store:
        m = store.update_meter(address, actor=acting_operator(store, args, "meters"), **changes)
    return _answer(args, m, f"meter {m.address} updated")


def _limits(args: argparse.Namespace) -> dict[str, Any]:
    if args.withholding is not None:
        raise c.CliError("--withholding is gone: record a withholding agreement with `headend bank agreement add "
                         "CUSTOMER --bank B --account N --holder NAME --agreement NO (--topup YUAN --below YUAN | "
                         "--settle-month)`, which seals the account number")
    out: dict[str, Any] = {
        "name": args.name,
        "phone": args.phone,
        "phones": None if args.phones is None else args.phones.split(","),
        "address": args.address,
        "district": args.district,
        "segment": args.segment,
        "language": args.language,
        "important": args.important,
        "protected": args.protected,
        "restore_policy": _RESTORE[args.restore] if args.restore else None,
        "tariff": args.tariff,
    }
    for opt, field in (("alarm1", "alarm1_fen"), ("alarm2", "alarm2_fen"), ("overdraft", "overdraft_fen"),
                       ("close_ok", "close_ok_fen")):
        v = getattr(args, opt)
        out[field] = None if v is None else c.parse_yuan(v)
    return out


def _account_view(a: Account) -> list[tuple[str, Any]]:
    return [
        ("customer", a.customer), ("name", a.name), ("phones", ", ".join(a.phones)), ("address", a.address),
        ("district", a.district), ("segment", a.segment), ("language", a.language),
        ("important", "yes" if a.important else "no"),
        ("withholding agreement", "" if not a.withholding else ", ".join(f"{k} {v}" for k, v in shown(a.withholding).items())),
        ("balance", c.fmt_fen(a.balance_fen)),
        ("sub-fen remainder", a.rem), ("ladder energy (Wh)", a.ladder_wh), ("alarm 1", c.fmt_fen(a.alarm1_fen)),
        ("alarm 2", c.fmt_fen(a.alarm2_fen)), ("overdraft", c.fmt_fen(a.overdraft_fen)),
        ("restore above", c.fmt_fen(a.close_ok_fen)), ("protected", "yes" if a.protected else "no"),
        ("restore by", a.restore_policy.replace("_", "-")), ("tariff", a.tariff or ""),
        ("supply (cost control)", a.supply.replace("_", "-") + (f" since {c.fmt_time(a.supply_at)}" if a.supply_at else "")),
        ("notices sent", ("none", "alarm 1", "alarm 2", "cut notice")[a.notice_level]
         + (f" at {c.fmt_time(a.notice_at)}" if a.notice_at else "")),
        ("rated until", "" if a.rated_until is None else a.rated_until),
    ]


@c.cli_command
def customer_add(args: argparse.Namespace) -> int:
    """Create an account (audited)."""
    fields = {k: v for k, v in _limits(args).items() if v is not None}
    if args.tariff is not None:
        costctl_cli.check_tariff(args, args.tariff)
    with c.open_store_from_args(args) as store:
        a = store.add_account(args.customer, actor=acting_operator(store, args, "meters"), **fields)
    return _answer(args, a, f"customer {a.customer} added")


@c.cli_command
def customer_set(args: argparse.Namespace) -> int:
    """Change an account's limits or details (audited)."""
    fields = _limits(args)
    if all(v is None for v in fields.values()):
        raise c.CliError("nothing to change: give at least one option (see --help)")
    if args.tariff is not None:
        costctl_cli.check_tariff(args, args.tariff)
    with c.open_store_from_args(args, must_exist=True) as store:
        a = store.update_account(check_customer(args.customer), actor=acting_operator(store, args, "meters"), **fields)
    return _answer(args, a, f"customer {a.customer} updated")


@c.cli_command
def customer_list(args: argparse.Namespace) -> int:
    """List accounts."""
    with c.open_store_from_args(args, must_exist=True) as store:
        accounts = store.list_accounts(limit=args.limit)
        meters: dict[str, list[str]] = {}
        for m in store.find_meters():
            meters.setdefault(m.customer, []).append(m.address)
    cols = ["customer", "name", "balance", "tariff", "meters", "alarm 1", "alarm 2", "overdraft", "protected",
            "restore by"]
    rows = [(a.customer, a.name, c.fmt_fen(a.balance_fen), a.tariff or "", " ".join(meters.get(a.customer, [])),
             c.fmt_fen(a.alarm1_fen), c.fmt_fen(a.alarm2_fen), c.fmt_fen(a.overdraft_fen),
             "yes" if a.protected else "", a.restore_policy.replace("_", "-")) for a in accounts]
    records = [dict(a.to_dict(), meters=meters.get(a.customer, [])) for a in accounts]
    c.print_list(args, f"{len(accounts)} customer(s)", cols, rows, records)
    return c.EXIT_OK


@c.cli_command
def customer_show(args: argparse.Namespace) -> int:
    """Show one account, its meters and latest money movements."""
    with c.open_store_from_args(args, must_exist=True) as store:
        a = store.get_account(check_customer(args.customer))
        meters = store.meters_of_customer(a.customer)
        ledger = store.ledger(a.customer, limit=10)
    if args.json:
        c.print_json({"account": a.to_dict(), "meters": [m.to_dict() for m in meters],
                      "ledger": [e.to_dict() for e in ledger]})
        return c.EXIT_OK
    c.print_table(f"customer {a.customer}", ["field", "value"], _account_view(a))
    if meters:
        c.print_table("meters", _METER_COLS, _meter_rows(meters))
    if ledger:
        c.print_table("latest money movements", ["when", "day", "kind", "amount", "balance after", "meter",
                                                 "channel", "txn", "by"],
                      [(c.fmt_time(e.at), e.day or "", e.kind, c.fmt_fen(e.amount_fen), c.fmt_fen(e.balance_after),
                        e.meter or "", e.channel or "", e.txn_id or "", e.actor) for e in ledger])
    return c.EXIT_OK
