"""`headend grid import FILE.csv` and `headend grid show`: meters under transformer areas and feeders."""

from __future__ import annotations

import argparse

from headend.cli import _common as c
from headend.cli.operators import acting_operator
from headend.grid.topology import read_grid_csv


def register(sub: argparse._SubParsersAction) -> None:
    """Add `grid import` and `grid show`."""
    p = sub.add_parser("grid", help="grid topology: which feeder and transformer area each meter is under")
    gsub = p.add_subparsers(dest="grid_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), c.EXIT_USAGE)[1])
    im = gsub.add_parser("import", help="place meters from a CSV (meter,feeder,area[,important]); all rows or none")
    im.add_argument("file", metavar="FILE.csv", help="the CSV: meter,feeder,area[,important]")
    c.add_store_args(im)
    c.add_json_arg(im)
    im.set_defaults(func=run_import)
    sh = gsub.add_parser("show", help="feeders and areas with their meters, customers and important customers")
    sh.add_argument("--feeder", metavar="F", help="list the meters under this feeder")
    sh.add_argument("--area", metavar="A", help="list the meters under this transformer area")
    c.add_store_args(sh)
    c.add_json_arg(sh)
    sh.set_defaults(func=run_show)


@c.cli_command
def run_import(args: argparse.Namespace) -> int:
    """Import the grid CSV."""
    rows = read_grid_csv(args.file)
    store = c.open_store_from_args(args, must_exist=True)
    n = store.import_grid(rows, actor=acting_operator(store, args, "meters"))
    if args.json:
        c.print_json({"meters": n})
    else:
        print(f"{n} meter(s) placed under their feeder and area")
    return c.EXIT_OK


@c.cli_command
def run_show(args: argparse.Namespace) -> int:
    """Print the topology (or one feeder's / area's meters)."""
    store = c.open_store_from_args(args, must_exist=True)
    if args.feeder or args.area:
        rows = store.grid_meters(feeder=args.feeder, area=None if args.feeder else args.area)
        if not rows:
            raise c.CliError(f"no meters under {'feeder ' + args.feeder if args.feeder else 'area ' + args.area}",
                             c.EXIT_NOT_FOUND)
        if args.json:
            c.print_json([dict(zip(("meter", "customer", "feeder", "area", "important"), r)) for r in rows])
        else:
            c.print_table(f"{len(rows)} meter(s)", ["meter", "customer", "feeder", "area", "important"],
                          [(*r[:4], "yes" if r[4] else "") for r in rows])
        return c.EXIT_OK
    summary = store.grid_summary()
    if args.json:
        c.print_json([dict(zip(("feeder", "area", "meters", "customers", "important"), r)) for r in summary])
    else:
        c.print_table("grid", ["feeder", "area", "meters", "customers", "important customers"], summary)
    return c.EXIT_OK
