"""Small bar charts as inline SVG, drawn on the server: no script, no image request, scales on a phone."""

from __future__ import annotations

from html import escape
from typing import Sequence

__all__ = ["bar_chart"]


def bar_chart(labels: Sequence[str], values: Sequence[int], *, unit: str = "", scale: int = 1,
              title: str = "") -> str:
    """An SVG of one bar per label; values are integers (fen, Wh) shown divided by ``scale``."""
    n = max(len(values), 1)
    w, h, top, bottom, left = 600, 220, 18, 46, 8
    top_v = max([v for v in values if v > 0] or [1])
    slot = (w - left * 2) / n
    bar = max(slot * 0.7, 1.0)
    parts = [f'<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{escape(title)}"'
             ' preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">']
    if title:
        parts.append(f"<title>{escape(title)}</title>")
    base = h - bottom
    parts.append(f'<line x1="{left}" y1="{base}" x2="{w - left}" y2="{base}" class="axis"/>')
    for i, (lab, v) in enumerate(zip(labels, values)):
        x = left + i * slot + (slot - bar) / 2
        bh = (base - top) * max(v, 0) / top_v
        shown = _fmt(v, scale)
        parts.append(f'<rect x="{x:.1f}" y="{base - bh:.1f}" width="{bar:.1f}" height="{bh:.1f}" class="bar">'
                     f"<title>{escape(str(lab))}: {shown} {escape(unit)}</title></rect>")
        if n <= 16:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{base - bh - 4:.1f}" class="val">{shown}</text>')
        if n <= 16 or i % max(1, n // 10) == 0:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{base + 14}" class="lab">{escape(str(lab))}</text>')
    if not values:
        parts.append(f'<text x="{w / 2}" y="{h / 2}" class="lab">no data</text>')
    parts.append("</svg>")
    return "".join(parts)


def _fmt(v: int, scale: int) -> str:
    if scale == 1:
        return str(v)
    sign = "-" if v < 0 else ""
    whole, frac = divmod(abs(v), scale)
    digits = len(str(scale)) - 1
    return f"{sign}{whole}.{frac:0{digits}d}"
