# The desktop meter: the same core as on a board, with TCP sockets and a pty in place of the
# RS-485 UART, a load model in place of the pulse input, a state file in place of flash and a
# clock that can run faster than real time. Runs under CPython and the MicroPython unix port
# (no pty there: `meter run --micropython` bridges the pty in the launcher).

import json
import os
import select
import socket
import sys
import time

from hal.flash import open_state
from hal.load import Energy, LoadModel
from meter import clock
from meter.codec import Deframer

MICROPYTHON = sys.implementation.name == "micropython"

try:
    _ticks_ms = time.ticks_ms  # type: ignore[attr-defined]
    _ticks_diff = time.ticks_diff  # type: ignore[attr-defined]
except AttributeError:
    def _ticks_ms():
        return int(time.monotonic() * 1000)  # pyright: ignore[reportAttributeAccessIssue] - CPython only

    def _ticks_diff(a, b):
        return a - b

_MAX_FRAME_BUF = 512
# what the display shows for each keypad-token result (meter.token OK, USED, INVALID, LOCKED, REFUSED, PART)
TOKEN_SHOWN = ("accepted", "used", "invalid", "locked: too many bad entries", "refused: over the hoarding limit"
               " or no account", "key part accepted: enter the others")
KEYS = "0123456789*#ABCD"


def host_now():
    """The host's local wall time as meter time."""
    t = time.localtime()
    return clock.from_fields(t[0], t[1], t[2], t[3], t[4], t[5])


def parse_time(text):
    """Meter time from 'YYYY-MM-DDThh:mm[:ss]' (local)."""
    try:
        d, _, hms = text.replace(" ", "T").partition("T")
        y, mo, dd = [int(x) for x in d.split("-")]
        parts = [int(x) for x in hms.split(":")] if hms else [0, 0]
        while len(parts) < 3:
            parts.append(0)
        if not clock.valid_date(y, mo, dd) or not (0 <= parts[0] < 24 and 0 <= parts[1] < 60 and 0 <= parts[2] < 60):
            raise ValueError
    except ValueError:
        raise ValueError("start time must look like 2026-01-31T07:00[:00] (2024..2099), got %r" % (text,))
    return clock.from_fields(y, mo, dd, parts[0], parts[1], parts[2])


def parse_endpoint(url):
    """('127.0.0.1', 8645) from 'tcp://127.0.0.1:8645' or '127.0.0.1:8645'."""
    rest = url[6:] if url.startswith("tcp://") else url
    host, sep, port = rest.rpartition(":")
    try:
        if not sep or not host:
            raise ValueError
        p = int(port)
        if not 0 <= p <= 65535:
            raise ValueError
    except ValueError:
        raise ValueError("endpoint must look like tcp://127.0.0.1:8645, got %r" % (url,))
    return host, p


class SimClock:
    """Meter time from a start time and an acceleration factor (speed 60: a minute per second)."""

    def __init__(self, start=None, speed=1):
        if speed < 1:
            raise ValueError("clock speed must be a whole number >= 1, got %r" % (speed,))
        self.speed = speed
        self._start_ms = (host_now() if start is None else start) * 1000
        self._t0 = _ticks_ms()
        self._last = 0

    def ms(self):
        """Meter time in ms since the epoch; never goes backwards."""
        el = _ticks_diff(_ticks_ms(), self._t0)
        t = self._start_ms + el * self.speed
        if t < self._last:
            t = self._last
        self._last = t
        return t

    def now(self):
        return self.ms() // 1000

    def shift(self, seconds):
        """Move meter time forward (tests and demos jump over a night)."""
        self._start_ms += seconds * 1000


def frames_of(deframer, chunk):
    """The whole frames (bytes) that chunk completes in deframer (meter.codec.Deframer: one per
    link, so two masters on two connections never splice each other's bytes)."""
    out = []
    mv = memoryview(chunk)
    for i in range(0, len(chunk), 256):  # the Deframer takes a few hundred bytes between frames
        deframer.feed(mv[i:i + 256])
        while True:
            f = deframer.next_frame()
            if f is None:
                break
            out.append(bytes(f))
    return out


class _Pulses:
    """The load model's Wh as the pulses MeterApp takes (1000 per kWh: one a Wh)."""

    def __init__(self):
        self.n = 0

    def take(self):
        n = self.n
        self.n = 0
        return n


class _Sock:
    def __init__(self, sock, name):
        self.sock = sock
        self.name = name
        self.frames = Deframer(_MAX_FRAME_BUF)
        self.text = b""  # a control link's unfinished line

    def key(self):
        return self.sock if MICROPYTHON else self.sock.fileno()

    def read(self):
        try:
            return self.sock.recv(512)
        except OSError:
            return b""

    def write(self, data):
        try:
            self.sock.sendall(data) if hasattr(self.sock, "sendall") else self.sock.write(data)
        except OSError:
            pass

    def close(self):
        self.sock.close()


