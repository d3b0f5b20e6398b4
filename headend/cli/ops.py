"""Operator commands that reach meters: read, recharge, trip, close, hold, alarm, sync-time,
limits set, tariff set, and `serve` (the front-end and outbox worker).

Every command is put in the outbox (audited, with who and when) and then waited for: the CLI
returns when `headend serve` has the meter's confirmation (exit 0), when the meter refused or
the command failed (exit 1), or after ``--wait`` seconds with the command still safely queued
(exit 3; serve keeps trying).  ``--all`` / ``--where`` act on many meters with a progress bar.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import time
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterator

from headend.api.config import ApiConfig, api_config, parse_api_url
from headend.cli import _common as c
from headend.cli import costctl as costctl_cli
from headend.cli import notices as notices_cli
from headend.cli.operators import acting_operator
from headend.commands import DEFAULT_READ_DIS, parse_di
from headend.commands.params import check as check_params
from headend.store import FINAL_STATUSES, Command, Conflict, InvalidInput, Meter, Store, StoreError, sqlite_path
from headend.store.outbox import LEASE_TTL_S
from headend.transports import LinkError

_FINAL = FINAL_STATUSES


def _op_args(p: argparse.ArgumentParser, *, bulk: bool = True) -> None:
    c.add_selection_args(p, bulk=bulk)
    p.add_argument("--wait", type=c.number(float, 0), default=30.0, metavar="S",
                   help="seconds to wait for the meter's confirmation (default 30; 0: just queue)")
    p.add_argument("--idem", metavar="KEY", help="idempotency key: repeating the command with it queues nothing new")
    c.add_store_args(p)
    c.add_json_arg(p)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the meter operations and `serve`."""
    p = sub.add_parser("read", help="read data items from meters (default: energy, money, status word 3)")
    _op_args(p)
    p.add_argument("items", nargs="*", metavar="DI|NAME", help="8-hex-digit DI or registry name, e.g. remaining_money")
    p.set_defaults(func=op_read)

    p = sub.add_parser("recharge", help="take a payment for a meter (operator channel): exactly one credit however"
                                        " often it is retried")
    p.add_argument("meter", metavar="METER", help="12-digit meter address")
    p.add_argument("amount", metavar="YUAN", help="amount in yuan, e.g. 50 or 12.50")
    p.add_argument("--wait", type=c.number(float, 0), default=30.0, metavar="S",
                   help="seconds to wait for the meter (default 30; 0: just queue)")
    p.add_argument("--idem", metavar="KEY", help="the payment's transaction id: a repeat with it pays nothing new")
    c.add_store_args(p)
    c.add_json_arg(p)
    p.set_defaults(func=op_recharge)

    p = sub.add_parser("trip", help="cut supply (refused by meters in power hold)")
    _op_args(p)
    p.set_defaults(func=lambda a: _relay(a, "trip"))

    p = sub.add_parser("close", help="allow the customer to restore supply (button), or --direct close")
    _op_args(p)
    p.add_argument("--direct", action="store_true", help="close the relay at once instead of waiting for the button")
    p.set_defaults(func=lambda a: _relay(a, "close_direct" if a.direct else "close_permitted"))

    for name, helptext in (("hold", "power hold: the meter refuses every trip while on"),
                           ("alarm", "customer alarm on the meter's display/buzzer")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("state", choices=("on", "off"), help="on or off")
        _op_args(p)
        p.set_defaults(func=lambda a, name=name: _relay(a, f"{name}_{a.state}"))

    p = sub.add_parser("sync-time", help="set meter clocks to the head-end's (broadcast for small offsets)")
    _op_args(p)
    how = p.add_mutually_exclusive_group()
    how.add_argument("--broadcast", dest="mode", action="store_const", const="broadcast",
                     help="only broadcast (meters accept <= 5 min once a day)")
    how.add_argument("--set", dest="mode", action="store_const", const="set", help="always an authenticated set")
    p.set_defaults(func=op_sync_time, mode="auto")

    limits = sub.add_parser("limits", help="meter money limits")
    lsub = limits.add_subparsers(dest="limits_command", metavar="ACTION")
    limits.set_defaults(func=lambda a: (limits.print_help(), c.EXIT_USAGE)[1])
    p = lsub.add_parser("set", help="write money limits to meters (read back to confirm)")
    _op_args(p)
    for opt, what in (("alarm1", "alarm 1"), ("alarm2", "alarm 2"), ("overdraft", "overdraft limit"),
                      ("hoarding", "hoarding (largest balance)"), ("close-ok", "close-permitted amount")):
        p.add_argument(f"--{opt}", metavar="YUAN", help=f"{what} in yuan")
    p.set_defaults(func=op_limits)

    tariff = sub.add_parser("tariff", help="meter tariff tables")
    tsub = tariff.add_subparsers(dest="tariff_command", metavar="ACTION")
    tariff.set_defaults(func=lambda a: (tariff.print_help(), c.EXIT_USAGE)[1])
    p = tsub.add_parser("set", help="write TOU prices, ladder and day table to meters (read back to confirm)")
    _op_args(p)
    p.add_argument("--set", dest="tset", type=int, choices=(1, 2), default=1, help="tariff set (default 1: current)")
    p.add_argument("--prices", metavar="P1,P2,..", help="TOU prices in yuan/kWh, e.g. 0.5680,0.5380,0.2880")
    p.add_argument("--ladder-thresholds", metavar="KWH,..", help="ladder thresholds in kWh, e.g. 2880,4800")
    p.add_argument("--ladder-prices", metavar="P,..", help="ladder increments in yuan/kWh, e.g. 0,0.05,0.30")
    p.add_argument("--day-table", metavar="HH:MM=T,..", help="day table 1: slot starts and tariff, e.g. 00:00=4,08:00=2,22:00=4")
    p.set_defaults(func=op_tariff)
    p = tsub.add_parser("list", help="the tariffs accounts can name (built in, plus the [costctl] tariffs file)")
    c.add_store_args(p)
    c.add_json_arg(p, csv=True)
    p.set_defaults(func=costctl_cli.tariff_list)

    p = sub.add_parser("serve", help="run the comms front-end and work the command outbox until stopped")
    p.add_argument("--listen", action="append", default=[], metavar="URL",
                   help="also accept dial-in meters on listen://HOST:PORT (listen:// links in the registry are automatic)")
    p.add_argument("--timeout", type=c.number(float, 0.01), default=2.0, help="seconds to wait for each reply (default 2)")
    p.add_argument("--security-timeout", type=c.number(float, 0.01), default=5.0,
                   help="seconds to wait for replies to authenticated commands (default 5: meters are slower there)")
    p.add_argument("--retries", type=c.number(int, 0, 10), default=2, help="re-sends per request (default 2)")
    p.add_argument("--attempts", type=c.number(int, 1), default=3,
                   help="tries per command before a non-money command fails (default 3); recharges never give up")
    p.add_argument("--retry-backoff", type=c.number(float, 0), default=2.0, help="seconds before a command's first retry (default 2)")
    p.add_argument("--concurrency", type=c.number(int, 1), default=256, help="commands in flight at once (default 256)")
    p.add_argument("--collect-every", type=c.number(float, 0), default=0.0, metavar="S",
                   help="also read energy, money and status word 3 from every meter every S seconds (default: off)")
    p.add_argument("--lease", type=c.number(int, 1), default=LEASE_TTL_S, metavar="S",
                   help=f"on a PostgreSQL database shared by several serves: how long after this serve stops"
                        f" beating (killed, cut off) the others take over its meters and commands (default"
                        f" {LEASE_TTL_S})")
    p.add_argument("--key-file", metavar="PATH", help="the master key file (default: config, next to the database)")
    p.add_argument("--summary-every", type=c.number(float, 0), default=60.0, metavar="S",
                   help="log a line on the outbox (commands done, queued, meters) every S seconds when it "
                        "changed (default 60; 0: never)")
    p.add_argument("--api", metavar="URL", help="also serve the payments API on tcp://HOST:PORT (default: [api] listen"
                   " in the config; off when neither is given)")
    p.add_argument("--no-console", action="store_true",
                   help="serve the payments API without the operator console at / (default: the console is on)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log every link and command step too (default: cycle summaries, warnings and errors)")
    c.add_store_args(p)
    costctl_cli.add_serve_args(p)
    notices_cli.add_serve_args(p)
    p.set_defaults(func=op_serve)


# ----------------------------------------------------------------------------- waiting
def _enqueue(store: Store, args: argparse.Namespace, meters: list[Meter], kind: str, params: Any) -> list[Command]:
    actor = acting_operator(store, args, "meters")
    idem = getattr(args, "idem", None)
    if len(meters) == 1:
        return [store.enqueue(meters[0].address, kind, params, actor=actor, idem_key=idem)]
    return store.enqueue_many([m.address for m in meters], kind, params, actor=actor, idem_prefix=idem)


def _wait(store: Store, cmds: list[Command], timeout: float, label: str, show: bool) -> list[Command]:
    """Poll until every command is final or ``timeout`` passes; a progress bar for many."""
    latest = {cmd.id: cmd for cmd in cmds}
    pending = [cmd.id for cmd in cmds if cmd.status not in _FINAL]
    deadline = time.monotonic() + timeout
    bar = c.ProgressBar(label, len(cmds), enabled=show)
    bar.advance(len(cmds) - len(pending))
    try:
        while pending and time.monotonic() < deadline:
            time.sleep(0.05 if len(pending) < 50 else 0.2)
            still = []
            for cid in pending:
                cmd = store.get_command(cid)
                latest[cid] = cmd
                if cmd.status in _FINAL:
                    bar.advance(1)
                else:
                    still.append(cid)
            pending = still
    finally:
        bar.close()
    return [latest[cmd.id] for cmd in cmds]


def _outcome(store: Store, cmds: list[Command], args: argparse.Namespace, describe: Callable[[Command], str]) -> int:
    """Print each command's outcome; the exit code says the worst."""
    failed = [x for x in cmds if x.status in ("failed", "rejected", "cancelled")]
    unresolved = [x for x in cmds if x.status == "unresolved"]
    waiting = [x for x in cmds if x.status not in _FINAL and x.status != "unresolved"]
    if args.json:
        c.print_json([x.to_dict() for x in cmds])
    elif len(cmds) == 1:
        x = cmds[0]
        text = describe(x) if x.status == "confirmed" else ""
        if text:
            print(text)
    else:
        c.print_table(None, ["meter", "command", "status", "result"],
                      [(x.meter, x.id, x.status, describe(x) if x.status == "confirmed" else (x.last_error or ""))
                       for x in cmds])
    for x in failed:
        c.err(f"command {x.id} ({x.kind} on {x.meter}) {x.status}: {x.last_error}")
    for x in unresolved[:10]:
        c.err(f"command {x.id} ({x.kind} on {x.meter}) is UNRESOLVED: {x.last_error}. "
              f"Follow it with `headend commands --meter {x.meter}`; do not pay it again")
    if waiting and all(x.attempts == 0 for x in waiting):
        alive = store.serve_alive()
        if alive is None:
            c.err("nothing picked these commands up: is `headend serve` running on this database?")
        else:
            c.err(f"`headend serve` (pid {alive['pid']}) is running but has not reached these commands yet: "
                  "each meter's commands run one at a time, in order")
    for x in waiting[:10]:
        why = f"; last error: {x.last_error}" if x.last_error else ""
        c.err(f"command {x.id} ({x.kind} on {x.meter}) is still {x.status} after {args.wait:g} s{why}. "
              f"It stays queued and `headend serve` keeps trying; follow it with `headend commands --meter {x.meter}`")
    if len(waiting) > 10:
        c.err(f"... and {len(waiting) - 10} more still queued")
    if failed:
        return c.EXIT_FAILED
    if unresolved:
        return c.EXIT_UNRESOLVED
    if waiting:
        return c.EXIT_QUEUED
    return c.EXIT_OK


def _run(args: argparse.Namespace, kind: str, params: Any, describe: Callable[[Command], str],
         check: Callable[[list[Meter]], None] | None = None) -> int:
    with c.open_store_from_args(args, must_exist=True) as store:
        meters = c.select_meters(store, args) if hasattr(args, "all") else [store.get_meter(_address(args.meter))]
        if check is not None:
            check(meters)
        try:
            check_params(kind, params)  # the worker's own rules: nothing that cannot work is queued
        except InvalidInput as exc:
            raise c.CliError(str(exc)) from None
        cmds = _enqueue(store, args, meters, kind, params)
        if args.wait > 0 and not _serve_appears(store, min(args.wait, SERVE_GRACE_S)):
            if all(x.status in ("queued", "sent") for x in cmds):
                return _unserved(cmds, args, store.location)
            return _outcome(store, cmds, args, describe)  # (an --idem repeat) where they stand now
        if args.wait <= 0:
            if not args.json:
                print(f"queued {len(cmds)} {kind} command(s): {', '.join(str(x.id) for x in cmds[:20])}")
            else:
                c.print_json([x.to_dict() for x in cmds])
            return c.EXIT_QUEUED
        cmds = _wait(store, cmds, args.wait, kind.replace("_", " "), not args.json)
        return _outcome(store, cmds, args, describe)


def _address(text: str) -> str:
    from headend.store import InvalidInput, check_address

    try:
        return check_address(text)
    except InvalidInput as exc:
        raise c.CliError(str(exc)) from None


# ----------------------------------------------------------------------------- commands
@c.cli_command
def op_read(args: argparse.Namespace) -> int:
    """Queue reads and print the values the meters returned."""
    if args.meter and not args.meter.isdigit() and (args.all or args.where):
        # `read --all remaining_money`: the first item landed in the METER slot
        args.items.insert(0, args.meter)
        args.meter = None
    names = args.items or [f"{d:08X}" for d in DEFAULT_READ_DIS]
    dis = []
    for name in names:
        try:
            dis.append(f"{parse_di(name):08X}")
        except ValueError as exc:
            raise c.CliError(str(exc)) from None

    def shown(v: dict) -> str:
        if "text" in v:  # the worker's words for it
            return str(v["text"])
        return f"{v['value']}{(' ' + v['unit']) if v['unit'] else ''}"  # replies stored before "text"

    def describe(x: Command) -> str:
        vals = (x.reply or {}).get("values", {})
        if len(vals) == 1 or args.json:
            return "; ".join(f"{v['name']}={shown(v)}" for v in vals.values())
        if not args.all and not args.where:
            c.print_table(f"meter {x.meter}", ["DI", "item", "value"],
                          [(f"{d[:2]} {d[2:4]} {d[4:6]} {d[6:]}", v["name"], shown(v)) for d, v in vals.items()])
            return ""
        return "; ".join(f"{v['name']}={shown(v)}" for v in vals.values())

    return _run(args, "read", {"dis": dis}, describe)


@c.cli_command
def op_recharge(args: argparse.Namespace) -> int:
    """Take a payment through the operator channel: to a local-cost-control meter it is one
    recharge (waited for), to a remote-cost-control account a credit (and a restore if due)."""
    import uuid

    from headend.payments import OPERATOR_CHANNEL, accept_payment, ensure_operator_channel

    fen = c.parse_yuan(args.amount)
    try:
        check_params("recharge", {"amount_fen": fen})  # the worker's own rules, before any payment
    except InvalidInput as exc:
        raise c.CliError(str(exc)) from None
    address = _address(args.meter)
    with c.open_store_from_args(args, must_exist=True) as store:
        actor = acting_operator(store, args, "recharge")
        ensure_operator_channel(store, actor=actor)
        txn = args.idem or f"cli-{uuid.uuid4().hex[:16]}"
        first = store.payment_by_txn(OPERATOR_CHANNEL, txn)
        p = accept_payment(store, channel_id=OPERATOR_CHANNEL, txn_id=txn, amount_fen=fen, meter=address, actor=actor,
                           paid_at=first.paid_at if first else store.now())
        if p.command_id is None:
            acct = store.get_account(p.customer)
            if args.json:
                c.print_json(p.to_dict())
            else:
                print(f"payment {p.id}: {c.fmt_fen(fen)} yuan {p.state} to the account of customer {p.customer}"
                      f" (remote cost control), balance {c.fmt_fen(acct.balance_fen)} yuan")
            return c.EXIT_OK
        cmds = [store.get_command(p.command_id)]
        if args.wait > 0 and cmds[0].status not in _FINAL and not serve_running(store):
            if cmds[0].status != "unresolved":
                return _unserved(cmds, args, store.location)
            args.wait = 0.0  # nothing moves it now: say where it stands
        if args.wait <= 0 and cmds[0].status in ("queued", "sent"):
            if args.json:
                c.print_json(p.to_dict())
            else:
                print(f"payment {p.id}: recharge command {p.command_id} queued for meter {address}")
            return c.EXIT_QUEUED
        if args.wait > 0:
            cmds = _wait(store, cmds, args.wait, "recharge", not args.json)

        def describe(x: Command) -> str:
            r = x.reply or {}
            how = ("credited" if r.get("result") == "credited" else
                   "settled: the meter's purchase count shows it credited" if r.get("result") == "settled" else
                   "already credited (repeat recharge: no second credit)")
            bal = f", balance {c.fmt_fen(r['balance_fen'])} yuan" if r.get("balance_fen") is not None else ""
            return (f"payment {p.id}, meter {x.meter}: {c.fmt_fen(r.get('amount_fen', fen))} yuan {how},"
                    f" purchase count {r.get('purchase_count')}{bal}")

        return _outcome(store, cmds, args, describe)



_RELAY_TEXT = {
    "trip": "trip",
    "close_permitted": "close permitted (the customer's button restores supply)",
    "close_direct": "direct close",
    "hold_on": "power hold on",
    "hold_off": "power hold off",
    "alarm_on": "alarm on",
    "alarm_off": "alarm off",
}


def _relay(args: argparse.Namespace, kind: str) -> int:
    return _relay_cmd(kind)(args)


def _relay_cmd(kind: str) -> Callable[[argparse.Namespace], int]:
    @c.cli_command
    def run(args: argparse.Namespace) -> int:
        return _relay_run(args, kind)

    return run


def _relay_run(args: argparse.Namespace, kind: str) -> int:
    def describe(x: Command) -> str:
        r = x.reply or {}
        note = f" ({r['note']})" if r.get("note") else ""
        return f"meter {x.meter}: {_RELAY_TEXT[kind]} confirmed; relay {r.get('relay')}, status word 3 {r.get('status_word_3')}{note}"

    return _run(args, kind, {}, describe)


@c.cli_command
def op_sync_time(args: argparse.Namespace) -> int:
    """Queue time synchronisation."""

    def describe(x: Command) -> str:
        r = x.reply or {}
        return f"meter {x.meter}: was {r.get('offset_s')} s off; {r.get('method')}; now {r.get('offset_after_s', r.get('offset_s'))} s"

    return _run(args, "sync_time", {"mode": args.mode}, describe)


@c.cli_command
def op_limits(args: argparse.Namespace) -> int:
    """Queue money-limit writes."""
    params = {}
    for opt in ("alarm1", "alarm2", "overdraft", "hoarding", "close_ok"):
        v = getattr(args, opt)
        if v is not None:
            params[f"{opt}_fen"] = c.parse_yuan(v)
    if not params:
        raise c.CliError("give at least one of --alarm1 --alarm2 --overdraft --hoarding --close-ok (yuan)")

    def describe(x: Command) -> str:
        return f"meter {x.meter}: limits written and read back: {_written((x.reply or {}).get('written') or {})}"

    return _run(args, "set_limits", params, describe)


def _written(values: dict[str, Any]) -> str:
    """{"04001001": "10.00", ...} as "alarm money limit 1 10.00 yuan, ..." (the registry's words)."""
    from protocol.di import lookup

    out = []
    for di, value in values.items():
        item = lookup(int(di, 16))
        name = item.title if item else di
        unit = f" {item.unit}" if item and item.unit and not isinstance(value, (list, dict)) else ""
        out.append(f"{name} {value}{unit}")
    return ", ".join(out)


def _decimals(text: str, scale: int, what: str) -> list[int]:
    out = []
    for part in text.split(","):
        try:
            d = Decimal(part.strip()) * scale
        except InvalidOperation:
            raise c.CliError(f"bad {what} {part!r}: write numbers separated by commas") from None
        if d != d.to_integral_value() or d < 0:
            raise c.CliError(f"bad {what} {part!r}: too many decimals or negative")
        out.append(int(d))
    return out


@c.cli_command
def op_tariff(args: argparse.Namespace) -> int:
    """Queue tariff-table writes."""
    params: dict[str, Any] = {"set": args.tset}
    if args.prices:
        params["prices"] = _decimals(args.prices, 10000, "price")
    if args.ladder_thresholds:
        params["ladder_thresholds_wh"] = _decimals(args.ladder_thresholds, 1000, "ladder threshold")
    if args.ladder_prices:
        params["ladder_prices"] = _decimals(args.ladder_prices, 10000, "ladder price")
    if args.day_table:
        table = []
        for part in args.day_table.split(","):
            try:
                hm, tariff = part.split("=")
                hh, mm = hm.split(":")
                table.append([int(hh), int(mm), int(tariff)])
            except ValueError:
                raise c.CliError(f"bad --day-table entry {part!r}: write HH:MM=TARIFF, e.g. 08:00=2") from None
        params["day_table"] = table
    if len(params) == 1:
        raise c.CliError("give --prices, --ladder-thresholds/--ladder-prices or --day-table")

    def describe(x: Command) -> str:
        return f"meter {x.meter}: tariff set {args.tset} written and read back"

    return _run(args, "set_tariff", params, describe)


@c.cli_command
def op_serve(args: argparse.Namespace) -> int:
    """Run the front-end and the outbox worker until SIGINT/SIGTERM."""
    from headend import serve as serve_module
    from headend.costctl import loop as costctl_loop
    from headend.serve import ServeOptions, serve
    from headend.transports import LinkSettings, parse_link_url

    for url in args.listen:
        try:
            if parse_link_url(url).kind != "listen":
                raise ValueError(f"--listen {url}: write it as listen://HOST:PORT")
        except ValueError as exc:
            raise c.CliError(str(exc)) from None
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for log in (serve_module.log, costctl_loop.log):  # their cycle summaries are for the operator
        log.setLevel(logging.INFO)
    keys = c.unlock_keys_from_args(args)
    options = ServeOptions(
        link=LinkSettings(timeout=args.timeout, retries=args.retries),
        listen=tuple(args.listen),
        concurrency=args.concurrency,
        max_attempts=args.attempts,
        retry_backoff_s=args.retry_backoff,
        security_timeout=args.security_timeout,
        collect_every_s=args.collect_every,
        costctl=costctl_cli.serve_loop_options(args, "costctl"),
        trip_rules=c.trip_rules_from_args(args),
        **_clock_options(args),
        notices=notices_cli.serve_notice_options(args),
        api=_api_options(args),
        console=not args.no_console,
        lease_s=args.lease,
    )
    # the lock first and released last: closing its descriptor while SQLite has the file open
    # would drop SQLite's own locks on it
    with _only_serve(str(c.config_from_args(args).store.db)), c.open_store_from_args(args) as store:
        # the daemon's own start and stop, recorded under the account it runs as: no operator login,
        # since serve runs unattended (a service manager restarts it); what it then does to meters
        # was queued, and audited, by whoever asked for it
        store.log_action(c.actor_of(args), "serve.start", None, {"pid": os.getpid()})

        stopped_by: list[str] = []
        at_start = store.count_commands()

        async def main() -> None:
            stop = asyncio.Event()
            ready = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, lambda sig=sig: (stopped_by.append(sig.name), stop.set()))
            api_urls: list[str] = []
            task = asyncio.create_task(serve(store, keys, options, stop, ready, api_urls))
            await asyncio.wait([task, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
            if ready.is_set():
                for url in api_urls:
                    print(f"headend serve: payments API on {url} (OpenAPI at {url}/openapi.json)", flush=True)
                    if options.console:
                        print(f"headend serve: operator console on {url}/", flush=True)
                print(f"headend serve: working the outbox of {store.location} ({_meter_count(store)} meters now; "
                      "meters added later are served too); Ctrl-C stops", flush=True)
            reporter = asyncio.create_task(_summaries(store, args.summary_every, stop))
            try:
                await task
            finally:
                stop.set()
                await reporter

        profile = os.environ.get("PREPAID645_SERVE_PROFILE")
        profiler = None
        if profile:
            # where a serve's CPU goes under real load: cProfile's statistics written to that file
            # when the serve stops (README, Payments API: profiling a serve under the bench)
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        try:
            asyncio.run(main())
        except Conflict as exc:
            raise c.CliError(str(exc), c.EXIT_FAILED) from None
        except (LinkError, OSError) as exc:
            raise c.CliError(f"serve stopped: {exc}", c.EXIT_FAILED) from None
        finally:
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(str(profile))
            store.log_action(c.actor_of(args), "serve.stop", None, None)
            done = _done_since(at_start, store.count_commands())
            why = f" ({stopped_by[0]})" if stopped_by else ""
            print(f"headend serve: stopped{why}; {done} while it ran; queued commands wait for the next serve",
                  flush=True)
    return c.EXIT_OK


def _clock_options(args: argparse.Namespace) -> dict[str, Any]:
    clock = costctl_cli.meter_clock(args)
    return {} if clock is None else {"meter_clock": clock, "clock_speed": args.costctl_speed}


def _meter_count(store: Store) -> int:
    return len(store.find_meters())


def _done_since(before: dict[str, int], now: dict[str, int]) -> str:
    return ", ".join(f"{now.get(s, 0) - before.get(s, 0)} {s}" for s in ("confirmed", "failed"))


async def _summaries(store: Store, every_s: float, stop: asyncio.Event) -> None:
    """One log line per period on what the outbox did, when anything changed (meters counted anew
    each time: meters added while serve runs are served and counted)."""
    if every_s <= 0:
        await stop.wait()
        return
    from headend.serve import log  # the summaries are serve's, at the level serve's lines are shown
    last = store.count_commands()
    meters = _meter_count(store)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except TimeoutError:
            pass
        now, n = store.count_commands(), _meter_count(store)
        if now != last or n != meters:
            log.info("outbox: %s in the last %g s; %d queued, %d in flight; %d meters", _done_since(last, now),
                     every_s, now.get("queued", 0), now.get("sent", 0), n)
        last, meters = now, n


def _unserved(cmds: list[Command], args: argparse.Namespace, location: str) -> int:
    """Nobody works this outbox: say so now instead of waiting --wait seconds for nothing."""
    if args.json:
        c.print_json([x.to_dict() for x in cmds])
    c.err(f"no `headend serve` is running on {location}: {len(cmds)} command(s) queued "
          f"({', '.join(str(x.id) for x in cmds[:10])}{', ...' if len(cmds) > 10 else ''}); they are sent when "
          "one starts (`headend serve`), and `headend commands` follows them")
    return c.EXIT_QUEUED


SERVE_GRACE_S = 5.0  # `headend serve &` then a command at once: serve may still be starting


def _serve_appears(store: Store, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while not serve_running(store):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def serve_running(store: Store) -> bool:
    """True when a `headend serve` works this database: its lease in the database has a fresh
    heartbeat (no file is opened here, which would drop SQLite's own locks in this process)."""
    if store.location in ("", ":memory:"):
        return True
    return store.serve_alive() is not None


def _lease_holder(path: str) -> str:
    """ " (pid N, through PATH)" from the database's lease, or "" if it cannot be read."""
    from headend.store import open_store

    try:
        with open_store(path, migrate=False) as store:
            alive = store.serve_alive()
    except StoreError:
        return ""
    return "" if alive is None else f" (pid {alive['pid']}, through {alive['path']})"


def _api_options(args: argparse.Namespace) -> ApiConfig | None:
    """The payments API settings serve runs with ([api] section, --api over its listen), or None when off."""
    try:
        cfg = api_config(c.config_from_args(args).section("api"))
        if args.api:
            parse_api_url(args.api)
            cfg = dataclasses.replace(cfg, listen=args.api)
    except ValueError as exc:
        raise c.CliError(str(exc)) from None
    return cfg if cfg.listen else None


@contextlib.contextmanager
def _only_serve(location: str) -> Iterator[None]:
    """Hold an exclusive lock on the database file itself: a second serve would put the first
    one's in-flight commands back in the queue and send them again.

    The lock is on the file (its inode), not on a name beside it, so a second serve that reaches
    the same file through a symlink, a hard link or another relative path is refused too."""
    try:
        path = sqlite_path(location)
    except InvalidInput as exc:
        raise c.CliError(str(exc)) from None
    if path is None or path in ("", ":memory:"):
        # on a PostgreSQL server the lease in the database refuses a second serve (no file to lock)
        yield
        return
    import fcntl

    location = path
    real = os.path.realpath(location)
    try:
        # created 0600 when new: an empty file is a valid empty SQLite database
        fd = os.open(real, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise c.CliError(f"cannot open database {location}: {exc.strerror}", c.EXIT_FAILED) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            same = "" if real == os.path.abspath(location) else f" (the same file as {location})"
            raise c.CliError(f"another `headend serve`{_lease_holder(real)} is already working the database "
                             f"{real}{same}; stop it first (one serve per database)", c.EXIT_FAILED) from None
        yield
    finally:
        os.close(fd)  # releases the lock
