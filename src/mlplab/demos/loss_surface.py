"""Optimizer paths on the notes' two-parameter loss L(w1, w2) = (2 - w1 - w2)² + (4 - 3·w1 - w2)².

L is the squared error of the line y = w1·x + w2 through the points (1, 2) and (3, 4), so its
minimum is a 2×2 least-squares solution. Run `python -m mlplab.demos.loss_surface --help`.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mlplab.demos import OneLineParser, figure_path_problem, positive_float, positive_int

DTYPE = torch.float64
# Rows are the two residuals of L: row i of A·w - b is (w1·x_i + w2) - y_i.
A = torch.tensor([[1.0, 1.0], [3.0, 1.0]], dtype=DTYPE)
B = torch.tensor([2.0, 4.0], dtype=DTYPE)

DEFAULT_START = (-4.0, 6.0)
# L grows as |w|², so past ~1e153 it overflows float64 and the plot has no surface to draw; 1e6
# is already a million times the notes' distance from the minimum at (1, 1).
MAX_START = 1e6
DEFAULT_STEPS = 200
DEFAULT_TOL = 1e-3
# The Hessian 2·AᵀA has eigenvalues ≈ 23.3 and 0.69, so plain GD diverges above lr ≈ 0.086 and
# crawls along the flat direction below ≈ 0.06 (lr 0.05 needs ~250 steps to reach 1e-3).
DEFAULT_LR = 0.07
# Adaptive methods take steps of roughly lr per coordinate regardless of the gradient's size,
# so they need an lr on the scale of the distance to travel (~7 here), not of 1/curvature.
DEFAULT_LR_OVERRIDES: dict[str, float | None] = {
    "gd": None, "momentum": None, "adagrad": 3.0, "rmsprop": 0.2, "adam": 0.5,
}

OPTIMIZERS: dict[str, tuple[str, Callable[[list[Tensor], float], torch.optim.Optimizer]]] = {
    "gd": ("GD", lambda p, lr: torch.optim.SGD(p, lr=lr)),
    "momentum": ("Momentum 0.9", lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9)),
    "adagrad": ("Adagrad", lambda p, lr: torch.optim.Adagrad(p, lr=lr)),
    "rmsprop": ("RMSprop", lambda p, lr: torch.optim.RMSprop(p, lr=lr)),
    "adam": ("Adam", lambda p, lr: torch.optim.Adam(p, lr=lr)),
}


def loss(w: Tensor) -> Tensor:
    """L at `w` of shape [..., 2]; batched so the same function evaluates the plotting grid."""
    w1, w2 = w[..., 0], w[..., 1]
    return (2 - w1 - w2) ** 2 + (4 - 3 * w1 - w2) ** 2


def analytic_minimum() -> Tensor:
    """Minimiser of L from the normal equations AᵀA·w = Aᵀb."""
    return torch.linalg.solve(A.T @ A, A.T @ B)


@dataclass(frozen=True)
class Trajectory:
    name: str
    lr: float
    points: Tensor  # [steps + 1, 2], row 0 is the start
    losses: Tensor  # [steps + 1]

    @property
    def label(self) -> str:
        return OPTIMIZERS[self.name][0]

    @property
    def steps(self) -> int:
        return self.points.shape[0] - 1

    def distances(self, target: Tensor | None = None) -> Tensor:
        target = analytic_minimum() if target is None else target
        return torch.linalg.vector_norm(self.points - target, dim=-1)

    def steps_to_converge(self, tol: float, target: Tensor | None = None) -> int | None:
        """First step whose point is within `tol` of the minimum (0 = the start), else None."""
        hits = torch.nonzero(self.distances(target) < tol)
        return int(hits[0, 0]) if hits.numel() else None


def run_optimizer(name: str, lr: float, start: Sequence[float] | Tensor,
                  steps: int) -> Trajectory:
    """Minimise L from `start` with a real torch optimizer, recording every iterate."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    w = torch.as_tensor(start, dtype=DTYPE).clone().reshape(2).requires_grad_(True)
    optimizer = OPTIMIZERS[name][1]([w], lr)
    points = [w.detach().clone()]
    for _ in range(steps):
        optimizer.zero_grad()
        loss(w).backward()
        optimizer.step()
        points.append(w.detach().clone())
    stacked = torch.stack(points)
    return Trajectory(name=name, lr=lr, points=stacked, losses=loss(stacked))


def run_all(lrs: Mapping[str, float], start: Sequence[float] | Tensor,
            steps: int) -> list[Trajectory]:
    return [run_optimizer(name, lrs[name], start, steps) for name in OPTIMIZERS]


