"""Start `meter run` as a child process and drive it: for tests, the demo and head-end benches.

    m = start_meter("000000000001", key_hex, state="m1.state", pty=True)
    m.tcp          # ("127.0.0.1", 40123): DL/T 645 over TCP
    m.pty          # "/dev/pts/7": DL/T 645 over a serial device (open it with pyserial)
    m.press_button()                 # SIGUSR1: the customer's >= 3 s press
    m.command("status")              # control socket: a dict of the meter's status
    m.command("keys 1234...#")       # type on the keypad: {"entry": ..., "token": what the display shows}
    m.stop()                         # SIGINT, like Ctrl-C; the state file stays
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tools.key_input import ENV_MASTER_KEY, ENV_METER_KEY
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
    _reader: threading.Thread | None = None

    def press_button(self) -> None:
        os.kill(self.proc.pid, signal.SIGUSR1)

    def command(self, line: str, timeout: float = 5.0) -> Any:
        """Send one control line (button, keys K, status, load W|auto, advance S, quit); the JSON reply."""
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
        """Stop it as Ctrl-C would (or with `sig`); returns the exit status. `output` then holds
        every line it printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self._reader is not None:
            self._reader.join(5)
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
    """Run `meter run --quiet` and wait for its ready line; raises RuntimeError with its output.

    The key reaches the child through its environment ($PREPAID645_METER_KEY), not its arguments."""
    argv = [sys.executable, "-m", "tools.meter_cli", "run", "--quiet", "--address", address,
            "--state", state, "--speed", str(speed), *extra]
    if listen:
        argv += ["--listen", listen]
    if pty:
        argv += ["--serial", "pty"]
    if control:
        argv += ["--control", "tcp://127.0.0.1:0"]
    if micropython:
        argv.append("--micropython")
    env = {k: v for k, v in os.environ.items() if k not in (ENV_METER_KEY, ENV_MASTER_KEY)}
    env[ENV_METER_KEY] = key_hex
    proc = subprocess.Popen(argv, cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    got: queue.Queue[str | None] = queue.Queue()

    def read() -> None:  # a thread: the pipe must keep draining, and select() cannot see text buffers
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            got.put(line)
        got.put(None)

    reader = threading.Thread(target=read, daemon=True, name=f"meter-{address}-output")
    reader.start()
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = got.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        at = line.find(f"meter {address} ready")
        if at >= 0:  # stderr notices share the pipe and may run into the line
            kv = dict(w.split("=", 1) for w in line[at:].split()[3:])
            return RunningMeter(proc, address, _endpoint(kv["tcp"]) if "tcp" in kv else None, kv.get("pty"),
                                _endpoint(kv["control"]) if "control" in kv else None, kv["state"], lines, reader)
    proc.kill()
    proc.wait()
    reader.join(5)
    raise RuntimeError("meter run did not get ready:\n" + "\n".join(lines))
