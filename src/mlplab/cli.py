"""What the entry points share: user errors become one line and exit code 1."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

T = TypeVar("T")


def _user_errors() -> tuple[type[BaseException], ...]:
    from mlplab.callbacks.guards import NonFiniteLossError
    from mlplab.config import ConfigError
    from mlplab.data.sources import DataError

    return ConfigError, DataError, NonFiniteLossError


def guarded(fn: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """Run `fn(cfg)`; a user error prints one line (no traceback unless HYDRA_FULL_ERROR=1)
    and exits 1. A run directory holding nothing but what Hydra wrote before the failure is
    removed, so nothing is left that looks like a run."""
    try:
        return fn(cfg)
    except _user_errors() as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        _remove_empty_run_dir()
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(1)


def _remove_empty_run_dir() -> None:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    log_file = f"{hc.job.name}.log"
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {".hydra", log_file}:
        shutil.rmtree(run_dir, ignore_errors=True)
