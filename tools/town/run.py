"""A town served: ``meter fleet --town`` and ``python -m tools.town`` (the same options).

Plans the town (tools/town/plan.py), starts every bus and solo link (tools/fleet.py) with each
household's own load (tools/town/load.py), optionally registers it all into a head-end database
(``--register DB``: accounts, meters, grid; the meters' keys come from that database's key
store), serves line commands on ``--control`` (tools/town/control.py) and, with ``--faults
RATE``, injects faults at random.  Prints one JSON line when ready::

    {"meters": N, "buses": [{"link": url, "meters": [...]}, ...], "control": url, "registered": {...}}

then serves until SIGINT/SIGTERM and prints one line with what it did.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import signal
import sys
from pathlib import Path
from typing import Any

from tools.fleet import Fleet
from tools.key_input import ENV_MASTER_KEY, KeyInputError, refuse_on_argv, secret_hex
from tools.town.control import serve_control
from tools.town.load import HouseholdLoad
from tools.town.plan import plan_town

__all__ = ["RandomFaults", "add_town_args", "main", "run_town"]

FAULT_KINDS = ("drop", "delay", "power-loss", "bus-garbage", "flap")


class RandomFaults:
    """Faults at random, ``rate`` a minute of real time on average, drawn from ``kinds``, from a
    seeded generator: which meter or bus, and for how long, is the same for the same seed."""

    def __init__(self, fleet: Fleet, rate: float, seed: int, kinds: tuple[str, ...] = FAULT_KINDS,
                 log: Any = None) -> None:
        bad = set(kinds) - set(FAULT_KINDS)
        if bad:
            raise ValueError(f"unknown fault kinds {sorted(bad)}: choose from {', '.join(FAULT_KINDS)}")
        self.fleet, self.rate, self.kinds = fleet, rate, kinds
        self.rng = random.Random(seed)
        self.log = log
        self.done: dict[str, int] = {k: 0 for k in kinds}

    def one(self) -> str:
        """Inject one fault now; a line saying which."""
        f, rng = self.fleet, self.rng
        kind = rng.choice(self.kinds)
        address = rng.choice(list(f.meters))
        bus = rng.randrange(len(f.buses))
        if kind == "drop":
            f.fault(address).drop += rng.randint(1, 3)
            what = f"drop {address}"
        elif kind == "delay":
            f.fault(address).delay_s = 1.5
            asyncio.get_running_loop().call_later(20, setattr, f.fault(address), "delay_s", 0.0)
            what = f"delay {address} 1.5 s for 20 s"
        elif kind == "power-loss":
            f.power_loss(address, rng.uniform(2, 10))
            what = f"power-loss {address}"
        elif kind == "bus-garbage":
            f.bus_fault(bus, garbage_s=rng.uniform(3, 15))
            what = f"bus-garbage {bus}"
        else:
            f.bus_fault(bus, down_s=rng.uniform(2, 8))
            what = f"flap {bus}"
        self.done[kind] += 1
        return what

    async def run(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.rng.random() < self.rate / 60:
                what = self.one()
                if self.log is not None:
                    print(f"town: fault {what}", file=self.log, flush=True)


def add_town_args(p: argparse.ArgumentParser) -> None:
    """The town's options (shared by `meter fleet --town` and `python -m tools.town`)."""
    p.add_argument("--count", type=int, default=200, help="number of meters (default 200; 10000 is a real town)")
    p.add_argument("--seed", type=int, default=1, help="the town's seed: same seed, same town (default 1)")
    p.add_argument("--first-address", type=int, default=1, help="address of the first meter, as a number")
    p.add_argument("--remote-share", type=float, default=0.3,
                   help="share of meters in remote cost control (the head-end keeps the money; default 0.3)")
    p.add_argument("--bus-size", default=None, metavar="MIN:MAX",
                   help="meters per RS-485 bus (default 32:256, smaller for small towns)")
    p.add_argument("--host", default="127.0.0.1", help="address the buses listen on")
    p.add_argument("--speed", type=int, default=1, help="clock acceleration (1440: a day in a minute)")
    p.add_argument("--start", help="meter time to start at, 2026-12-05T18:00 (default: now)")
    p.add_argument("--no-load", dest="load", action="store_false",
                   help="no energy flows (exact balances, for conservation checks)")
    p.add_argument("--register", metavar="DB",
                   help="register the town (accounts, meters, grid) into this head-end database; the meters' "
                        "keys come from its key store (passphrase: $PREPAID645_KEY_PASSPHRASE)")
    p.add_argument("--control", default="tcp://127.0.0.1:0", metavar="tcp://HOST:PORT",
                   help="line commands (faults, button, status; see tools/town/control.py)")
    p.add_argument("--faults", type=float, default=0.0, metavar="PER_MIN",
                   help="random faults, on average this many a minute (default 0: only on demand)")
    p.add_argument("--state-dir", help="keep each meter's state in a file here (default: in memory)")
    p.add_argument("--master-key-file", metavar="FILE",
                   help=f"without --register: the test master key the meter keys derive from (or ${ENV_MASTER_KEY})")
    refuse_on_argv(p, "--master-key-hex", f"--master-key-file FILE or ${ENV_MASTER_KEY}")


