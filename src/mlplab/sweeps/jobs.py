"""One job of a sweep, as its directory holds it: `.hydra/overrides.yaml` (what makes it this
job), `.hydra/config.yaml` (which metric it optimised) and `summary.json` (what happened).

A job directory without summary.json has status `missing`: train() writes the summary at its
very end (and the multirun guard writes one for any exception), so a job without one is still
running, was killed (out of memory, SIGKILL, a cluster time limit), or died before Python could
record anything. From the files alone these cannot be told apart, so they share one status.
"""

from __future__ import annotations

import json
import math
import os
import re
import reprlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

STATUSES = ("completed", "diverged", "failed", "missing")
MISSING_ERROR = "no summary.json: still running, killed, or crashed before it could write one"
DEFAULT_METRIC = "val/acc_best"


@dataclass(frozen=True)
class Job:
    dir: Path
    overrides: tuple[str, ...]
    status: str
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    optimized_metric: str = DEFAULT_METRIC
    overrides_read: bool = True  # False: overrides.yaml was damaged, so `overrides` is unknown, not empty

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def seed(self) -> str | None:
        return next((value(o) for o in self.overrides if key(o) == "seed"), None)

    def metric(self, name: str) -> float | None:
        """A validation metric at the best checkpoint's epoch when the checkpoint chose by it
        (`best/<name>`), as the test metrics are; else its last value."""
        metrics = self.summary.get("metrics") or {}
        v = metrics.get(f"best/{name}", metrics.get(name))
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def key(override: str) -> str:
    """`+model.x=1` → `model.x`: the key an override sets, without its add/delete prefix."""
    return override.split("=", 1)[0].lstrip("+~")


def value(override: str) -> str:
    return override.split("=", 1)[1] if "=" in override else ""


def _natural(path: Path) -> list[Any]:
    # Job 10 after job 9, not after job 1.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def find_job_dirs(sweep_dir: Path) -> list[Path]:
    """Every directory under `sweep_dir` holding `.hydra/overrides.yaml`, in job order.

    Nothing below a job directory is searched (a job's own sub-runs are not jobs of the sweep),
    nor hidden directories (submitit's `.submitit/` logs).
    """
    found: list[Path] = []
    for root, dirs, _ in os.walk(sweep_dir):
        if (Path(root) / ".hydra" / "overrides.yaml").is_file():
            found.append(Path(root))
            dirs.clear()
            continue
        dirs[:] = [d for d in dirs if not d.startswith(".")]
    return sorted(found, key=_natural)


def resumed_in_place(job_dir: Path, hydra: Any) -> bool:
    """Whether `hydra` (a job's .hydra/hydra.yaml, its `hydra` node) is that of a `resume=`:
    composed from the job's own .hydra/config.yaml, in RUN mode and with Hydra's default
    sweeper and launcher, whatever started the job. It no longer says if the job was a sweep's."""
    try:
        sources = hydra["runtime"]["config_sources"]
        own = (job_dir / ".hydra").resolve()
        return any(isinstance(s, Mapping) and s.get("provider") == "main" and Path(str(s.get("path"))).resolve() == own
                   for s in sources)
    except (KeyError, TypeError, OSError):
        return False


def _read_yaml(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def _read_overrides(path: Path) -> tuple[str, ...]:
    items = _read_yaml(path)
    if items is None:  # an empty file: a job launched without overrides
        return ()
    # A bare string would otherwise be split into characters, each one a bogus override.
    if not isinstance(items, list) or not all(isinstance(o, str) for o in items):
        raise ValueError(f"not a list of overrides: {reprlib.repr(items)}")
    return tuple(items)


def _json_brief(value: Any, width: int = 40) -> str:
    text = json.dumps(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _summary_problem(summary: Any) -> str | None:
    """Why a parsed summary.json cannot be used, or None: the fields the leaderboard reads
    without checking their type (the others are checked where they are read)."""
    if not isinstance(summary, dict):
        return f"not a JSON object: {_json_brief(summary)}"
    if not isinstance(summary.get("metrics") or {}, dict):
        return f'"metrics" is not a JSON object: {_json_brief(summary["metrics"])}'
    if not isinstance(summary.get("error"), (str, type(None))):
        return f'"error" is not a string: {_json_brief(summary["error"])}'
    return None


def read_job(job_dir: Path) -> Job:
    """Never raises for a broken job: what cannot be read becomes its status and error."""
    try:
        overrides = _read_overrides(job_dir / ".hydra" / "overrides.yaml")
    except (OSError, ValueError, yaml.YAMLError) as err:
        return Job(job_dir, (), "missing", f".hydra/overrides.yaml unreadable: {err}", overrides_read=False)
    metric = DEFAULT_METRIC
    try:
        cfg = _read_yaml(job_dir / ".hydra" / "config.yaml") or {}
        metric = str(cfg.get("optimized_metric") or DEFAULT_METRIC)
    except (OSError, ValueError, yaml.YAMLError, AttributeError):
        pass  # an older or partial job dir: the default metric is the best guess
    path = job_dir / "summary.json"
    if not path.is_file():
        return Job(job_dir, overrides, "missing", MISSING_ERROR, optimized_metric=metric)
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return Job(job_dir, overrides, "missing", f"summary.json unreadable: {err}", optimized_metric=metric)
    if problem := _summary_problem(summary):
        return Job(job_dir, overrides, "missing", f"summary.json unreadable: {problem}", optimized_metric=metric)
    status = summary.get("status")
    if status not in STATUSES:
        status = "failed"
    return Job(job_dir, overrides, status, summary.get("error"), summary, metric)


def read_jobs(sweep_dir: Path) -> Iterator[Job]:
    for d in find_job_dirs(sweep_dir):
        yield read_job(d)