def resolve_lrs(common: float, overrides: Mapping[str, float | None]) -> dict[str, float]:
    return {name: common if overrides.get(name) is None else float(overrides[name])
            for name in OPTIMIZERS}


def _fmt(value: float) -> str:
    return f"{value:.5f}" if abs(value) < 1e4 else f"{value:.3e}"


def format_table(trajectories: Sequence[Trajectory], lr_sources: Mapping[str, str],
                 tol: float) -> str:
    minimum = analytic_minimum()
    rows = [("optimizer", "lr", "lr set by", f"steps to |w - w*| < {tol:g}", "final loss",
             "final w")]
    for t in trajectories:
        k = t.steps_to_converge(tol, minimum)
        converged = str(k) if k is not None else f"did not converge in {t.steps} steps"
        w1, w2 = t.points[-1].tolist()
        rows.append((t.label, f"{t.lr:g}", lr_sources[t.name], converged,
                     f"{t.losses[-1].item():.3e}", f"({_fmt(w1)}, {_fmt(w2)})"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(trajectories: Sequence[Trajectory], out: str | Path, tol: float) -> Path:
    """3-D surface and log-level contour map of L with every trajectory, written to `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import LogLocator

    from mlplab.demos import save_figure_atomically

    minimum = analytic_minimum().numpy()
    start = trajectories[0].points[0].numpy()
    # Frame the plot on the points that stay near the start's loss, so one diverging run
    # (e.g. GD with lr > 0.086) leaves the frame instead of shrinking everything else to a dot.
    kept = [t.points[torch.isfinite(t.losses) & (t.losses <= 10 * t.losses[0])].numpy()
            for t in trajectories]
    every = np.concatenate(kept + [minimum[None], start[None]])
    lo, hi = every.min(axis=0), every.max(axis=0)
    pad = 0.12 * (hi - lo).max() + 0.5
    lo, hi = lo - pad, hi + pad
    w1, w2 = np.linspace(lo[0], hi[0], 300), np.linspace(lo[1], hi[1], 300)
    g1, g2 = np.meshgrid(w1, w2)
    surface = loss(torch.from_numpy(np.stack([g1, g2], axis=-1))).numpy()

    def in_frame(t: Trajectory) -> tuple[np.ndarray, np.ndarray]:
        # mplot3d does not clip to the axes box, so points outside it are hidden as NaN.
        p, z = t.points.numpy().copy(), t.losses.numpy().copy()
        outside = ~np.all(np.isfinite(p) & (p >= lo) & (p <= hi), axis=1)
        p[outside], z[outside] = np.nan, np.nan
        return p, z

    colors = plt.get_cmap("tab10").colors
    # Long, wandering paths (momentum) go underneath so they do not hide the short ones.
    by_length = sorted(trajectories, key=lambda t: torch.diff(t.points, dim=0).norm(dim=1).sum())
    zorders = {t.name: 3 - 0.1 * rank for rank, t in enumerate(by_length)}
    fig = plt.figure(figsize=(13, 7.5), layout="constrained")
    grid = fig.add_gridspec(1, 2, width_ratios=[1.2, 1])
    ax3d = fig.add_subplot(grid[0], projection="3d", computed_zorder=False)
    ax = fig.add_subplot(grid[1])

    # mplot3d has no real depth sorting; a translucent surface drawn first keeps paths visible.
    ax3d.plot_surface(g1, g2, surface, cmap="viridis", alpha=0.5, linewidth=0,
                      rstride=5, cstride=5, antialiased=True, zorder=1)
    for t, color in zip(trajectories, colors):
        p, z = in_frame(t)
        ax3d.plot(p[:, 0], p[:, 1], z, color=color, lw=1.6, zorder=zorders[t.name])
    ax3d.scatter(*start, loss(torch.from_numpy(start)).item(), color="black", marker="*",
                 s=140, zorder=4, depthshade=False)
    ax3d.scatter(*minimum, 0.0, color="red", marker="X", s=100, zorder=4, depthshade=False)
    ax3d.set(xlabel="$w_1$", ylabel="$w_2$", title="Loss surface with optimizer paths")
    ax3d.zaxis.set_rotate_label(False)
    ax3d.set_zlabel("$L$", rotation=0)
    ax3d.view_init(elev=35, azim=-125)
    ax3d.set_box_aspect(None, zoom=1.1)

    positive = surface[surface > 0]
    levels = np.logspace(np.log10(max(positive.min(), 1e-3)), np.log10(positive.max()), 25)
    filled = ax.contourf(g1, g2, surface, levels=levels, norm=LogNorm(), cmap="viridis",
                         alpha=0.35)
    ax.contour(g1, g2, surface, levels=levels, norm=LogNorm(), cmap="viridis", linewidths=0.8)
    fig.colorbar(filled, ax=ax, label="$L$ (log-spaced contour levels)", ticks=LogLocator())
    for t, color in zip(trajectories, colors):
        p, _ = in_frame(t)
        k = t.steps_to_converge(tol)
        note = (f"converged in {k} steps" if k is not None
                else "diverged" if not t.losses[-1] <= t.losses[0] else "did not converge")
        ax.plot(p[:, 0], p[:, 1], "-o", color=color, lw=1.4, ms=2.5, zorder=zorders[t.name],
                label=f"{t.label}, lr {t.lr:g}: {note}")
    ax.plot(*start, "*", color="black", ms=15, zorder=5,
            label=f"start ({start[0]:g}, {start[1]:g})")
    ax.plot(*minimum, "X", color="red", ms=12, mec="white", zorder=5,
            label=f"analytic minimum ({minimum[0]:.3g}, {minimum[1]:.3g})")
    ax3d.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), zlim=(0, surface.max()))
    ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), xlabel="$w_1$", ylabel="$w_2$",
           aspect="equal",
           title=f"Contours of $L$, {trajectories[0].steps} steps per optimizer")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=4,
               fontsize=10, title=f"converged = first step with $|w - w^*| < {tol:g}$")
    fig.suptitle(r"$L(w_1, w_2) = (2 - w_1 - w_2)^2 + (4 - 3w_1 - w_2)^2$", fontsize=14)
    try:
        return save_figure_atomically(fig, out, dpi=110)
    finally:
        plt.close(fig)


def start_coordinate(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and abs(value) <= MAX_START):
        raise argparse.ArgumentTypeError(
            f"must be a number in [-{MAX_START:g}, {MAX_START:g}], got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m mlplab.demos.loss_surface",
        description="Compare torch optimizers on the notes' two-parameter loss surface.",
    )
    parser.add_argument("--lr", type=positive_float, default=DEFAULT_LR,
                        help="common learning rate, used by every optimizer without its own "
                             "--lr-NAME (by default GD and momentum) (default: %(default)s)")
    for name, default in DEFAULT_LR_OVERRIDES.items():
        parser.add_argument(f"--lr-{name}", type=positive_float, default=default,
                            metavar="LR", dest=f"lr_{name}",
                            help=f"learning rate for {OPTIMIZERS[name][0]} "
                                 f"(default: {'--lr' if default is None else default})")
    parser.add_argument("--start", type=start_coordinate, nargs=2, default=list(DEFAULT_START),
                        metavar=("W1", "W2"), help="starting point (default: %(default)s)")
    parser.add_argument("--steps", type=positive_int, default=DEFAULT_STEPS,
                        help="optimizer steps (default: %(default)s)")
    parser.add_argument("--tol", type=positive_float, default=DEFAULT_TOL,
                        help="distance to the analytic minimum that counts as converged "
                             "(default: %(default)s)")
    # Not docs/loss_surface.png: a run with other arguments would replace the committed figure.
    parser.add_argument("--out", type=Path, default=Path("outputs/demos/loss_surface.png"),
                        help="figure to write, its suffix picks the format (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (problem := figure_path_problem(args.out)) is not None:
        parser.error(f"--out={args.out}: {problem}")
    overrides = {name: getattr(args, f"lr_{name}") for name in OPTIMIZERS}
    lrs = resolve_lrs(args.lr, overrides)
    sources = {name: "--lr" if overrides[name] is None else f"--lr-{name}" for name in OPTIMIZERS}
    trajectories = run_all(lrs, args.start, args.steps)
    w_star = analytic_minimum().tolist()
    print(f"analytic minimum w* = ({w_star[0]:.6g}, {w_star[1]:.6g}), "
          f"start = ({args.start[0]:g}, {args.start[1]:g}), {args.steps} steps\n")
    print(format_table(trajectories, sources, args.tol))
    try:
        out = plot(trajectories, args.out, args.tol)
    except OSError as err:
        # Checked up front, but the disk can still be full or the folder read-only.
        print(f"error: --out={args.out}: cannot write the figure ({err.strerror or err})",
              file=sys.stderr)
        return 1
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
