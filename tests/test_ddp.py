"""DDP with 2 CPU processes on the device-resident data path: same result as one process with
the same total batch size, files written once."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATA, ROOT, have_data

COMMON = ["trainer.max_epochs=1", "trainer.limit_train_batches=15", "model.dropout=0.0",
          "callbacks.progress_bar.refresh_rate=0", "trainer.accelerator=cpu", "seed=3"]


RANK_VARS = ("LOCAL_RANK", "NODE_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _env() -> dict[str, str]:
    # A rank variable left by an in-process DDP test would make Lightning start no second rank.
    return {**{k: v for k, v in os.environ.items() if k not in RANK_VARS}, "MLPLAB_DATA_DIR": str(DATA)}


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = _env()
    return subprocess.run([sys.executable, "src/train.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not have_data("mnist"), reason="MNIST not provisioned (make data)")
def test_two_process_ddp_matches_single_process_of_same_total_batch(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    r1 = _run([*COMMON, "trainer.devices=1", "data.batch_size=128", f"hydra.run.dir={single}"])
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = _run([*COMMON, "trainer=ddp", "trainer.devices=2", "data.batch_size=64", f"hydra.run.dir={ddp}"])
    assert r2.returncode == 0, r2.stderr[-2000:]
    a = json.loads((single / "summary.json").read_text())["metrics"]
    b = json.loads((ddp / "summary.json").read_text())["metrics"]
    assert a["test/acc"] > 0.9
    assert abs(a["test/acc"] - b["test/acc"]) <= 0.005
    # Rank 0 alone writes checkpoints and event files.
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert len(list((ddp / "tensorboard").glob("events.out.tfevents.*"))) >= 1
    assert r2.stdout.count("== mlplab run summary ==") == 1
    # val/ and test/ are all-reduced by torchmetrics; Lightning's advice to sync them is noise.
    assert "sync_dist" not in r2.stderr


def test_ddp_inside_a_basic_multirun_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    r = _run(["-m", "data=synthetic", "trainer=ddp", "trainer.accelerator=cpu", "seed=1,2",
              f"hydra.sweep.dir={tmp_path / 'sweep'}", "callbacks.progress_bar.refresh_rate=0"])
    assert r.returncode != 0
    assert "trainer.strategy='ddp'" in r.stderr and "11300" in r.stderr


def test_several_devices_under_strategy_auto_in_a_multirun_is_refused(tmp_path: Path) -> None:
    # `auto` with 2 devices is DDP too; before the check it relaunched the whole sweep per rank.
    r = _run(["-m", "data=synthetic", "trainer.accelerator=cpu", "trainer.devices=2", "seed=1,2",
              f"hydra.sweep.dir={tmp_path / 'sweep'}", "callbacks.progress_bar.refresh_rate=0"])
    assert r.returncode != 0
    assert "trainer.devices=2" in r.stderr and "11300" in r.stderr
    assert not (tmp_path / "sweep" / "0").exists()


def test_only_slurm_is_exempt_from_the_relaunch_check() -> None:
    from mlplab.config import launcher_relaunches

    slurm = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    local = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    assert not launcher_relaunches(slurm)
    assert launcher_relaunches(local) and launcher_relaunches("hydra._internal.core_plugins.basic_launcher.BasicLauncher")


def test_the_built_trainer_is_checked_for_a_relaunching_launcher() -> None:
    # `devices: auto` on a multi-GPU machine: only the built trainer knows it becomes DDP.
    import lightning as L

    from mlplab.config import ConfigError
    from mlplab.training import refuse_relaunch

    refuse_relaunch(L.Trainer(accelerator="cpu", devices=1, logger=False))
    with pytest.raises(ConfigError, match="11300"):
        refuse_relaunch(L.Trainer(accelerator="cpu", devices=2, strategy="auto", logger=False))


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_fork", "ddp_notebook_find_unused_parameters_true"])
@pytest.mark.parametrize("multirun", [False, True])
def test_strategies_that_start_ranks_as_new_processes_are_refused(tmp_path: Path, strategy: str,
                                                                  multirun: bool) -> None:
    # Their ranks send back weights and metrics only: the summary said "epochs run 0".
    from forkserver import run_python

    args = ["src/train.py", *(["-m", "seed=1,2"] if multirun else []), "data=synthetic", "trainer=ddp",
            f"trainer.strategy={strategy}", "trainer.accelerator=cpu", "trainer.max_epochs=1",
            f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    r = run_python(args, env=_env())
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and f"trainer.strategy='{strategy}'" in lines[0] and "trainer=ddp" in lines[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


def test_the_built_trainer_is_checked_for_ranks_started_as_new_processes() -> None:
    # A Strategy object (or a name config.validate does not know) is caught once built.
    import lightning as L
    from lightning.pytorch.strategies import DDPStrategy

    from mlplab.config import ConfigError
    from mlplab.training import refuse_spawned_ranks

    refuse_spawned_ranks(L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False))
    refuse_spawned_ranks(L.Trainer(accelerator="cpu", devices=1, logger=False))
    with pytest.raises(ConfigError, match="start method fork.*trainer=ddp"):
        refuse_spawned_ranks(L.Trainer(accelerator="cpu", devices=2, logger=False,
                                       strategy=DDPStrategy(start_method="fork")))


@pytest.fixture
def one_rank_ddp(make_cfg, monkeypatch):
    """`trainer=ddp` on one CPU process, in this process; the environment Lightning's launcher
    sets and any process group left open are undone afterwards."""
    import torch.distributed as dist

    for k in RANK_VARS:
        monkeypatch.delenv(k, raising=False)
    saved = dict(os.environ)
    common = ["data=synthetic", "trainer=ddp", "trainer.devices=1", "trainer.accelerator=cpu",
              "callbacks.progress_bar.refresh_rate=0", "report=false"]
    yield lambda overrides: make_cfg([*common, *overrides])
    if dist.is_initialized():
        dist.destroy_process_group()
    os.environ.clear()
    os.environ.update(saved)


def test_a_ddp_run_closes_its_process_group_before_it_exits(one_rank_ddp, tmp_path: Path) -> None:
    # Lightning closes only NCCL groups at exit; a gloo group left to interpreter shutdown
    # sometimes aborted rank 1 ("terminate called without an active exception"), and the
    # launcher then killed rank 0 with SIGKILL after a finished run (a red CI run).
    import torch.distributed as dist

    from mlplab.training import train

    train(one_rank_ddp(["trainer.max_epochs=1"]))
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"
    assert not dist.is_initialized()


def test_a_refused_ddp_resume_closes_its_process_group_too(one_rank_ddp, tmp_path: Path) -> None:
    # The launcher's SIGKILL would land while rank 0 puts the refused run's files back.
    import torch.distributed as dist

    from mlplab.config import ResumeRefused
    from mlplab.training import train

    # A one-cycle schedule's new length is refused once Lightning has restored the checkpoint,
    # with the process group up.
    train(one_rank_ddp(["scheduler=onecycle", "trainer.max_epochs=1"]))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    with pytest.raises(ResumeRefused, match="cannot change the length of its schedule"):
        train(one_rank_ddp(["scheduler=onecycle", "trainer.max_epochs=2", f"ckpt_path={last}"]))
    assert not dist.is_initialized()


DIVERGE_ON_RANK_1 = """
import sys

