"""Money as people read it: whole fen written as yuan with two decimals, by integer arithmetic only.

The one formatter of amounts for the head-end, its CLI and the tools (the meter simulator's
display among them, which is why it lives here and not in the store: importing it costs nothing).
"""

from __future__ import annotations

__all__ = ["yuan"]


def yuan(fen: int, *, grouped: bool = False) -> str:
    """Fen as yuan with 2 decimals: -105 -> "-1.05"; grouped, thousands apart: 123456789 -> "1,234,567.89"."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole:,}.{cents:02d}" if grouped else f"{sign}{whole}.{cents:02d}"
