"""Shared fixtures: compose the real config from conf/ the way src/train.py does."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
DATA = Path(os.environ.get("MLPLAB_DATA_DIR", ROOT / "data"))

# Tiny, fast settings shared by in-process runs: no progress bar noise, few epochs.
FAST = ["trainer.max_epochs=3", "callbacks.progress_bar.refresh_rate=0", "trainer=cpu"]


def have_data(name: str) -> bool:
    folder = {"mnist": "MNIST", "fashion": "FashionMNIST"}[name]
    return (DATA / folder / "raw" / "t10k-labels-idx1-ubyte").exists()


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """`make_cfg(overrides)` → a composed config whose run directory is `tmp_path/run`,
    registered with HydraConfig so `${hydra:runtime.output_dir}` resolves."""

    def _make(overrides: Sequence[str] = (), run_dir: Path | None = None) -> DictConfig:
        out = run_dir or tmp_path / "run"
        out.mkdir(parents=True, exist_ok=True)
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(
                "train",
                overrides=[f"paths.data_dir={DATA}", *overrides],
                return_hydra_config=True,
            )
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(out)
            cfg.hydra.job.name = "train"
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield _make
    GlobalHydra.instance().clear()
