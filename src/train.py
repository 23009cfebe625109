"""Train an MLP: `python src/train.py [group=option ...] [key=value ...]` (see conf/train.yaml)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from mlplab.cli import guarded, run_entry_point


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return guarded("mlplab.training:train", cfg)


if __name__ == "__main__":
    run_entry_point(main, Path(__file__).resolve().parents[1] / "conf", "train")
