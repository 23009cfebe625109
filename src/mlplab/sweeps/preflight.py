"""Before a sweep starts: every job's config composes and validates, and its data is on disk.

Hydra's launchers compose a job's config only when they run it, so a typo in the last grid
value would surface hours in, and joblib workers that all find MNIST missing would all
download it at once. Here every job of a grid is composed exactly as the launcher will
(`load_sweep_config`: the hydra overrides, then the job's) and checked with the same
`validate()` train() starts with, then each dataset any job reads is provisioned once.

Sweepers that sample (Optuna) only know their trials as they run; for them each candidate
value of each parameter is checked once (both ends of an interval, every choice), the others
held at their first candidate, which catches unknown keys and out-of-range bounds. So does a
grid of more than MAX_GRID jobs, where composing every job would cost more than it saves.
"""

from __future__ import annotations

import itertools
import logging
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override
from omegaconf import DictConfig, open_dict, read_write

log = logging.getLogger(__name__)

MAX_GRID = 64
GRID_SWEEPERS = ("BasicSweeper",)


class PreflightError(Exception):
    """One line: the job's overrides and what is wrong with them, naming the key."""


def one_line(err: BaseException, limit: int = 400) -> str:
    # Hydra's composition errors span lines ("Could not override 'x'.\nKey 'x' is not in
    # struct\n    full_key: ..."); the first lines name the key, the rest repeat it.
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("full_key:", "object_type="))]
    text = " ".join(lines) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def sweep_arguments(config: DictConfig) -> list[str]:
    """What the sweeper will expand: hydra.sweeper.params, then the command line, whose
    values replace a param of the same key (the sweepers' own order)."""
    params = config.hydra.sweeper.get("params") or {}
    return [f"{k}={v}" for k, v in params.items()] + [str(o) for o in config.hydra.overrides.task]


def _candidates(o: Override) -> list[str]:
    if not o.is_sweep_override():
        return [o.get_value_element_as_str()]
    if o.is_discrete_sweep():
        return [str(v) for v in o.sweep_string_iterator()]
    value = o.value()
    if isinstance(value, IntervalSweep):
        return [str(value.start), str(value.end)]
    return []  # a sweep type this module does not know: left to the sweeper


def planned_count(config: DictConfig) -> int | None:
    """How many jobs the sweep of this multirun.yaml starts in all, where that is known before it
    runs (a grid of the basic sweeper, Optuna's n_trials); None otherwise."""
    sweeper = str(config.hydra.sweeper.get("_target_", ""))
    if "optuna" in sweeper:
        n = config.hydra.sweeper.get("n_trials")
        return n if isinstance(n, int) and not isinstance(n, bool) else None
    if sweeper.rsplit(".", 1)[-1] not in GRID_SWEEPERS:
        return None
    try:
        overrides = OverridesParser.create().parse_overrides(sweep_arguments(config))
        if any(not _candidates(o) for o in overrides):
            return None  # a sweep type this module does not expand
        return math.prod(len(c) for c in _choices(overrides).values())
    except Exception:  # noqa: BLE001 - e.g. a glob over a group's options, which needs the config loader
        return None


def _choices(overrides: Sequence[Override]) -> dict[str, list[str]]:
    """Each swept or fixed key's values; a later override of a key replaces it."""
    return {o.get_key_element(): cands for o in overrides if (cands := _candidates(o))}


def planned_jobs(config: DictConfig, overrides: Sequence[Override]) -> tuple[list[list[str]], bool]:
    """Job override lists to check, and whether they are every job of the sweep."""
    choices = _choices(overrides)
    keys = list(choices)
    size = 1
    for k in keys:
        size *= len(choices[k])
    sweeper = str(config.hydra.sweeper.get("_target_", "")).rsplit(".", 1)[-1]
    if sweeper in GRID_SWEEPERS and size <= MAX_GRID:
        return [[f"{k}={v}" for k, v in zip(keys, combo)]
                for combo in itertools.product(*(choices[k] for k in keys))], True
    base = {k: choices[k][0] for k in keys}
    jobs = [[f"{k}={v}" for k, v in base.items()]]
    for k in keys:
        for v in choices[k][1:]:
            jobs.append([f"{kk}={v if kk == k else vv}" for kk, vv in base.items()])
    return jobs, False


def _check_job(config: DictConfig, loader: object, overrides: list[str],
               validate_job: bool = True) -> set[tuple[str, str]]:
    """Compose and validate one job (`validate_job` false: compose only); the datasets (name,
    root) it will read."""
    where = f"(job: {' '.join(overrides) or 'no overrides'})"
    try:
        cfg = loader.load_sweep_config(master_config=config, sweep_overrides=overrides)  # type: ignore[attr-defined]
    except Exception as err:  # noqa: BLE001 - Hydra raises several types; all mean "will not compose"
        if not validate_job:
            return set()  # left to the launcher, as preflight=false asks
        raise PreflightError(f"{one_line(err)} {where}") from None
    # Imported only now: they pull in torch, seconds that a sweep refused at composition
    # need not wait for.
    from hydra.utils import get_class

    from mlplab.config import check_sweeper, launcher_relaunches, validate
    from mlplab.data.sources import DATASETS

    # `${hydra:runtime.output_dir}` resolves only once a job has a directory; validation needs
    # a value, and a path no job will use keeps anything from being created by mistake.
    with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = str(Path(str(config.hydra.sweep.dir)) / ".preflight")
    hc = HydraConfig.instance()
    saved = hc.cfg
    try:
        hc.set_config(cfg)
        if validate_job and "model" in cfg and "trainer" in cfg:  # train's config; another entry point only composes
            # As train() will; a SLURM job's device is on its node, not here.
            relaunches = launcher_relaunches(cfg.hydra.launcher.get("_target_"))
            validate(cfg, multirun=relaunches, here=relaunches)
            check_sweeper(cfg, cfg.hydra.sweeper)
        target = cfg.data.get("_target_")
        name = getattr(get_class(target), "dataset", "") if target else ""
        return {(name, str(cfg.data.data_dir))} if name in DATASETS else set()
    except Exception as err:  # noqa: BLE001 - ConfigError or an interpolation that cannot resolve
        raise PreflightError(f"{one_line(err)} {where}") from None
    finally:
        hc.cfg = saved


