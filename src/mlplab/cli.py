"""What the entry points share: user errors become one line and exit code 1; in a multirun a
failing job is recorded and the sweep goes on."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

T = TypeVar("T")
log = logging.getLogger(__name__)


def _user_errors() -> tuple[type[BaseException], ...]:
    from mlplab.callbacks.guards import NonFiniteLossError
    from mlplab.config import ConfigError
    from mlplab.data.sources import DataError

    return ConfigError, DataError, NonFiniteLossError


def guarded(fn: Callable[[DictConfig], T], cfg: DictConfig) -> T | float:
    """Run `fn(cfg)`.

    Single run: a user error prints one line (no traceback unless HYDRA_FULL_ERROR=1) and
    exits 1; a run directory holding nothing but what Hydra wrote is removed, so nothing is
    left that looks like a run. Multirun: any exception marks this job `failed` in its
    summary.json and returns NaN, so the remaining jobs still run (Hydra's basic launcher
    would otherwise abort the whole sweep); the sweep callback decides the exit code.
    """
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return fn(cfg)
    except Exception as err:
        if multirun:
            _record_failure(err)
            log.error("job failed: %s: %s", type(err).__name__, err)
            return math.nan
        if not isinstance(err, _user_errors()) or os.environ.get("HYDRA_FULL_ERROR") == "1":
            _record_failure(err)
            raise
        if not _remove_empty_run_dir():
            _record_failure(err)
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(1)


def _record_failure(err: BaseException) -> None:
    """Write (or complete) summary.json with status `failed`, keeping what train() wrote."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {"run_dir": str(run_dir)}
    if summary.get("status") in (None, "completed"):
        summary["status"] = "failed"
    summary["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:500]
    summary["traceback"] = "".join(traceback.format_exception(err))[-4000:]
    if run_dir.is_dir():
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(tmp, path)


def _remove_empty_run_dir() -> bool:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    log_file = f"{hc.job.name}.log"
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {".hydra", log_file}:
        shutil.rmtree(run_dir, ignore_errors=True)
        return True
    return False
