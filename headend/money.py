"""Money as people read it: whole fen written as yuan with two decimals, by integer arithmetic only.

The one formatter of amounts for the head-end, its CLI and the tools (the meter simulator's
display among them, which is why it lives here and not in the store: importing it costs nothing).
"""

from __future__ import annotations

__all__ = ["yuan"]


def yuan(fen: int) -> str:
    """Fen as yuan with 2 decimals: -105 -> "-1.05"."""
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"
