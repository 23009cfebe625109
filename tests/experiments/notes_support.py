"""What the course-notes experiment tests share: tiny-run overrides, the experiment and sweep
names found in conf/, and a sweep's job list as Hydra's basic sweeper would expand it."""

from __future__ import annotations

import itertools
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"

# A few batches of each stage: enough to pass through every hook of a real run.
TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "callbacks.progress_bar.refresh_rate=0",
    "trainer=cpu",
]


def notes_names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("notes_*.yaml"))


def sweep_jobs(cfg: DictConfig) -> list[list[str]]:
    """The override list of every job of a composed sweep config, in launch order: the
    cartesian product of `hydra.sweeper.params`, which is what BasicSweeper runs."""
    params = cfg.hydra.sweeper.params or {}
    parser = OverridesParser.create()
    axes = []
    for key, value in params.items():
        override = parser.parse_override(f"{key}={value}")
        if override.is_sweep_override():
            axes.append([f"{key}={v}" for v in override.sweep_string_iterator()])
        else:
            axes.append([f"{key}={override.get_value_element_as_str()}"])
    return [list(job) for job in itertools.product(*axes)]
