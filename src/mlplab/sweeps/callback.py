"""The Hydra callback behind every multirun (registered in conf/hydra/default.yaml).

Exit code: a multirun exits non-zero only if no job of it completed (every job failed,
diverged or left no summary). One bad corner of a grid is a result worth reading, not a
broken sweep, so it exits 0 and the leaderboard lists the failure; a sweep with nothing to
rank is what a script or CI must notice.

How: Hydra catches every `Exception` a callback raises and turns it into a warning, so the
callback raises `SystemExit` (not an `Exception`), which leaves through `hydra.main` with its
code. The same route stops a sweep whose preflight fails, before any job starts.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, read_write

if TYPE_CHECKING:
    from mlplab.sweeps.jobs import Job

log = logging.getLogger(__name__)


class SweepCallback(Callback):
    def __init__(self, preflight: bool = True, provision: bool = True, report: bool = True,
                 plot: bool = True) -> None:
        self.preflight = preflight
        self.provision = provision
        self.report = report
        self.plot = plot
        self._started: float | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Runs in the launching process, before the sweeper exists: the last moment at which
        # a sweep can be refused without a single job directory being created.
        self._started = time.time()
        _reseed_resumed_study(config)
        if not (self.preflight or self.provision):
            return
        from hydra.core.global_hydra import GlobalHydra

        from mlplab.sweeps.preflight import PreflightError, check

        if not GlobalHydra.instance().is_initialized():
            log.warning("preflight skipped: no Hydra config loader (not started by hydra.main)")
            return
        try:
            # preflight=false with provision on: the jobs are composed for their data, not validated.
            check(config, GlobalHydra.instance().config_loader(), provision_data=self.provision,
                  validate_jobs=self.preflight)
        except PreflightError as err:
            print(f"error: sweep not started: {err}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        # hydra-optuna-sweeper 1.2.0 aborts the whole study on a NaN return value (optuna's
        # tell() rejects NaN, and its FAIL fallback is called with the value again), and a
        # failed job returns NaN. So Optuna is told the worst possible value instead: the
        # trial still counts as the worst, the study goes on, the leaderboard says `failed`.
        sweeper = config.hydra.sweeper
        if "optuna" not in str(sweeper.get("_target_", "")).lower():
            return
        direction = sweeper.get("direction")
        if job_return.status != JobStatus.COMPLETED or not isinstance(direction, str):
            return
        value = job_return.return_value
        if value is None or (isinstance(value, float) and math.isnan(value)):
            job_return.return_value = -math.inf if direction == "maximize" else math.inf
            log.warning("trial failed: reported to Optuna as %s so the study goes on",
                        job_return.return_value)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.report:
            return
        from mlplab.sweeps.leaderboard import NoJobsError, build, render_text, write

        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            board = build(sweep_dir)
        except NoJobsError as err:
            # No job ran (an empty grid with preflight off): nothing completed, so not a success.
            print(f"error: sweep report: {err}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        written = write(board, plot=self.plot)
        print("\n" + render_text(board), flush=True)
        print("wrote " + ", ".join(p.name for p in written) + f" in {sweep_dir}", flush=True)
        mine = self._this_multirun(board.jobs)
        if mine and not any(j.status == "completed" for j in mine):
            print(f"error: none of the {len(mine)} jobs of this sweep completed "
                  "(see the status column above)", file=sys.stderr, flush=True)
            raise SystemExit(1)

    def _this_multirun(self, jobs: list[Job]) -> list[Job]:
        """Jobs written since on_multirun_start: a reused sweep dir keeps older job dirs,
        which the report shows but the exit code must not count. (A clock skew between the
        launching machine and a cluster file system could hide them all; then all count.)"""
        if self._started is None:
            return jobs
        mine = [j for j in jobs if _mtime(j.dir / ".hydra" / "overrides.yaml") >= self._started - 2.0]
        return mine or jobs


def _reseed_resumed_study(config: DictConfig) -> None:
    """A study resumed from its storage (`hydra.sweeper.storage`) with the sweep's fixed sampler
    seed (conf/sweep/optuna_mlp.yaml: 0) drew the first run's trials again, one for one: TPE's
    random start-up trials come from a generator the seed restarts. The seed moves on by the
    trials the study holds, so a resumed study samples new points and is still reproducible."""
    sweeper = config.hydra.sweeper
    sampler = sweeper.get("sampler")
    if "optuna" not in str(sweeper.get("_target_", "")).lower() or not sampler:
        return
    storage, name, seed = sweeper.get("storage"), sweeper.get("study_name"), sampler.get("seed")
    if not storage or not name or not isinstance(seed, int) or isinstance(seed, bool):
        return  # in memory, or a study of a new random name: nothing to resume; no seed: nothing repeats
    try:
        import optuna

        trials = len(optuna.load_study(study_name=str(name), storage=str(storage)).trials)
    except Exception:  # noqa: BLE001 - a new study (KeyError), or a storage the sweeper will refuse itself
        return
    if trials:
        with read_write(sampler):
            sampler.seed = seed + trials
        log.info("study %s resumed with %d trials: sampler seed %d + %d, so no trial is drawn again",
                 name, trials, seed, trials)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