class _Fd:
    # a pty master (CPython only)
    def __init__(self, fd, name):
        self.fd = fd
        self.name = name
        self.frames = Deframer(_MAX_FRAME_BUF)

    def key(self):
        return self.fd

    def read(self):
        try:
            return os.read(self.fd, 512)  # type: ignore[attr-defined]
        except OSError:
            return None  # EIO while no program holds the slave open: not an end of stream

    def write(self, data):
        try:
            os.write(self.fd, data)  # type: ignore[attr-defined]
        except OSError:
            pass

    def close(self):
        os.close(self.fd)  # type: ignore[attr-defined]


def _listener(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(socket.getaddrinfo(host, port)[0][-1])
        s.listen(8)
    except OSError as e:
        s.close()
        code = e.args[0] if e.args else 0
        why = "the port is in use" if code in (48, 98) else str(e)  # EADDRINUSE: macOS, Linux
        raise OSError("cannot listen on tcp://%s:%s: %s" % (host, port, why))
    if hasattr(s, "getsockname"):  # CPython; MicroPython's socket cannot say its port
        port = s.getsockname()[1]  # pyright: ignore[reportAttributeAccessIssue]
    return s, port


class SimMeter:
    """One simulated meter: core + links + load + relay + button + state file.

    make_meter(config, flash, now, rand) builds the core (meter.core.Meter by default).
    """

    def __init__(self, meter_cfg, state_path, state_size=16384, speed=1, start=None, load=None,
                 make_meter=None, create_state=True):
        self.cfg = meter_cfg
        self.address = meter_cfg["address"]
        self.state_path = state_path
        self.flash = open_state(state_path, state_size, create_state)
        self.clock = SimClock(start, speed)
        self.load = load or LoadModel()
        self.energy = Energy()
        if make_meter is None:
            from meter.core import Meter as make_meter
        self.meter = make_meter(meter_cfg, self.flash, self.clock.now(), os.urandom)
        # a state file keeps an address written over the line (15H); the meter answers to that one
        self.address = self.meter.status().get("address", self.address)
        self.relay_open = self.meter.relay_open
        self.relay_log = []  # (meter time, open) for every change of the simulated contact
        self.presses = 0
        self.power_w = 0
        self.frames_in = 0
        self.frames_out = 0
        self.endpoints = {}
        self.stopping = False
        self.button_pending = False  # set from a signal handler; the loop presses the button
        self.keys_in = []  # keys from the terminal (another thread appends); the loop types them
        self._poll = select.poll()
        self._handlers = {}
        self._links = []
        self._last_ms = self.clock.ms()
        self._pulses = _Pulses()
        # the same glue as on a board; this object is its relay (the contact follows the command).
        # Imported after the core: compiling the core from source is the start's heap peak
        from meter.app import MeterApp
        self.app = MeterApp(self.meter, self._pulses, 1000, self)
        self.app.step(self._last_ms // 1000, self._last_ms)

    # ---- links -------------------------------------------------------------------------------
    def _watch(self, key, obj, handler):
        self._poll.register(obj, select.POLLIN)
        self._handlers[key] = handler

    def _unwatch(self, key, obj):
        try:
            self._poll.unregister(obj)
        except (OSError, KeyError, ValueError):
            pass
        self._handlers.pop(key, None)

    def listen_tcp(self, host="127.0.0.1", port=8645):
        """Serve DL/T 645 on a TCP port; returns the port (the real one when 0 was asked for)."""
        srv, port = _listener(host, port)
        key = srv if MICROPYTHON else srv.fileno()
        self._watch(key, srv, lambda: self._accept(srv, self._serve_link))
        self.endpoints.setdefault("tcp", []).append("%s:%s" % (host, port))
        return port

    def listen_control(self, host="127.0.0.1", port=0):
        """Line commands on a TCP port: button, keys K, status, load W|auto, advance S, quit."""
        srv, port = _listener(host, port)
        key = srv if MICROPYTHON else srv.fileno()
        self._watch(key, srv, lambda: self._accept(srv, self._serve_control))
        self.endpoints["control"] = "%s:%s" % (host, port)
        return port

    def control_stdin(self):
        """Take line commands on stdin (the launcher's channel to a MicroPython child); the end of
        stdin stops the meter."""
        stdin = sys.stdin
        key = stdin if MICROPYTHON else stdin.fileno()

        def handler():
            line = stdin.readline()
            if not line:  # the launcher is gone: nobody would ever stop this meter
                self._unwatch(key, stdin)
                self.stopping = True
                return
            reply = self.command(line)
            if reply:
                print(reply)

        self._watch(key, stdin, handler)

    def open_pty(self):
        """Create a pty, serve DL/T 645 on it and return the slave's path for serial programs."""
        if not hasattr(os, "openpty"):
            raise OSError("this interpreter cannot create a pty; `meter run --micropython` bridges one")
        import tty  # pyright: ignore[reportMissingImports] - CPython only, like os.openpty
        master, slave = os.openpty()  # type: ignore[attr-defined]
        tty.setraw(slave)
        # keep the slave open ourselves so the master never reads EIO between client programs
        self._pty_slave = slave
        path = os.ttyname(slave)  # type: ignore[attr-defined]
        link = _Fd(master, path)
        self._links.append(link)
        self._watch(link.key(), master, lambda: self._serve_link(link))
        self.endpoints["pty"] = path
        return path

    def _accept(self, srv, serve):
        conn, _ = srv.accept()
        link = _Sock(conn, "tcp")
        self._links.append(link)
        key = link.key()
        self._watch(key, conn, lambda: serve(link))

    def _drop(self, link):
        self._unwatch(link.key(), link.sock if isinstance(link, _Sock) else link.fd)
        if link in self._links:
            self._links.remove(link)
        link.close()

    def _serve_link(self, link):
        chunk = link.read()
        if chunk is None:
            return
        if not chunk:
            self._drop(link)
            return
        for frame in frames_of(link.frames, chunk):
            self.frames_in += 1
            reply = self.meter.handle(frame, self.clock.now())
            if reply:
                self.frames_out += 1
                link.write(reply)
        self.app.drive()

    def _serve_control(self, link):
        chunk = link.read()
        if not chunk:
            self._drop(link)
            return
        buf = link.text + chunk
        while True:
            i = buf.find(b"\n")
            if i < 0:
                break
            line = buf[:i].decode()
            buf = buf[i + 1:]
            reply = self.command(line)
            link.write(((reply or "{}") + "\n").encode())
        link.text = buf

    # ---- control -----------------------------------------------------------------------------
    def press_button(self):
        self.presses += 1
        self.meter.button(self.clock.now())
        self.app.drive()

    def keys(self, text):
        """Keys typed on the keypad (digits, * clears, # enters: meter.app.MeterApp.key); what the
        display shows after them."""
        for c in text:
            if c not in KEYS:
                raise ValueError("keys are %s, got %r" % (KEYS, c))
        for c in text:
            self.app.key(c, self.clock.now())
        return {"entry": self.app.entry, "token": self._shown()}

    def _shown(self):
        r = self.app.shown
        return None if r is None else TOKEN_SHOWN[r]

    def command(self, line):
        """One control line; returns the reply line."""
        words = line.split()
        if not words:
            return None
        cmd = words[0]
        try:
            if cmd == "button":
                self.press_button()
                return json.dumps({"contact": "open" if self.relay_open else "closed"})
            if cmd == "status":
                return json.dumps(self.status())
            if cmd == "keys":
                return json.dumps(self.keys(words[1]))
            if cmd == "load":
                self.load.fixed_w = None if words[1] == "auto" else int(words[1])
                return json.dumps({"ok": True})
            if cmd == "advance":
                self.clock.shift(int(words[1]))
                return json.dumps({"ok": True})
            if cmd in ("quit", "stop"):
                self.stopping = True
                return json.dumps({"ok": True})
        except (IndexError, ValueError) as e:
            return json.dumps({"error": "bad arguments for %s: %s" % (cmd, e)})
        return json.dumps({"error": "unknown command %r: button, keys K, status, load W|auto, advance S, quit" % cmd})

    # ---- time --------------------------------------------------------------------------------
    # the relay as MeterApp drives it: the simulated contact follows at once, and is logged
    @property
    def commanded(self):
        return self.relay_open

    def drive(self, open_):
        self.relay_open = open_
        self.relay_log.append((self.clock.now(), open_))

    def sensed_open(self):
        return self.relay_open

    def advance(self):
        """Integrate the load since the last call into Wh (the pulses MeterApp takes), and let
        MeterApp tick the core once per meter second and drive the relay."""
        ms = self.clock.ms()
        dms = ms - self._last_ms
        self._last_ms = ms
        now = ms // 1000
        w = 0 if self.relay_open else self.load.power_w(now)
        self._pulses.n += self.energy.add(w, dms)
        self.app.step(now, ms)
        if w != self.power_w or self.meter.power_w != w:
            self.power_w = w
            self.meter.set_power(w)  # the model knows the power exactly: not the 10 s estimate

    def step(self, timeout_ms=50):
        """Serve whatever arrived within timeout_ms, then advance time."""
        if self.button_pending:
            self.button_pending = False
            self.press_button()
        while self.keys_in:
            try:
                self.keys(self.keys_in.pop(0))
            except ValueError:
                pass  # a key the keypad does not have
        for ev in self._poll.poll(timeout_ms):
            h = self._handlers.get(ev[0])
            if h is not None:
                h()
        self.advance()

    def status(self):
        s = dict(self.meter.status())
        # the meter's own clock (a time set moves it), the one a master reads over the line
        now = self.clock.now()
        y, mo, d, h, mi, sec, _ = clock.to_fields(self.meter.time(now) if hasattr(self.meter, "time") else now)
        s.update({"address": self.address, "time": "%04d-%02d-%02d %02d:%02d:%02d" % (y, mo, d, h, mi, sec),
                  "power_w": self.power_w, "contact": "open" if self.relay_open else "closed",
                  "speed": self.clock.speed, "frames_in": self.frames_in, "frames_out": self.frames_out,
                  "links": len(self._links), "presses": self.presses, "keys": self.app.entry,
                  "token": self._shown()})
        return s

    def run(self, on_status=None, interval_ms=1000):
        """Serve until stop() or a 'quit' command; on_status(status dict) every interval_ms."""
        last = _ticks_ms() - interval_ms
        while not self.stopping:
            self.step(50)
            if on_status is not None and _ticks_diff(_ticks_ms(), last) >= interval_ms:
                last = _ticks_ms()
                on_status(self.status())

    def stop(self):
        self.stopping = True

    def close(self):
        persist = getattr(self.meter, "persist", None)
        if persist is not None:
            persist()  # a clean stop keeps the energy the save policy had not saved yet
        for link in list(self._links):
            try:
                self._drop(link)
            except OSError:
                pass
        self.flash.close()


def _args(argv):
    opts = {"listen": [], "speed": 1, "state": None, "config": None, "control": None, "stdin": False,
            "json": False, "start": None, "load_w": None, "scale": 100, "noise": 20, "seed": 1}
    i = 0
    names = {"--config": "config", "--state": "state", "--listen": "listen", "--speed": "speed",
             "--control": "control", "--start": "start", "--load-w": "load_w", "--load-scale": "scale",
             "--noise": "noise", "--seed": "seed"}
    ints = ("speed", "load_w", "scale", "noise", "seed")
    while i < len(argv):
        a = argv[i]
        if a == "--control-stdin":
            opts["stdin"] = True
        elif a == "--json":
            opts["json"] = True
        elif a in names and i + 1 < len(argv):
            k = names[a]
            v = argv[i + 1]
            i += 1
            if k in ints:
                try:
                    v = int(v)
                except ValueError:
                    raise ValueError("%s needs a whole number, got %r" % (a, v))
            if k == "listen":
                opts[k].append(v)
            else:
                opts[k] = v
        else:
            raise ValueError("unknown or incomplete option %r" % a)
        i += 1
    if not opts["config"]:
        raise ValueError("--config FILE is required")
    return opts


def main(argv):
    """The simulator as the firmware's main.py runs it (MicroPython unix port or CPython).

    Prints one JSON line {"ready": ...} when serving, then {"status": ...} lines when --json.
    """
    from hal import config
    try:
        o = _args(argv)
        meter_cfg, hw = config.load(o["config"])
        load = LoadModel(scale_pct=o["scale"], noise_pct=o["noise"], seed=o["seed"], fixed_w=o["load_w"])
        start = parse_time(o["start"]) if o["start"] else None
        sim = SimMeter(meter_cfg, o["state"] or hw["state"], hw["state_size"], o["speed"], start, load)
    except MemoryError:
        print(json.dumps({"error": "the heap is too small to start the simulator (it compiles the firmware "
                                   "from source): give micropython more, e.g. `meter run --heapsize 256K`"}))
        return 2
    except Exception as e:  # noqa: BLE001 - every start-up fault ends here with its message
        print(json.dumps({"error": str(e)}))
        return 2
    try:
        for url in o["listen"]:
            host, port = parse_endpoint(url)
            sim.listen_tcp(host, port)
        if o["control"]:
            host, port = parse_endpoint(o["control"])
            sim.listen_control(host, port)
    except (OSError, ValueError) as e:
        sim.close()
        print(json.dumps({"error": str(e)}))
        return 2
    try:
        if o["stdin"]:
            sim.control_stdin()
        ready = {"address": sim.address, "state": sim.state_path, "new_state": sim.flash.created}
        ready.update(sim.endpoints)
        print(json.dumps({"ready": ready}))
        emit = (lambda s: print(json.dumps({"status": s}))) if o["json"] else None
        sim.run(emit)
    except KeyboardInterrupt:
        pass
    finally:
        sim.close()
    print(json.dumps({"stopped": {"state": sim.state_path}}))
    return 0
