"""The leaderboard on sweep directories written by hand: grouping, statistics, order, the
reproducing command, and `python -m mlplab.sweeps` on partial and empty directories."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from sweep_support import ROOT, explain, run

from mlplab.sweeps import leaderboard as lb
from mlplab.sweeps.jobs import read_job


def make_job(sweep: Path, num: int, overrides: list[str], status: str | None = "completed",
             metrics: dict[str, float] | None = None, metric: str = "val/acc_best",
             error: str | None = None) -> Path:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"optimized_metric": metric, "seed": 0}))
    if status is not None:
        summary: dict[str, Any] = {"status": status, "error": error, "epochs": 3,
                                   "stopped_early": False, "metrics": metrics or {},
                                   "fit_seconds": 1.5, "run_dir": str(job)}
        (job / "summary.json").write_text(json.dumps(summary))
    return job


def grid(sweep: Path) -> None:
    """2 learning rates × 3 seeds, one diverged and one failed setting, a fixed override."""
    accs = {("0.1", "1"): 0.80, ("0.1", "2"): 0.84, ("0.1", "3"): 0.85,
            ("0.01", "1"): 0.90, ("0.01", "2"): 0.91, ("0.01", "3"): 0.95}
    n = 0
    for (lr, seed), acc in accs.items():
        make_job(sweep, n, ["data=synthetic", f"optimizer.lr={lr}", f"seed={seed}"],
                 metrics={"val/acc_best": acc, "test/acc": acc - 0.01})
        n += 1
    make_job(sweep, n, ["data=synthetic", "optimizer.lr=10.0", "seed=1"], status="failed",
             error="RuntimeError: boom")
    make_job(sweep, n + 1, ["data=synthetic", "optimizer.lr=1000.0", "seed=1"], status="diverged",
             error="non-finite training loss", metrics={"val/acc_best": 0.99})


def test_groups_seeds_into_mean_and_sample_std_best_first_failures_last(tmp_path: Path) -> None:
    grid(tmp_path)
    board = lb.build(tmp_path)
    assert board.fixed == ("data=synthetic",)
    assert [r.setting for r in board.rows] == [
        ("optimizer.lr=0.01",), ("optimizer.lr=0.1",), ("optimizer.lr=1000.0",), ("optimizer.lr=10.0",)]
    best, second, diverged, failed = board.rows
    assert best.score.n == 3 and best.rank == 1 and second.rank == 2
    assert best.score.mean == pytest.approx(statistics.fmean([0.90, 0.91, 0.95]))
    # ddof=1: the sample standard deviation, not the population one.
    assert best.score.std == pytest.approx(math.sqrt(sum((x - 0.92) ** 2 for x in (0.90, 0.91, 0.95)) / 2))
    # A diverged run's metric is not a result: it ranks after every completed setting.
    assert diverged.rank is None and diverged.score.n == 0 and diverged.status == "diverged"
    assert failed.rank is None and failed.error == "RuntimeError: boom"
    assert best.best_job is not None and best.best_job.seed == "3"
    assert lb.command(best.best_job) == "python src/train.py data=synthetic optimizer.lr=0.01 seed=3"

    lb.write(board)
    rows = list(csv.DictReader((tmp_path / "leaderboard.csv").open()))
    assert [r["rank"] for r in rows] == ["1", "2", "", ""]
    assert rows[0]["optimizer.lr"] == "0.01" and rows[0]["n"] == "3" and rows[0]["seeds"] == "1;2;3"
    assert [float(v) for v in rows[0]["values"].split(";")] == [0.90, 0.91, 0.95]
    assert rows[3]["status"] == "failed" and rows[3]["error"] == "RuntimeError: boom"
    md = (tmp_path / "leaderboard.md").read_text()
    assert "0.9200 ± 0.0265" in md and "ddof=1" in md
    assert "python src/train.py data=synthetic optimizer.lr=0.01 seed=3" in md
    assert (tmp_path / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_epochs_and_fit_time_describe_the_jobs_the_metric_averages(tmp_path: Path) -> None:
    # One seed crashed after 1 epoch: the row's mean is over the two completed seeds, and so
    # are its epochs and fit time (they averaged the crash in before).
    for n, (seed, status, epochs, fit) in enumerate(((1, "completed", 9, 30.0), (2, "completed", 9, 32.0),
                                                     (3, "failed", 1, 2.0))):
        job = make_job(tmp_path, n, ["optimizer.lr=0.1", f"seed={seed}"], status=status,
                       metrics={"val/acc_best": 0.9} if status == "completed" else None)
        summary = json.loads((job / "summary.json").read_text())
        summary.update(epochs=epochs, fit_seconds=fit, stopped_early=status == "failed")
        (job / "summary.json").write_text(json.dumps(summary))
    make_job(tmp_path, 3, ["optimizer.lr=10.0", "seed=1"], status="failed")  # none completed: its own figures
    row, failed = lb.build(tmp_path).rows
    assert row.score.n == 2 and row.epochs == "9" and row.fit_seconds == pytest.approx(31.0)
    assert row.stopped_early == "0/2" and row.status == "2 completed, 1 failed"
    assert failed.epochs == "3" and failed.fit_seconds == pytest.approx(1.5)


def test_a_loss_metric_ranks_lowest_first(tmp_path: Path) -> None:
    for n, (lr, loss) in enumerate((("0.1", 0.5), ("0.01", 0.2), ("1.0", 0.9))):
        make_job(tmp_path, n, [f"optimizer.lr={lr}"], metric="val/loss", metrics={"val/loss": loss})
    board = lb.build(tmp_path)
    assert board.metric == "val/loss" and not board.maximize
    assert [r.score.mean for r in board.rows] == [0.2, 0.5, 0.9]


def test_a_metric_the_checkpoint_chose_by_ranks_at_the_best_epoch(tmp_path: Path) -> None:
    # val/loss after early stopping is `patience` epochs past the best; the best checkpoint's
    # value (`best/val/loss`) is what the setting achieved, as its test column is.
    make_job(tmp_path, 0, ["optimizer.lr=0.1"], metric="val/loss", metrics={"val/loss": 0.9, "best/val/loss": 0.1})
    make_job(tmp_path, 1, ["optimizer.lr=0.01"], metric="val/loss", metrics={"val/loss": 0.5})
    board = lb.build(tmp_path)
    assert [r.score.mean for r in board.rows] == [0.1, 0.5]


def test_completed_jobs_without_the_metric_are_not_called_incomplete(tmp_path: Path) -> None:
    # data.val_size=0 in a grid: every job completes, none has a validation metric.
    make_job(tmp_path, 0, ["model.dropout=0.0"], metrics={"test/acc": 0.9})
    text = lb.render_text(lb.build(tmp_path))
    assert "no completed job has val/acc_best: nothing to rank" in text and "no job completed" not in text


def test_command_quotes_for_the_shell_and_drops_the_named_sweep(tmp_path: Path) -> None:
    job = make_job(tmp_path, 0, ["sweep=activation_depth", "model.hidden_sizes=[64,32]",
                                 "model.activation=tanh", "+tag=it's"],
                   metrics={"val/acc_best": 0.5})
    cmd = lb.command(lb.build(tmp_path).rows[0].jobs[0])
    assert cmd == ("python src/train.py 'model.hidden_sizes=[64,32]' model.activation=tanh "
                   "'+tag=it'\"'\"'s'")
    assert job.name == "0"


def test_long_optuna_floats_are_shortened_only_for_reading() -> None:
    assert lb.short("optimizer.lr=0.0012345678912") == "optimizer.lr=0.001235"
    assert lb.short("model.l2=2.231090560744303e-06") == "model.l2=2.231e-06"
    assert lb.short("optimizer.lr=0.01") == "optimizer.lr=0.01"
    assert lb.short("model.hidden_sizes=[64,32]") == "model.hidden_sizes=[64,32]"


def test_cli_on_a_partial_sweep_reports_finished_jobs_and_lists_missing_ones(tmp_path: Path) -> None:
    make_job(tmp_path, 0, ["optimizer.lr=0.1", "seed=1"], metrics={"val/acc_best": 0.8})
    make_job(tmp_path, 1, ["optimizer.lr=0.1", "seed=2"], status=None)   # killed, or still running
    make_job(tmp_path, 2, ["optimizer.lr=0.01", "seed=1"], status=None)
    (tmp_path / "3").mkdir()  # created by the launcher, nothing written yet: not a job dir
    proc = run(["-m", "mlplab.sweeps", str(tmp_path)], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "2 job(s) without a readable summary.json" in proc.stdout
    rows = list(csv.DictReader((tmp_path / "leaderboard.csv").open()))
    assert [(r["setting"], r["n"], r["status"]) for r in rows] == [
        ("optimizer.lr=0.1", "1", "1 completed, 1 missing"), ("optimizer.lr=0.01", "0", "missing")]
    assert "no summary.json" in rows[1]["error"]


def test_cli_on_an_empty_or_absent_dir_says_so_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("a file")
    run_dir = tmp_path / "a_run"  # a single run's directory got a one-row leaderboard written into it
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (run_dir / "summary.json").write_text('{"status": "completed"}')
    for target, why in ((tmp_path / "nope", "no such directory"), (tmp_path / "notes.txt", "a file, not a sweep directory"),
                        (run_dir, "a run directory, not a sweep; python -m mlplab.inspect")):
        proc = run(["-m", "mlplab.sweeps", str(target)], timeout=120)
        assert proc.returncode == 1
        assert proc.stderr.startswith("error: ") and why in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (run_dir / "leaderboard.csv").exists()
    shutil.rmtree(run_dir)
    proc = run(["-m", "mlplab.sweeps", str(tmp_path)], timeout=120)
    assert proc.returncode == 1 and "no job directories" in proc.stderr
    assert not (tmp_path / "leaderboard.csv").exists()


def test_named_sweeps_set_only_hydra_keys_so_job_overrides_reproduce_a_job() -> None:
    # The leaderboard's command drops sweep=NAME; that is exact only while this holds.
    files = sorted((ROOT / "conf" / "sweep").glob("*.yaml"))
    assert {f.stem for f in files} >= {"lr_dropout", "optimizer_lr", "dropout_l2",
                                       "activation_depth", "optuna_mlp"}
    for f in files:
        text = f.read_text()
        assert text.startswith("# @package _global_"), f
        cfg = yaml.safe_load(text)
        assert set(cfg) <= {"hydra", "defaults"}, f"{f.name}: {sorted(cfg)}"
        assert cfg["hydra"]["mode"] == "MULTIRUN" and cfg["hydra"]["sweeper"]["params"], f
        for entry in cfg.get("defaults", []):
            assert all(k.startswith("override /hydra/") for k in entry), f


# Each of these gave a traceback instead of a leaderboard; the file's text as found.
CORRUPT_FILES = [
    ("summary.json", "null"),
    ("summary.json", "[1, 2]"),
    ("summary.json", '{"status": "completed", "metrics": [0.9]}'),
    ("summary.json", '{"status": "failed", "error": 5}'),
    (".hydra/overrides.yaml", "5"),
    (".hydra/overrides.yaml", "abc"),  # was split into the overrides "a", "b", "c"
    (".hydra/overrides.yaml", "{seed: 1}"),
]


@pytest.mark.parametrize(("name", "text"), CORRUPT_FILES)
def test_a_corrupt_job_file_makes_the_job_missing_naming_the_file(tmp_path: Path, name: str, text: str) -> None:
    job = make_job(tmp_path, 0, ["optimizer.lr=0.1"], metrics={"val/acc_best": 0.8})
    (job / name).write_text(text + "\n")
    read = read_job(job)
    assert read.status == "missing"
    assert read.error is not None and read.error.startswith(f"{name} unreadable: "), read.error
    assert read.metric("val/acc_best") is None and all("=" in o for o in read.overrides)


def test_a_job_with_damaged_overrides_leaves_the_shared_ones_out_of_the_other_labels(tmp_path: Path) -> None:
    # Read as "no overrides", it shared none with the others, and every label repeated data=synthetic.
    for n, lr in enumerate(("0.1", "0.01", "0.001")):
        make_job(tmp_path, n, ["data=synthetic", f"optimizer.lr={lr}"], metrics={"val/acc_best": 0.8 + n / 100})
    (tmp_path / "2" / ".hydra" / "overrides.yaml").write_text("{{{ not yaml\n")
    board = lb.build(tmp_path)
    assert board.fixed == ("data=synthetic",)
    assert [lb.label(r) for r in board.rows] == ["optimizer.lr=0.01", "optimizer.lr=0.1", "(overrides unreadable)"]


def test_cli_ranks_the_good_jobs_of_a_sweep_with_corrupt_ones(tmp_path: Path) -> None:
    make_job(tmp_path, 0, ["optimizer.lr=0.1"], metrics={"val/acc_best": 0.8})
    for n, (name, text) in enumerate(CORRUPT_FILES, 1):
        job = make_job(tmp_path, n, [f"optimizer.lr={n}"], metrics={"val/acc_best": 0.9})
        (job / name).write_text(text + "\n")
    proc = run(["-m", "mlplab.sweeps", str(tmp_path)], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    good, *broken = list(csv.DictReader((tmp_path / "leaderboard.csv").open()))
    assert (good["rank"], good["setting"], good["mean"]) == ("1", "optimizer.lr=0.1", "0.8")
    assert broken and all(r["rank"] == "" and r["status"] == "missing" for r in broken)
    assert all(r["error"].startswith(("summary.json unreadable: ", ".hydra/overrides.yaml unreadable: "))
               for r in broken)
    # Every job is listed, and none under a setting made of a string's characters.
    assert sorted(int(d) for r in broken for d in r["run_dirs"].split(";")) == list(range(1, len(CORRUPT_FILES) + 1))
    assert not {"a", "b", "c"} & {o for r in broken for o in r["setting"].split()}
    assert (tmp_path / "leaderboard.md").is_file() and (tmp_path / "leaderboard.png").is_file()


def test_cli_refuses_a_folder_above_sweeps_and_counts_jobs_not_started(tmp_path: Path) -> None:
    # outputs/ or a date folder: every job below was merged into one ranking, written there.
    for name in ("10-00-00", "11-00-00"):
        make_job(tmp_path / name, 0, ["optimizer.lr=0.1"], metrics={"val/acc_best": 0.8})
    proc = run(["-m", "mlplab.sweeps", str(tmp_path)], timeout=120)
    assert proc.returncode == 1, explain(proc)
    assert proc.stderr == f"error: {tmp_path}: holds the jobs of 2 sweeps below it, not one sweep's; give one, " \
                          f"e.g. {tmp_path / '11-00-00'}\n"
    assert not list(tmp_path.glob("leaderboard.*"))
    # A day of single runs (outputs/runs/<date>): ranked as one sweep, unrelated data and all.
    day = tmp_path.parent / f"{tmp_path.name}_runs"
    for name, mode in (("12-00-00", "RUN"), ("12-05-00", "RUN")):
        job = make_job(day, 0, ["data=synthetic"], metrics={"val/acc_best": 0.8}).rename(day / name)
        (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"mode": mode}}))
    proc = run(["-m", "mlplab.sweeps", str(day)], timeout=120)
    assert proc.returncode == 1, explain(proc)
    assert proc.stderr == (f"error: {day}: holds 2 single runs (python src/train.py without -m), not a sweep's "
                           "jobs; python -m mlplab.curves compares runs\n")
    assert not list(day.glob("leaderboard.*"))
    # A grid of 2 × 2 stopped after its first job started (Ctrl-C): the two never started are counted.
    sweep = tmp_path / "10-00-00"
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None},
        "overrides": {"task": ["optimizer.lr=0.1,0.01", "seed=1,2"]}}}))
    make_job(sweep, 1, ["optimizer.lr=0.1", "seed=2"], status=None)
    proc = run(["-m", "mlplab.sweeps", str(sweep)], timeout=120)
    assert proc.returncode == 0, explain(proc)
    assert "2 jobs: 1 completed, 1 missing; 2 more planned, not started" in proc.stdout
    # Optuna writes no multirun.yaml (the check that wanted one refused every Optuna sweep): its
    # trials' own hydra.yaml say how many there will be.
    study = tmp_path / "12-00-00"
    for n in range(2):
        job = make_job(study, n, [f"optimizer.lr=0.{n + 1}"], metrics={"val/acc_best": 0.8})
        (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"sweeper": {
            "_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper", "n_trials": 5}}}))
    proc = run(["-m", "mlplab.sweeps", str(study)], timeout=120)
    assert proc.returncode == 0 and "2 jobs: 2 completed; 3 more planned, not started" in proc.stdout, explain(proc)


def test_cli_ranks_an_optuna_study_after_one_trial_was_resumed(tmp_path: Path) -> None:
    # resume=TRIAL rewrites the trial's hydra.yaml as a single run of its own .hydra/config.yaml
    # (RUN mode, Hydra's basic sweeper): the study was refused as "1 single run", and the trials
    # not started yet went uncounted.
    optuna = {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper", "n_trials": 5}
    for n in range(2):
        job = make_job(tmp_path, n, [f"optimizer.lr=0.{n + 1}"], metrics={"val/acc_best": 0.8 + n / 100})
        hydra: dict[str, Any] = {"mode": "MULTIRUN", "sweeper": optuna}
        if n == 0:
            hydra = {"mode": "RUN", "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                                                "params": None},
                     "overrides": {"task": [f"ckpt_path={job}/checkpoints/last.ckpt", "trainer.max_epochs=2"]},
                     "runtime": {"config_sources": [{"path": "hydra.conf", "schema": "pkg", "provider": "hydra"},
                                                    {"path": str(job / ".hydra"), "schema": "file", "provider": "main"}]}}
        (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    proc = run(["-m", "mlplab.sweeps", str(tmp_path), "--no-plot"], timeout=120)
    assert proc.returncode == 0, explain(proc)
    assert "2 jobs: 2 completed; 3 more planned, not started" in proc.stdout, explain(proc)


def test_a_setting_with_a_diverged_seed_is_not_ranked_above_one_whose_seeds_all_completed(tmp_path: Path) -> None:
    # lr=1.0 diverged on seed 3; on its two surviving seeds it averaged more, and was `best`.
    runs = (("0.01", 1, "completed", 0.90), ("0.01", 2, "completed", 0.90), ("0.01", 3, "completed", 0.90),
            ("1.0", 1, "completed", 0.95), ("1.0", 2, "completed", 0.95), ("1.0", 3, "diverged", None))
    for n, (lr, seed, status, acc) in enumerate(runs):
        make_job(tmp_path, n, [f"optimizer.lr={lr}", f"seed={seed}"], status=status,
                 metrics={"val/acc_best": acc} if acc else None)
    board = lb.build(tmp_path)
    assert [(r.setting, r.rank) for r in board.rows] == [(("optimizer.lr=0.01",), 1), (("optimizer.lr=1.0",), 2)]
    assert board.rows[1].status == "2 completed, 1 diverged"
    assert lb.best_lines(board)[0] == "best: optimizer.lr=0.01: val/acc_best 0.9000 ± 0.0000 (n=3); its best seed, 1, below"


def test_a_swept_optimized_metric_in_a_tie_ranks_by_the_first_jobs_in_every_process(tmp_path: Path) -> None:
    # max(set(names), key=names.count): the sweep's own report and a rebuilt one could rank by
    # different metrics, as string hashing differs between processes.
    make_job(tmp_path, 0, ["optimized_metric=val/loss"], metric="val/loss", metrics={"val/loss": 0.5})
    make_job(tmp_path, 1, ["optimized_metric=val/acc_best"], metrics={"val/acc_best": 0.9})
    code = "import sys; from mlplab.sweeps.leaderboard import build; print(build(sys.argv[1]).metric)"
    seen = {subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONHASHSEED": str(h)}).stdout.strip() for h in range(4)}
    assert seen == {"val/loss"}
