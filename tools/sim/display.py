"""The live terminal view of one simulated meter (rich)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from headend.money import yuan

# fields the core reports, in the order an operator reads them; anything else follows
_ORDER = ("address", "time", "balance_fen", "state", "contact", "relay", "rate", "power_w", "energy_wh", "count")
_MORE = ("keys", "token", "mode", "hold", "customer", "frames_in", "frames_out", "speed")
_LABEL = {"balance_fen": "balance", "power_w": "power", "energy_wh": "energy", "count": "purchases", "relay": "relay",
          "hold": "power hold", "keys": "keypad", "token": "last token"}


_STATES = {0: "normal", 1: "alarm 1", 2: "alarm 2", 3: "zero", 4: "overdraft"}  # meter.wallet
_RATES = {0: "sharp", 1: "peak", 2: "flat", 3: "valley"}  # meter.tariff rate slots
_RELAY = {  # meter.relay S_* codes
    0: "closed", 1: "closed, power hold", 2: "closed, trip delay running", 3: "open: remote trip",
    4: "open: pre-trip 1 (button restores)", 5: "open: pre-trip 2 (button restores)",
    6: "open: close permitted (button restores)", 7: "open: close permitted, power hold",
    8: "open: local pre-trip (button restores)", 9: "open: local trip (top-up needed)",
}


def _fmt(key: str, value: Any, status: dict[str, Any]) -> str:
    if key == "state" and status.get("opened") is False:
        return "account not opened"  # no customer yet: the meter only meters, nothing is owed
    if key == "state" and value in _STATES:
        return _STATES[value]
    if key == "relay" and value in _RELAY:
        return _RELAY[value]
    if key == "hold" and isinstance(value, bool):
        return "on (never cut)" if value else "off"
    if key == "rate" and value in _RATES:
        return _RATES[value]
    if key == "balance_fen" and isinstance(value, int):
        return f"{yuan(value)} yuan"
    if key == "power_w" and isinstance(value, int):
        return f"{value:,} W"
    if key == "energy_wh" and isinstance(value, int):
        return f"{value // 1000:,}.{value % 1000:03d} kWh"
    return str(value)


def render(status: dict[str, Any]) -> Table:
    """A two-column table of the meter's status; `contact` is coloured so a cut shows at a glance."""
    table = Table(title=f"meter {status.get('address', '?')}", show_header=False, box=None)
    table.add_column(style="bold cyan")
    table.add_column()
    keys = [k for k in _ORDER + _MORE if k in status]
    for k in keys:
        text = _fmt(k, status[k], status)
        if k == "contact":
            text = f"[red]{text}[/]" if status[k] == "open" else f"[green]{text}[/]"
        table.add_row(_LABEL.get(k, k), text)
    table.caption = "type a token: digits, * clears, # enters; Ctrl-C stops (state kept)"
    return table


def ready_line(address: str, endpoints: dict[str, Any], state: str) -> str:
    """The one line a script waits for: `meter ADDRESS ready tcp=H:P pty=PATH control=H:P state=FILE`."""
    parts = [f"meter {address} ready"]
    for tcp in endpoints.get("tcp", []):
        parts.append(f"tcp={tcp}")
    if endpoints.get("pty"):
        parts.append(f"pty={endpoints['pty']}")
    if endpoints.get("control"):
        parts.append(f"control={endpoints['control']}")
    parts.append(f"state={state}")
    return " ".join(parts)
