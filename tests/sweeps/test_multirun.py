"""Real multiruns of src/train.py in subprocesses, on tiny synthetic problems: the leaderboard
at the end, failure isolation and the exit code, the parallel and cluster launchers, Optuna,
refusal before any job starts, and what TensorBoard's HParams tab reads from the event files."""

from __future__ import annotations

import shlex
import statistics
from pathlib import Path

import pytest
import yaml
from sweep_support import FAST, TRAIN, explain, leaderboard, multirun, run, summary

GRID = ["sweep=lr_dropout", "optimizer.lr=0.003,0.03", "model.dropout=0.0,0.3", "seed=1,2"]


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The named grid lr_dropout, both axes replaced from the command line and seeds added:
    2 × 2 settings × 2 seeds = 8 jobs (not lr_dropout's 9 × 2)."""
    sweep = tmp_path_factory.mktemp("grid") / "sweep"
    proc = multirun(sweep, *GRID)
    assert proc.returncode == 0, explain(proc)
    return sweep, proc.stdout


def test_grid_with_seeds_gives_one_row_per_setting_with_mean_and_sample_std(grid_sweep: tuple[Path, str]) -> None:
    sweep, stdout = grid_sweep
    rows = leaderboard(sweep)
    assert len(rows) == 4 and all(r["n"] == "2" and r["jobs"] == "2" for r in rows)
    assert {(r["optimizer.lr"], r["model.dropout"]) for r in rows} == {
        (lr, d) for lr in ("0.003", "0.03") for d in ("0.0", "0.3")}
    for r in rows:
        jobs = [sweep / d for d in r["run_dirs"].split(";")]
        values = [summary(j)["metrics"]["val/acc_best"] for j in jobs]
        tests = [summary(j)["metrics"]["test/acc"] for j in jobs]
        assert [float(v) for v in r["values"].split(";")] == values
        assert float(r["mean"]) == pytest.approx(statistics.fmean(values), abs=1e-12)
        assert float(r["std"]) == pytest.approx(statistics.stdev(values), abs=1e-12)  # ddof=1
        assert float(r["test_acc_mean"]) == pytest.approx(statistics.fmean(tests), abs=1e-12)
        assert sorted(r["seeds"].split(";")) == ["1", "2"]
        assert r["status"] == "completed"
    means = [float(r["mean"]) for r in rows]
    assert means == sorted(means, reverse=True) and rows[0]["rank"] == "1"
    assert "== sweep leaderboard" in stdout and "± " in stdout
    assert (sweep / "leaderboard.md").is_file()
    assert (sweep / "leaderboard.png").read_bytes()[:4] == b"\x89PNG"


def test_best_command_is_printed_and_reruns(grid_sweep: tuple[Path, str], tmp_path: Path) -> None:
    sweep, stdout = grid_sweep
    best = leaderboard(sweep)[0]
    cmd = next(line.split("reproduce: ", 1)[1] for line in stdout.splitlines() if line.startswith("reproduce: "))
    assert cmd == best["command"] and cmd in (sweep / "leaderboard.md").read_text()
    argv = shlex.split(cmd)
    assert argv[:2] == ["python", "src/train.py"] and "sweep=lr_dropout" not in argv
    # The job with the best seed of the best setting, exactly as it ran.
    job = next(sweep / d for d in best["run_dirs"].split(";")
               if summary(sweep / d)["metrics"]["val/acc_best"] == max(map(float, best["values"].split(";"))))
    assert f"seed={dict(a.split('=', 1) for a in argv[2:])['seed']}" in (job / ".hydra" / "overrides.yaml").read_text()
    proc = run([argv[1], *argv[2:], "trainer.max_epochs=1", f"hydra.run.dir={tmp_path}/rerun"])
    assert proc.returncode == 0, explain(proc)
    assert summary(tmp_path / "rerun")["status"] == "completed"


def test_tensorboard_hparams_tab_finds_every_run_with_its_metrics(grid_sweep: tuple[Path, str]) -> None:
    """Through TensorBoard's own event loading and HParams backend, as the tab would."""
    from tensorboard import context
    from tensorboard.backend.event_processing import plugin_event_multiplexer
    from tensorboard.backend.event_processing.data_provider import MultiplexerDataProvider
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import (
        api_pb2,
        backend_context,
        get_experiment,
        list_session_groups,
    )

    sweep, _ = grid_sweep
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(sweep))
    mux.Reload()
    tb = base_plugin.TBContext(logdir=str(sweep), multiplexer=mux,
                               data_provider=MultiplexerDataProvider(mux, str(sweep)))
    backend, ctx = backend_context.Context(tb), context.RequestContext()
    experiment = get_experiment.Handler(ctx, backend, "", api_pb2.GetExperimentRequest()).run()
    hparams = {h.name for h in experiment.hparam_infos}
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"optimizer.lr", "model.dropout", "trainer.precision", "seed"} <= hparams
    assert {"hparams/val_acc_best", "hparams/test_acc", "hparams/best_val_loss"} <= metrics

    request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=100)
    request.allowed_statuses.extend([api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS])
    for m in experiment.metric_infos:
        request.col_params.add(metric=m.name)
    for h in experiment.hparam_infos:
        request.col_params.add(hparam=h.name)
    groups = list_session_groups.Handler(ctx, backend, "", request).run().session_groups
    sessions = {s.name: s for g in groups for s in g.sessions}
    assert len(sessions) == 8  # every job of the sweep, each with real (not -1) results
    for name, session in sessions.items():
        job = sweep / name.split("/")[0]
        values = {m.name.tag: m.value for m in session.metric_values}
        expected = summary(job)["metrics"]
        assert values["hparams/val_acc_best"] == pytest.approx(expected["val/acc_best"], abs=1e-6)
        assert values["hparams/test_acc"] == pytest.approx(expected["test/acc"], abs=1e-6)
        lr = next(g.hparams["optimizer.lr"].number_value for g in groups if session in g.sessions)
        assert f"optimizer.lr={lr:g}" in (job / ".hydra" / "overrides.yaml").read_text()


