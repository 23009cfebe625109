"""Classify new inputs: `python src/predict.py ckpt_path=<...>/best.ckpt inputs=<image, folder,
IDX file or .npy>` (see conf/predict.yaml); writes predictions.csv into its run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from mlplab.cli import guarded, run_entry_point


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> Any:
    return guarded("mlplab.evaluation:run_predict", cfg)


if __name__ == "__main__":
    run_entry_point(main, Path(__file__).resolve().parents[1] / "conf", "predict", resume=False)