import lightning as L
import torch

from mlplab.callbacks.guards import FiniteLossGuard, NonFiniteLossError


class M(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)

    def training_step(self, batch, i):
        loss = self.lin(batch[0]).pow(2).mean()
        return loss * float("nan") if self.global_rank == 1 and i == 3 else loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(256, 2)), batch_size=4)
trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    callbacks=[FiniteLossGuard()])
try:
    trainer.fit(M(), data)
except NonFiniteLossError as err:
    print(f"rank {trainer.global_rank} stopped at step {trainer.global_step}: {err}", flush=True)
    torch.distributed.destroy_process_group()
    sys.exit(0)
print(f"rank {trainer.global_rank} went on", flush=True)
"""


def test_a_loss_that_diverges_on_one_rank_stops_every_rank_at_the_same_step(tmp_path: Path) -> None:
    # Rank 0's own loss was finite: it went on into the next gradient all-reduce and waited
    # there for rank 1 (gloo's timeout is 30 minutes), and no summary was written.
    script = tmp_path / "diverge.py"
    script.write_text(DIVERGE_ON_RANK_1)
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    # The two ranks share the pipe, so their lines may interleave.
    found = sorted(re.findall(r"rank (\d) (?:stopped at step (\d+): non-finite training loss "
                              r"(on another DDP rank|\(nan\))|went on)", r.stdout))
    assert found == [("0", "4", "on another DDP rank"), ("1", "4", "(nan)")], r.stdout


def test_a_rank_other_than_0_leaves_the_run_to_rank_0(make_cfg, tmp_path: Path, monkeypatch, capsys) -> None:
    # A refused resume is raised on every rank: rank 1 marked the finished run `failed`,
    # racing rank 0 putting it back, and printed the error line a second time.
    from mlplab.cli import guarded
    from mlplab.config import ResumeRefused

    cfg = make_cfg([])
    summary = tmp_path / "run" / "summary.json"
    summary.write_text('{"status": "completed"}\n')
    monkeypatch.setenv("LOCAL_RANK", "1")

    def refuse(_: object) -> None:
        raise ResumeRefused("ckpt_path=x: nothing to train")

    with pytest.raises(SystemExit) as exit_:
        guarded(refuse, cfg)
    assert exit_.value.code == 1
    assert json.loads(summary.read_text()) == {"status": "completed"}
    assert capsys.readouterr().err == ""


def test_a_diverged_ddp_run_is_reported_once_and_recorded(tmp_path: Path) -> None:
    # Every rank logged the error line, so the console showed it once per rank.
    run_dir = tmp_path / "run"
    r = _run(["data=synthetic", "trainer=ddp", "trainer.devices=2", "optimizer=sgd", "optimizer.lr=1e30",
              "trainer.max_epochs=1", "callbacks.progress_bar.refresh_rate=0", f"hydra.run.dir={run_dir}"])
    assert r.returncode == 1, r.stderr[-2000:]
    out = r.stdout + r.stderr
    assert out.count("[mlplab.training][ERROR]") == 1, out[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "diverged"


@pytest.mark.skipif(not have_data("mnist"), reason="MNIST not provisioned (make data)")
def test_a_damaged_data_file_under_ddp_is_one_line_and_no_run_folder(tmp_path: Path) -> None:
    # Found only after rank 1 had started: a 37-line traceback from it, and a failed run folder.
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (DATA / "MNIST" / "raw").iterdir():
        os.symlink(f, raw / f.name)
    (raw / "t10k-images-idx3-ubyte").unlink()
    (raw / "t10k-images-idx3-ubyte").write_bytes((DATA / "MNIST" / "raw" / "t10k-images-idx3-ubyte").read_bytes()[:4000])
    r = _run([*COMMON, "trainer=ddp", "trainer.devices=2", f"paths.data_dir={tmp_path / 'data'}",
              f"hydra.run.dir={tmp_path / 'run'}"])
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.stderr.strip().splitlines() == [
        f"error: {raw / 't10k-images-idx3-ubyte'}: truncated: 4000 bytes, expected 7840016; "
        f"run `make data DATA={tmp_path / 'data'}` to re-provision it"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("group", [True, False])
def test_sigterm_under_ddp_stops_every_rank_and_saves_as_ctrl_c_does(tmp_path: Path, group: bool) -> None:
    # Sent to the process group, both ranks hung for good: Lightning's handler broadcasts from
    # inside itself and signals rank 1 again. Sent to rank 0 alone, nothing was saved.
    import signal
    import time

    import torch

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "src/train.py", "data=synthetic", "data.n_samples=400000",
                             "data.val_size=1000", "data.test_size=1000", "model.hidden_sizes=[32]", "trainer=ddp",
                             "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=20",
                             "callbacks.progress_bar.refresh_rate=0", "report=false", f"hydra.run.dir={out}"],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 180
    while not (out / "train_ddp_process_1.log").exists() or not (out / "tensorboard").is_dir():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    time.sleep(3.0)  # inside epoch 0 on both ranks
    (os.killpg if group else os.kill)(proc.pid, signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, err[-3000:]
    assert "Interrupted (SIGTERM) during epoch 0" in err and f"Resume with: python src/train.py resume={out}" in err
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] > 0 and last["epoch"] == 0


class SigtermInTest:
    """`+callbacks.sigterm._target_=test_ddp.SigtermInTest`: rank 0 signals the process group in
    the test's first batch (a Lightning callback, built lazily so importing this module stays cheap)."""

    def __new__(cls):  # noqa: ANN204
        import signal

        import lightning as L

        class _Cb(L.Callback):
            def on_test_batch_end(self, trainer, *args) -> None:  # noqa: ANN001, ANN002
                if trainer.global_rank == 0 and not getattr(self, "sent", False):
                    self.sent = True
                    os.killpg(os.getpgid(0), signal.SIGTERM)

        return _Cb()


def test_sigterm_in_the_test_under_ddp_finishes_the_summary_then_exits_1(tmp_path: Path) -> None:
    # Lightning's handler, still in charge during the test, left both ranks waiting for good.
    out = tmp_path / "run"
    env = {**_env(), "PYTHONPATH": str(ROOT / "tests")}
    proc = subprocess.Popen([sys.executable, "src/train.py", "data=synthetic", "model.hidden_sizes=[16]", "trainer=ddp",
                             "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=1", "report=false",
                             "callbacks.progress_bar.refresh_rate=0", "+callbacks.sigterm._target_=test_ddp.SigtermInTest",
                             f"hydra.run.dir={out}"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    assert proc.returncode == 1, err[-3000:]
    assert "Stopped by SIGTERM after training had finished; the test and summary.json were completed first" in err
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
