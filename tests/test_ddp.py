"""DDP with 2 CPU processes on the device-resident data path: same result as one process with
the same total batch size, files written once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATA, ROOT, have_data

COMMON = ["trainer.max_epochs=1", "trainer.limit_train_batches=15", "model.dropout=0.0",
          "callbacks.progress_bar.refresh_rate=0", "trainer.accelerator=cpu", "seed=3"]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLPLAB_DATA_DIR": str(DATA)}
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


def test_a_ddp_run_closes_its_process_group_before_it_exits(make_cfg, tmp_path: Path) -> None:
    # Lightning closes only NCCL groups at exit; a gloo group left to interpreter shutdown
    # sometimes aborted rank 1 ("terminate called without an active exception"), and the
    # launcher then killed rank 0 with SIGKILL after a finished run.
    import torch.distributed as dist

    from mlplab.training import train

    cfg = make_cfg(["data=synthetic", "trainer=ddp", "trainer.devices=1", "trainer.accelerator=cpu",
                    "trainer.max_epochs=1", "callbacks.progress_bar.refresh_rate=0"])
    try:
        train(cfg)
        assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():  # keep the rest of the session free of it
            dist.destroy_process_group()
