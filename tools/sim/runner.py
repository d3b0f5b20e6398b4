"""`meter run`: one simulated meter, in this process (CPython) or under the micropython binary.

Both print the same ready line first, show the same live table (or nothing with quiet), press
the button on SIGUSR1 and stop cleanly on Ctrl-C / SIGINT / SIGTERM, leaving the state file.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import tty
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools import mpy
from tools.sim import FIRMWARE
from tools.sim.display import ready_line, render


@dataclass
class RunOptions:
    """What `meter run` was asked for; `config` is the image config dict (hal.config format)."""

    config: dict[str, Any]
    state: str
    listen: list[str] = field(default_factory=list)
    pty: bool = False
    control: str | None = None
    speed: int = 1
    start: str | None = None
    load_w: int | None = None
    load_scale: int = 100
    noise: int = 20
    seed: int = 1
    quiet: bool = False
    heapsize: str = "256K"


def _sys_path() -> None:
    if str(FIRMWARE) not in sys.path:
        sys.path.insert(0, str(FIRMWARE))


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the micropython socket cannot report an ephemeral one)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class _Live:
    """Rich live table, or silence when quiet."""

    def __init__(self, quiet: bool) -> None:
        self._live = None
        if not quiet:
            from rich.live import Live
            self._live = Live(render({}), refresh_per_second=4, transient=False)

    def __enter__(self) -> _Live:
        if self._live:
            self._live.__enter__()
        return self

    def update(self, status: dict[str, Any]) -> None:
        if self._live:
            self._live.update(render(status))

    def __exit__(self, *exc: object) -> None:
        if self._live:
            self._live.__exit__(None, None, None)
            print()


def _stop_on(signals: tuple[int, ...], stop) -> None:  # type: ignore[no-untyped-def]
    for s in signals:
        signal.signal(s, lambda *_: stop())


class _TerminalKeys:
    """Keys typed on the terminal go to the meter's keypad (digits, * clears, # enters), one at a
    time without Enter; nothing happens when stdin is not a terminal. The terminal is put back as
    it was on exit."""

    def __init__(self, deliver) -> None:  # type: ignore[no-untyped-def]
        self._deliver = deliver
        self._saved: Any = None

    def __enter__(self) -> _TerminalKeys:
        if not sys.stdin.isatty():
            return self
        import termios
        fd = sys.stdin.fileno()
        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)

        def read() -> None:
            while True:
                c = os.read(fd, 1).decode(errors="replace").upper()
                if not c:
                    return
                if c in "0123456789*#ABCD":
                    self._deliver(c)

        threading.Thread(target=read, daemon=True, name="keypad").start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            import termios
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._saved)


def _notices(created: bool, state: str, asked: str, actual: str) -> None:
    if created:
        print(f"meter: new state file {state}: a new meter, zero balance", file=sys.stderr, flush=True)
    if asked != actual:
        print(f"meter: the state file {state} holds address {actual} (written over the line), "
              f"not {asked}; the meter answers to {actual}", file=sys.stderr, flush=True)


def run_cpython(o: RunOptions) -> int:
    """Serve in this process until stopped; returns the exit status."""
    _sys_path()
    from hal import config as hal_config
    from hal.load import LoadModel
    from hal.sim import SimMeter, parse_endpoint, parse_time

    meter_cfg, hw = hal_config.check(o.config)
    load = LoadModel(scale_pct=o.load_scale, noise_pct=o.noise, seed=o.seed, fixed_w=o.load_w)
    sim = SimMeter(meter_cfg, o.state, hw["state_size"], o.speed, parse_time(o.start) if o.start else None, load)
    try:
        for url in o.listen:
            sim.listen_tcp(*parse_endpoint(url))
        if o.pty:
            sim.open_pty()
        if o.control:
            sim.listen_control(*parse_endpoint(o.control))
        # handlers before the ready line: a script may signal as soon as it reads it
        _stop_on((signal.SIGTERM, signal.SIGINT), sim.stop)
        signal.signal(signal.SIGUSR1, lambda *_: setattr(sim, "button_pending", True))
        _notices(sim.flash.created, o.state, o.config["address"], sim.address)
        # the keypad takes the terminal before the ready line: keys typed after it are never lost
        with _TerminalKeys(sim.keys_in.append):
            print(ready_line(sim.address, sim.endpoints, o.state), flush=True)
            with _Live(o.quiet) as live:
                sim.run(live.update, 250)
    finally:
        sim.close()
    print(f"meter {sim.address} stopped; state kept in {o.state}", flush=True)
    return 0


def _bridge_pty(port: int) -> str:
    """A pty whose bytes go to and come from the micropython meter's TCP port (it has no pty)."""
    master, slave = os.openpty()  # the slave stays open here: the master never reads EIO
    tty.setraw(slave)
    path = os.ttyname(slave)

    def pump() -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        while True:
            r, _, _ = select.select([master, sock], [], [])
            if master in r:
                try:
                    data = os.read(master, 512)
                except OSError:  # no program has the slave open yet
                    data = b""
                if data:
                    sock.sendall(data)
            if sock in r:
                data = sock.recv(512)
                if not data:
                    return
                os.write(master, data)

    threading.Thread(target=pump, daemon=True, name="pty-bridge").start()
    return path


