"""`python -m mlplab.inspect RUN_DIR`: the PNG report of a run, without a server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import inspection_support as support
from PIL import Image

from mlplab.inspect.events import epoch_curves, event_files, read_scalars
from mlplab.inspect.report import write_report

# Session fixtures shared by the inspection tests (the runs train once per session).
mnist_run = support.mnist_run
synthetic_run = support.synthetic_run
ROOT = support.ROOT

PNGS = ("curves.png", "confusion_matrix.png", "misclassified.png")


def _inspect(run_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlplab.inspect", str(run_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


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
    proc = _inspect(tmp_path)
    assert proc.returncode == 1
    assert f"{tmp_path}: a sweep directory (2 jobs)" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("*.png"))
