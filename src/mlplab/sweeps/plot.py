"""leaderboard.png: one line per setting, best at the top, the metric on a shared axis.

Points with error bars rather than bars: accuracies of a sweep sit close together far from
zero, and bars from zero would make them all look alike. Each seed is drawn as a small dot so
the spread behind a mean ± std is visible; settings without a value are listed at the bottom
with their status, so a failure cannot disappear from the picture.
"""

from __future__ import annotations

import io
import textwrap

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mlplab.sweeps.leaderboard import Leaderboard, label

BEST = "#1b7837"
OTHER = "#2166ac"
FAILED = "#b2182b"
MAX_LABEL = 70


def _clip(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


def plot_png(board: Leaderboard) -> bytes:
    # The object API with its own Agg canvas: no pyplot, so no global backend is switched in
    # the process that runs the sweep.
    rows = board.rows
    height = 1.6 + 0.38 * max(len(rows), 1) + 0.15 * (len(" ".join(board.fixed)) // 140)
    fig = Figure(figsize=(9.0, height), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    scored = [r for r in rows if r.score.n]
    # The axis holds every run and every error bar.
    lows = [min(*r.score.values, (r.score.mean or 0.0) - (r.score.std or 0.0)) for r in scored]
    highs = [max(*r.score.values, (r.score.mean or 0.0) + (r.score.std or 0.0)) for r in scored]
    lo, hi = (min(lows), max(highs)) if scored else (0.0, 1.0)
    pad = (hi - lo) * 0.15 if hi > lo else max(abs(hi) * 0.05, 0.01)
    left = lo - pad

    ticks, names = [], []
    for y, row in enumerate(rows):
        ticks.append(y)
        n = f"  (n={row.score.n})" if row.score.n > 1 else ""
        names.append(_clip(label(row)) + n)
        s = row.score
        if s.n:
            color = BEST if row.rank == 1 else OTHER
            ax.scatter(s.values, [y] * s.n, s=14, color=color, alpha=0.35, zorder=2)
            ax.errorbar([s.mean], [y], xerr=[[s.std or 0.0], [s.std or 0.0]], fmt="o",
                        color=color, ecolor=color, capsize=4, markersize=6, zorder=3)
            text = s.text()
            ax.annotate(text, (s.mean, y), xytext=(0, 7), textcoords="offset points",
                        ha="center", fontsize=7, color=color)
        else:
            ax.annotate(f"✗ {row.status}", (left, y), xytext=(4, 0), textcoords="offset points",
                        va="center", fontsize=8, color=FAILED)

    ax.set_yticks(ticks, names, fontsize=8)
    for tick, row in zip(ax.get_yticklabels(), rows):
        if not row.score.n:
            tick.set_color(FAILED)
    ax.set_ylim(len(rows) - 0.5, -0.7)  # best row on top
    ax.set_xlim(left, hi + pad)
    ax.grid(axis="x", alpha=0.3)
    direction = "higher" if board.maximize else "lower"
    ax.set_xlabel(f"{board.metric} ({direction} is better; mean ± sample std over seeds, dots = runs)")
    title = [f"{board.sweep_dir}: {len(board.jobs)} jobs, {len(rows)} settings"]
    if board.fixed:
        title += textwrap.wrap("fixed: " + " ".join(board.fixed), width=140)
    # Across the whole figure, not just the axes: the fixed overrides are a long line.
    fig.suptitle("\n".join(title), x=0.01, ha="left", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()
