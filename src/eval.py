"""Evaluate a checkpoint: `python src/eval.py ckpt_path=<run>/checkpoints/best.ckpt [data=<option>]`,
or several as one ensemble: `ckpt_path=[a.ckpt,b.ckpt]` or a pattern (see conf/eval.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from mlplab.cli import guarded, run_entry_point


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> Any:
    return guarded("mlplab.evaluation:run_eval", cfg)


if __name__ == "__main__":
    run_entry_point(main, Path(__file__).resolve().parents[1] / "conf", "eval", resume=False)
