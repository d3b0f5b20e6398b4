"""The load-and-fault run: a town of N meters and a head-end under a storm of payments and faults.

    .venv/bin/python -m tools.loadrun --meters 10000          # the full run (minutes)
    .venv/bin/python -m tools.loadrun --meters 500 --json     # a quick one, one JSON object

What it does, all real processes on loopback:

1. a town (`python -m tools.town`, no load: balances move only by payments) on 40+ RS-485 buses of
   32-256 meters plus solo links, registered into a new SQLite head-end in one step;
2. read cycles of every meter by the head-end's comms (`read_cycle`, every reading stored)
   against the plain-asyncio ceiling on the same buses (tools/bench/ceiling.py: one connection per
   bus, each meter of the bus asked in turn from an ``asyncio.Protocol``'s callbacks as each
   reply's last byte arrives, nothing decoded or stored), interleaved;
3. one remote cost-control cycle (`headend costctl run`) over every account;
4. `headend serve` with the payments API, and a storm of one payment per meter through the API
   (channels in their shares, 64 in flight), each followed to its confirmation (on the meter, or
   credited to a remote account), while: `headend serve` is SIGKILLed twice and started again, a
   bus answers noise for a while (a minute at 10,000 meters), and 1% of the meters lose power
   (back from their saved state, their clock behind);
5. the checks: every payment confirmed; money posted == money on the local meters (read back
   from each meter's own state) + money on the remote accounts, to the fen; on every local meter
   the purchase count == its confirmed recharges and the money it took == its payments (no
   command lost, none applied twice).

Reported: read-cycle time and reads/s against the ceiling, commands/s with the CPU seconds the
town (the meters), `headend serve` and the API clients used meanwhile, payment-to-confirmation
p50/p95/p99, peak memory (VmHWM) of each process, retries (API requests sent again; outbox
attempts beyond a command's first), and the checks.  Ctrl-C, or a SIGTERM to this process alone,
stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from tools.proc import Stopped, cpu_seconds, stop_on_sigterm, terminate, wait_for_line
from tools.town import control as town_control

ROOT = Path(__file__).resolve().parent.parent
PASSPHRASE = "prepaid645 loadrun passphrase"
READ_DI = 0x00010000  # total active energy: the read every cycle does

__all__ = ["main", "run_load"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hwm_kb(pid: int) -> int:
    """Peak resident memory (VmHWM) of a running process, kB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


class _Serve:
    """`headend serve` as a child that can be SIGKILLed and started again; remembers each run's peak
    memory and adds up the CPU time its runs used once working (sampled before each kill or stop)."""

    def __init__(self, env: dict[str, str], api_port: int, log: Path) -> None:
        self.env, self.api_port, self.log = env, api_port, log
        self.proc: subprocess.Popen | None = None
        self.peaks_kb: list[int] = []
        self.cpu_s = 0.0
        self._cpu0 = 0.0
        self._watch: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        self.peaks_kb.append(0)  # before the child exists: a stop while it starts finds its entry
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "headend.cli.main", "serve", "--api", f"tcp://127.0.0.1:{self.api_port}",
             "--no-notices", "--no-costctl", "--timeout", "2", "--security-timeout", "3", "--retry-backoff", "0.5",
             "--concurrency", "512", "--summary-every", "5"],
            cwd=str(ROOT), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen: list[str] = []
        if not wait_for_line(self.proc, "headend serve: working", seen, 120):
            raise RuntimeError("headend serve did not start:\n" + "".join(seen))
        proc = self.proc
        self._cpu0 = cpu_seconds(proc.pid)

        def drain() -> None:  # its output to the log, and its peak memory sampled meanwhile
            with self.log.open("a") as fh:
                fh.writelines(seen)
                for line in proc.stdout or ():
                    fh.write(line)

        def sample() -> None:
            while proc.poll() is None and not self._stop.is_set():
                self.peaks_kb[-1] = max(self.peaks_kb[-1], _hwm_kb(proc.pid))
                time.sleep(0.2)

        threading.Thread(target=drain, daemon=True).start()
        threading.Thread(target=sample, daemon=True).start()

    def kill(self) -> None:
        assert self.proc is not None
        self.peaks_kb[-1] = max(self.peaks_kb[-1], _hwm_kb(self.proc.pid))
        self.cpu_s += cpu_seconds(self.proc.pid) - self._cpu0
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.peaks_kb[-1] = max(self.peaks_kb[-1], _hwm_kb(self.proc.pid))
            self.cpu_s += cpu_seconds(self.proc.pid) - self._cpu0
            terminate(self.proc, grace_s=60)


