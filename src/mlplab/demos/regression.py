"""One-feature linear regression y ≈ w·x (no bias, as in the notes) fitted three ways.

Hand-written gradient descent, the same loop with autograd, and nn.Linear + MSELoss + SGD, all
compared with the closed-form least-squares w. Run `python -m mlplab.demos.regression --help`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from mlplab.demos import (
    OneLineParser,
    figure_path_problem,
    finite_float,
    nonnegative_float,
    positive_float,
    positive_int,
    seed_int,
)

DTYPE = torch.float64
DEFAULT_LR = 0.1
DEFAULT_EPOCHS = 100


@dataclass(frozen=True)
class Data:
    x: Tensor  # [n]
    y: Tensor  # [n]
    true_w: float
    noise: float
    seed: int


@dataclass(frozen=True)
class Fit:
    method: str
    w: float
    losses: Tensor  # [epochs + 1] MSE before the first and after every update


def make_data(n: int = 100, noise: float = 20.0, seed: int = 0,
              true_w: float | None = 2.0) -> Data:
    """x ~ N(0, 1), y = true_w·x + noise·N(0, 1), in float64, reproducible from `seed`.

    `true_w=None` draws it as 100·U(0, 1) from the seed, which is what sklearn's
    make_regression does for its coefficient; the notes' clean case is `true_w=2, noise=0`.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    gen = torch.Generator().manual_seed(seed)
    if true_w is None:
        true_w = 100.0 * torch.rand((), generator=gen, dtype=DTYPE).item()
    x = torch.randn(n, generator=gen, dtype=DTYPE)
    y = true_w * x + noise * torch.randn(n, generator=gen, dtype=DTYPE)
    return Data(x=x, y=y, true_w=float(true_w), noise=float(noise), seed=seed)


def mse(w: float | Tensor, x: Tensor, y: Tensor) -> Tensor:
    return ((w * x - y) ** 2).mean()


def analytic_grad(w: float | Tensor, x: Tensor, y: Tensor) -> Tensor:
    """dJ/dw of J(w) = mean((w·x - y)²), derived by hand: mean(2x(w·x - y))."""
    return (2 * x * (w * x - y)).mean()


def autograd_grad(w: float | Tensor, x: Tensor, y: Tensor) -> Tensor:
    """dJ/dw of the same J, from loss.backward()."""
    w = torch.as_tensor(w, dtype=x.dtype).detach().clone().requires_grad_(True)
    mse(w, x, y).backward()
    assert w.grad is not None
    return w.grad


def least_squares_w(x: Tensor, y: Tensor) -> float:
    """Closed form for y ≈ w·x without bias: w = x·y / x·x."""
    return (torch.dot(x, y) / torch.dot(x, x)).item()


def fit_manual(x: Tensor, y: Tensor, lr: float = DEFAULT_LR, epochs: int = DEFAULT_EPOCHS,
               w0: float = 0.0) -> Fit:
    w = torch.tensor(w0, dtype=x.dtype)
    losses = [mse(w, x, y)]
    for _ in range(epochs):
        w = w - lr * analytic_grad(w, x, y)
        losses.append(mse(w, x, y))
    return Fit("manual gradient", w.item(), torch.stack(losses))


def fit_autograd(x: Tensor, y: Tensor, lr: float = DEFAULT_LR, epochs: int = DEFAULT_EPOCHS,
                 w0: float = 0.0) -> Fit:
    w = torch.tensor(w0, dtype=x.dtype, requires_grad=True)
    losses = []
    for _ in range(epochs):
        loss = mse(w, x, y)
        losses.append(loss.detach())
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad
        w.grad = None
    with torch.no_grad():
        losses.append(mse(w, x, y))
    return Fit("autograd", w.item(), torch.stack(losses))


def fit_module(x: Tensor, y: Tensor, lr: float = DEFAULT_LR, epochs: int = DEFAULT_EPOCHS,
               w0: float = 0.0) -> Fit:
    model = nn.Linear(1, 1, bias=False, dtype=x.dtype)
    with torch.no_grad():
        # Same start as the other two, so the three runs are step-for-step comparable.
        model.weight.fill_(w0)
    criterion = nn.MSELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    inputs, targets = x.unsqueeze(1), y.unsqueeze(1)
    losses = []
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = criterion(model(inputs), targets)
        losses.append(loss.detach())
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        losses.append(criterion(model(inputs), targets))
    return Fit("nn.Linear + SGD", model.weight.item(), torch.stack(losses))


def fit_all(x: Tensor, y: Tensor, lr: float = DEFAULT_LR, epochs: int = DEFAULT_EPOCHS,
            w0: float = 0.0) -> list[Fit]:
    return [fit(x, y, lr, epochs, w0) for fit in (fit_manual, fit_autograd, fit_module)]


