"""Preflight in-process: every job config is composed and validated before a sweep starts,
data is provisioned once, and the Optuna guard keeps a study going past a failed trial."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from sweep_support import ROOT

import mlplab.data.sources
from mlplab.sweeps import preflight
from mlplab.sweeps.callback import SweepCallback

Compose = Callable[..., DictConfig]


@pytest.fixture
def sweep_cfg(tmp_path: Path) -> Iterator[Compose]:
    """`sweep_cfg(overrides, params=...)` → the primary config a multirun would start from;
    `params` replaces hydra.sweeper.params (dotted keys cannot be set by an override)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):

        def _compose(overrides: list[str], params: dict[str, str] | None = None) -> DictConfig:
            cfg = compose("train", overrides=[*overrides, f"hydra.sweep.dir={tmp_path}/sweep"],
                          return_hydra_config=True)
            if params is not None:
                with read_write(cfg), open_dict(cfg):
                    cfg.hydra.sweeper.params = params
            return cfg

        yield _compose
    GlobalHydra.instance().clear()


def loader() -> object:
    return GlobalHydra.instance().config_loader()


def test_every_job_of_a_grid_is_checked_and_an_invalid_value_is_named(sweep_cfg: Compose) -> None:
    cfg = sweep_cfg(["sweep=lr_dropout", "data=synthetic"])
    assert preflight.check(cfg, loader(), provision_data=False) == 9
    bad = sweep_cfg(["data=synthetic"], params={"optimizer.lr": "0.01,0.1", "model.dropout": "0.0,1.5"})
    with pytest.raises(preflight.PreflightError, match=r"^model.dropout=1.5: expected a value in \[0, 1\)"):
        preflight.check(bad, loader(), provision_data=False)


def test_an_unknown_key_is_named(sweep_cfg: Compose) -> None:
    cfg = sweep_cfg(["data=synthetic"], params={"model.dropuot": "0.1,0.2"})
    with pytest.raises(preflight.PreflightError, match="Could not override 'model.dropuot'"):
        preflight.check(cfg, loader(), provision_data=False)
    cfg = sweep_cfg(["data=synthetic"], params={"+model.dropuot": "0.1,0.2"})
    with pytest.raises(preflight.PreflightError, match="model.dropuot: not an argument.*'dropout'"):
        preflight.check(cfg, loader(), provision_data=False)


def test_optuna_search_space_is_checked_value_by_value(sweep_cfg: Compose) -> None:
    cfg = sweep_cfg(["sweep=optuna_mlp", "data=synthetic"])
    # 1 base job + the other end of 3 intervals + 3 + 3 other choices of the two widths.
    assert preflight.check(cfg, loader(), provision_data=False) == 10
    with read_write(cfg), open_dict(cfg):
        cfg.hydra.sweeper.params["model.dropout"] = "interval(0.0, 1.5)"
    with pytest.raises(preflight.PreflightError, match=r"model.dropout=1.5"):
        preflight.check(cfg, loader(), provision_data=False)


def test_an_optuna_study_without_a_validation_split_is_refused_before_any_trial(sweep_cfg: Compose) -> None:
    cfg = sweep_cfg(["sweep=optuna_mlp", "data=synthetic", "data.val_size=0"])
    with pytest.raises(preflight.PreflightError, match=r"^data.val_size=0: the Optuna sweeper optimises val/acc_best, and without a validation split"):
        preflight.check(cfg, loader(), provision_data=False)
    grid = sweep_cfg(["sweep=lr_dropout", "data=synthetic", "data.val_size=0"])
    assert preflight.check(grid, loader(), provision_data=False) == 9  # a grid may be a final fit


def test_command_line_sweeps_replace_or_extend_the_named_grid(sweep_cfg: Compose) -> None:
    cfg = sweep_cfg(["sweep=lr_dropout", "data=synthetic"])
    args = preflight.sweep_arguments(cfg) + ["seed=1,2,3", "model.dropout=0.1,0.3"]
    jobs, complete = preflight.planned_jobs(cfg, OverridesParser.create().parse_overrides(args))
    assert complete and len(jobs) == 3 * 2 * 3
    assert {j[1] for j in jobs} == {"model.dropout=0.1", "model.dropout=0.3"}


