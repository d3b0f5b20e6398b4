"""Start `meter run` as a child process and drive it: for tests, the demo and head-end benches.

    m = start_meter("000000000001", key_hex, state="m1.state", pty=True)
    m.tcp          # ("127.0.0.1", 40123): DL/T 645 over TCP
    m.pty          # "/dev/pts/7": DL/T 645 over a serial device (open it with pyserial)
    m.press_button()                 # SIGUSR1: the customer's >= 3 s press
    m.command("status")              # control socket: a dict of the meter's status
    m.stop()                         # SIGINT, like Ctrl-C; the state file stays
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from tools.sim import ROOT


@dataclass
class RunningMeter:
    """A `meter run` child that has printed its ready line."""

    proc: subprocess.Popen
    address: str
    tcp: tuple[str, int] | None
    pty: str | None
    control: tuple[str, int] | None
    state: str
    output: list[str] = field(default_factory=list)

    def press_button(self) -> None:
        os.kill(self.proc.pid, signal.SIGUSR1)

    def command(self, line: str, timeout: float = 5.0) -> Any:
        """Send one control line (button, status, load W|auto, advance S, quit); the JSON reply."""
        if not self.control:
            raise RuntimeError("this meter was started without a control socket")
        with socket.create_connection(self.control, timeout=timeout) as s:
            s.sendall(line.encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        return json.loads(buf)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
        """Stop it as Ctrl-C would (or with `sig`); returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.output += (out or "").splitlines()
        return self.proc.returncode

    def __enter__(self) -> RunningMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def start_meter(address: str, key_hex: str, state: str, *, listen: str | None = "tcp://127.0.0.1:0",
                pty: bool = False, control: bool = True, micropython: bool = False, speed: int = 1,
                extra: tuple[str, ...] = (), timeout: float = 30.0) -> RunningMeter:
    """Run `meter run --quiet` and wait for its ready line; raises RuntimeError with its output."""
    argv = [sys.executable, "-m", "tools.meter_cli", "run", "--quiet", "--address", address,
            "--key-hex", key_hex, "--state", state, "--speed", str(speed), *extra]
    if listen:
        argv += ["--listen", listen]
    if pty:
        argv += ["--serial", "pty"]
    if control:
        argv += ["--control", "tcp://127.0.0.1:0"]
    if micropython:
        argv.append("--micropython")
    proc = subprocess.Popen(argv, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith(f"meter {address} ready"):
            kv = dict(w.split("=", 1) for w in line.split()[3:])
            return RunningMeter(proc, address, _endpoint(kv["tcp"]) if "tcp" in kv else None, kv.get("pty"),
                                _endpoint(kv["control"]) if "control" in kv else None, kv["state"], lines)
    proc.kill()
    out, _ = proc.communicate()
    raise RuntimeError("meter run did not get ready:\n" + "\n".join(lines) + (out or ""))
