"""The demo's live terminal view: one screen of what the town and the head-end are doing.

``look(db, statuses)`` gathers the figures (the head-end's database opened read-only, and the
meters' own status from the town's control port); ``render(look)`` draws them with rich.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from headend.money import yuan

__all__ = ["Look", "look", "render"]

IN_FLIGHT = ("queued", "sent", "unresolved")


@dataclass
class Look:
    town_time: str = ""
    meters: int = 0
    relay_closed: int = 0
    relay_open: int = 0
    down: int = 0
    local_balance_fen: int = 0          # the local meters' own balances, summed
    low_local: int = 0                  # local meters below 10 yuan
    remote_balance_fen: int = 0         # the remote accounts' balances in the head-end
    remote_cut: int = 0
    commands: dict[str, dict[str, int]] = field(default_factory=dict)   # kind -> status -> n
    payments: dict[str, tuple[int, int]] = field(default_factory=dict)  # channel -> (count, fen)
    notices: dict[str, int] = field(default_factory=dict)               # kind -> sent
    recent: list[str] = field(default_factory=list)                     # the latest notices


def look(db: Path, statuses: dict[str, dict[str, Any]], town_time: str = "") -> Look:
    """The figures now.  ``statuses``: the town's ``statuses`` answer (address -> the meter's view)."""
    lk = Look(town_time=town_time, meters=len(statuses))
    for s in statuses.values():
        if s.get("down"):
            lk.down += 1
        if s["relay_open"]:
            lk.relay_open += 1
        else:
            lk.relay_closed += 1
        if s["mode"] == "local":
            lk.local_balance_fen += s["balance_fen"]
            lk.low_local += s["balance_fen"] < 1000
    if not db.exists():
        return lk
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        for kind, status, n in con.execute("SELECT kind, status, COUNT(*) FROM commands GROUP BY kind, status"):
            lk.commands.setdefault(kind, {})[status] = n
        for ch, n, fen in con.execute("SELECT channel, COUNT(*), SUM(amount_fen) FROM payments"
                                      " WHERE state != 'reversed' GROUP BY channel ORDER BY 2 DESC"):
            lk.payments[ch] = (n, fen or 0)
        for kind, n in con.execute("SELECT kind, COUNT(*) FROM notifications WHERE status = 'sent' GROUP BY kind"):
            lk.notices[kind] = n
        lk.recent = [m for (m,) in con.execute("SELECT message FROM notifications WHERE status = 'sent'"
                                                " ORDER BY id DESC LIMIT 4")]
        row = con.execute("SELECT COALESCE(SUM(a.balance_fen), 0), COALESCE(SUM(a.supply = 'cut'), 0) FROM accounts a"
                          " WHERE EXISTS (SELECT 1 FROM meters m WHERE m.customer = a.customer AND m.mode = 'remote')"
                          ).fetchone()
        lk.remote_balance_fen, lk.remote_cut = int(row[0]), int(row[1])
    except sqlite3.Error:
        pass  # a table not there yet, or the database busy: the next look has it
    finally:
        con.close()
    return lk


def render(lk: Look, title: str = "") -> Group:
    """One screen: meters and money, commands, payments by channel, notices, the latest SMS."""
    top = Table.grid(padding=(0, 3))
    top.add_row(Text(title, style="bold"), Text(f"town time {lk.town_time}", style="cyan"))
    meters = Table(title="meters", title_justify="left", show_header=False, box=None)
    meters.add_row("supply on (relay closed)", str(lk.relay_closed))
    meters.add_row("cut off (relay open)", Text(str(lk.relay_open), style="red" if lk.relay_open else ""))
    meters.add_row("without power (fault)", str(lk.down))
    meters.add_row("money on local meters", f"{yuan(lk.local_balance_fen, grouped=True)} yuan")
    meters.add_row("local meters under 10 yuan", str(lk.low_local))
    meters.add_row("remote accounts' balance", f"{yuan(lk.remote_balance_fen, grouped=True)} yuan")
    meters.add_row("remote accounts cut", str(lk.remote_cut))
    cmds = Table(title="commands to meters", title_justify="left", box=None)
    cmds.add_column("kind")
    cmds.add_column("in flight", justify="right")
    cmds.add_column("done", justify="right")
    cmds.add_column("failed", justify="right")
    for kind, by in sorted(lk.commands.items()):
        cmds.add_row(kind, str(sum(by.get(s, 0) for s in IN_FLIGHT)), str(by.get("confirmed", 0)),
                     str(by.get("failed", 0) + by.get("rejected", 0)))
    pays = Table(title="payments by channel", title_justify="left", box=None)
    pays.add_column("channel")
    pays.add_column("count", justify="right")
    pays.add_column("yuan", justify="right")
    for ch, (n, fen) in lk.payments.items():
        pays.add_row(ch, str(n), yuan(fen, grouped=True))
    notes = Table(title="notices sent (SMS)", title_justify="left", box=None)
    notes.add_column("kind")
    notes.add_column("sent", justify="right")
    for kind, n in sorted(lk.notices.items()):
        notes.add_row(kind.replace("_", " "), str(n))
    row = Table.grid(padding=(0, 4))
    row.add_row(meters, cmds)
    row2 = Table.grid(padding=(0, 4))
    row2.add_row(pays, notes)
    latest = Text("\n".join(f"  {m}" for m in lk.recent) or "  (none yet)", style="dim")
    return Group(top, Text(""), row, Text(""), row2, Text("\nlatest SMS:", style="bold"), latest)
