"""`headend keys init|check|passwd|rotate`: the master key file. No command ever prints key material.

Once operators exist, init, passwd and rotate need an admin's login (``headend.operators``),
checked before the key file is touched; on a fresh install `keys init` runs before any operator
is added, as ``--actor`` / ``$USER``."""

from __future__ import annotations

import argparse
import os

from headend.cli import _common as c
from headend.cli.operators import acting_operator
from headend.config import ENV_PASSPHRASE
from headend.keys import KeyStore, KeyStoreError, read_passphrase

ENV_NEW_PASSPHRASE = "PREPAID645_NEW_KEY_PASSPHRASE"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `keys` command group."""
    keys = sub.add_parser("keys", help="the encrypted master key")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    keys.set_defaults(func=lambda args: (keys.print_help(), c.EXIT_USAGE)[1])
    for name, helptext, func in (
        ("init", f"create the master key, encrypted under a passphrase (prompt or ${ENV_PASSPHRASE})", init),
        ("check", "check that the passphrase unlocks the key file", check),
        ("passwd", f"re-encrypt the key file under a new passphrase (prompt or ${ENV_NEW_PASSPHRASE})", passwd),
        ("rotate", "add a new master key for key revisions >= --from-krn (meters move with a key update)", rotate),
    ):
        p = ksub.add_parser(name, help=helptext)
        if name == "rotate":
            p.add_argument("--from-krn", type=int, metavar="R",
                           help="first key revision of the new master (default: highest registered KRN + 1)")
        p.add_argument("--key-file", metavar="PATH",
                       help="key file (default: $PREPAID645_KEY_FILE, config [keys] file, or next to the database)")
        c.add_store_args(p)
        p.set_defaults(func=func)


@c.cli_command
def init(args: argparse.Namespace) -> int:
    """Generate the master key and write it encrypted (refuses to replace an existing file)."""
    cfg = c.config_from_args(args)
    path = cfg.keys.file
    if path.exists():
        raise c.CliError(f"key file {path} already exists; every meter key derives from it, so it is not replaced")
    with c.open_store_from_args(args) as store:
        actor = acting_operator(store, args, "keys")
        passphrase = read_passphrase(confirm=True, prompt="New key passphrase: ")
        ks = KeyStore.create(path, passphrase)
        store.log_action(actor, "keys.init", str(path))
    print(f"master key created in {ks.path} (readable by you only); without the passphrase it cannot be used")
    return c.EXIT_OK


@c.cli_command
def check(args: argparse.Namespace) -> int:
    """Unlock the key file and report success, without printing anything secret."""
    path = c.config_from_args(args).keys.file
    KeyStore.unlock(path)
    print(f"key file {path} unlocks")
    return c.EXIT_OK


@c.cli_command
def passwd(args: argparse.Namespace) -> int:
    """Re-encrypt the master key under a new passphrase; meter keys stay the same."""
    path = c.config_from_args(args).keys.file
    with c.open_store_from_args(args) as store:
        actor = acting_operator(store, args, "keys")
        ks = KeyStore.unlock(path)
        new = os.environ.get(ENV_NEW_PASSPHRASE)
        if not new:
            try:
                new = read_passphrase(confirm=True, environ={}, prompt="New key passphrase: ")
            except KeyStoreError:
                raise c.CliError(f"no new passphrase: set {ENV_NEW_PASSPHRASE} or run in a terminal") from None
        ks.change_passphrase(new)
        store.log_action(actor, "keys.passwd", str(path))
    print(f"key file {path} re-encrypted under the new passphrase")
    return c.EXIT_OK


@c.cli_command
def rotate(args: argparse.Namespace) -> int:
    """Add a master key generation; meters keep their keys until a key update moves them to KRN >= R."""
    path = c.config_from_args(args).keys.file
    with c.open_store_from_args(args) as store:
        actor = acting_operator(store, args, "keys")
        passphrase = read_passphrase()
        ks = KeyStore.open(path, passphrase)
        start = args.from_krn
        if start is None:
            start = max((m.krn for m in store.find_meters()), default=0) + 1
            start = max(start, ks.generations[-1] + 1)
        ks.rotate(passphrase, start)
        store.log_action(actor, "keys.rotate", str(path), {"from_krn": start})
    print(f"new master key for key revisions {start} and up in {path}; meters change over with a key update"
          f" to KRN {start}")
    return c.EXIT_OK
