"""`headend costctl run`: one remote cost-control cycle (rate, debit, warn, cut, restore)."""

from __future__ import annotations

import argparse
import time

from headend.cli import _common as c
from headend.costctl.config import costctl_config
from headend.costctl.cycle import run_cycle
from headend.tariff.catalog import load_catalog
from headend.tariff.model import TariffError


def register(sub: argparse._SubParsersAction) -> None:
    """Add `costctl run`."""
    p = sub.add_parser("costctl", help="remote cost control: rate readings, debit, notices, cut and restore")
    csub = p.add_subparsers(dest="costctl_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), c.EXIT_USAGE)[1])
    r = csub.add_parser("run", help="run one cycle now (settings from the [costctl] config section)")
    r.add_argument("--at", type=int, metavar="UNIX_S", help="decide as if it were this time (default: now)")
    c.add_store_args(r)
    c.add_json_arg(r)
    r.set_defaults(func=run_once)


@c.cli_command
def run_once(args: argparse.Namespace) -> int:
    """Run one cycle and print what it did."""
    cfg = c.config_from_args(args)
    try:
        cc = costctl_config(cfg.section("costctl"), cfg.source.parent if cfg.source else None)
        catalog = load_catalog(cc.tariffs)
    except (TariffError, ValueError) as exc:
        raise c.CliError(str(exc)) from None
    store = c.open_store_from_args(args, must_exist=True)
    now = int(args.at) if args.at is not None else int(time.time())
    rep = run_cycle(store, catalog, now, rules=cc.rules, interval_s=cc.interval_s, utc_offset_s=cc.utc_offset_s,
                    actor=c.actor_of(args), snap_s=cc.snap_s)
    if args.json:
        c.print_json(rep.__dict__)
    else:
        print(f"{rep.accounts} remote account(s), {rep.rated} rated, {c.fmt_fen(rep.charged_fen)} yuan charged")
        for name, n in sorted(rep.actions.items()):
            print(f"  {name}: {n}")
        for line in rep.skipped + rep.problems + rep.conflicts:
            print(f"  ! {line}")
    return c.EXIT_OK