def test_failing_jobs_are_isolated_listed_and_the_sweep_exits_0(tmp_path: Path) -> None:
    # lr=1e6 diverges (non-finite loss); a missing checkpoint is refused before fitting.
    sweep = tmp_path / "sweep"
    proc = multirun(sweep, "optimizer=sgd", "optimizer.lr=0.05,1e6", "ckpt_path=null,/nonexistent/x.ckpt")
    assert proc.returncode == 0, explain(proc)
    rows = {r["setting"]: r for r in leaderboard(sweep)}
    ok = rows["optimizer.lr=0.05 ckpt_path=null"]
    assert ok["rank"] == "1" and ok["status"] == "completed"
    diverged = rows["optimizer.lr=1000000.0 ckpt_path=null"]
    assert diverged["status"] == "diverged" and "non-finite training loss" in diverged["error"]
    for lr in ("0.05", "1000000.0"):
        row = rows[f"optimizer.lr={lr} ckpt_path=/nonexistent/x.ckpt"]
        assert row["status"] == "failed" and row["rank"] == ""
        assert row["error"] == "CheckpointError: ckpt_path=/nonexistent/x.ckpt: no such file"
    assert next(iter(rows.values())) is ok  # failures sort last
    assert "failed: CheckpointError" in (sweep / "leaderboard.md").read_text()


