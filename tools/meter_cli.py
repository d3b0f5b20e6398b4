"""`meter`: run a simulated meter, build a board image, flash it.

    meter run --address 000000000001 --key-file m1.key --listen tcp://127.0.0.1:8645 [--serial pty]
    meter build --board esp32 --address 000000000001 --from-headend prepaid645.db --out build/m1 [--frozen]
    meter flash --port /dev/ttyUSB0 --dir build/m1

Keys come from a file, the environment ($PREPAID645_METER_KEY, $PREPAID645_MASTER_KEY), the
head-end's key store or a prompt; never from the command line, where every user can read them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from tools.key_input import ENV_MASTER_KEY, ENV_METER_KEY, KeyInputError, refuse_on_argv, secret_hex
from tools.sim import FIRMWARE


def _fail(msg: str) -> int:
    print(f"meter: error: {msg}", file=sys.stderr)
    return 2


def _hal_config() -> Any:
    if str(FIRMWARE) not in sys.path:
        sys.path.insert(0, str(FIRMWARE))
    from hal import config
    return config


def _registered(args: argparse.Namespace) -> Any:
    """The head-end's record of this meter when --from-headend names its database, else None."""
    db = Path(args.from_headend or "")
    if db.suffix != ".db" or not db.exists():
        return None
    from headend.store import NotFound, open_store
    try:
        return open_store(db).get_meter(args.address)
    except NotFound:
        return None


def meter_key(args: argparse.Namespace) -> bytes:
    """The meter key from exactly one source; there is no default key. Fills in args.krn (and
    args.mode when left out) from the head-end's database when it knows the meter.

    Sources: --key-file, --master-key-file, --from-headend; else $PREPAID645_METER_KEY or
    $PREPAID645_MASTER_KEY; else a prompt on a terminal."""
    cfg = _hal_config()
    known = _registered(args) if getattr(args, "from_headend", None) else None
    if args.krn is None:
        args.krn = known.krn if known is not None else 0
    if getattr(args, "mode", "") is None:
        args.mode = known.mode if known is not None else "local"
    explicit = [n for n in ("key_file", "master_key_file", "from_headend") if getattr(args, n, None)]
    from_env = [e for e in (ENV_METER_KEY, ENV_MASTER_KEY) if os.environ.get(e)]
    if len(explicit) > 1 or (not explicit and len(from_env) > 1):
        raise cfg.ConfigError("give the meter key in exactly one way: --key-file, --master-key-file, --from-headend "
                              f"KEYSTORE, ${ENV_METER_KEY} or ${ENV_MASTER_KEY} (there is no default key)")
    if args.from_headend:
        return headend_keys(args.from_headend).meter_key(args.address, args.krn)
    try:
        if args.master_key_file or (not explicit and from_env == [ENV_MASTER_KEY]):
            text = secret_hex(file=args.master_key_file, env=ENV_MASTER_KEY, what="master key", prompt=False)
            return _derived(cfg, text or "", args.address, args.krn)
        text = secret_hex(file=args.key_file, env=ENV_METER_KEY, what="meter key")
    except KeyInputError as e:
        raise cfg.ConfigError(str(e)) from None
    if text is None:
        raise cfg.ConfigError(f"give the meter key with --key-file FILE, ${ENV_METER_KEY}, --master-key-file FILE, "
                              f"${ENV_MASTER_KEY} or --from-headend KEYSTORE (there is no default key)")
    where = f"key file {args.key_file}" if args.key_file else f"${ENV_METER_KEY}" if from_env else "the key typed"
    return cfg.key_from_hex(text, where)


def _derived(cfg: Any, text: str, address: str, krn: int) -> bytes:
    try:
        master = bytes.fromhex(text)
    except ValueError:
        raise cfg.ConfigError("the master key must be hex digits") from None
    if len(master) < 16:
        raise cfg.ConfigError("the master key must be at least 16 bytes (32 hex digits)")
    from headend.keys import derive_meter_key
    return derive_meter_key(master, address, krn)


def headend_keys(path: str) -> Any:
    """The head-end's key store, from its file or from its database (prepaid645.db -> prepaid645.key);
    the passphrase comes from $PREPAID645_KEY_PASSPHRASE or a prompt."""
    from headend.keys import KeyStore, KeyStoreError
    p = Path(path)
    if p.suffix == ".db":
        p = p.with_suffix(".key")
    try:
        return KeyStore.unlock(p)
    except (KeyStoreError, OSError) as e:
        raise _hal_config().ConfigError(f"key store {p}: {e}") from None