def format_table(fits: Sequence[Fit], data: Data) -> str:
    w_ls = least_squares_w(data.x, data.y)
    rows = [("method", "w", "w - w_lstsq", "final MSE")]
    rows += [(f.method, f"{f.w:.8g}", f"{f.w - w_ls:+.2e}", f"{f.losses[-1].item():.6g}")
             for f in fits]
    rows.append(("closed-form least squares", f"{w_ls:.8g}", "",
                 f"{mse(w_ls, data.x, data.y).item():.6g}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(data: Data, fits: Sequence[Fit], out: str | Path) -> Path:
    """Data with the fitted lines, and MSE per epoch, written to `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from mlplab.demos import save_figure_atomically

    x, y = data.x.numpy(), data.y.numpy()
    w_ls = least_squares_w(data.x, data.y)
    grid = np.linspace(x.min(), x.max(), 2)
    fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(13, 5.5), layout="constrained",
                                      width_ratios=[1.3, 1])
    ax.scatter(x, y, s=18, color="0.55", alpha=0.8, label=f"data (n={len(x)})", zorder=1)
    # The fits agree to ~1e-9, so distinct dash patterns are what keeps all four lines visible.
    styles = [{"color": "tab:blue", "lw": 5, "alpha": 0.45, "ls": "-"},
              {"color": "tab:orange", "lw": 2.5, "ls": (0, (6, 4))},
              {"color": "tab:green", "lw": 2, "ls": (3, (2, 8))}]
    for fit, style in zip(fits, styles):
        ax.plot(grid, fit.w * grid, label=f"{fit.method}: w = {fit.w:.4f}", zorder=2, **style)
        ax_loss.plot(fit.losses.numpy(), label=fit.method, **style)
    ax.plot(grid, w_ls * grid, color="black", lw=1, ls="-", zorder=3,
            label=f"least squares: w = {w_ls:.4f}")
    noise = f" + {data.noise:g}·N(0, 1), seed {data.seed}" if data.noise else " (no noise)"
    ax.set(xlabel="x", ylabel="y",
           title=f"Data y = {data.true_w:.4g}·x{noise}; fits of y = w·x (no bias)")
    ax.legend(loc="upper left", fontsize=9)

    ax_loss.axhline(mse(w_ls, data.x, data.y).item(), color="black", lw=1,
                    label="least-squares MSE")
    ax_loss.set(xlabel="epoch (full-batch step)", ylabel="MSE", yscale="log",
                title="Training MSE per epoch (the three runs coincide)")
    ax_loss.legend(loc="upper right", fontsize=9)
    try:
        return save_figure_atomically(fig, out, dpi=110)
    finally:
        plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m mlplab.demos.regression",
        description="Fit y = w·x (no bias) by hand-written GD, autograd and nn.Linear + SGD.",
    )
    parser.add_argument("--seed", type=seed_int, default=0, help="data seed (default: %(default)s)")
    parser.add_argument("--n", type=positive_int, default=100,
                        help="number of samples (default: %(default)s)")
    parser.add_argument("--noise", type=nonnegative_float, default=20.0,
                        help="std of the Gaussian noise on y (default: %(default)s)")
    parser.add_argument("--true-w", type=finite_float, default=None,
                        help="slope of the clean data; the notes' y = 2x is --true-w 2 "
                             "(default: drawn from the seed as 100·U(0, 1), like sklearn's "
                             "make_regression)")
    parser.add_argument("--lr", type=positive_float, default=DEFAULT_LR,
                        help="learning rate for all three fits (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, default=DEFAULT_EPOCHS,
                        help="full-batch gradient steps (default: %(default)s)")
    # Not docs/regression.png: a run with other arguments would replace the committed figure.
    parser.add_argument("--out", type=Path, default=Path("outputs/demos/regression.png"),
                        help="figure to write, its suffix picks the format (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (problem := figure_path_problem(args.out)) is not None:
        parser.error(f"--out={args.out}: {problem}")
    data = make_data(args.n, args.noise, args.seed, args.true_w)
    if not torch.isfinite(data.y.pow(2).mean()):
        # Otherwise reported as a divergence, with advice to lower an --lr that was fine.
        parser.error(f"--true-w={args.true_w} / --noise={args.noise:g}: the loss (mean y²) overflows float64; "
                     "keep both below about 1e150")
    fits = fit_all(data.x, data.y, args.lr, args.epochs)
    origin = "given" if args.true_w is not None else "drawn from the seed"
    print(f"data: n={args.n}, noise={args.noise:g}, seed={args.seed}, "
          f"true w = {data.true_w:.6g} ({origin})")
    print(f"model y = w·x without bias; lr {args.lr:g}, {args.epochs} epochs from w = 0\n")
    print(format_table(fits, data))
    if any(not torch.isfinite(f.losses[-1]) or f.losses[-1] > f.losses[0] for f in fits):
        print(f"error: gradient descent diverged; lower --lr (got {args.lr:g}; it must be "
              f"below 1/mean(x²) = {1 / data.x.pow(2).mean().item():.3g})", file=sys.stderr)
        return 1
    try:
        out = plot(data, fits, args.out)
    except OSError as err:
        # Checked up front, but the disk can still be full or the folder read-only.
        print(f"error: --out={args.out}: cannot write the figure ({err.strerror or err})",
              file=sys.stderr)
        return 1
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