def test_a_sweep_where_every_job_fails_exits_non_zero_with_its_report(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = multirun(sweep, "optimizer=sgd", "optimizer.lr=1e6,1e7")
    assert proc.returncode != 0, explain(proc)
    assert "none of the 2 jobs of this sweep completed" in proc.stderr
    assert [r["status"] for r in leaderboard(sweep)] == ["diverged", "diverged"]


def test_unknown_key_or_invalid_value_fails_before_any_job_starts(tmp_path: Path) -> None:
    for sweep_args, named in ((["model.dropuot=0.1,0.2"], "model.dropuot"),
                              (["optimizer.lr=0.01,0.1", "model.dropout=0.2,1.5"], "model.dropout=1.5")):
        sweep = tmp_path / named.replace("=", "_")
        proc = multirun(sweep, *sweep_args)
        assert proc.returncode == 1, explain(proc)
        assert proc.stderr.startswith("error: sweep not started: ") and named in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not sweep.exists()  # no sweep dir, so no job dir


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_parallel_and_cluster_launchers_run_a_sweep_with_isolated_failure(launcher: str, tmp_path: Path) -> None:
    # joblib: worker processes; submitit_local: the task pickled to `python -m submitit...`
    # subprocesses, the callback in this parent. One job of the two diverges in each.
    sweep = tmp_path / "sweep"
    proc = multirun(sweep, f"hydra/launcher={launcher}", "optimizer=sgd", "optimizer.lr=0.05,1e6")
    assert proc.returncode == 0, explain(proc)
    assert [(r["setting"], r["status"]) for r in leaderboard(sweep)] == [
        ("optimizer.lr=0.05", "completed"), ("optimizer.lr=1000000.0", "diverged")]
    # Hydra's warning about conf/hydra/launcher/joblib.yaml: 4 lines in the parent and each worker.
    assert "validated against ConfigStore schema" not in proc.stdout + proc.stderr


def test_optuna_sweep_runs_and_gets_a_leaderboard(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    # Without FAST's model.hidden_sizes=[16]: applied after the sampled widths, it trained every
    # trial at [16] while the leaderboard named the sampled ones (preflight refuses it now).
    fast = [a for a in FAST if not a.startswith("model.hidden_sizes")]
    proc = run([str(TRAIN), "-m", *fast, "sweep=optuna_mlp", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}"],
               timeout=240)
    assert proc.returncode == 0, explain(proc)
    rows = leaderboard(sweep)
    assert len(rows) == 2 and all(r["status"] == "completed" for r in rows)
    assert all(r["optimizer.lr"] and r["model.hidden_sizes.0"] for r in rows)
    # Optuna's best trial is the leaderboard's first row: both read what train() returned.
    optuna = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert optuna["best_value"] == pytest.approx(float(rows[0]["mean"]), abs=1e-9)
    assert {f"{k}={v}" for k, v in optuna["best_params"].items()} <= set(rows[0]["command"].split())


def test_ctrl_c_stops_the_sweep_and_says_how_to_rank_what_finished(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from sweep_support import ROOT

    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, str(TRAIN), "-m", *FAST, "data.n_samples=400000", "trainer.max_epochs=5",
                             "seed=1,2", f"hydra.sweep.dir={sweep}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while not (sweep / "0" / "tensorboard").is_dir():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in err, err[-3000:]
    assert f"sweep stopped: python -m mlplab.sweeps {sweep} ranks the jobs that finished" in err
    report = run(["-m", "mlplab.sweeps", str(sweep)], timeout=120)
    assert report.returncode == 0 and "1 job: 1 missing; 1 more planned, not started" in report.stdout, explain(report)


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_a_sweep_whose_default_folder_is_taken_runs_its_jobs_in_the_one_it_claimed(launcher: str,
                                                                                   tmp_path: Path) -> None:
    # Two sweeps started in the same second: the second claimed `<time>-2` for its multirun.yaml,
    # but its jobs were composed again from `${now:...}` and overwrote the first one's jobs.
    import datetime
    import json

    now = datetime.datetime.now()
    taken = []
    for s in range(60):  # every folder the sweep could start in is another sweep's
        t = now + datetime.timedelta(seconds=s)
        job = tmp_path / "multirun" / t.strftime("%Y-%m-%d") / t.strftime("%H-%M-%S") / "0"
        job.mkdir(parents=True)
        (job / "summary.json").write_text(json.dumps({"status": "completed", "theirs": True}))
        taken.append(job)
    proc = run([str(TRAIN), "-m", *FAST, f"hydra/launcher={launcher}", f"paths.output_root={tmp_path}", "seed=1,2"])
    assert proc.returncode == 0, explain(proc)
    assert all(json.loads((job / "summary.json").read_text()).get("theirs") for job in taken)
    claimed = [d for d in (tmp_path / "multirun").glob("*/*-2") if d.is_dir()]
    assert len(claimed) == 1, claimed
    assert [summary(claimed[0] / j)["status"] for j in ("0", "1")] == ["completed", "completed"]
    rows = leaderboard(claimed[0])
    assert len(rows) == 1 and rows[0]["n"] == "2", rows  # its own two seeds, none of the other sweeps' jobs
