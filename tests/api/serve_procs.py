"""`headend serve` processes for the tests of several serves on one database: started with the
payments API on a free loopback port and short comms timeouts, a storm of signed payments posted to
them from many threads, and stopped."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import httpx

from headend.api.signing import ChannelAuth
from tests.api.test_e2e import _free_port
from tests.headend.headend_proc import ROOT
from tools.proc import terminate, wait_for_line

# short enough that a meter lost with its serve is given up on within the tests' waits
_COMMS = ("--timeout", "0.5", "--security-timeout", "0.5", "--retries", "1", "--retry-backoff", "0.2",
          "--attempts", "2")


def start_serve(env: dict[str, str], *extra: str) -> tuple[subprocess.Popen, str]:
    """Start `headend serve --api` (no cost control) with ``extra`` options; return it and its API URL."""
    argv = [sys.executable, "-m", "headend.cli.main", "serve", *_COMMS,
            "--api", f"tcp://127.0.0.1:{_free_port()}", "--no-costctl", *extra]
    proc = subprocess.Popen(argv, cwd=str(ROOT), env=dict(os.environ, **env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    if not wait_for_line(proc, "headend serve: working", seen, 60):  # drains the pipe from then on
        proc.kill()
        proc.wait()
        raise RuntimeError("headend serve did not start:\n" + "".join(seen))
    url = next(x for x in seen if "payments API on" in x).split("payments API on ")[1].split()[0]
    return proc, url


def stop_serves(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each serve still running, SIGKILL one that does not stop within 30 s."""
    terminate(*procs, grace_s=30)


class PaymentStorm:
    """A channel posting payments from many threads, keeping every payment id it was answered per
    transaction id (one each, if every payment is applied exactly once)."""

    def __init__(self, auth: ChannelAuth) -> None:
        self.auth = auth
        self.receipts: dict[str, set[int]] = {}
        self._lock = threading.Lock()

    def post(self, base: str, body: dict) -> None:
        """Post one payment to the serve at ``base``; no answer (a killed serve) is retried later."""
        try:
            with httpx.Client(base_url=base, auth=self.auth, timeout=15) as c:
                r = c.post("/v1/payments", json=body)
            if r.status_code in (200, 201):
                with self._lock:
                    self.receipts.setdefault(body["txn_id"], set()).add(r.json()["payment_id"])
        except httpx.HTTPError:
            pass

    def retry_all(self, base: str, bodies: list[dict]) -> None:
        """The channel retries every payment at the serve that is left; each must be answered."""
        with httpx.Client(base_url=base, auth=self.auth, timeout=30) as c:
            for body in bodies:
                r = c.post("/v1/payments", json=body)
                assert r.status_code in (200, 201), r.text
                self.receipts.setdefault(body["txn_id"], set()).add(r.json()["payment_id"])
