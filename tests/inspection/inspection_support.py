"""What the inspection tests share: runs trained once per session (a tiny real MNIST run with
every TensorBoard figure callback on, and a synthetic-data run) and how to call the scripts.

(Not a conftest.py: tests/conftest.py is imported as `conftest`, and a second one would clash.
Each test module imports the fixtures; the runs are cached per process, so they train once.)
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import DATA, have_data
from forkserver import run_python

ROOT = Path(__file__).resolve().parents[2]

# Every figure on every epoch, whatever the defaults and their time budget.
TINY = ["trainer=cpu", "callbacks.progress_bar.refresh_rate=0", "callbacks.model_summary=null",
        "callbacks.histograms.every_n_epochs=1", "callbacks.confusion_matrix.every_n_epochs=1",
        "callbacks.misclassified.every_n_epochs=1", "callbacks.confusion_matrix.max_overhead=null",
        "callbacks.misclassified.max_overhead=null"]


def run_script(script: str, *overrides: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return run_python([f"src/{script}", *overrides], timeout=timeout)


def _train(run_dir: Path, *overrides: str) -> Path:
    proc = run_script("train.py", f"hydra.run.dir={run_dir}", f"paths.data_dir={DATA}", *TINY, *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


RUNS = {
    "mnist": ("trainer.max_epochs=2", "trainer.limit_train_batches=3"),
    "synthetic": ("data=synthetic", "model.hidden_sizes=[32]", "trainer.max_epochs=3"),
}


@functools.cache
def trained(kind: str, base: Path) -> Path:
    return _train(base / f"{kind}_run", *RUNS[kind])


@pytest.fixture(scope="session")
def mnist_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not have_data("mnist"):
        pytest.skip("MNIST not provisioned (make data)")
    return trained("mnist", tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained("synthetic", tmp_path_factory.getbasetemp())


@pytest.fixture
def script() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_script
