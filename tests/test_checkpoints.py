"""Bad checkpoints are refused with one clear line, and a hostile one never runs code.

Checkpoints here are written the way train() writes them (a Classifier's state dict, its
arguments plus `data` and `class_names` as plain types) for synthetic data, so eval.py can
run on them without any dataset on disk.
"""

from __future__ import annotations

import os
import pathlib
import pickle
import subprocess
from pathlib import Path

import pytest
import torch

from forkserver import run_python
from mlplab import checkpoints
from mlplab.checkpoints import CheckpointError
from mlplab.models.classifier import Classifier

ROOT = Path(__file__).resolve().parents[1]
N_FEATURES, N_CLASSES = 20, 3


def write_checkpoint(path: Path, hidden: tuple[int, ...] = (16,), weights_hidden: tuple[int, ...] | None = None) -> Path:
    """An mlplab checkpoint; `weights_hidden` stores weights of another architecture than
    the hyperparameters describe."""
    hp = {"in_features": N_FEATURES, "n_classes": N_CLASSES, "hidden_sizes": list(hidden), "activation": "relu",
          "dropout": 0.0, "loss": "cross_entropy", "optimizer": None, "scheduler": None}
    weights = Classifier(**{**hp, "hidden_sizes": list(weights_hidden or hidden)}).state_dict()
    data = {"_target_": "mlplab.data.synthetic.SyntheticDataModule", "n_samples": 600, "n_features": N_FEATURES,
            "n_classes": N_CLASSES, "kind": "clusters", "separability": 0.5, "val_size": 100, "test_size": 100,
            "batch_size": 64, "eval_batch_size": None, "seed": 0}
    torch.save({"epoch": 0, "global_step": 1, "state_dict": weights,
                "hyper_parameters": {**hp, "data": data, "class_names": ["0", "1", "2"]}}, path)
    return path


