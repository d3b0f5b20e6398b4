"""`make demo`: a head-end and three simulated meters on this machine, start to finish.

Starts `headend serve` on a new SQLite file and three `meter run` simulators (two with local
cost control, one with remote) on loopback, walks through register, read, recharge, a
recharge whose reply is lost (retried, credited once), trip, close permitted + the customer's
button, and power hold refusing a trip, printing every `headend` command with its output and
the state the meter itself reports; then stops everything it started.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from headend.keys import KeyStore
from tools.fleet import LossyProxy
from tools.proc import wait_for_line
from tools.sim.launch import RunningMeter, start_meter

ROOT = Path(__file__).resolve().parent.parent
METERS = [("000000000001", "local", "000000000101"), ("000000000002", "local", "000000000102"),
          ("000000000003", "remote", "000000000103")]

console = Console(highlight=False, soft_wrap=True)


class Demo:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="prepaid645-demo-"))
        self.env = dict(
            os.environ,
            PREPAID645_DB=str(self.dir / "headend.db"),
            PREPAID645_KEY_FILE=str(self.dir / "headend.key"),
            PREPAID645_KEY_PASSPHRASE=os.environ.get("PREPAID645_KEY_PASSPHRASE", "prepaid645 demo passphrase"),
            USER=os.environ.get("USER", "demo-operator"),
            COLUMNS=os.environ.get("COLUMNS", str(max(shutil.get_terminal_size().columns, 160))),
        )
        self.meters: dict[str, RunningMeter] = {}
        self.serve: subprocess.Popen | None = None
        self.proxy: LossyProxy | None = None
        self.step_no = 0

    # -- output ---------------------------------------------------------------------------
    def step(self, title: str) -> None:
        self.step_no += 1
        console.print(f"\n[bold cyan]{self.step_no}. {title}[/]")

    def headend(self, *args: str, expect: int | None = 0) -> tuple[int, str]:
        console.print(f"[bold]$ headend {' '.join(shlex.quote(a) for a in args)}[/]")
        p = subprocess.run([sys.executable, "-m", "headend.cli.main", *args], cwd=str(ROOT), env=self.env,
                           capture_output=True, text=True, timeout=120)
        for line in (p.stdout + p.stderr).rstrip().splitlines():
            console.print(f"  {line}", markup=False)
        if p.returncode:
            console.print(f"  [dim](exit code {p.returncode})[/]")
        if expect is not None and p.returncode != expect:
            raise SystemExit(f"demo: `headend {' '.join(args)}` exited {p.returncode}, expected {expect}")
        return p.returncode, p.stdout

    def meter_says(self, address: str) -> dict:
        s = self.meters[address].command("status")
        relay = "open" if s["relay_open"] else "closed"
        console.print(f"  [green]meter {address} reports:[/] balance {s['balance_fen'] / 100:.2f} yuan, "
                      f"purchase count {s['count']}, relay {relay}, power hold {'on' if s['hold'] else 'off'}")
        return s

    # -- the walk-through -----------------------------------------------------------------
    def run(self) -> None:
        console.print("[bold]prepaid645 demo[/]: a head-end and three simulated meters on loopback")
        console.print(f"  working files in {self.dir} (database headend.db, encrypted key file headend.key)")

        self.step("Create the head-end's master key (encrypted at rest)")
        self.headend("keys", "init")
        keys = KeyStore.unlock(self.dir / "headend.key", self.env["PREPAID645_KEY_PASSPHRASE"])

        self.step("Start three simulated meters (`meter run`), each keyed from the head-end's key store")
        for address, mode, _ in METERS:
            m = start_meter(address, keys.meter_key(address, 0).hex(), str(self.dir / f"meter-{address}.state"),
                            extra=("--mode", mode))
            self.meters[address] = m
            console.print(f"  meter {address}: {mode} cost control, DL/T 645 on tcp://{m.tcp[0]}:{m.tcp[1]}")
        lossy = self.meters["000000000002"].tcp
        # two lost replies: the link's own retry is lost too, so the command goes back to the outbox
        self.proxy = LossyProxy(lossy[0], lossy[1], drop_recharge=2)
        proxy_port = self.proxy.start()
        console.print(f"  meter 000000000002 is reached through a lossy link on port {proxy_port} "
                      "that will lose the meter's next two recharge replies")

        self.step("Start `headend serve` (comms front-end + command outbox) on the new SQLite file")
        self.start_serve()

        self.step("Register the meters")
        links = {"000000000001": f"tcp://127.0.0.1:{self.meters['000000000001'].tcp[1]}",
                 "000000000002": f"tcp://127.0.0.1:{proxy_port}",
                 "000000000003": f"tcp://127.0.0.1:{self.meters['000000000003'].tcp[1]}"}
        for address, mode, customer in METERS:
            self.headend("meter", "add", address, "--link", links[address], "--customer", customer, "--mode", mode)
        self.headend("meter", "list")

        self.step("Read a meter (energy, remaining money, status word 3)")
        self.headend("read", "000000000001")

        self.step("Recharge 50 yuan (opens the account on first use; session, MACs, purchase count)")
        self.headend("recharge", "000000000001", "50", "--idem", "payment-1001")
        self.meter_says("000000000001")
        console.print("  the same payment sent again (same idempotency key) queues nothing new:")
        self.headend("recharge", "000000000001", "50", "--idem", "payment-1001")
        self.meter_says("000000000001")

        self.step("Recharge 30 yuan whose replies are lost: the meter credits, the head-end never hears it; the "
                  "command is retried with the same purchase count and the meter answers \"repeat recharge\"")
        self.headend("recharge", "000000000002", "30")
        self.headend("commands", "--meter", "000000000002", "--kind", "recharge")
        s = self.meter_says("000000000002")
        if s["balance_fen"] != 3000 or s["count"] != 1:
            raise SystemExit("demo: the retried recharge did not credit exactly once")

        self.step("Trip the remote-cost-control meter")
        self.headend("trip", "000000000003")
        self.meter_says("000000000003")

        self.step("Close permitted: the relay stays open until the customer presses the button")
        self.headend("close", "000000000003")
        self.meter_says("000000000003")
        console.print("  [yellow]the customer presses the meter's button for 3 s (simulated)[/]")
        self.meters["000000000003"].press_button()
        time.sleep(1.0)
        self.headend("read", "000000000003", "status_word_3")
        self.meter_says("000000000003")

        self.step("Power hold: the meter refuses a trip while it is on")
        self.headend("hold", "on", "000000000001")
        self.headend("trip", "000000000001", expect=1)
        self.meter_says("000000000001")
        self.headend("hold", "off", "000000000001")

        self.step("Everything above is in the audit log, with who and when")
        self.headend("audit", "--limit", "12")

    def start_serve(self) -> None:
        self.serve = subprocess.Popen([sys.executable, "-m", "headend.cli.main", "serve", "--timeout", "1",
                                       "--security-timeout", "1", "--retries", "1", "--retry-backoff", "0.5"],
                                      cwd=str(ROOT), env=self.env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
        seen: list[str] = []
        if wait_for_line(self.serve, "headend serve: working", seen, 60):
            console.print(f"  {seen[-1].strip()} (pid {self.serve.pid})", markup=False)
            return
        raise SystemExit("demo: headend serve did not start:\n" + "".join(seen))

    def stop(self) -> None:
        console.print(f"\n[bold cyan]{self.step_no + 1}. Stop everything the demo started[/]")
        if self.serve is not None and self.serve.poll() is None:
            self.serve.send_signal(signal.SIGTERM)
            try:
                self.serve.wait(20)
            except subprocess.TimeoutExpired:
                self.serve.kill()
            console.print("  headend serve stopped")
        if self.proxy is not None:
            self.proxy.stop()
        for address, m in self.meters.items():
            m.stop()
            console.print(f"  meter {address} stopped (state kept in {Path(m.state).name})")
        console.print(f"  the database and key file stay in {self.dir}")


def main() -> int:
    demo = Demo()
    try:
        demo.run()
    except KeyboardInterrupt:
        return 130
    finally:
        demo.stop()
    console.print("\n[bold green]demo finished[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