def test_image_data_is_provisioned_once_per_dataset_not_per_job(
    sweep_cfg: Compose, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(mlplab.data.sources, "provision", lambda name, root: calls.append((name, str(root))))
    cfg = sweep_cfg(["paths.data_dir=/somewhere"],
                    params={"data": "mnist,fashion,synthetic", "optimizer.lr": "0.01,0.1"})
    assert preflight.check(cfg, loader()) == 6
    assert calls == [("fashion", "/somewhere"), ("mnist", "/somewhere")]


def test_a_bad_data_file_is_named_not_silently_replaced(
    sweep_cfg: Compose, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in a single run: a present but bad file is an error; only `make data` replaces files.
    raw = tmp_path / "d" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in mlplab.data.sources.DATASETS["mnist"].files:
        (raw / f).write_bytes(b"\0" * 16)
    monkeypatch.setattr(mlplab.data.sources, "provision", lambda *a, **k: pytest.fail("re-fetched"))
    cfg = sweep_cfg([f"paths.data_dir={tmp_path / 'd'}"], params={"optimizer.lr": "0.01,0.1"})
    with pytest.raises(preflight.PreflightError, match="t10k-images-idx3-ubyte|train-images-idx3-ubyte"):
        preflight.check(cfg, loader())
    assert (raw / "train-images-idx3-ubyte").read_bytes() == b"\0" * 16


def test_a_failed_optuna_trial_is_reported_as_the_worst_value_not_nan() -> None:
    def ended(target: str, direction: str, value: object) -> object:
        cfg = OmegaConf.create({"hydra": {"sweeper": {"_target_": target, "direction": direction}}})
        ret = JobReturn()
        ret.status = JobStatus.COMPLETED
        ret.return_value = value
        SweepCallback().on_job_end(cfg, ret)
        return ret.return_value

    optuna = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert ended(optuna, "maximize", math.nan) == -math.inf
    assert ended(optuna, "minimize", None) == math.inf
    assert ended(optuna, "maximize", 0.9) == 0.9
    basic = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    assert math.isnan(ended(basic, "maximize", math.nan))  # type: ignore[arg-type]


def test_a_strategy_that_cannot_run_in_a_multirun_is_refused_before_the_sweep(sweep_cfg: Compose) -> None:
    cfg = sweep_cfg(["data=synthetic"], params={"trainer": "cpu,ddp"})
    with pytest.raises(preflight.PreflightError, match=r"^trainer.strategy='ddp': cannot run inside a Hydra multirun"):
        preflight.check(cfg, loader(), provision_data=False)


def test_optuna_counts_and_a_value_that_replaces_a_searched_key_are_refused(sweep_cfg: Compose) -> None:
    # n_trials=0 ended in Optuna's traceback; `model.hidden_sizes=[16]` trained [16] in every
    # trial while the leaderboard named the sampled widths.
    for key in ("n_trials", "n_jobs"):
        cfg = sweep_cfg(["sweep=optuna_mlp", "data=synthetic", f"hydra.sweeper.{key}=0"])
        with pytest.raises(preflight.PreflightError, match=rf"^hydra.sweeper.{key}=0: expected an integer ≥ 1$"):
            preflight.check(cfg, loader(), provision_data=False)
    cfg = sweep_cfg(["sweep=optuna_mlp", "data=synthetic", "model.hidden_sizes=[16]"])
    with pytest.raises(preflight.PreflightError,
                       match=r"^model.hidden_sizes=\[16\]: the sweep searches model.hidden_sizes.0, which this value"):
        preflight.check(cfg, loader(), provision_data=False)
    # A group selection sets no value, and a searched key may be fixed itself (Optuna drops it).
    cfg = sweep_cfg(["sweep=optuna_mlp", "data=synthetic", "optimizer=adam", "model.hidden_sizes.0=16"])
    assert preflight.check(cfg, loader(), provision_data=False) > 0
    # The basic sweeper applies its overrides in the order given: a fixed list before the
    # searched entry is the way to sweep one layer of another network.
    cfg = sweep_cfg(["data=synthetic"], params={"model.hidden_sizes": "[16,16]", "model.hidden_sizes.0": "8,32"})
    assert preflight.check(cfg, loader(), provision_data=False) == 2
    cfg = sweep_cfg(["data=synthetic"], params={"model.hidden_sizes.0": "8,32", "model.hidden_sizes": "[16,16]"})
    with pytest.raises(preflight.PreflightError, match=r"^model.hidden_sizes=\[16,16\]: the sweep searches"):
        preflight.check(cfg, loader(), provision_data=False)


def test_plugin_settings_that_would_end_in_a_traceback_are_refused_first(sweep_cfg: Compose, monkeypatch) -> None:
    # Each of these raised from inside the plugin, after the sweep directory existed.
    cases = {
        ("sweep=optuna_mlp", "hydra.sweeper.direction=maximise"):
            r"^hydra.sweeper.direction='maximise': expected minimize or maximize",
        # Optuna maximised val/loss and reported its worst trial as the best.
        ("sweep=optuna_mlp", "optimized_metric=val/loss"):
            r"^hydra.sweeper.direction='maximize': optimized_metric=val/loss is better when lower: expected minimize",
        ("hydra/launcher=joblib", "hydra.launcher.n_jobs=0"): r"^hydra.launcher.n_jobs=0: expected",
    }
    for overrides, message in cases.items():
        with pytest.raises(preflight.PreflightError, match=message):
            preflight.check(sweep_cfg(["data=synthetic", *overrides]), loader(), provision_data=False)
    # A named grid sets only hydra.* keys, which no job applies: both jobs were the base config.
    cfg = sweep_cfg(["data=synthetic"], params={"sweep": "lr_dropout,optimizer_lr"})
    with pytest.raises(preflight.PreflightError, match=r"^sweep=lr_dropout,optimizer_lr: a multirun runs one named grid"):
        preflight.check(cfg, loader(), provision_data=False)
    cfg = sweep_cfg(["data=synthetic", "sweep=optuna_mlp", "optimized_metric=val/loss", "hydra.sweeper.direction=minimize"])
    assert preflight.check(cfg, loader(), provision_data=False) > 0
    # The plugin's own default direction is an enum, minimize: right for a loss, wrong for val/acc_best.
    space = {"model.dropout": "interval(0.1, 0.3)"}
    cfg = sweep_cfg(["data=synthetic", "hydra/sweeper=optuna", "optimized_metric=val/loss"], params=space)
    assert preflight.check(cfg, loader(), provision_data=False) > 0
    with pytest.raises(preflight.PreflightError, match=r"^hydra.sweeper.direction='minimize': optimized_metric="
                                                       r"val/acc_best is better when higher: expected maximize"):
        preflight.check(sweep_cfg(["data=synthetic", "hydra/sweeper=optuna"], params=space), loader(),
                        provision_data=False)
    cfg = sweep_cfg(["sweep=optuna_mlp", "data=synthetic"], params={"model.dropout": "interval(0.5, 0.1)"})
    with pytest.raises(preflight.PreflightError, match=r"^model.dropout=interval\(0.5, 0.1\): the interval starts above"):
        preflight.check(cfg, loader(), provision_data=False)
    monkeypatch.setattr(preflight.shutil, "which", lambda name: None)
    cfg = sweep_cfg(["data=synthetic", "hydra/launcher=submitit_slurm"])
    with pytest.raises(preflight.PreflightError, match=r"^hydra/launcher=submitit_slurm: SLURM's srun is not on PATH"):
        preflight.check(cfg, loader(), provision_data=False)


def test_the_planned_number_of_jobs_is_known_for_grids_and_optuna(sweep_cfg: Compose) -> None:
    cfg = sweep_cfg(["sweep=lr_dropout", "data=synthetic"])
    with read_write(cfg), open_dict(cfg):
        cfg.hydra.sweeper.params["seed"] = "1,2"
    assert preflight.planned_count(cfg) == 18
    assert preflight.planned_count(sweep_cfg(["sweep=optuna_mlp", "hydra.sweeper.n_trials=7"])) == 7


def test_a_sweep_of_no_value_is_refused_and_a_sweep_that_ran_no_job_fails(sweep_cfg: Compose, tmp_path: Path) -> None:
    # `seed=range(5,1)` launched 0 jobs and exited 0, with a sweep directory holding multirun.yaml.
    for empty in ("range(5,1)", "range(0,0)"):
        cfg = sweep_cfg(["data=synthetic"], params={"seed": empty, "model.dropout": "0.0,0.2"})
        with pytest.raises(preflight.PreflightError, match=rf"^seed={re.escape(empty)}: sweeps no value, so no job"):
            preflight.check(cfg, loader(), provision_data=False)
    # With preflight off the report found no job directory, said so, and the multirun exited 0.
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as stop:
        SweepCallback(plot=False).on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "empty")}}}))
    assert stop.value.code == 1