def _town_ask(control: tuple[str, int], command: str) -> dict[str, Any]:
    got = town_control.ask(control, command, timeout=120)
    if not got.get("ok"):
        raise RuntimeError(f"town refused {command!r}: {got}")
    return got


def _wait_all_up(control: tuple[str, int], within_s: float) -> None:
    """Wait until no meter in the town is without power (outages end on the town's own timers)."""
    end = time.monotonic() + within_s
    while down := _town_ask(control, "stats")["down"]:
        if time.monotonic() > end:
            raise RuntimeError(f"meters still without power {within_s:.0f} s after the storm: {down[:10]}")
        time.sleep(0.1)


def run_load(meters: int = 10_000, *, seed: int = 1, workdir: Path | None = None, rounds: int = 5,
             window_s: float = 2.0, kills: int = 2, garbage_s: float | None = None, power_loss_share: float = 0.01,
             concurrency: int = 64, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole run (see the module doc); the figures and checks as a dict."""
    from headend.keys import KeyStore
    from headend.store import open_store
    from tools.town.paygen import CHANNELS, Payer, Payment, pay_storm, save_credentials, setup_channels
    from tools.town.plan import plan_town

    work = workdir or Path(tempfile.mkdtemp(prefix="prepaid645-loadrun-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "headend.db"
    KeyStore.create(work / "headend.key", PASSPHRASE, scrypt_n=2**12)
    (work / "prepaid645.toml").write_text(f'[store]\ndb = "{db}"\n')
    env = dict(os.environ, PREPAID645_DB=str(db), PREPAID645_KEY_FILE=str(work / "headend.key"),
               PREPAID645_KEY_PASSPHRASE=PASSPHRASE, PREPAID645_CONFIG=str(work / "prepaid645.toml"),
               USER="loadrun")
    # 40+ buses of 32..256 meters: the bus size follows the town's size
    bus_max = max(33, min(256, 2 * meters // 44 - 32))
    garbage_s = garbage_s if garbage_s is not None else max(5.0, 60.0 * meters / 10_000)
    out: dict[str, Any] = {"meters": meters, "workdir": str(work)}
    town_err = (work / "town.err.log").open("w")
    serve = _Serve(env, _free_port(), work / "headend-serve.log")
    town_peak = 0
    t_reg = time.perf_counter()
    town = subprocess.Popen([sys.executable, "-m", "tools.town", "--count", str(meters), "--seed", str(seed),
                             "--register", str(db), "--no-load", "--bus-size", f"32:{bus_max}"],
                            cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=town_err, text=True)
    try:
        line = town.stdout.readline() if town.stdout else ""
        if not line:
            raise RuntimeError("the town did not start: " + (work / "town.err.log").read_text())
        info = json.loads(line)
        out["start_and_register_s"] = time.perf_counter() - t_reg
        buses = info["buses"]
        shared = [b for b in buses if len(b["meters"]) > 1]
        out["buses"] = len(shared)
        out["solo_links"] = len(buses) - len(shared)
        chost, cport = info["control"].removeprefix("tcp://").rsplit(":", 1)
        control = (chost, int(cport))
        log(f"town: {meters:,} meters on {len(shared)} buses (32-{bus_max} meters) + {out['solo_links']} solo links, "
            f"started and registered in {out['start_and_register_s']:.1f} s")

        keys = KeyStore.unlock(work / "headend.key", PASSPHRASE)
        store = open_store(db)
        creds = setup_channels(store, keys, actor="loadrun")
        save_credentials(work / "channels.json", creds)
        registered = store.find_meters()
        out.update(_read_cycles(store, keys, registered, buses, rounds, window_s, log))
        store.close()

        t0 = time.perf_counter()
        cc = subprocess.run([sys.executable, "-m", "headend.cli.main", "costctl", "run", "--json"], cwd=str(ROOT),
                            env=env, capture_output=True, text=True, timeout=1800)
        if cc.returncode:
            raise RuntimeError(f"headend costctl run failed: {cc.stderr}")
        out["costctl_cycle_s"] = time.perf_counter() - t0
        out["costctl_accounts"] = json.loads(cc.stdout).get("accounts")
        log(f"cost control: one cycle over {out['costctl_accounts']} remote accounts in {out['costctl_cycle_s']:.1f} s")

        # the storm: one payment per meter, channels in their shares
        homes = plan_town(meters, seed=seed, bus_min=32, bus_max=bus_max).homes
        rng = random.Random(seed)
        weights = [c[2] for c in CHANNELS]
        payments = [Payment(h.customer, h.address, rng.choices(CHANNELS, weights=weights)[0][0],
                            rng.randint(10, 100) * 100, "storm", f"S{seed}-{h.address}") for h in homes]
        rng.shuffle(payments)
        serve.start()
        api = f"http://127.0.0.1:{serve.api_port}"
        lose_power = rng.sample([h.address for h in homes], max(1, int(meters * power_loss_share)))
        faults: dict[str, Any] = {"kills": 0, "power_loss": len(lose_power), "garbage_bus": 0, "garbage_s": garbage_s}

        async def storm() -> dict[str, Any]:
            payer = Payer(api, creds, timeout=60)
            done = asyncio.Event()

            async def chaos() -> None:
                loop = asyncio.get_running_loop()
                for a in lose_power:
                    await loop.run_in_executor(None, _town_ask, control, f"power-loss {a} {rng.uniform(2, 8):.1f}")
                await loop.run_in_executor(None, _town_ask, control, f"bus-garbage 0 {garbage_s}")
                faults["garbage_bus"] = len(buses[0]["meters"])
                for k in range(kills):
                    # each kill when another share of the storm is accepted: mid-storm, however fast it goes
                    while payer.accepted < len(payments) * (k + 1) / (kills + 2):
                        if done.is_set():
                            return
                        await asyncio.sleep(0.05)
                    await loop.run_in_executor(None, serve.kill)
                    faults["kills"] += 1
                    log(f"  headend serve SIGKILLed ({k + 1} of {kills}), starting it again")
                    await loop.run_in_executor(None, serve.start)

            chaos_task = asyncio.create_task(chaos())
            t = time.perf_counter()
            try:
                got = await pay_storm(payer, payments, concurrency=concurrency, give_up_s=1800)
            finally:
                done.set()
                await chaos_task
                await payer.close()
            got["wall_s"] = time.perf_counter() - t
            return got

        town_c0, own_c0 = cpu_seconds(town.pid), time.process_time()
        got = asyncio.run(storm())
        town_cpu, own_cpu = cpu_seconds(town.pid) - town_c0, time.process_time() - own_c0
        town_peak = _hwm_kb(town.pid)
        lat = got["latencies"]
        out["payments"] = len(payments)
        out["payments_confirmed"] = len(lat)
        out["payment_refused"] = got["refused"]
        out["payment_p50_s"], out["payment_p95_s"], out["payment_p99_s"] = (_pct(lat, p) for p in (50, 95, 99))
        out["storm_wall_s"] = got["wall_s"]
        out["faults"] = faults
        out["api_retries"] = got["retries"]
        serve.stop()
        # the meters, the head-end and the API clients share this machine's cores during the storm
        out["storm_cpu_s"] = {"town (meters)": town_cpu, "headend serve": serve.cpu_s, "loadrun (API clients)": own_cpu}
        out["meters_cpu_share"] = town_cpu / (sum(out["storm_cpu_s"].values()) or 1.0)

        # a meter whose outage outlasted the storm (a remote account's payments need no meter) is
        # checked, and counted as restarted, only once its supply is back
        _wait_all_up(control, 60.0)
        out.update(_checks(db, control, payments))
        out["commands_per_s"] = out["commands_confirmed"] / out["storm_wall_s"]
        out["town_stats"] = {k: v for k, v in _town_ask(control, "stats").items() if k in ("dropped", "restarts")}
        town_peak = max(town_peak, _hwm_kb(town.pid))
        out["peak_mb"] = {"town (meters)": town_peak / 1024,
                          "headend serve (highest of its runs)": max(serve.peaks_kb) / 1024,
                          "loadrun (read cycles, API clients)":
                              resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        return out
    finally:
        serve.stop()
        if town.poll() is None:
            town.send_signal(signal.SIGTERM)
            try:
                town.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                town.kill()
                town.communicate()
        town_err.close()


def _read_cycles(store: Any, keys: Any, registered: list, buses: list[dict], rounds: int, window_s: float,
                 log: Callable[[str], None]) -> dict[str, Any]:
    """Head-end read cycles against the plain-asyncio ceiling on the same buses, interleaved."""
    import gc

    from headend.commands import MeterClient
    from headend.commands.collect import read_cycle
    from headend.transports import FrontEnd, LinkSettings
    from tools.bench.ceiling import ceiling_cycles, open_buses
    from tools.bench.interleave import interleaved_values_async

    cycle_s: list[float] = []

    async def main() -> Any:
        fe = FrontEnd(LinkSettings(timeout=10.0, retries=2, connect_timeout=10.0))
        client = MeterClient(fe, lambda m: keys.meter_key(m.address, m.krn))
        first = await read_cycle(client, store, registered, [READ_DI])  # opens the connections
        if first.failed:
            raise RuntimeError(f"reads failed: {list(first.failed.items())[:3]}")
        conns = await open_buses(buses, [READ_DI])
        gc.collect()
        gc.freeze()

        async def headend() -> float:
            t0, n = time.perf_counter(), 0
            while time.perf_counter() - t0 < window_s or n == 0:
                c0 = time.perf_counter()
                res = await read_cycle(client, store, registered, [READ_DI])
                cycle_s.append(time.perf_counter() - c0)
                if res.failed or res.stored != len(registered):
                    raise RuntimeError(f"a read cycle stored {res.stored} of {len(registered)}")
                n += res.stored
            return n / (time.perf_counter() - t0)

        async def ceiling() -> float:
            return await ceiling_cycles(buses, window_s, [READ_DI], conns=conns)

        r = await interleaved_values_async(headend, ceiling, rounds=rounds)
        for c in conns:
            c.transport.close()  # type: ignore[union-attr]
        await fe.close()
        return r

    r = asyncio.run(main())
    log(f"read cycle: {statistics.median(cycle_s):.2f} s for {len(registered):,} meters; {r.a:,.0f} reads/s vs the "
        f"plain-asyncio ceiling {r.b:,.0f} on the same buses: {r.describe()}")
    return {"read_cycle_s": statistics.median(cycle_s), "reads_per_s": r.a, "ceiling_reads_per_s": r.b,
            "read_vs_ceiling": r.ratio, "read_vs_ceiling_low": r.low, "read_vs_ceiling_high": r.high,
            "read_pairs": r.rounds}


def _checks(db: Path, control: tuple[str, int], payments: list) -> dict[str, Any]:
    """Conservation to the fen, and no command lost or applied twice."""
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        posted = con.execute("SELECT COALESCE(SUM(amount_fen), 0) FROM payments WHERE state != 'reversed'").fetchone()[0]
        remote = con.execute("SELECT COALESCE(SUM(a.balance_fen), 0) FROM accounts a WHERE EXISTS (SELECT 1 FROM"
                             " meters m WHERE m.customer = a.customer AND m.mode = 'remote')").fetchone()[0]
        modes = dict(con.execute("SELECT address, mode FROM meters"))
        paid_by_meter: dict[str, int] = {}
        for meter, fen in con.execute("SELECT meter, SUM(amount_fen) FROM payments WHERE state != 'reversed'"
                                      " GROUP BY meter"):
            paid_by_meter[meter] = fen
        confirmed = dict(con.execute("SELECT meter, COUNT(*) FROM commands WHERE kind = 'recharge'"
                                     " AND status = 'confirmed' GROUP BY meter"))
        commands = con.execute("SELECT COUNT(*) FROM commands WHERE status = 'confirmed'").fetchone()[0]
        not_done = con.execute("SELECT COUNT(*) FROM commands WHERE status NOT IN ('confirmed')").fetchone()[0]
        states = dict(con.execute("SELECT state, COUNT(*) FROM payments GROUP BY state"))
        retries = con.execute("SELECT COALESCE(SUM(attempts - 1), 0) FROM commands WHERE attempts > 1").fetchone()[0]
    finally:
        con.close()
    statuses = _town_ask(control, "statuses")["statuses"]
    on_meters = sum(s["total_bought"] for a, s in statuses.items() if modes[a] == "local")
    balances = sum(s["balance_fen"] for a, s in statuses.items() if modes[a] == "local")
    wrong = [a for a, s in statuses.items() if modes[a] == "local" and (
        s["total_bought"] != paid_by_meter.get(a, 0) or s["count"] != confirmed.get(a, 0))]
    expected = sum(p.amount_fen for p in payments)
    return {"posted_fen": posted, "expected_fen": expected, "on_local_meters_fen": on_meters,
            "local_balances_fen": balances, "remote_balances_fen": remote,
            "conservation_ok": posted == expected == on_meters + remote and balances == on_meters,
            "meters_wrong": wrong[:10], "meters_wrong_count": len(wrong), "commands_not_confirmed": not_done, "commands_confirmed": commands,
            "payment_states": states, "command_retries": retries}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.loadrun", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--meters", type=int, default=10_000, help="meters in the town (default 10000)")
    p.add_argument("--seed", type=int, default=1, help="the town's seed")
    p.add_argument("--rounds", type=int, default=5, help="interleaved read-cycle pairs (default 5)")
    p.add_argument("--kills", type=int, default=2, help="SIGKILLs of headend serve during the storm (default 2)")
    p.add_argument("--dir", help="working directory (default: a new one under the temp directory)")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end instead of the summary")
    args = p.parse_args(argv)
    if args.meters < 100:
        p.error(f"--meters must be at least 100 (40 buses of 32 meters need 1,280 for the full shape), got {args.meters}")
    say = (lambda s: print(s, file=sys.stderr)) if args.json else print
    try:
        # run_load stops everything it started in its finally: on Ctrl-C, and on SIGTERM alike
        with stop_on_sigterm():
            out = run_load(args.meters, seed=args.seed, workdir=Path(args.dir) if args.dir else None,
                           rounds=args.rounds, kills=args.kills, log=say)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
        say(f"loadrun: stopped by {signal.Signals(signum).name}; everything it started is stopped")
        return 128 + signum
    if args.json:
        print(json.dumps(out))
    else:
        print(f"payments: {out['payments_confirmed']:,} of {out['payments']:,} confirmed in {out['storm_wall_s']:.1f} s"
              f" ({out['payments_confirmed'] / out['storm_wall_s']:,.0f}/s); to confirmation p50 {out['payment_p50_s']:.2f}"
              f" s, p95 {out['payment_p95_s']:.2f} s, p99 {out['payment_p99_s']:.2f} s")
        print(f"commands: {out['commands_confirmed']:,} confirmed (recharges: session, MACs, read-back), "
              f"{out['commands_per_s']:,.1f}/s over the storm; CPU seconds meanwhile: "
              + ", ".join(f"{k} {v:.1f}" for k, v in out["storm_cpu_s"].items())
              + f" (the meters' share {100 * out['meters_cpu_share']:.0f}%)")
        print(f"faults: {out['faults']}; retries: API {out['api_retries']}, commands {out['command_retries']}, "
              f"replies lost at the meters {out['town_stats']['dropped']}, meter restarts {out['town_stats']['restarts']}")
        print(f"conservation: posted {out['posted_fen']} fen == local meters {out['on_local_meters_fen']} + remote "
              f"accounts {out['remote_balances_fen']}: {'EXACT' if out['conservation_ok'] else 'BROKEN'}; meters with a "
              f"lost or double recharge: {out['meters_wrong_count']}")
        print("peak memory: " + ", ".join(f"{k} {v:.0f} MB" for k, v in out["peak_mb"].items()))
        print(f"files: {out['workdir']}")
    return 0 if out["conservation_ok"] and not out["meters_wrong_count"] else 1


if __name__ == "__main__":
    sys.exit(main())