def _key_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", required=True, help="12 decimal digits, e.g. 000000000001")
    p.add_argument("--key-file", help=f"a file (mode 0600) holding the meter key as 32 hex digits "
                                      f"(or set ${ENV_METER_KEY}, or type it at the prompt)")
    p.add_argument("--master-key-file", help=f"derive the meter key from the master key in this file, as hex "
                                             f"(or set ${ENV_MASTER_KEY}); see protocol/SECURITY.md")
    refuse_on_argv(p, "--key-hex", f"--key-file FILE, ${ENV_METER_KEY} or the prompt")
    refuse_on_argv(p, "--master-key-hex", f"--master-key-file FILE or ${ENV_MASTER_KEY}")
    p.add_argument("--from-headend", metavar="DB_OR_KEYFILE",
                   help="derive the meter key from the head-end's key store (prepaid645.db or prepaid645.key; "
                        "passphrase from $PREPAID645_KEY_PASSPHRASE or a prompt)")
    p.add_argument("--krn", type=int, help="key revision number 0..255 (default: the head-end's record "
                                             "with --from-headend DB, else 0)")
    p.add_argument("--mode", choices=("local", "remote"),
                   help="cost control (default: the head-end's record with --from-headend DB, else local)")
    p.add_argument("--bench", action="store_true",
                   help="test-bench image: also accept plaintext 1CH/14H (never for a customer's meter)")


def cmd_run(args: argparse.Namespace) -> int:
    from tools.sim.runner import RunOptions, run_cpython, run_micropython
    cfg = _hal_config()
    try:
        key = meter_key(args)
    except cfg.ConfigError as e:
        return _fail(str(e))
    from hal.load import LoadModel
    from hal.sim import SimClock, parse_time
    try:  # the simulator's own rules, here before anything starts (the micropython child applies them too)
        LoadModel(scale_pct=args.load_scale, noise_pct=args.noise, seed=args.seed, fixed_w=args.load_w)
        SimClock(parse_time(args.start) if args.start else None, args.speed)
    except ValueError as e:
        return _fail(str(e))
    listen = args.listen or ([] if args.serial else ["tcp://127.0.0.1:8645"])
    if args.serial not in (None, "pty"):
        return _fail(f"--serial takes only `pty` (the simulator creates one), got {args.serial!r}")
    config = {"address": args.address, "key": key.hex(), "krn": args.krn, "mode": args.mode, "bench": args.bench,
              "board": "sim", "state_size": 16384}
    o = RunOptions(config=config, state=args.state or f"meter-{args.address}.state", listen=listen,
                   pty=args.serial == "pty", control=args.control, speed=args.speed, start=args.start,
                   load_w=args.load_w, load_scale=args.load_scale, noise=args.noise, seed=args.seed,
                   quiet=args.quiet, heapsize=args.heapsize)
    from hal.flash import StateError
    try:
        return run_micropython(o) if args.micropython else run_cpython(o)
    except (cfg.ConfigError, StateError, ValueError, OSError) as e:
        return _fail(str(e))


def cmd_build(args: argparse.Namespace) -> int:
    from tools.meter_image import ImageError, board_config, build_image
    cfg = _hal_config()
    pins: dict[str, Any] = {}
    for item in args.pin or []:
        name, _, value = item.partition("=")
        if not value:
            return _fail(f"--pin takes NAME=GPIO, e.g. --pin de=5, got {item!r}")
        # a keypad's rows and columns are lists: --pin keypad_rows=10,11,12,13
        pins[name] = value if value == "LED" else int(value) if value.isdigit() else \
            [int(x) for x in value.split(",")] if value.replace(",", "").isdigit() else value
    try:
        key = meter_key(args)
        extra: dict[str, Any] = {"rtc": args.rtc, "i2c": args.i2c, "in_service": args.in_service}
        config = board_config(args.board, args.address, key, args.krn, args.mode, args.bench, pins, args.uart,
                              args.baud, args.imp_per_kwh, args.meter_number, extra,
                              warn=lambda w: print(f"meter build: warning: {w}", file=sys.stderr))
        record = build_image(args.board, config, Path(args.out), args.frozen, args.debug)
    except (cfg.ConfigError, ImageError) as e:
        return _fail(str(e))
    print(f"built {args.board} image for meter {args.address} in {args.out}: {len(record['files'])} files, "
          f"{record['mpy_kb']} KB of .mpy")
    if args.frozen:
        print(f"frozen build: make -C ports/{args.board} BOARD=... FROZEN_MANIFEST={Path(args.out).resolve()}/frozen/"
              "manifest.py (in a micropython checkout), then `meter flash` copies main.py, boot.py, config.json")
    return 0


