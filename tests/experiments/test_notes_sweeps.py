"""The course-notes sweeps (`conf/sweep/notes_*.yaml`): each expands to the settings it names,
every job composes into a distinct config, the jobs that no experiment test already runs run
for a few batches in-process, and one sweep runs end to end as a real multirun."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from notes_support import ROOT, TINY, notes_names, sweep_jobs
from omegaconf import DictConfig

from conftest import DATA, have_data
from forkserver import run_python
from mlplab.training import train


def _regulariser(cfg: DictConfig) -> tuple[Any, ...]:
    m = cfg.model
    return (m.dropout, m.l1, m.l2, m.max_norm)


def _optimizer(cfg: DictConfig) -> tuple[Any, ...]:
    return (cfg.optimizer._target_, cfg.optimizer.lr, cfg.optimizer.get("momentum"),
            cfg.data.batch_size, cfg.trainer.limit_train_batches)


# sweep → (number of jobs, what must differ between them, a value every job must share)
SWEEPS: dict[str, tuple[int, Callable[[DictConfig], Any], Callable[[DictConfig], Any]]] = {
    "notes_regularisers": (5, _regulariser, lambda c: (list(c.model.hidden_sizes), c.data.val_size)),
    "notes_optimizers": (8, _optimizer, lambda c: (list(c.model.hidden_sizes), c.trainer.max_epochs)),
    "notes_init": (4, lambda c: c.model.init, lambda c: (list(c.model.hidden_sizes), c.model.activation)),
}
# What runs: the regulariser jobs in-process below, notes_init as a real multirun; the optimizer
# jobs are experiments of their own, each trained by test_notes_experiments.py.


def test_every_notes_sweep_is_described() -> None:
    assert set(notes_names("sweep")) == set(SWEEPS)


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_sweep_expands_to_distinct_settings_on_one_network(name: str, make_cfg, tmp_path: Path) -> None:
    n_jobs, differs, shared = SWEEPS[name]
    sweep = make_cfg([f"sweep={name}"], run_dir=tmp_path / "sweep")
    assert str(sweep.hydra.mode).endswith("MULTIRUN")  # an enum or its name, by Hydra version
    jobs = sweep_jobs(sweep)
    assert len(jobs) == n_jobs
    # Each job names its experiment, so `python src/train.py <job overrides>` reproduces it.
    assert all(any(o.startswith("experiment=notes_") for o in job) for job in jobs)
    configs = [make_cfg(job, run_dir=tmp_path / str(i)) for i, job in enumerate(jobs)]
    assert len({repr(differs(c)) for c in configs}) == n_jobs
    assert len({repr(shared(c)) for c in configs}) == 1


def test_regulariser_options_set_exactly_one_regulariser(make_cfg, tmp_path: Path) -> None:
    expected = {
        "none": (0.0, 0.0, 0.0, None),
        "l2": (0.0, 0.0, 1e-3, None),
        "l1": (0.0, 1e-5, 0.0, None),
        "dropout": (0.5, 0.0, 0.0, None),
        "max_norm": (0.0, 0.0, 0.0, 0.5),
    }
    assert {p.stem for p in (ROOT / "conf" / "regularizer").glob("*.yaml")} == set(expected)
    for option, values in expected.items():
        cfg = make_cfg(["experiment=notes_regularisers", f"regularizer={option}"], run_dir=tmp_path)
        assert _regulariser(cfg) == values


# Job 0 (regularizer=none) is the notes_regularisers experiment, trained with the experiments.
@pytest.mark.parametrize("job", range(1, 5))
def test_regulariser_jobs_run(job: int, make_cfg, tmp_path: Path) -> None:
    if not have_data("mnist"):
        pytest.skip("mnist not provisioned (make data)")
    overrides = sweep_jobs(make_cfg(["sweep=notes_regularisers"], run_dir=tmp_path / "sweep"))[job]
    assert overrides[-1].startswith("regularizer=") and overrides[-1] != "regularizer=none"
    run = tmp_path / "run"
    train(make_cfg([*overrides, *TINY], run_dir=run))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"


def test_notes_init_runs_as_a_real_multirun_with_a_leaderboard(tmp_path: Path) -> None:
    if not have_data("mnist"):
        pytest.skip("mnist not provisioned (make data)")
    sweep_dir = tmp_path / "sweep"
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    proc = run_python(
        # callbacks=none: the mechanics of the sweep are under test here, not the per-epoch
        # figures and checkpoints, which the in-process runs already exercise.
        [str(ROOT / "src" / "train.py"), "sweep=notes_init", "callbacks=none",
         *[o for o in TINY if not o.startswith("callbacks.")],
         f"paths.data_dir={DATA}", f"paths.output_root={tmp_path / 'outputs'}",
         f"hydra.sweep.dir={sweep_dir}"],
        env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    inits = []
    for job in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()):
        assert json.loads((job / "summary.json").read_text())["status"] == "completed"
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        inits += [o.split("=", 1)[1] for o in overrides if o.startswith("model.init=")]
    assert inits == ["default", "kaiming", "xavier", "normal"]
    board = (sweep_dir / "leaderboard.md").read_text()
    assert all(init in board for init in inits)
