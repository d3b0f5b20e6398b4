"""`headend store`: the database itself (moving a head-end from its SQLite file to PostgreSQL)."""

from __future__ import annotations

import argparse
import sys

from headend.cli import _common as c
from headend.cli.operators import acting_operator


def register(sub: argparse._SubParsersAction) -> None:
    """Add `store migrate`."""
    p = sub.add_parser("store", help="the database itself: move a head-end to PostgreSQL")
    ss = p.add_subparsers(dest="store_cmd", required=True, metavar="COMMAND")
    m = ss.add_parser("migrate", help="copy every row of this head-end's database (--db) into an empty one "
                                      "(--to), ids kept, checked (row counts, journal against balances)")
    m.add_argument("--to", required=True, metavar="URL",
                   help="the empty target: postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME (or an SQLite path)")
    c.add_store_args(m)
    c.add_json_arg(m)
    m.set_defaults(func=run_migrate)


@c.cli_command
def run_migrate(args: argparse.Namespace) -> int:
    """Copy the store into the empty target; print rows per table. Stop `headend serve` first."""
    from headend.store import open_store
    from headend.store.transfer import copy_store

    with c.open_store_from_args(args, must_exist=True) as source:
        actor = acting_operator(source, args, "store")
        if source.serve_alive() is not None:
            raise c.CliError(f"a `headend serve` is working {source.location}: stop it first, so that nothing"
                             " changes while the data moves", c.EXIT_FAILED)
        with open_store(args.to) as target:
            def progress(table: str, n: int) -> None:
                if not args.json and sys.stderr.isatty():
                    print(f"\r{table}: {n} rows", end="", file=sys.stderr, flush=True)

            counts = copy_store(source, target, progress=progress)
            target.log_action(actor, "store.migrate", None, {"from": source.location, "rows": counts})
            where = target.location
    if args.json:
        c.print_json({"to": where, "rows": counts})
    else:
        if sys.stderr.isatty():
            print(file=sys.stderr)
        c.print_table(f"copied to {where}", ["table", "rows"], [(t, n) for t, n in counts.items() if n])
        print(f"{sum(counts.values())} rows in {len(counts)} tables copied and checked; point --db (or [store] db)"
              f" at {where} and start `headend serve` there")
    return c.EXIT_OK