def cmd_flash(args: argparse.Namespace) -> int:
    from tools.meter_image import ImageError, flash
    try:
        cmds = flash(args.port, Path(args.dir), dry_run=args.dry_run, reset=not args.no_reset)
    except ImageError as e:
        return _fail(str(e))
    if args.dry_run:
        for c in cmds:
            print(" ".join(c))
    else:
        print(f"flashed {args.dir} to {args.port}; every file verified by SHA-256 on the board")
    return 0


def cmd_fleet(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from tools.fleet import start_fleet
    if args.town:
        return _town(args)
    cfg = _hal_config()
    first = int(args.first)
    addresses = [f"{first + i:012d}" for i in range(args.count)]
    if args.from_headend:
        try:
            store = headend_keys(args.from_headend)
        except cfg.ConfigError as e:
            return _fail(str(e))
        kw: dict[str, Any] = {"key_for": lambda a: store.meter_key(a, 0)}
    else:
        try:
            text = secret_hex(file=args.master_key_file, env=ENV_MASTER_KEY, what="master key")
        except KeyInputError as e:
            return _fail(str(e))
        if not text:
            return _fail(f"a fleet needs --master-key-file FILE, ${ENV_MASTER_KEY} or --from-headend KEYSTORE "
                         "(there is no default key)")
        try:
            kw = {"master": bytes.fromhex(text)}
        except ValueError:
            return _fail("the master key must be hex digits")
    if args.state_dir:
        Path(args.state_dir).mkdir(parents=True, exist_ok=True)

    async def main() -> None:
        from hal.flash import StateError
        try:
            fleet = await start_fleet(addresses, port=None if args.port_base else args.port, port_base=args.port_base,
                                      host=args.host, state_dir=args.state_dir, mode=args.mode, speed=args.speed, **kw)
        except (StateError, cfg.ConfigError, OSError, ValueError) as e:
            raise SystemExit(_fail(str(e))) from None
        where = (f"bus={args.host}:{fleet.port}" if fleet.port is not None else
                 f"ports={args.host}:{args.port_base}..{args.port_base + len(addresses) - 1}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for s in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(s, stop.set)
        # "ready" only once a SIGTERM is heard: the README's example signals as soon as it sees it
        print(f"fleet {len(addresses)} meters {addresses[0]}..{addresses[-1]} ready {where}", flush=True)
        await stop.wait()
        await fleet.close()
        print(f"fleet stopped ({fleet.frames_in} frames in, {fleet.frames_out} out)", flush=True)

    asyncio.run(main())
    return 0


def _town(args: argparse.Namespace) -> int:
    """`meter fleet --town`: the town's options as tools.town takes them."""
    from tools.town.run import serve_main

    args.first_address = int(args.first)
    if args.port_base is not None:
        return _fail("--port-base is not for a town: its buses and solo links each take a free port")
    return serve_main(parser(), args)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="meter", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from headend.cli.main import add_common_options
    add_common_options(top)
    sub = top.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run one simulated meter (TCP and/or a pty), with a live status view")
    _key_options(r)
    r.add_argument("--listen", action="append", metavar="tcp://HOST:PORT",
                   help="serve DL/T 645 on TCP (repeatable; port 0 picks a free one; default tcp://127.0.0.1:8645)")
    r.add_argument("--serial", metavar="pty", help="also serve on a new pty; its path is printed")
    r.add_argument("--micropython", action="store_true", help="run the image under the micropython binary")
    r.add_argument("--state", help="state file (default meter-ADDRESS.state); created when missing")
    r.add_argument("--speed", type=int, default=1, help="clock acceleration factor (60: a minute per second)")
    r.add_argument("--start", help="meter time to start at, 2026-01-31T07:00 (default: now)")
    r.add_argument("--control", metavar="tcp://HOST:PORT",
                   help="line commands: button, status, load W|auto, advance SECONDS, quit")
    r.add_argument("--load-w", type=int, help="fixed load in W instead of the daily profile")
    r.add_argument("--load-scale", type=int, default=100, help="scale the daily profile, percent")
    r.add_argument("--noise", type=int, default=20, help="load noise, percent (default 20)")
    r.add_argument("--seed", type=int, default=1, help="load noise seed")
    r.add_argument("--quiet", action="store_true", help="no live view: only the ready and stopped lines")
    r.add_argument("--heapsize", default="256K", help="micropython heap (with --micropython)")
    r.set_defaults(func=cmd_run)

    b = sub.add_parser("build", help="build a board image (.mpy + main.py + boot.py + config.json)")
    b.add_argument("--board", required=True, choices=("esp32", "rp2"), help="the board the image is for")
    _key_options(b)
    b.add_argument("--out", required=True, help="image directory to write")
    b.add_argument("--frozen", action="store_true", help="write sources + manifest.py for a frozen firmware")
    b.add_argument("--debug", action="store_true",
                   help="keep line numbers in the .mpy files (tracebacks name lines; ~3 KB more heap)")
    b.add_argument("--pin", action="append", metavar="NAME=GPIO",
                   help="override a pin: tx rx de relay_set relay_reset relay_sense button led pulse; optional"
                        " power_fail, and keypad_rows=R1,R2,R3,R4 keypad_cols=C1,C2,C3,C4 (a 4x4 token keypad)")
    b.add_argument("--uart", type=int, help="UART number for RS-485 (default esp32 2, rp2 0)")
    b.add_argument("--baud", type=int, default=2400, help="line speed, 8E1 (default 2400)")
    b.add_argument("--imp-per-kwh", type=int, default=1000, help="pulse constant of the metering chip")
    b.add_argument("--meter-number", help="meter number if it differs from the address")
    b.add_argument("--rtc", choices=("internal", "ds3231", "pcf8563"), default="internal",
                   help="battery-backed RTC chip on I2C (needs --pin sda=GPIO --pin scl=GPIO)")
    b.add_argument("--i2c", type=int, default=0, help="I2C bus of the RTC chip (default 0)")
    b.add_argument("--in-service", action="store_true",
                   help="the meter has state on the board: refuse to start if it is missing or erased")
    b.set_defaults(func=cmd_build)

    f = sub.add_parser("flash", help="deploy an image with mpremote and verify it on the board")
    f.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB0")
    f.add_argument("--dir", default="build/meter", help="image directory from `meter build` (default build/meter)")
    f.add_argument("--dry-run", action="store_true", help="print the mpremote commands instead of running them")
    f.add_argument("--no-reset", action="store_true", help="leave the board in the REPL after copying")
    f.set_defaults(func=cmd_flash)
    fl = sub.add_parser("fleet", help="many simulated meters in one process (head-end tests, benchmarks)")
    fl.add_argument("--count", type=int, default=10, help="number of meters (default 10)")
    fl.add_argument("--first", default="000000000001", help="first address; the rest count up")
    fl.add_argument("--master-key-file", help=f"derive each meter's key from the master key in this file, as hex "
                                              f"(or set ${ENV_MASTER_KEY}, or type it at the prompt)")
    refuse_on_argv(fl, "--master-key-hex", f"--master-key-file FILE or ${ENV_MASTER_KEY}")
    fl.add_argument("--from-headend", metavar="DB_OR_KEYFILE", help="derive keys from the head-end's key store")
    fl.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    fl.add_argument("--port", type=int, default=8645, help="one bus port for all meters (default 8645)")
    fl.add_argument("--port-base", type=int, help="instead: meter i listens on PORT_BASE + i")
    fl.add_argument("--state-dir", help="keep each meter's state file here (default: in memory)")
    fl.add_argument("--mode", choices=("local", "remote"), default="local", help="cost control of every meter (default local)")
    fl.add_argument("--speed", type=int, default=1, help="clock acceleration factor")
    t = fl.add_argument_group("a town (--town): buses of 32-256 meters and solo links, households, faults")
    t.add_argument("--town", action="store_true",
                   help="serve the meters as a town (tools/town: customers, districts, feeders, buses, "
                        "household loads); prints one JSON line with the buses and the control URL")
    t.add_argument("--seed", type=int, default=1, help="the town's seed: same seed, same town (default 1)")
    t.add_argument("--remote-share", type=float, default=0.3, help="share of remote-cost-control meters (default 0.3)")
    t.add_argument("--bus-size", metavar="MIN:MAX", help="meters per RS-485 bus (default 32:256)")
    t.add_argument("--start", help="meter time to start at, 2026-12-05T18:00 (default: now)")
    t.add_argument("--no-load", dest="load", action="store_false", help="no energy flows (exact balances)")
    t.add_argument("--register", metavar="DB", help="register accounts, meters and grid into this head-end "
                                                    "database in one step; keys from its key store")
    t.add_argument("--control", default="tcp://127.0.0.1:0", metavar="tcp://HOST:PORT",
                   help="line commands: faults, button, status (tools/town/control.py)")
    t.add_argument("--faults", type=float, default=0.0, metavar="PER_MIN", help="random faults a minute (default 0)")
    fl.set_defaults(func=cmd_fleet)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
