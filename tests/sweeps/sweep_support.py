"""What the sweep tests share: how to run src/train.py and read what a sweep wrote.

(Not a conftest.py: tests/conftest.py is imported as `conftest`, and a second one would clash.)
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from forkserver import run_python

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "src" / "train.py"


def _no_figures() -> list[str]:
    """The TensorBoard figure callbacks draw with matplotlib every epoch, most of a tiny job's
    time; found by target so a renamed one is still switched off."""
    callbacks = yaml.safe_load((ROOT / "conf" / "callbacks" / "default.yaml").read_text()) or {}
    return [f"callbacks.{name}=null" for name, node in callbacks.items()
            if isinstance(node, dict) and str(node.get("_target_", "")).startswith("mlplab.callbacks.figures.")]


# Tiny and quiet: two cores are shared with other test runs.
FAST = [
    "data=synthetic", "model.hidden_sizes=[16]", "trainer.max_epochs=3",
    "callbacks.progress_bar.refresh_rate=0", "callbacks.model_summary.max_depth=0", "trainer=cpu",
    *_no_figures(),
]


def run(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`python <args>` from the repository root, environment untouched (MLPLAB_DATA_DIR)."""
    return run_python(args, timeout=timeout)


def multirun(sweep_dir: Path, *overrides: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return run([str(TRAIN), "-m", *FAST, *overrides, f"hydra.sweep.dir={sweep_dir}"], timeout=timeout)


def leaderboard(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "leaderboard.csv").open() as f:
        return list(csv.DictReader(f))


def summary(job_dir: Path) -> dict[str, Any]:
    return json.loads((job_dir / "summary.json").read_text())


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
