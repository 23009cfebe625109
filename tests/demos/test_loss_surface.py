"""Analytic minimum of the notes' loss, optimizer convergence, and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from mlplab.demos import loss_surface as ls

START = torch.tensor(ls.DEFAULT_START, dtype=torch.float64)


def test_loss_is_the_notes_formula_and_the_residuals_of_a_b() -> None:
    w = torch.randn(10, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = (2 - w[:, 0] - w[:, 1]) ** 2 + (4 - 3 * w[:, 0] - w[:, 1]) ** 2
    torch.testing.assert_close(ls.loss(w), expected)
    torch.testing.assert_close(ls.loss(w), ((w @ ls.A.T - ls.B) ** 2).sum(-1))


def test_analytic_minimum_has_zero_gradient_and_is_the_lstsq_solution() -> None:
    w_star = ls.analytic_minimum()
    torch.testing.assert_close(w_star, torch.tensor([1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(w_star, torch.linalg.lstsq(ls.A, ls.B).solution)
    w = w_star.clone().requires_grad_(True)
    ls.loss(w).backward()
    torch.testing.assert_close(w.grad, torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-10)
    assert ls.loss(w_star).item() == pytest.approx(0.0, abs=1e-20)


def test_gd_with_stable_lr_reaches_the_minimum() -> None:
    traj = ls.run_optimizer("gd", lr=0.05, start=START, steps=600)
    assert traj.points.shape == (601, 2) and traj.losses.shape == (601,)
    torch.testing.assert_close(traj.points[0], START)
    assert traj.distances()[-1] < 1e-4


@pytest.mark.parametrize("name", list(ls.OPTIMIZERS))
def test_every_optimizer_with_default_lr_reduces_loss_and_converges(name: str) -> None:
    lrs = ls.resolve_lrs(ls.DEFAULT_LR, ls.DEFAULT_LR_OVERRIDES)
    traj = ls.run_optimizer(name, lrs[name], START, ls.DEFAULT_STEPS)
    assert traj.losses[-1] < traj.losses[0]
    k = traj.steps_to_converge(ls.DEFAULT_TOL)
    assert k is not None and 0 < k <= ls.DEFAULT_STEPS
    assert traj.distances()[k] < ls.DEFAULT_TOL <= traj.distances()[k - 1]


def test_steps_to_converge_none_when_budget_too_small() -> None:
    traj = ls.run_optimizer("gd", lr=0.05, start=START, steps=10)
    assert traj.steps_to_converge(1e-3) is None


def test_lr_overrides_fall_back_to_common_lr() -> None:
    lrs = ls.resolve_lrs(0.01, {"gd": None, "momentum": None, "adagrad": 2.0,
                                "rmsprop": None, "adam": 0.3})
    assert lrs == {"gd": 0.01, "momentum": 0.01, "adagrad": 2.0, "rmsprop": 0.01, "adam": 0.3}


def test_run_optimizer_rejects_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown optimizer"):
        ls.run_optimizer("lbfgs", 0.1, START, 5)


def test_cli_writes_png_and_prints_a_row_per_optimizer(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # GD at lr 0.1 is past its stability limit 2 / 23.3 and blows up to ~1e25: the table must
    # say so and the plot must still frame the other paths.
    out = tmp_path / "surface.png"
    assert ls.main(["--lr-gd", "0.1", "--lr-adam", "0.4", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name, (label, _) in ls.OPTIMIZERS.items():
        rows = [line for line in lines if line.startswith(label + " ")]
        assert len(rows) == 1, label
        assert ("--lr" if name == "momentum" else f"--lr-{name}") in rows[0].split()
        converged = "did not converge in 200 steps" not in rows[0]
        assert converged == (name != "gd"), rows[0]
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.width > 200 and image.height > 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["surface.png"]  # no temp file left


@pytest.mark.parametrize("argv, flag", [
    (["--lr", "-0.1"], "--lr"), (["--lr", "0"], "--lr"), (["--lr-adam", "0"], "--lr-adam"),
    (["--steps", "0"], "--steps"), (["--start", "nan", "1"], "--start"),
    (["--start", "1", "inf"], "--start"), (["--tol", "-1"], "--tol"),
])
def test_cli_rejects_bad_input_in_one_line(argv: list[str], flag: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        ls.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0]



def test_start_far_off_is_rejected_before_the_surface_overflows(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 1e200 squared is inf in float64, which used to reach matplotlib's contour levels as NaN.
    with pytest.raises(SystemExit) as exc:
        ls.main(["--start", "1e200", "1e200", "--out", str(tmp_path / "s.png")])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "--start" in err[0] and "1e+06" in err[0]
    assert captured.out == ""
    bound = f"{ls.MAX_START:g}"
    assert ls.build_parser().parse_args(["--start", bound, "1"]).start == [ls.MAX_START, 1.0]