def _key_for(args: argparse.Namespace) -> Any:
    source = getattr(args, "from_headend", None) or args.register
    if source:
        from tools.meter_cli import headend_keys

        store = headend_keys(source)
        return lambda a: store.meter_key(a, 0)
    text = secret_hex(file=args.master_key_file, env=ENV_MASTER_KEY, what="master key", prompt=False)
    if not text:
        raise ValueError(f"give --register DB (its key store) or the test master key: --master-key-file FILE or "
                         f"${ENV_MASTER_KEY}")
    try:
        master = bytes.fromhex(text)
    except ValueError:
        raise ValueError("the master key must be hex digits") from None
    from headend.keys import derive_meter_key

    return lambda a: derive_meter_key(master, a, 0)


def _bus_sizes(text: str | None) -> dict[str, int]:
    if text is None:
        return {}
    lo, sep, hi = text.partition(":")
    try:
        return {"bus_min": int(lo), "bus_max": int(hi if sep else lo)}
    except ValueError:
        raise ValueError(f"--bus-size is MIN:MAX, e.g. 32:256, got {text!r}") from None


async def run_town(args: argparse.Namespace, stop: asyncio.Event | None = None) -> dict[str, Any]:
    """Serve the town until ``stop`` (or SIGINT/SIGTERM); what it did."""
    from hal.sim import parse_time

    if args.count < 1:
        raise ValueError(f"--count must be at least 1, got {args.count}")
    if args.speed < 1:
        raise ValueError(f"--speed must be a whole number >= 1, got {args.speed}")
    town = plan_town(args.count, seed=args.seed, first=args.first_address, remote_share=args.remote_share,
                     **_bus_sizes(args.bus_size))
    key_for = _key_for(args)
    if args.state_dir:
        Path(args.state_dir).mkdir(parents=True, exist_ok=True)
    loads = {h.address: HouseholdLoad(h) for h in town.homes} if args.load else None
    fleet = Fleet([h.address for h in town.homes], key_for=key_for, host=args.host, groups=town.buses,
                  modes={h.address: h.mode for h in town.homes}, state_dir=args.state_dir, speed=args.speed,
                  start=parse_time(args.start) if args.start else None, load=args.load, loads=loads)
    registered: dict[str, int] = {}
    control = None
    tasks: list[asyncio.Task] = []
    try:
        await fleet.start()
        if args.register:
            from headend.store import open_store
            from tools.town.register import register_town

            store = open_store(Path(args.register))
            try:
                registered = register_town(store, town, {a: fleet.link_of(a) for a in fleet.meters})
            finally:
                store.close()
        host, _, port = args.control.removeprefix("tcp://").rpartition(":")
        control = await serve_control(fleet, host or "127.0.0.1", int(port or 0))
        faults = RandomFaults(fleet, args.faults, args.seed, log=sys.stderr) if args.faults > 0 else None
        if faults is not None:
            tasks.append(asyncio.create_task(faults.run()))
        gc.collect()
        gc.freeze()  # thousands of long-lived cores: keep them out of every collection
        cport = control.sockets[0].getsockname()[1]
        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        # only once a SIGTERM is heard: whoever waits for this line may signal at once
        print(json.dumps({"meters": len(fleet.meters), "buses": fleet.layout(),
                          "control": f"tcp://{host or '127.0.0.1'}:{cport}", "registered": registered}), flush=True)
        await stop.wait()
        return {"frames_in": fleet.frames_in, "frames_out": fleet.frames_out, "dropped": fleet.dropped,
                "restarts": fleet.restarts, "faults": faults.done if faults else {}}
    finally:
        for t in tasks:
            t.cancel()
        if control is not None:
            control.close()
        await fleet.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.town", description=(__doc__ or "").split("\n\n")[0])
    add_town_args(p)
    args = p.parse_args(argv)
    return serve_main(p, args)


def serve_main(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the town from parsed options; bad options exit 2 naming them."""
    try:
        done = asyncio.run(run_town(args))
    except (ValueError, KeyInputError) as exc:
        p.error(str(exc))
    except OSError as exc:
        print(f"town: {exc}", file=sys.stderr)
        return 1
    print(f"town stopped: {json.dumps(done)}", flush=True)
    return 0
