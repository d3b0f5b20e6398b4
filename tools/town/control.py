"""Line commands to a running town: faults on demand, the customer's button, meter status.

One command per line, one JSON line back (``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``):

    drop ADDRESS N [recharge]    lose the meter's next N replies (only its recharge replies)
    delay ADDRESS SECONDS        answer that late (0: on time again)
    garbage ADDRESS on|off       answer noise
    power-loss ADDRESS DOWN_S [BEHIND_S]   no supply for DOWN_S real seconds, back from its saved
                                 state with its clock behind (default: by the outage)
    bus-garbage BUS SECONDS      the whole bus answers noise for a while (BUS: its index)
    flap BUS SECONDS             the bus's link goes down (connections hung up) for a while
    load ADDRESS W|auto          draw a fixed W from now on (auto: the household's own load again)
    button ADDRESS               the customer's >= 3 s press
    status ADDRESS               the meter's own view (balance, relay, energy, total bought)
    statuses                     every meter's status, {address: status}
    stats                        frames in and out, replies dropped, restarts, meters down
    clear                        every fault off

``apply_command(fleet, line)`` does one (no I/O); ``serve_control`` serves them on TCP.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

__all__ = ["apply_command", "serve_control"]

_USAGE = ("commands: drop ADDRESS N [recharge] | delay ADDRESS S | garbage ADDRESS on|off | "
          "power-loss ADDRESS DOWN_S [BEHIND_S] | bus-garbage BUS S | flap BUS S | load ADDRESS W|auto | button ADDRESS | "
          "status ADDRESS | statuses | stats | clear")


def _meter(fleet: Any, address: str) -> str:
    if address not in fleet.meters:
        raise ValueError(f"no meter {address!r} in this town")
    return address


def _bus(fleet: Any, text: str) -> int:
    try:
        i = int(text)
    except ValueError:
        raise ValueError(f"BUS is a bus index 0..{len(fleet.buses) - 1}, got {text!r}") from None
    if not 0 <= i < len(fleet.buses):
        raise ValueError(f"BUS is a bus index 0..{len(fleet.buses) - 1}, got {i}")
    return i


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"seconds must be a number, got {text!r}") from None
    if not 0 <= v <= 86400:
        raise ValueError(f"seconds must be 0..86400, got {v}")
    return v


def _watts(text: str) -> int:
    try:
        w = int(text)
    except ValueError:
        raise ValueError(f"load is whole watts 0..100000 or auto, got {text!r}") from None
    if not 0 <= w <= 100000:
        raise ValueError(f"load is whole watts 0..100000 or auto, got {w}")
    return w


def _status(fleet: Any, address: str) -> dict[str, Any]:
    s = fleet.status(address)
    s["down"] = address in fleet.down
    s.pop("rates_wh", None)
    return s


def apply_command(fleet: Any, line: str) -> dict[str, Any]:
    """Do one control command on ``fleet`` (a tools.fleet.Fleet); the answer as a dict."""
    words = line.split()
    try:
        if not words:
            raise ValueError(_USAGE)
        cmd, args = words[0], words[1:]
        if cmd == "drop" and len(args) in (2, 3):
            f = fleet.fault(_meter(fleet, args[0]))
            f.drop = int(args[1])
            f.drop_kind = "recharge" if args[2:] == ["recharge"] else "all"
            if args[2:] not in ([], ["recharge"]):
                raise ValueError("drop ADDRESS N [recharge]")
        elif cmd == "delay" and len(args) == 2:
            fleet.fault(_meter(fleet, args[0])).delay_s = _seconds(args[1])
        elif cmd == "garbage" and len(args) == 2 and args[1] in ("on", "off"):
            fleet.fault(_meter(fleet, args[0])).garbage = args[1] == "on"
        elif cmd == "power-loss" and len(args) in (2, 3):
            fleet.power_loss(_meter(fleet, args[0]), _seconds(args[1]), int(args[2]) if len(args) == 3 else None)
        elif cmd == "bus-garbage" and len(args) == 2:
            fleet.bus_fault(_bus(fleet, args[0]), garbage_s=_seconds(args[1]))
        elif cmd == "flap" and len(args) == 2:
            fleet.bus_fault(_bus(fleet, args[0]), down_s=_seconds(args[1]))
        elif cmd == "load" and len(args) == 2:
            fleet.set_load(_meter(fleet, args[0]), None if args[1] == "auto" else _watts(args[1]))
        elif cmd == "button" and len(args) == 1:
            fleet.press_button(_meter(fleet, args[0]))
            return {"ok": True, "status": _status(fleet, args[0])}
        elif cmd == "status" and len(args) == 1:
            return {"ok": True, "status": _status(fleet, _meter(fleet, args[0]))}
        elif cmd == "statuses" and not args:
            return {"ok": True, "statuses": {a: _status(fleet, a) for a in fleet.meters}}
        elif cmd == "stats" and not args:
            return {"ok": True, "frames_in": fleet.frames_in, "frames_out": fleet.frames_out,
                    "dropped": fleet.dropped, "restarts": fleet.restarts, "down": sorted(fleet.down),
                    "time": fleet.clock.now()}
        elif cmd == "clear" and not args:
            for bus in fleet.buses:
                bus.faults = {a: f for a, f in bus.faults.items() if f.down}  # a meter without power stays so
                bus.garbage = bus.down = False
                bus.drop = 0
        else:
            raise ValueError(_USAGE)
    except ValueError as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True}


async def serve_control(fleet: Any, host: str, port: int) -> asyncio.Server:
    """Serve control commands on host:port (0: a free port); the server (its port in .sockets)."""

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write((json.dumps(apply_command(fleet, line.decode("utf-8", "replace")),
                                         ensure_ascii=False) + "\n").encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(one, host, port, limit=1 << 16)


def ask(control: tuple[str, int], command: str, *, timeout: float = 30) -> dict[str, Any]:
    """Send one control line to a running town and return its JSON answer (``ok`` and the rest):
    the client side of :func:`serve_control`, for the demo, the load run and the tests."""
    with socket.create_connection(control, timeout=timeout) as s:
        s.sendall(command.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 22)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)
