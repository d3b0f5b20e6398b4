"""`headend costctl run`: one remote cost-control cycle (rate, debit, warn, cut, restore); and the
`headend serve` options that run the cycle continuously (``add_serve_args`` / ``serve_loop_options``)."""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from headend.cli import _common as c
from headend.cli.operators import acting_operator
from headend.costctl.config import CostCtlConfig, costctl_config
from headend.costctl.cycle import run_cycle
from headend.costctl.loop import LoopOptions
from headend.tariff.catalog import BUILTIN, load_catalog
from headend.tariff.model import TariffBook, TariffError


def register(sub: argparse._SubParsersAction) -> None:
    """Add `costctl run`."""
    p = sub.add_parser("costctl", help="remote cost control: rate readings, debit, notices, cut and restore")
    csub = p.add_subparsers(dest="costctl_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), c.EXIT_USAGE)[1])
    r = csub.add_parser("run", help="run one cycle now (settings from the [costctl] config section)")
    r.add_argument("--at", type=int, metavar="UNIX_S", help="decide as if it were this time (default: now)")
    _add_rating_arg(r)
    c.add_store_args(r)
    c.add_json_arg(r)
    r.set_defaults(func=run_once)


RATING_HELP = ("where accounts are rated: in-process (default), dask://HOST:PORT (a Dask scheduler; every worker"
               " needs prepaid645 installed and reads its accounts' readings from the database: --db, or"
               " PREPAID645_RATING_DB where the workers reach it by another URL) or local-cluster[:N] (N Dask"
               " workers on this machine)")


def _add_rating_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rating", metavar="WHERE", default="in-process", help=RATING_HELP)


def rating_from_args(args: argparse.Namespace) -> Any:
    """The rating engine --rating names; CliError for a bad value or an unreachable scheduler."""
    from headend.costctl.distributed import RatingUnavailable, rating_engine

    try:
        return rating_engine(args.rating)
    except (ValueError, RatingUnavailable) as exc:
        raise c.CliError(str(exc), c.EXIT_FAILED if isinstance(exc, RatingUnavailable) else c.EXIT_USAGE) from None


def costctl_from_args(args: argparse.Namespace, **overrides: Any) -> tuple[CostCtlConfig, dict[str, TariffBook]]:
    """The [costctl] settings and the tariff catalog cost control rates with (built-in tariffs
    plus the config's tariffs file); CliError names a bad setting."""
    cfg = c.config_from_args(args)
    try:
        section = dict(cfg.section("costctl"), **overrides)
        cc = costctl_config(section, cfg.source.parent if cfg.source else None)
        return cc, load_catalog(cc.tariffs)
    except (TariffError, ValueError) as exc:
        raise c.CliError(str(exc)) from None


def check_tariff(args: argparse.Namespace, name: str) -> str:
    """``name`` if cost control can rate with it, else CliError listing the known tariffs."""
    _, catalog = costctl_from_args(args)
    if name not in catalog:
        raise c.CliError(f"--tariff {name!r} is not a known tariff; known: {', '.join(sorted(catalog))} "
                         "(`headend tariff list`; more in the [costctl] tariffs file)")
    return name


@c.cli_command
def run_once(args: argparse.Namespace) -> int:
    """Run one cycle and print what it did."""
    cc, catalog = costctl_from_args(args)
    store = c.open_store_from_args(args, must_exist=True)
    actor = acting_operator(store, args, "meters")
    now = int(args.at) if args.at is not None else int(time.time())
    engine = rating_from_args(args)
    try:
        rep = run_cycle(store, catalog, now, rules=cc.rules, interval_s=cc.interval_s, utc_offset_s=cc.utc_offset_s,
                        actor=actor, snap_s=cc.snap_s, engine=engine)
    except RuntimeError as exc:  # the rating cluster went away: nothing was charged
        raise c.CliError(str(exc), c.EXIT_FAILED) from None
    finally:
        getattr(engine, "close", lambda: None)()
    if args.json:
        c.print_json(rep.__dict__)
    else:
        print(f"{rep.accounts} remote account(s), {rep.rated} rated, {c.fmt_fen(rep.charged_fen)} yuan charged")
        for name, n in sorted(rep.actions.items()):
            print(f"  {name}: {n}")
        for line in rep.skipped + rep.problems + rep.conflicts:
            print(f"  ! {line}")
    return c.EXIT_OK


def add_serve_args(p: argparse.ArgumentParser) -> None:
    """Add serve's cost-control options (the rest comes from the [costctl] config section)."""
    g = p.add_argument_group("remote cost control")
    g.add_argument("--costctl", action=argparse.BooleanOptionalAction, default=None,
                   help="run remote cost control: collect on the grid, rate, debit, notify, trip, restore"
                        " (default: on; [costctl] in_serve = false turns it off)")
    g.add_argument("--costctl-interval", type=int, metavar="S",
                   help="cycle grid in seconds: 86400 (daily, default), 3600 or 900 (overrides [costctl] interval_s)")
    g.add_argument("--rating", metavar="WHERE", default="in-process", help=RATING_HELP)
    t = p.add_argument_group("the head-end's clock (for simulated meters run faster than real time)")
    t.add_argument("--clock", "--costctl-clock", dest="costctl_clock", metavar="TIME",
                   help="start the head-end's clock at TIME (Unix s or YYYY-MM-DDTHH:MM local), e.g. the --start "
                        "of simulated meters (default: now)")
    t.add_argument("--speed", "--costctl-speed", dest="costctl_speed", type=float, default=1.0, metavar="X",
                   help="the head-end's clock (time sets, relay-command deadlines, cost control) runs X times "
                        "faster, for simulated meters at `meter run --speed X`; then `headend sync-time --set` "
                        "once (default 1)")


def _clock_arg(text: str) -> float | datetime:
    """--clock as written: Unix seconds, or a naive local date and time (the caller places it:
    meters keep naive local time, cost control reads it in the business's time zone)."""
    try:
        return float(text) if text.replace(".", "", 1).isdigit() else datetime.fromisoformat(text)
    except ValueError:
        raise c.CliError(f"--clock {text!r}: write Unix seconds or YYYY-MM-DDTHH:MM (local)") from None


def _speed_arg(args: argparse.Namespace) -> float:
    if args.costctl_speed <= 0:
        raise c.CliError(f"--speed {args.costctl_speed:g}: must be > 0")
    return args.costctl_speed


def meter_clock(args: argparse.Namespace) -> Callable[[], datetime] | None:
    """The head-end's time for meters under --clock/--speed (naive local time, as meters keep
    it), or None for the wall clock."""
    if args.costctl_clock is None and args.costctl_speed == 1.0:
        return None
    speed = _speed_arg(args)
    got = datetime.now() if args.costctl_clock is None else _clock_arg(args.costctl_clock)
    start = got if isinstance(got, datetime) else datetime.fromtimestamp(got)
    t0 = time.monotonic()
    return lambda: start + timedelta(seconds=(time.monotonic() - t0) * speed)


def serve_loop_options(args: argparse.Namespace, actor: str) -> LoopOptions | None:
    """The cost-control loop serve should run, or None; CliError names a bad setting."""
    overrides = {} if args.costctl_interval is None else {"interval_s": args.costctl_interval}
    cc, catalog = costctl_from_args(args, **overrides)
    if not (args.costctl if args.costctl is not None else cc.in_serve):
        return None
    speed = _speed_arg(args)
    start = None
    if args.costctl_clock:
        got = _clock_arg(args.costctl_clock)
        start = (got.replace(tzinfo=timezone(timedelta(seconds=cc.utc_offset_s))).timestamp()
                 if isinstance(got, datetime) else got)
    return LoopOptions(cc, catalog, start=start, speed=speed, actor=actor, rating=args.rating)


def _price(p: int) -> str:
    return f"{p // 10000}.{p % 10000:04d}"  # 0.0001 yuan/kWh


@c.cli_command
def tariff_list(args: argparse.Namespace) -> int:
    """`headend tariff list`: every tariff cost control can rate with, its current version and prices."""
    from headend.tariff.model import SLOT_NAMES

    cc, catalog = costctl_from_args(args)
    rows, records = [], []
    for name in sorted(catalog):
        versions = catalog[name].versions
        t = versions[-1]
        ladder = t.ladder
        steps = (" / ".join(f"{w // 1000} kWh +{_price(i)}" for w, i in zip(ladder.thresholds_wh, ladder.increments[1:]))
                 if ladder else "")
        source = "built in" if catalog[name] is BUILTIN.get(name) else str(cc.tariffs)
        rows.append((name, len(versions), _price_list(t.prices, SLOT_NAMES), steps,
                     c.fmt_fen(t.daily_fen) if t.daily_fen else "", source))
        records.append({"name": name, "versions": len(versions), "prices": dict(zip(SLOT_NAMES, t.prices)),
                        "ladder_thresholds_wh": list(ladder.thresholds_wh) if ladder else [],
                        "ladder_increments": list(ladder.increments) if ladder else [], "daily_fen": t.daily_fen,
                        "source": source})
    c.print_list(args, f"{len(rows)} tariff(s); prices in yuan/kWh (newest version)",
                 ["name", "versions", "prices", "ladder", "daily yuan", "from"], rows, records)
    return c.EXIT_OK


def _price_list(prices: tuple[int, ...], names: tuple[str, ...]) -> str:
    if len(set(prices)) == 1:
        return f"{_price(prices[0])} flat rate"
    return ", ".join(f"{n} {_price(p)}" for n, p in zip(names, prices))