def run_micropython(o: RunOptions) -> int:
    """Serve under the micropython binary (the same image a board runs, with hal.sim)."""
    _sys_path()
    from hal import config as hal_config
    from hal.sim import parse_endpoint

    hal_config.check(o.config)  # fail here, before a child is started
    listen = []
    for url in o.listen:
        host, port = parse_endpoint(url)
        listen.append(f"{host}:{port or free_port(host)}")
    bridge_port = None
    if o.pty:
        bridge_port = free_port()
        listen.append(f"127.0.0.1:{bridge_port}")
    control = None
    if o.control:
        host, port = parse_endpoint(o.control)
        control = f"{host}:{port or free_port(host)}"
    # the child runs in a scratch directory: the state file is the caller's, named absolutely
    state = os.path.abspath(o.state)
    with tempfile.TemporaryDirectory(prefix="meter-") as tmp:
        cfg_path = Path(tmp) / "config.json"
        fd = os.open(cfg_path, os.O_WRONLY | os.O_CREAT, 0o600)  # it holds the meter key
        with os.fdopen(fd, "w") as f:
            json.dump(o.config, f)
        argv = [mpy.micropython(), "-X", f"heapsize={o.heapsize}", str(FIRMWARE / "main.py"),
                "--config", str(cfg_path), "--state", state, "--speed", str(o.speed),
                "--load-scale", str(o.load_scale), "--noise", str(o.noise), "--seed", str(o.seed),
                "--control-stdin", "--json"]
        for url in listen:
            argv += ["--listen", url]
        if control:
            argv += ["--control", control]
        if o.start:
            argv += ["--start", o.start]
        if o.load_w is not None:
            argv += ["--load-w", str(o.load_w)]
        env = dict(os.environ, MICROPYPATH=f"{FIRMWARE}:.frozen")
        # own process group: a terminal's Ctrl-C reaches only us, and we stop the child in order;
        # umask 077 because the unix port has no chmod and the state file holds the meter key
        child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                 cwd=tmp, start_new_session=True, umask=0o077)
        assert child.stdin and child.stdout

        def send(line: str) -> None:
            try:
                child.stdin.write(line + "\n")  # type: ignore[union-attr]
                child.stdin.flush()  # type: ignore[union-attr]
            except (BrokenPipeError, ValueError):
                pass

        _stop_on((signal.SIGTERM, signal.SIGINT), lambda: send("quit"))
        signal.signal(signal.SIGUSR1, lambda *_: send("button"))
        status = 0
        address = o.config["address"]
        with _Live(o.quiet) as live, _TerminalKeys(lambda c: send("keys " + c)):
            for line in child.stdout:
                try:
                    msg = json.loads(line)
                except ValueError:
                    print(line, end="", file=sys.stderr)  # a traceback or a print from the image
                    continue
                if "ready" in msg:
                    ep = msg["ready"]
                    ep["tcp"] = [t for t in ep.get("tcp", []) if not bridge_port or not t.endswith(f":{bridge_port}")]
                    if bridge_port:
                        ep["pty"] = _bridge_pty(bridge_port)
                    _notices(ep.get("new_state"), o.state, address, ep.get("address", address))
                    address = ep.get("address", address)
                    print(ready_line(address, ep, o.state), flush=True)
                elif "status" in msg:
                    live.update(msg["status"])
                elif "error" in msg:
                    print(f"meter: error: {msg['error']}", file=sys.stderr)
                    status = 2
        rc = child.wait()
    if status == 0 and rc != 0:
        print(f"meter: micropython exited with status {rc}; if it says MemoryError above, give it a "
              f"larger heap (--heapsize, now {o.heapsize})", file=sys.stderr)
        return rc
    if status == 0:
        print(f"meter {address} stopped; state kept in {o.state}", flush=True)
    return status