def test_preflight_false_leaves_the_jobs_unvalidated_while_data_is_still_provisioned(
        sweep_cfg: Compose, monkeypatch) -> None:
    # conf/hydra/default.yaml: `preflight: true  # compose + validate every job's config first`.
    # Set to false it changed nothing while provision stayed on: the sweep was still refused.
    prepared: list[str] = []
    monkeypatch.setattr(mlplab.data.sources, "prepare", lambda name, root: prepared.append(name))
    cfg = sweep_cfg(["data=mnist"], params={"model.dropout": "0.0,1.5"})
    SweepCallback(preflight=False, provision=True).on_multirun_start(cfg)
    assert prepared == ["mnist"]
    with pytest.raises(SystemExit):
        SweepCallback(preflight=True, provision=False).on_multirun_start(cfg)


def test_a_resumed_optuna_study_moves_its_sampler_seed_on_so_no_trial_is_drawn_again(
        sweep_cfg: Compose, tmp_path: Path) -> None:
    # conf/sweep/optuna_mlp.yaml fixes sampler.seed=0: a study resumed from its storage drew the
    # first run's trials again, one for one (TPE's random start-up trials restart with the seed).
    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="mlp", storage=storage, direction="maximize")
    for value in (0.5, 0.6):
        study.add_trial(optuna.trial.create_trial(params={"x": value}, value=value,
                                                  distributions={"x": optuna.distributions.UniformDistribution(0, 1)}))
    cfg = sweep_cfg(["sweep=optuna_mlp", "data=synthetic", f"hydra.sweeper.storage={storage}"])
    SweepCallback(preflight=False, provision=False).on_multirun_start(cfg)
    assert cfg.hydra.sweeper.sampler.seed == 2
    new = sweep_cfg(["sweep=optuna_mlp", "data=synthetic", f"hydra.sweeper.storage={storage}",
                     "hydra.sweeper.study_name=other"])
    SweepCallback(preflight=False, provision=False).on_multirun_start(new)
    assert new.hydra.sweeper.sampler.seed == 0  # a new study keeps the seed it was given
