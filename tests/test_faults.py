"""Faults caused for real: bad data files, an unwritable data directory, a full disk."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import DATA, FAST, have_data
from forkserver import run_python
from mlplab.training import train

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _train_cli(data_dir: Path, run_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLPLAB_DATA_DIR": str(data_dir)}
    return run_python(["src/train.py", f"hydra.run.dir={run_dir}", "trainer.max_epochs=1",
                       "callbacks.progress_bar.refresh_rate=0"], env=env, timeout=300)


def _copy_mnist(dst: Path) -> Path:
    raw = dst / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FILES:
        os.symlink(DATA / "MNIST" / "raw" / name, raw / name)
    return raw


@pytest.mark.skipif(not have_data("mnist"), reason="MNIST not provisioned (make data)")
@pytest.mark.parametrize("fault, message", [("truncate", "truncated"), ("corrupt", "md5"), ("magic", "magic")])
def test_bad_idx_file_is_refused_before_training(tmp_path: Path, fault: str, message: str) -> None:
    raw = _copy_mnist(tmp_path / "data")
    target = raw / "t10k-images-idx3-ubyte"
    data = bytearray(target.read_bytes())
    target.unlink()
    if fault == "truncate":
        data = data[: len(data) // 2]
    elif fault == "corrupt":
        data[5000] ^= 0xFF
    else:
        data[3] = 0x09
    target.write_bytes(bytes(data))
    r = _train_cli(tmp_path / "data", tmp_path / "run")
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert "t10k-images-idx3-ubyte" in last and message in last and "make data" in last
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_unwritable_data_directory_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = _train_cli(blocker / "data", tmp_path / "run")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "a-file" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()


class _DiskFullFrom(L.Callback):
    """From `epoch` on, every checkpoint write fails part-way, the way a full disk does."""

    def __init__(self, epoch: int, monkeypatch: pytest.MonkeyPatch) -> None:
        self.epoch, self.mp = epoch, monkeypatch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:

            def full(obj: object, f: object, *args: object, **kwargs: object) -> None:
                if hasattr(f, "write"):
                    f.write(b"PK\x03\x04 the first bytes of a checkpoint")  # a partial file
                raise OSError(errno.ENOSPC, "No space left on device")

            self.mp.setattr(torch, "save", full)


def test_disk_full_while_checkpointing_fails_loudly_and_keeps_good_checkpoints(
    make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg(["data=synthetic", "model.hidden_sizes=[32]", *FAST, "trainer.max_epochs=4",
                    "callbacks.early_stopping.patience=100"])
    import mlplab.training as training

    real_build = training.build

    def build_with_fault(c):
        dm, model, trainer = real_build(c)
        trainer.callbacks.append(_DiskFullFrom(2, monkeypatch))
        return dm, model, trainer

    monkeypatch.setattr(training, "build", build_with_fault)
    with pytest.raises(OSError, match="No space left"):
        train(cfg)
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.ckpt", "last.ckpt"]  # no partial files
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["epoch"] == 1
    torch.load(ckpts / "best.ckpt", weights_only=True)
    shutil.rmtree(tmp_path / "run")
