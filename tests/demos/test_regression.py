"""The three regression fits agree with each other and with least squares; the CLI draws a PNG."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from mlplab.demos import regression as reg


@pytest.fixture(scope="module")
def data() -> reg.Data:
    return reg.make_data(n=100, noise=20.0, seed=0, true_w=None)


def test_make_data_is_reproducible_float64_and_shaped() -> None:
    a, b = reg.make_data(50, 5.0, seed=3), reg.make_data(50, 5.0, seed=3)
    assert a.x.shape == a.y.shape == (50,)
    assert a.x.dtype == torch.float64
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, reg.make_data(50, 5.0, seed=4).x)
    drawn = reg.make_data(50, 5.0, seed=3, true_w=None).true_w
    assert drawn == reg.make_data(50, 5.0, seed=3, true_w=None).true_w
    assert 0.0 <= drawn < 100.0


@pytest.mark.parametrize("w", [-3.0, 0.0, 0.5, 2.0, 17.25, 96.0])
def test_analytic_gradient_matches_autograd(data: reg.Data, w: float) -> None:
    manual = reg.analytic_grad(w, data.x, data.y)
    auto = reg.autograd_grad(w, data.x, data.y)
    assert manual.dtype == auto.dtype == torch.float64
    torch.testing.assert_close(manual, auto, rtol=0, atol=1e-6)


@pytest.mark.parametrize("fit", [reg.fit_manual, reg.fit_autograd, reg.fit_module])
def test_each_fit_reaches_least_squares(data: reg.Data, fit: Callable[..., reg.Fit]) -> None:
    w_ls = reg.least_squares_w(data.x, data.y)
    result = fit(data.x, data.y)
    assert result.w == pytest.approx(w_ls, abs=1e-3)
    assert result.losses.shape == (reg.DEFAULT_EPOCHS + 1,)
    assert result.losses[-1] < result.losses[0]
    # The closed form is the gradient's root, so it must also be the lowest MSE reachable.
    assert result.losses[-1].item() == pytest.approx(reg.mse(w_ls, data.x, data.y).item(),
                                                     rel=1e-9)


def test_least_squares_matches_torch_lstsq(data: reg.Data) -> None:
    solution = torch.linalg.lstsq(data.x.unsqueeze(1), data.y.unsqueeze(1)).solution
    assert reg.least_squares_w(data.x, data.y) == pytest.approx(solution.item(), rel=1e-12)


def test_the_three_fits_take_identical_steps(data: reg.Data) -> None:
    fits = reg.fit_all(data.x, data.y, lr=0.05, epochs=7)
    for other in fits[1:]:
        torch.testing.assert_close(other.losses, fits[0].losses, rtol=1e-12, atol=0)


def test_noise_free_y_equals_2x_is_recovered_exactly() -> None:
    clean = reg.make_data(n=100, noise=0.0, seed=1, true_w=2.0)
    assert torch.equal(clean.y, 2.0 * clean.x)
    assert reg.least_squares_w(clean.x, clean.y) == pytest.approx(2.0, abs=1e-12)
    for fit in reg.fit_all(clean.x, clean.y):
        assert fit.w == pytest.approx(2.0, abs=1e-6), fit.method


def test_cli_writes_png_and_prints_every_method(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "regression.png"
    assert reg.main(["--seed", "2", "--epochs", "60", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for method in ("manual gradient", "autograd", "nn.Linear + SGD", "least squares"):
        assert method in printed
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.width > 200 and image.height > 200
    assert [p.name for p in out.parent.iterdir()] == ["regression.png"]  # no temp file left


def test_cli_reports_divergence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.png"
    assert reg.main(["--lr", "5", "--out", str(out)]) == 1
    assert "--lr" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("argv", [["--lr", "0"], ["--n", "-3"], ["--noise", "-1"],
                                  ["--epochs", "0"], ["--lr", "nan"],
                                  # reported as a divergence, advising a lower --lr that was fine
                                  ["--true-w", "1e308"], ["--noise", "1e200"]])
def test_cli_rejects_bad_input(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        reg.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert argv[0] in err and len(err.strip().splitlines()) == 1



@pytest.mark.parametrize("seed", ["1180591620717411303424", "4294967296", "-1", "1.5"])
def test_cli_rejects_seed_outside_the_projects_range(
        seed: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # --out keeps docs/regression.png safe should a seed ever be accepted again.
    with pytest.raises(SystemExit) as exc:
        reg.main(["--seed", seed, "--out", str(tmp_path / "r.png")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seed" in err[0] and "4294967295" in err[0]


def test_seed_bound_is_the_projects_and_inclusive() -> None:
    from mlplab.config import MAX_SEED

    assert reg.build_parser().parse_args(["--seed", str(MAX_SEED)]).seed == MAX_SEED
