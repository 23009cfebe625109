"""Both demos: a figure path that cannot be written is one line before any work, and a write
that fails anyway (full disk, read-only folder) is one line with no "wrote"."""

from __future__ import annotations

import errno
from pathlib import Path
from types import ModuleType

import pytest

from mlplab.demos import loss_surface, regression

# Each demo with arguments that keep its run short.
DEMOS: dict[str, tuple[ModuleType, list[str]]] = {
    "regression": (regression, ["--epochs", "5"]),
    "loss_surface": (loss_surface, ["--steps", "5"]),
}


@pytest.mark.parametrize("demo", DEMOS)
@pytest.mark.parametrize("out, reason", [
    ("r2.txt", "'.txt'"), ("a_dir", "is a directory"), ("a_file/r.png", "is a file"),
    ("a_file/sub/r.png", "is a file"),
])
def test_cli_rejects_unwritable_out_before_any_work(
        tmp_path: Path, demo: str, out: str, reason: str, capsys: pytest.CaptureFixture[str]) -> None:
    module, args = DEMOS[demo]
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "a_file").write_text("kept")
    with pytest.raises(SystemExit) as exc:
        module.main([*args, "--out", str(tmp_path / out)])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and f"--out={tmp_path / out}:" in err[0] and reason in err[0]
    assert captured.out == ""  # rejected before the demo ran, so no table either
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_dir", "a_file"]
    assert not any((tmp_path / "a_dir").iterdir())


@pytest.mark.parametrize("demo", DEMOS)
def test_cli_reports_a_failed_write_in_one_line(tmp_path: Path, demo: str, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    module, args = DEMOS[demo]

    def full_disk(*_: object) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(module, "plot", full_disk)
    out = tmp_path / "r.png"
    assert module.main([*args, "--out", str(out)]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and f"--out={out}:" in err[0] and "No space left" in err[0]
    assert "wrote" not in captured.out


@pytest.mark.parametrize("demo", DEMOS)
def test_the_default_figure_is_not_the_committed_one(demo: str) -> None:
    # `python -m mlplab.demos.regression --seed 3` in the repository replaced docs/regression.png.
    module, _ = DEMOS[demo]
    assert module.build_parser().parse_args([]).out == Path("outputs/demos") / f"{demo}.png"
