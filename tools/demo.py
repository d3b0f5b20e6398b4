"""`make demo`: a small town of prepaid meters and its head-end, live on this machine.

What it starts, all on loopback, all stopped at the end (Ctrl-C too):

* `headend serve` on a new SQLite database: it talks DL/T 645 to the meters, keeps the accounts,
  runs remote cost control (debits, warnings, cuts, restores), sends customer notices (SMS, to a
  log file here) and serves the payments API;
* a town of ~200 simulated meters (the real meter firmware, `meter fleet --town`) on RS-485 buses
  behind serial servers, households with their own loads, with a clock running a day a minute;
  some meters keep the money themselves (local cost control), the others let the head-end do it
  (remote);
* the customers (tools/town/paygen.py), paying through the payments API by WeChat, Alipay, the
  app, the bank, the counter... in the evening, on pay day, after a warning SMS, after a cut.

For about two minutes (``--duration``) one screen shows what happens; then the collection and
channel reports (with charts), and where the database and the logs are.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from headend.keys import KeyStore
from headend.money import yuan
from headend.store import open_store
from headend.store.models import CHINA_UTC_OFFSET_S, business_day
from tools.proc import Stopped, stop_on_sigterm, terminate, wait_for_line
from tools.town import control as town_control

ROOT = Path(__file__).resolve().parent.parent
PASSPHRASE = "prepaid645 demo passphrase"
OPERATOR, OPERATOR_PASSWORD = "demo", "prepaid645-demo"  # signs in to the operator console
console = Console(highlight=False, soft_wrap=True)

CONFIG = """[store]
db = "{db}"

[costctl]
interval_s = 3600
collect_window_s = 900
notice_period_h = 0
night = ""
holidays = []

