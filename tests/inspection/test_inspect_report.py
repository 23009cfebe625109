"""`python -m mlplab.inspect RUN_DIR`: the PNG report of a run, without a server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import inspection_support as support
from PIL import Image

from forkserver import run_python
from mlplab.inspect.events import epoch_curves, event_files, read_scalars
from mlplab.inspect.plots import curves_figure
from mlplab.inspect.report import write_report

# Session fixtures shared by the inspection tests (the runs train once per session).
mnist_run = support.mnist_run
synthetic_run = support.synthetic_run
ROOT = support.ROOT

PNGS = ("curves.png", "confusion_matrix.png", "misclassified.png")


def _inspect(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_python(["-m", "mlplab.inspect", str(run_dir), *args], timeout=300)


def _check_png(path: Path) -> None:
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 300 and img.height > 200, (path, img.size)


def test_report_of_an_mnist_run(mnist_run: Path) -> None:
    proc = _inspect(mnist_run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in PNGS:
        assert f"wrote {mnist_run / name}" in proc.stdout
        _check_png(mnist_run / name)
    assert not [p for p in mnist_run.iterdir() if p.name.startswith(".") and p.suffix == ".png"]


def test_curves_hold_one_point_per_epoch(mnist_run: Path) -> None:
    curves = epoch_curves(read_scalars(event_files(mnist_run)))
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert [e for e, _ in curves[tag]] == [0, 1], tag


def test_synthetic_report_skips_image_panels(synthetic_run: Path) -> None:
    (synthetic_run / "misclassified.png").unlink(missing_ok=True)
    written = write_report(synthetic_run)
    assert [p.name for p in written] == ["curves.png", "confusion_matrix.png"]
    for p in written:
        _check_png(p)
    assert not (synthetic_run / "misclassified.png").exists()


def test_run_dir_without_event_files_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    proc = _inspect(tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path}: no TensorBoard event files (events.out.tfevents.*) in this directory; "
        "is it a run directory trained with logger=tensorboard?"
    ]
    assert not list(tmp_path.glob("*.png"))


def test_a_sweep_directory_is_refused_not_drawn_as_one_run(tmp_path: Path, synthetic_run: Path) -> None:
    # Its jobs' event files, read together, would make one run's curves out of several runs.
    import shutil

    for job in ("0", "1"):
        shutil.copytree(synthetic_run, tmp_path / job)
    # Without a sweep's files it is a folder of runs (outputs/runs), which has no leaderboard.
    proc = _inspect(tmp_path)
    assert proc.returncode == 1
    assert f"{tmp_path}: a folder of runs (2 runs); give one run's directory, e.g. {tmp_path / '0'}" in proc.stderr
    assert "leaderboard" not in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")
    proc = _inspect(tmp_path)
    assert proc.returncode == 1
    assert f"{tmp_path}: a sweep directory (2 jobs)" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("*.png"))


def _copy_without_pngs(run_dir: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(run_dir, to)
    for png in to.glob("*.png"):
        png.unlink()
    return to


def _assert_refused_writing_nothing(proc: subprocess.CompletedProcess[str], run_dir: Path, why: str) -> None:
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and why in lines[0], proc.stderr[-3000:]
    assert not list(run_dir.glob("*.png")) and not list(run_dir.glob(".*.png"))


def test_a_corrupt_checkpoint_is_refused_before_any_png_is_written(tmp_path: Path, synthetic_run: Path) -> None:
    run_dir = _copy_without_pngs(synthetic_run, tmp_path / "run")
    best = run_dir / "checkpoints" / "best.ckpt"
    best.write_bytes(best.read_bytes()[:5000])
    _assert_refused_writing_nothing(_inspect(run_dir), run_dir, f"{best}: ")


def test_absent_data_is_refused_before_any_png_is_written(tmp_path: Path, mnist_run: Path) -> None:
    run_dir = _copy_without_pngs(mnist_run, tmp_path / "run")
    _assert_refused_writing_nothing(_inspect(run_dir, "--data-dir", str(tmp_path / "nope")), run_dir,
                                    f"{tmp_path / 'nope'}/MNIST")


def test_event_files_without_curves_are_one_line_error(tmp_path: Path, synthetic_run: Path) -> None:
    # A truncated fit event file: what is left of the run (test metrics, hparams) has no curve.
    run_dir = _copy_without_pngs(synthetic_run, tmp_path / "run")
    fit = max(event_files(run_dir), key=lambda p: p.stat().st_size)
    fit.write_bytes(fit.read_bytes()[:30])
    _assert_refused_writing_nothing(_inspect(run_dir), run_dir,
                                    "none of train/loss, train/acc, val/loss, val/acc in its TensorBoard event files")
    # The same files from a run that diverged in its first epoch: said so, not "truncated?".
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.update(status="diverged", error="NonFiniteLossError: non-finite training loss (nan) at epoch 0")
    (run_dir / "summary.json").write_text(json.dumps(summary))
    _assert_refused_writing_nothing(_inspect(run_dir), run_dir, "the run diverged before its first epoch's figures, "
                                    "so there are no curves to plot; its summary.json: NonFiniteLossError")


def test_a_panel_without_curves_says_so_despite_the_best_epoch_line() -> None:
    fig = curves_figure({"train/loss": [(0, 0.9), (1, 0.5)], "val/loss": [(0, 0.8), (1, 0.6)]},
                        best_epoch=1, stop_epoch=1)
    loss, acc = fig.axes
    assert [t.get_text() for t in acc.texts] == ["no accuracy logged"] and acc.get_legend() is None
    assert not loss.texts and loss.get_legend() is not None


def test_a_file_given_as_the_run_is_named_as_a_file(tmp_path: Path) -> None:
    (tmp_path / "best.ckpt").write_bytes(b"not a run")
    proc = _inspect(tmp_path / "best.ckpt")
    assert proc.returncode == 1 and proc.stderr.strip() == f"error: {tmp_path / 'best.ckpt'}: a file, not a run directory"


def test_stopped_early_is_the_summarys_word_and_a_guess_only_without_it(tmp_path: Path) -> None:
    # A run ended by trainer.max_steps was drawn "stopped early" beside a summary saying it was not.
    from mlplab.inspect.report import _stopped_early

    (tmp_path / ".hydra").mkdir()
    config = tmp_path / ".hydra" / "config.yaml"
    config.write_text("trainer:\n  max_epochs: 5\n  max_steps: 50\n")
    done = {"status": "completed", "epochs": 3}
    assert not _stopped_early(tmp_path, {**done, "stopped_early": False})
    assert _stopped_early(tmp_path, {**done, "stopped_early": True})
    assert not _stopped_early(tmp_path, done)  # a step limit ends runs before max_epochs too
    config.write_text("trainer:\n  max_epochs: 5\n  max_steps: -1\n")
    assert _stopped_early(tmp_path, done)  # an early version's summary, without the flag


def test_a_relative_data_dir_is_read_from_where_training_ran(tmp_path: Path) -> None:
    # Run from another folder, inspect looked for data/MNIST there and said "run make data".
    from mlplab.inspect.report import _trained_data_dir

    repo, run = tmp_path / "repo", tmp_path / "repo" / "outputs" / "runs" / "r"
    (repo / "data").mkdir(parents=True)
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    cwd: {repo}\n")
    assert _trained_data_dir(run, {"data_dir": "data"}) == str(repo / "data")
    assert _trained_data_dir(run, {"data_dir": "elsewhere"}) is None  # not there either: as given
    assert _trained_data_dir(run, {"data_dir": str(tmp_path)}) is None  # absolute: as given
    assert _trained_data_dir(tmp_path, {"data_dir": "data"}) is None  # no .hydra
