"""Charts of the reports (matplotlib, drawn off-screen): the picture a manager shows."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

_SUFFIXES = (".png", ".svg")


def draw(rep: Any, path: Path) -> Path:
    """Draw ``rep`` (a headend.reports.Report) into ``path`` (.png or .svg); return the path."""
    if path.suffix.lower() not in _SUFFIXES:
        raise ValueError(f"chart file must end in .png or .svg, got {path.name!r}")
    import matplotlib

    matplotlib.use("Agg")  # no display on a server; must precede pyplot
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=110)
    try:
        if rep.rows:
            _PLOTS.get(rep.name, _table_plot)(ax, rep)
        else:  # as the text report, which prints no rows: an empty period is an answer, not an error
            ax.text(0.5, 0.5, "nothing in this period", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        ax.set_title(rep.title)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def _periods(rows: list[dict]) -> list[str]:
    return sorted({r["period"] for r in rows})


def _collection(ax: Any, rep: Any) -> None:
    periods = _periods(rep.rows)
    due = defaultdict(int)
    got = defaultdict(int)
    for r in rep.rows:
        due[r["period"]] += r["due_fen"] + r["arrears_start_fen"]
        got[r["period"]] += r["collected_current_fen"] + r["collected_arrears_fen"]
    x = range(len(periods))
    ax.bar([i - 0.2 for i in x], [due[p] / 100 for p in periods], width=0.4, label="due incl. arrears (yuan)")
    ax.bar([i + 0.2 for i in x], [got[p] / 100 for p in periods], width=0.4, label="collected (yuan)")
    ax.set_xticks(list(x), periods, rotation=45, ha="right", fontsize=8)
    ax2 = ax.twinx()
    ax2.plot(list(x), [100 * got[p] / due[p] if due[p] else None for p in periods], color="black", marker="o",
             label="collection rate %")
    ax2.set_ylim(0, 110)
    ax2.set_ylabel("%")
    ax.legend(loc="upper left", fontsize=8)


def _channels(ax: Any, rep: Any) -> None:
    periods = _periods(rep.rows)
    kinds = sorted({r["kind"] for r in rep.rows})
    share = {k: [0.0] * len(periods) for k in kinds}
    for r in rep.rows:
        share[r["kind"]][periods.index(r["period"])] += 100 * (r["share"] or 0)
    ax.stackplot(range(len(periods)), *[share[k] for k in kinds], labels=kinds)
    ax.set_xticks(range(len(periods)), periods, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("share of payments (%)")
    ax.legend(loc="upper left", fontsize=7, ncol=2)


def _table_plot(ax: Any, rep: Any) -> None:
    # reports without a natural time series: a bar per row of the first numeric column
    num = [k for k in rep.columns if rep.rows and isinstance(rep.rows[0].get(k), int)]
    label = rep.columns[0]
    if num:
        ax.bar([str(r.get(label)) for r in rep.rows], [r.get(num[0]) or 0 for r in rep.rows])
        ax.set_ylabel(num[0])
    ax.tick_params(axis="x", rotation=45, labelsize=8)


_PLOTS = {"collection": _collection, "channels": _channels}