[notices]
language = "en"
quiet = ""
interval_s = 1
watch_every_s = 2
rate_limit = 20
"""


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="prepaid645-demo-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db = self.dir / "headend.db"
        self.env = dict(
            os.environ,
            PREPAID645_DB=str(self.db),
            PREPAID645_KEY_FILE=str(self.dir / "headend.key"),
            PREPAID645_KEY_PASSPHRASE=os.environ.get("PREPAID645_KEY_PASSPHRASE", PASSPHRASE),
            PREPAID645_CONFIG=str(self.dir / "prepaid645.toml"),
            USER=os.environ.get("USER", "demo-operator"),
            PREPAID645_OPERATOR=OPERATOR,
            PREPAID645_OPERATOR_PASSWORD=OPERATOR_PASSWORD,
            COLUMNS=os.environ.get("COLUMNS", str(max(shutil.get_terminal_size().columns, 120))),
        )
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.logs: dict[str, Path] = {}
        self.control: tuple[str, int] | None = None
        self.api = ""
        self.serve_t0 = time.monotonic()  # set again when `headend serve` starts its clock
        t = time.localtime()
        # the town's clock starts this afternoon at 16:00, so the first evening comes soon
        self.start = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T16:00"

    def books_days(self) -> tuple[str, str]:
        """The business days (the head-end's, China time) the town's money fell on: charges on the
        town's clock, which runs `speed` times faster from `start` (China time, as cost control
        reads --clock), and payments on the day the head-end took them."""
        start = datetime.fromisoformat(self.start).replace(tzinfo=timezone(timedelta(seconds=CHINA_UTC_OFFSET_S))).timestamp()
        town_now = start + (time.monotonic() - self.serve_t0) * self.args.speed
        today = business_day(int(time.time()))
        return min(business_day(int(start)), today), max(business_day(int(town_now)), today)

    # -- children -------------------------------------------------------------------------
    def spawn(self, name: str, *argv: str, ready: str | None = None, timeout: float = 120) -> tuple[subprocess.Popen,
                                                                                                   list[str]]:
        """Start a child whose stdout goes to NAME.log; wait for its line ``ready`` (or its first line)."""
        log = self.dir / f"{name}.log"
        self.logs[name] = log
        proc = subprocess.Popen([sys.executable, *argv], cwd=str(ROOT), env=self.env, stdout=subprocess.PIPE,
                                stderr=open(self.dir / f"{name}.err.log", "w"), text=True)
        self.children.append((name, proc))
        seen: list[str] = []
        if ready is None:
            line = proc.stdout.readline() if proc.stdout else ""
            seen.append(line)
            ok = bool(line)
        else:
            ok = wait_for_line(proc, ready, seen, timeout)
        if not ok:
            raise SystemExit(f"demo: {name} did not start; see {self.dir / (name + '.err.log')}:\n" + "".join(seen))
        # the rest of its output goes to its log, from a thread that only copies lines
        import threading

        def copy() -> None:
            with log.open("a") as fh:
                fh.writelines(seen)
                for line in proc.stdout or ():
                    fh.write(line)
                    fh.flush()

        threading.Thread(target=copy, daemon=True).start()
        return proc, seen

    def headend(self, *args: str, show: bool = True, env: dict[str, str] | None = None) -> tuple[int, str]:
        p = subprocess.run([sys.executable, "-m", "headend.cli.main", *args], cwd=str(ROOT), env={**self.env, **(env or {})},
                           capture_output=True, text=True, timeout=300)
        if show:
            console.print(f"[bold]$ headend {' '.join(args)}[/]")
            for line in (p.stdout + p.stderr).rstrip().splitlines():
                console.print(f"  {line}", markup=False)
        return p.returncode, p.stdout

    def town(self, command: str) -> dict[str, Any]:
        assert self.control is not None
        return town_control.ask(self.control, command)

    # -- the demo -------------------------------------------------------------------------
    def run(self) -> None:
        a = self.args
        say = console.print
        say("[bold]prepaid645 demo: a small town of prepaid electricity meters and its head-end[/]\n")
        say("Prepaid means customers pay first and use the money up.  Some meters keep the money themselves\n"
            "and switch the supply off when it runs out (local cost control); for the others the head-end keeps\n"
            "the account, takes off what the meter reads, warns by SMS and sends the cut (remote cost control).\n"
            f"Everything runs on this machine; the town's clock runs {a.speed} times faster than yours.\n")
        say(f"Working files: {self.dir}")

        say("\n[bold cyan]1. The head-end's database and its master key[/] (meter keys derive from it; encrypted at rest)")
        (self.dir / "prepaid645.toml").write_text(CONFIG.format(db=self.db))
        self.headend("keys", "init")
        self.headend("operator", "add", OPERATOR, "--role", "admin", "--full-name", "Demo Operator",
                     env={"PREPAID645_NEW_PASSWORD": OPERATOR_PASSWORD})

        say(f"\n[bold cyan]2. The town: {a.meters} meters on RS-485 buses behind serial servers[/], registered in one step")
        _, seen = self.spawn("town", "-m", "tools.town", "--count", str(a.meters), "--seed", str(a.seed),
                             "--register", str(self.db), "--speed", str(a.speed), "--start", self.start,
                             "--faults", str(a.faults))
        info = json.loads(seen[0])
        host, port = info["control"].removeprefix("tcp://").rsplit(":", 1)
        self.control = (host, int(port))
        shared = [b for b in info["buses"] if len(b["meters"]) > 1]
        reg = info["registered"]
        say(f"  {len(shared)} buses of {min(len(b['meters']) for b in shared)}-{max(len(b['meters']) for b in shared)}"
            f" meters, {len(info['buses']) - len(shared)} meters on their own 4G links; {reg['remote']} in remote "
            f"cost control; {reg['feeders']} feeders")

        say("\n[bold cyan]3. The payment channels[/] (each with its own API key)")
        keys = KeyStore.unlock(self.dir / "headend.key", self.env["PREPAID645_KEY_PASSPHRASE"])
        from tools.town.paygen import save_credentials, setup_channels

        store = open_store(self.db)
        try:
            creds = setup_channels(store, keys, actor="demo")
        finally:
            store.close()
        save_credentials(self.dir / "channels.json", creds)
        say("  " + ", ".join(creds))

        say("\n[bold cyan]4. Start `headend serve`[/]: meters, accounts, cost control, SMS, the payments API")
        self.serve_t0 = time.monotonic()
        # port 0: serve binds a free port itself and says which. A port found free here and handed
        # over could be taken by another process before serve bound it ("Address already in use")
        _, seen = self.spawn("headend-serve", "-m", "headend.cli.main", "serve", "--api",
                             "tcp://127.0.0.1:0", "--clock", self.start, "--speed", str(a.speed),
                             "--costctl-interval", "3600", "--collect-every", "5", "--timeout", "1",
                             "--security-timeout", "2", "--retry-backoff", "0.5", "--summary-every", "10",
                             ready="headend serve: working")
        self.api = next(line.split(" payments API on ", 1)[1].split()[0] for line in seen
                        if " payments API on " in line)
        say(f"  payments API on {self.api} (OpenAPI: {self.api}/openapi.json)")
        console_url = next((line.split(" console on ", 1)[1].strip() for line in seen if " console on " in line), None)
        if console_url:
            say(f"  [bold]the operator console: {console_url}[/] (open it in a browser; sign in as "
                f"{OPERATOR!r}, password {OPERATOR_PASSWORD!r})")

        say("\n[bold cyan]5. Opening balances[/]: every customer pays once at the counter (10-60 yuan)")
        self.opening(creds)
        _, seen = self.spawn("payments", "-m", "tools.town.paygen", "--db", str(self.db), "--api", self.api,
                             "--credentials", str(self.dir / "channels.json"), "--count", str(a.meters),
                             "--seed", str(a.seed), "--speed", str(a.speed), "--start", self.start, ready=None)
        say(f"\n[bold cyan]6. Live for {a.duration:.0f} s[/] (a town day every {86400 / a.speed:.0f} s): the customers "
            "use power, pay, get warnings, are cut and restored\n")
        self.live(a.duration)

        say("\n[bold cyan]7. The books[/]: what was collected, by which channel")
        self.stop_child("payments")
        first, last = self.books_days()
        charts = {name: self.dir / f"{name}.png" for name in ("collection", "channels")}
        for name, chart in charts.items():
            self.headend("report", name, "--from", first, "--to", last, "--chart", str(chart))
        drawn = [p for p in charts.values() if p.exists()]
        say("  charts: " + (", ".join(str(p) for p in drawn) if drawn else "(matplotlib not installed: no chart files)"))

    def opening(self, creds: dict[str, tuple[str, str]]) -> None:
        from tools.town.paygen import Payer, Payment
        from tools.town.plan import plan_town

        rng = random.Random(self.args.seed)
        homes = plan_town(self.args.meters, seed=self.args.seed).homes
        payments = [Payment(h.customer, h.address, "hall-counter", rng.randint(10, 60) * 100, "opening",
                            f"OPEN-{h.customer}") for h in homes]

        async def go() -> int:
            payer = Payer(self.api, creds)
            sem = asyncio.Semaphore(16)

            async def one(p: Payment) -> bool:
                async with sem:
                    return await payer.pay(p, give_up_s=120) is not None

            try:
                return sum(await asyncio.gather(*(one(p) for p in payments)))
            finally:
                await payer.close()

        n = asyncio.run(go())
        console.print(f"  {n} payments accepted, {yuan(sum(p.amount_fen for p in payments), grouped=True)} yuan; the local "
                      "meters get theirs as a recharge (session, MACs, purchase count), the remote accounts a credit")

    def live(self, seconds: float) -> None:
        from tools.town.view import look, render

        end = time.monotonic() + seconds
        title = f"prepaid645 demo — {self.args.meters} meters — Ctrl-C stops"
        speed = self.args.speed
        t0 = time.monotonic()
        start = time.mktime(time.strptime(self.start, "%Y-%m-%dT%H:%M"))

        def now_look():
            town_t = time.strftime("%a %H:%M", time.localtime(start + (time.monotonic() - t0) * speed))
            try:
                statuses = self.town("statuses")["statuses"]
            except (OSError, ValueError):
                statuses = {}
            return render(look(self.db, statuses, town_t), title)

        with Live(now_look(), console=console, refresh_per_second=2, transient=False) as live:
            while time.monotonic() < end:
                time.sleep(1.0)
                for name, proc in self.children:
                    if proc.poll() is not None:
                        raise SystemExit(f"demo: {name} stopped unexpectedly (exit {proc.returncode}); "
                                         f"see {self.dir / (name + '.err.log')}")
                live.update(now_look())

    def stop_child(self, name: str) -> None:
        terminate(*(proc for n, proc in self.children if n == name), grace_s=30)

    def stop(self) -> None:
        """Stop every child this demo started, newest first (also after Ctrl-C)."""
        terminate(*(proc for _name, proc in reversed(self.children)), grace_s=30)

    def where(self) -> None:
        say = console.print
        say(f"\n[bold cyan]Where things are[/] ({self.dir})")
        say(f"  database:       {self.db}  (try: PREPAID645_DB={self.db} .venv/bin/headend meter list)")
        say(f"  key file:       {self.dir / 'headend.key'} (passphrase: \"{PASSPHRASE}\")")
        say(f"  SMS sent:       {self.db}.notices.log")
        for name, log in self.logs.items():
            say(f"  {name + ' log:':<15} {log}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.demo", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--duration", type=float, default=120, help="seconds of the live view (default 120)")
    p.add_argument("--meters", type=int, default=200, help="meters in the town (default 200)")
    p.add_argument("--speed", type=int, default=1440, help="town clock acceleration (default 1440: a day a minute)")
    p.add_argument("--seed", type=int, default=1, help="the town's seed")
    p.add_argument("--faults", type=float, default=2.0, help="random faults a minute (lost replies, a meter "
                                                             "without power, a bus answering noise; default 2)")
    p.add_argument("--dir", help="working directory (default: a new one under the temp directory)")
    args = p.parse_args(argv)
    demo = Demo(args)
    code = 0
    with stop_on_sigterm():
        try:
            demo.run()
        except Stopped as exc:
            console.print("\n[yellow]stopped by SIGTERM[/]")
            code = 128 + exc.signum
        except KeyboardInterrupt:
            console.print("\n[yellow]stopped by Ctrl-C[/]")
            code = 130
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave children behind
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # nor a SIGTERM
            demo.stop()
            console.print("\n[bold cyan]Everything the demo started is stopped.[/]")
            demo.where()
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if code == 0:
        console.print("\n[bold green]demo finished[/]")
    return code


if __name__ == "__main__":
    sys.exit(main())