class _Touch:
    """Unpickling this creates `marker`: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


class _PathTouch(_Touch):
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return write_checkpoint(tmp_path / "good.ckpt")


def test_good_checkpoint_rebuilds_the_same_model(good: Path) -> None:
    loaded = checkpoints.load(good)
    saved = torch.load(good, weights_only=True)["state_dict"]
    assert all(torch.equal(v, saved[k]) for k, v in loaded.model.state_dict().items())
    assert not loaded.model.training and loaded.class_names == ["0", "1", "2"]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["torch.save", "pickle protocol 2", "pickle default", "Path.touch"])
def test_malicious_pickle_is_refused_and_never_executed(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.ckpt"
    payload = {"state_dict": _PathTouch(marker) if how == "Path.touch" else _Touch(marker)}
    if how in ("torch.save", "Path.touch"):
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2 if how == "pickle protocol 2" else pickle.DEFAULT_PROTOCOL)
    with pytest.raises(CheckpointError, match=r"refused: loading it would import (posix\.system|os\.system|pathlib|getattr)") as err:
        checkpoints.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def _assert_refused(path: Path, pattern: str) -> None:
    with pytest.raises(CheckpointError, match=pattern) as err:
        checkpoints.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_path_and_directory(tmp_path: Path) -> None:
    _assert_refused(tmp_path / "nope.ckpt", "no such file")
    _assert_refused(tmp_path, "is a directory, expected a .ckpt file$")
    # A final fit's run has final.ckpt, no best.ckpt: it was offered no hint.
    (tmp_path / "checkpoints").mkdir()
    write_checkpoint(tmp_path / "checkpoints" / "final.ckpt")
    _assert_refused(tmp_path, f"is a directory, expected a .ckpt file; did you mean {tmp_path}/checkpoints/final.ckpt")
    write_checkpoint(tmp_path / "checkpoints" / "best.ckpt")
    _assert_refused(tmp_path, "did you mean .*/checkpoints/best.ckpt")
    _assert_refused(tmp_path / "checkpoints", "did you mean .*/checkpoints/best.ckpt")


def test_non_checkpoint_files(tmp_path: Path) -> None:
    (tmp_path / "notes.ckpt").write_text("hello world\n")
    _assert_refused(tmp_path / "notes.ckpt", "not a PyTorch checkpoint")
    (tmp_path / "random.ckpt").write_bytes(os.urandom(4096))
    _assert_refused(tmp_path / "random.ckpt", "not a PyTorch checkpoint")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    _assert_refused(tmp_path / "empty.ckpt", "empty file")
    torch.save(torch.zeros(3), tmp_path / "tensor.ckpt")
    _assert_refused(tmp_path / "tensor.ckpt", "not a Lightning checkpoint")
    torch.save({"state_dict": {}}, tmp_path / "bare.ckpt")
    _assert_refused(tmp_path / "bare.ckpt", "no hyper_parameters")


@pytest.mark.parametrize("keep", [3000, 0.5, -30])
def test_truncated_checkpoint(good: Path, tmp_path: Path, keep: float) -> None:
    # torch 2.14 reports most cuts as "OSError: [Errno 22] Invalid argument", which said nothing.
    half = tmp_path / "half.ckpt"
    data = good.read_bytes()
    half.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    _assert_refused(half, r"truncated or corrupted \(the zip archive has no central directory")


def test_other_architecture(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "arch.ckpt", hidden=(16,), weights_hidden=(32,))
    _assert_refused(path, r"weights do not match its architecture \(hidden_sizes=\[16\].*\): "
                          r"net\.net\.0\.weight is \[32, 20\] in the file, \[16, 20\] in the model")


def test_weights_that_went_nan_are_refused(good: Path, tmp_path: Path) -> None:
    # eval.py printed "loss nan, accuracy 0.335000" (every sample called class 0), exit 0.
    ckpt = torch.load(good, weights_only=True)
    ckpt["state_dict"]["net.net.0.weight"][0, 0] = float("nan")
    ckpt["state_dict"]["val_acc_best.max_value"] = torch.tensor(float("-inf"))  # a metric's: fine
    torch.save(ckpt, tmp_path / "nan.ckpt")
    _assert_refused(tmp_path / "nan.ckpt", r"its weights hold NaN or infinite values \(net\.net\.0\.weight\): the run "
                                           r"diverged before this checkpoint was saved")
    ckpt["state_dict"]["net.net.0.weight"][0, 0] = 0.0
    torch.save(ckpt, tmp_path / "fine.ckpt")
    checkpoints.load(tmp_path / "fine.ckpt")


def test_data_target_outside_mlplab_is_never_imported(good: Path) -> None:
    with pytest.raises(CheckpointError, match="'os.system' is not an mlplab datamodule; refused"):
        checkpoints.build_datamodule(good, {"_target_": "os.system", "command": "touch X"})
    with pytest.raises(CheckpointError, match="not an mlplab datamodule"):
        checkpoints.build_datamodule(good, {"_target_": "mlplab.data.sources.provision"})


def test_model_and_data_must_agree(good: Path) -> None:
    from mlplab.data.synthetic import SyntheticDataModule

    loaded = checkpoints.load(good)
    other = SyntheticDataModule(n_samples=600, n_features=N_FEATURES, n_classes=4)
    with pytest.raises(CheckpointError, match="predicts 3 classes, but data synthetic has 20 features and 4 classes"):
        checkpoints.check_compatible(loaded, other, "synthetic")


def _eval(ckpt: Path, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    return run_python(["src/eval.py", f"ckpt_path={ckpt}", f"hydra.run.dir={run_dir}", *overrides], timeout=300)


@pytest.mark.parametrize("case", ["malicious", "truncated", "architecture", "data"])
def test_eval_cli_refuses_bad_checkpoint_with_one_line(tmp_path: Path, good: Path, case: str) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / f"{case}.ckpt"
    overrides: list[str] = []
    if case == "malicious":
        torch.save({"state_dict": _Touch(marker)}, path)
        expected = "refused"
    elif case == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        expected = "truncated or corrupted"
    elif case == "architecture":
        write_checkpoint(path, hidden=(16,), weights_hidden=(8, 8))
        expected = "weights do not match its architecture"
    else:
        path = good
        overrides = ["data=synthetic", "data.n_features=5"]
        expected = "takes 20 input features and predicts 3 classes, but data synthetic has 5 features"
    run_dir = tmp_path / "eval_run"
    proc = _eval(path, run_dir, *overrides)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr
    assert str(path) in lines[0]
    assert not marker.exists()
    assert not (run_dir / "eval.json").exists() and not run_dir.exists()


def test_eval_cli_on_a_good_checkpoint(tmp_path: Path, good: Path) -> None:
    import json

    proc = _eval(good, tmp_path / "ok")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "ok" / "eval.json").read_text())
    assert result["n"] == 100 and result["split"] == "test" and result["data"] == "synthetic"
    assert f"accuracy   {result['accuracy']:.6f}" in proc.stdout
    assert "confusion matrix" in proc.stdout
