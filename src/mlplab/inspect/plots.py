"""Matplotlib figures of a run, shared by the PNG report and the TensorBoard callbacks.

Figures are built with `matplotlib.figure.Figure`, not pyplot: no global figure registry to
leak into during long training runs, and no GUI backend is ever selected.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

Series = Sequence[tuple[int, float]]  # (epoch, value)

TRAIN, VAL, BEST, STOP = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"


def save_png(fig: Figure, path: Path, dpi: int = 110) -> Path:
    """Write to a temporary name beside `path`, then rename: never a half-written PNG."""
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.png")
    try:
        fig.savefig(tmp, dpi=dpi, format="png")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _plot(ax, series: Series, label: str, color: str, style: str = "-") -> bool:
    if not series:
        return False
    x, y = zip(*series, strict=True)
    ax.plot(x, y, style, color=color, label=label, marker="o", markersize=3.5, linewidth=1.6)
    return True


def curves_figure(
    curves: dict[str, Series],
    best_epoch: int | None = None,
    stop_epoch: int | None = None,
    title: str = "",
    subtitle: str = "",
) -> Figure:
    """Loss and accuracy per epoch, train against val, with the best epoch (the checkpoint
    that was kept) and the early-stopping point marked."""
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, metric, name in ((axes[0], "loss", "loss"), (axes[1], "acc", "accuracy")):
        drawn = [_plot(ax, curves.get(f"train/{metric}", []), "train", TRAIN),
                 _plot(ax, curves.get(f"val/{metric}", []), "validation", VAL)]
        if best_epoch is not None:
            ax.axvline(best_epoch, color=BEST, linestyle="--", linewidth=1.2, label=f"best epoch ({best_epoch})")
        if stop_epoch is not None:
            ax.axvline(stop_epoch, color=STOP, linestyle=":", linewidth=1.5, label=f"early stop (epoch {stop_epoch})")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if metric == "acc":
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
        # Not ax.has_data(): the best-epoch and early-stop lines are data too.
        if any(drawn):
            ax.legend(loc="best", fontsize=8.5)
        else:
            ax.text(0.5, 0.5, f"no {name} logged", ha="center", va="center", transform=ax.transAxes, color="gray")
    if title or subtitle:
        fig.suptitle(f"{title}\n{subtitle}" if subtitle else title, fontsize=10.5)
    return fig


def confusion_figure(cm: np.ndarray, class_names: Sequence[str], title: str = "") -> Figure:
    """Counts in each cell. Correct predictions (the diagonal) are shaded blue by the share
    of their true class, errors red on their own scale: with one scale for both, a good
    model's errors would all be white."""
    n = len(class_names)
    rows = cm.sum(1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    diag = np.eye(n, dtype=bool)
    worst = max(float(share[~diag].max()) if n > 1 else 0.0, 1e-9)
    side = max(4.5, min(12.0, 0.5 * n + 2.0))
    fig = Figure(figsize=(side + 1.6, side), layout="constrained")
    ax = fig.subplots()
    ax.imshow(np.ma.masked_where(~diag, share), cmap="Blues", vmin=0, vmax=1)
    errors = ax.imshow(np.ma.masked_where(diag | (cm == 0), share), cmap="Reds", vmin=0, vmax=worst)
    cbar = fig.colorbar(errors, ax=ax, shrink=0.75, format=PercentFormatter(1.0, decimals=1))
    cbar.set_label("errors: share of the true class")
    if n <= 25:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    dark = share[i, j] > 0.5 if i == j else share[i, j] > 0.6 * worst
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8 if n <= 12 else 6,
                            color="white" if dark else "black")
    ticks = range(n)
    long_names = max(len(c) for c in class_names) > 3
    ax.set_xticks(ticks, class_names, rotation=45 if long_names else 0, ha="right" if long_names else "center",
                  fontsize=8.5)
    ax.set_yticks(ticks, class_names, fontsize=8.5)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"{title}\naccuracy {acc:.2%} on {cm.sum()} samples" if title else f"accuracy {acc:.2%}", fontsize=10)
    return fig


def most_confident_mistakes(probs: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` wrong predictions made with the highest probability."""
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != y)
    order = np.argsort(-probs[wrong, pred[wrong]], kind="stable")
    return wrong[order[:k]]


def misclassified_figure(
    images: np.ndarray,
    true: Sequence[int],
    pred: Sequence[int],
    confidence: Sequence[float],
    class_names: Sequence[str],
    title: str = "",
    cols: int = 6,
) -> Figure:
    """A grid of images, each captioned with its true class and the (wrong) prediction.
    One mosaic in one axes rather than an axes per image: a third of the drawing time,
    which matters when TensorBoard gets this figure every epoch."""
    import matplotlib

    k = len(images)
    h, w = images.shape[1:3] if k else (28, 28)
    rows = max(1, -(-k // cols))
    pad, caption = max(2, w // 10), int(np.ceil(h * 0.34))  # caption band: two lines of 7.5 pt text
    cell_h, cell_w = h + caption, w + 2 * pad
    mosaic = np.full((rows * cell_h, cols * cell_w), np.nan)
    fig = Figure(figsize=(1.5 * cols, 1.5 * cols * mosaic.shape[0] / mosaic.shape[1] + 0.45))
    top = 1 - 0.42 / fig.get_figheight()
    ax = fig.add_axes((0.0, 0.0, 1.0, top))
    for i in range(k):
        r, c = divmod(i, cols)
        y0, x0 = r * cell_h + caption, c * cell_w + pad
        mosaic[y0 : y0 + h, x0 : x0 + w] = images[i]
        ax.text(x0 + w / 2, y0 - 1, f"true: {class_names[true[i]]}\npred: {class_names[pred[i]]} ({confidence[i]:.1%})",
                ha="center", va="bottom", fontsize=7.5, color="#222222")
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")
    ax.imshow(mosaic, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
    ax.set_axis_off()
    if k == 0:
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center", fontsize=11, transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.08 / fig.get_figheight(), va="top")
    return fig