def _check_plugins(hydra: DictConfig) -> None:
    """Settings the sweeper and launcher plugins would otherwise refuse with a traceback, after
    the sweep directory exists (Optuna's n_trials=0 ended in "No trials are completed yet")."""
    sweeper, launcher = hydra.sweeper, hydra.launcher
    if "optuna" in str(sweeper.get("_target_", "")):
        for key in ("n_trials", "n_jobs"):
            value = sweeper.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise PreflightError(f"hydra.sweeper.{key}={value!r}: expected an integer ≥ 1")
    target = str(launcher.get("_target_", ""))
    n_jobs = launcher.get("n_jobs")
    if "joblib" in target and (not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs == 0):
        raise PreflightError(f"hydra.launcher.n_jobs={n_jobs!r}: expected a number of jobs at a time, or -1 "
                             "for one per CPU")
    if "SlurmLauncher" in target and shutil.which("srun") is None:
        raise PreflightError("hydra/launcher=submitit_slurm: SLURM's srun is not on PATH here; start the sweep on "
                             "a SLURM login node, or try it locally with hydra/launcher=submitit_local")


def _check_search_space(overrides: Sequence[Override]) -> None:
    for o in overrides:
        value = o.value() if o.is_sweep_override() else None
        if o.is_discrete_sweep() and not any(True for _ in o.sweep_string_iterator()):
            # `seed=range(5,1)`: the grid is empty, so the sweep ran no job and exited 0.
            raise PreflightError(f"{o.input_line or o.get_key_element()}: sweeps no value, so no job would run; "
                                 "give at least one (range's end is exclusive)")
        if isinstance(value, IntervalSweep) and value.start > value.end:
            raise PreflightError(f"{o.input_line or o.get_key_element()}: the interval starts above its end "
                                 f"({value.start} > {value.end}); give it low first")
        if o.key_or_group == "sweep" and o.is_sweep_override():
            # A named grid sets only hydra.* keys, which Hydra applies to the sweep, not to a
            # job: every job would be the same base config, ranked as different settings.
            raise PreflightError(f"{o.input_line}: a multirun runs one named grid; run each in its own "
                                 "command (sweep=<one>)")


def _check_shadowed(overrides: Sequence[Override], groups: set[str], optuna: bool) -> None:
    """A fixed value for a key above a searched one (`model.hidden_sizes=[16]` while the sweep
    searches `model.hidden_sizes.0`) that the jobs apply after it: every job would train the
    fixed value while the leaderboard names the searched one. Optuna applies fixed values
    last; the basic sweeper in the order given (params, then the command line)."""
    fixed = {x.get_key_element().lstrip("+~") for x in overrides if not x.is_sweep_override()}
    for i, o in enumerate(overrides):
        key = o.get_key_element().lstrip("+~")
        if o.is_sweep_override() or key in groups:  # `optimizer=adam` selects, it sets no value
            continue
        for j, x in enumerate(overrides):
            searched = x.get_key_element().lstrip("+~")
            if (x.is_sweep_override() and searched.startswith(key + ".") and searched not in fixed
                    and (optuna or j < i)):
                raise PreflightError(
                    f"{key}={o.get_value_element_as_str()}: the sweep searches {searched}, which this value would "
                    f"replace in every job; fix {searched} itself ({searched}=...), or leave {key} to the sweep")


def check(config: DictConfig, loader: object, provision_data: bool = True, validate_jobs: bool = True) -> int:
    """Raise PreflightError for the first job that would fail on its config or its data;
    return how many job configs were checked. `validate_jobs` false (the callback's
    preflight=false): the jobs are only composed, to find the data to provision."""
    started = time.perf_counter()
    args = sweep_arguments(config)
    try:
        overrides = OverridesParser.create(config_loader=loader).parse_overrides(args)  # type: ignore[arg-type]
    except Exception as err:  # noqa: BLE001
        if not validate_jobs:
            return 0  # the sweeper will say it
        raise PreflightError(f"sweep parameters: {one_line(err)}") from None
    if validate_jobs:
        _check_plugins(config.hydra)
        _check_search_space(overrides)
        _check_shadowed(overrides, set(config.hydra.runtime.get("choices") or {}),
                        "optuna" in str(config.hydra.sweeper.get("_target_", "")))
    jobs, complete = planned_jobs(config, overrides)
    datasets: set[tuple[str, str]] = set()
    for job in jobs:
        datasets |= _check_job(config, loader, job, validate_jobs)
    if provision_data:
        from mlplab.data.sources import DataError, prepare

        for name, root in sorted(datasets):
            try:
                prepare(name, root)  # as each job would, so a bad file is named, not replaced
            except DataError as err:
                raise PreflightError(str(err)) from None
    log.info(
        "preflight: %d %s composed%s in %.1f s%s",
        len(jobs), "job configs" if complete else "representative job configs (each value once)",
        " and validated" if validate_jobs else " (not validated: preflight=false)", time.perf_counter() - started,
        f"; data ready: {', '.join(n for n, _ in sorted(datasets))}" if datasets else "",
    )
    return len(jobs)
