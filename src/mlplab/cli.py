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
    from mlplab.checkpoints import CheckpointError
    from mlplab.config import ConfigError
    from mlplab.data.sources import DataError

    return CheckpointError, ConfigError, DataError, NonFiniteLossError


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


def resume_argv(argv: list[str]) -> list[str]:
    """`resume=RUN_DIR` → that run's saved config, its directory and its last.ckpt, so the
    run continues where it stopped and TensorBoard appends to the same curves. Other
    `key=value` overrides still apply (e.g. a larger trainer.max_epochs)."""
    given = [a for a in argv[1:] if a.startswith("resume=")]
    if not given:
        return argv
    run_dir = Path(given[-1].split("=", 1)[1]).expanduser().resolve()
    saved = run_dir / ".hydra" / "config.yaml"
    last = run_dir / "checkpoints" / "last.ckpt"
    if not saved.is_file():
        _exit(f"resume={run_dir}: not a run directory (no .hydra/config.yaml)")
    if not last.is_file():
        _exit(f"resume={run_dir}: no checkpoints/last.ckpt to resume from")
    rest = [a for a in argv[1:] if not a.startswith("resume=")]
    return [argv[0], "--config-path", str(saved.parent), "--config-name", "config",
            f"hydra.run.dir={run_dir}", f"ckpt_path={last}", *rest]


def _exit(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def key_hints(argv: list[str], conf_dir: Path, config_name: str) -> list[str]:
    """For each `a.b=v` override whose key is not in the config, the closest existing key.
    Hydra's own message says only that the key is not in struct."""
    import difflib

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import DictConfig

    overrides = [a for a in argv[1:] if "=" in a and not a.startswith("-")]
    groups = {p.name for p in conf_dir.iterdir() if p.is_dir()}
    keys = [o.split("=", 1)[0] for o in overrides]
    selections = [o for o, k in zip(overrides, keys) if k.lstrip("+~") in groups]
    try:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            base = compose(config_name, overrides=selections)
    except Exception:  # noqa: BLE001 - hints are best effort; Hydra already reported the error
        return []
    hints = []
    for key in keys:
        if key.startswith(("+", "~", "hydra")) or key in groups or "/" in key:
            continue
        node: object = base
        parts = key.split(".")
        for i, part in enumerate(parts):
            if isinstance(node, DictConfig) and part in node:
                node = node[part]
                continue
            if isinstance(node, DictConfig):
                close = difflib.get_close_matches(part, [str(k) for k in node.keys()], n=1)
                guess = ".".join([*parts[:i], close[0]]) if close else None
                hints.append(f"'{key}' is not a config key" + (f"; did you mean '{guess}'?" if guess else ""))
            break
    return hints


def run_entry_point(main: Callable[[], object], conf_dir: Path, config_name: str) -> None:
    """Call a `@hydra.main` function with `resume=` expanded, adding close-match hints to
    Hydra's error for a misspelt key."""
    sys.argv = resume_argv(sys.argv)
    try:
        main()
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            for hint in key_hints(sys.argv, conf_dir, config_name):
                print(f"hint: {hint}", file=sys.stderr, flush=True)
        raise
