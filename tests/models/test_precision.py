"""`trainer.precision=bf16-mixed`: a checkpoint evaluates under the autocast it was trained
with, so `src/eval.py` reproduces its run's test figures; a CPU without bf16 hardware is warned."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

import mlplab.training
from conftest import FAST
from forkserver import run_python
from mlplab.checkpoints import build_datamodule, load
from mlplab.evaluation import evaluate, predict_proba, predict_to_csv
from mlplab.models.classifier import Classifier
from mlplab.training import cpu_has_bf16, train, warn_slow_precision


def test_a_mixed_precision_model_runs_under_its_autocast_outside_a_trainer() -> None:
    torch.manual_seed(0)
    model = Classifier(20, 3, hidden_sizes=[64]).eval()
    x = torch.randn(32, 20)
    full = model(x)
    model.use_precision("bf16-mixed")
    out = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = model(x)  # inside a trainer's autocast: not wrapped again
        expected = model._forward(x).float()
    assert out.dtype == torch.float32 and torch.equal(out, expected)
    assert inside.dtype == torch.bfloat16 and torch.equal(inside.float(), out)
    assert not torch.allclose(out, full, atol=1e-4)  # bf16 products really ran
    model.use_precision("32-true")
    assert torch.equal(model(x), full)


@pytest.mark.parametrize(("precision", "members"), [("bf16-mixed", 2), ("bf16", 1)])  # "bf16": Lightning's alias
def test_a_bf16_run_is_reproduced_by_evaluating_its_checkpoint(precision: str, members: int,
                                                               make_cfg, tmp_path: Path) -> None:
    train(make_cfg(["data=synthetic", "model.hidden_sizes=[32]", f"model.members={members}",
                    f"trainer.precision={precision}", *FAST, "report=false"]))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["metrics"]["test/acc"] > 0.7  # 3 classes: chance is 1/3
    path = tmp_path / "run" / "checkpoints" / "best.ckpt"
    loaded = load(path)
    assert loaded.model.hparams["precision"] == "bf16-mixed"
    ev = evaluate(loaded.model, build_datamodule(path, loaded.data), "test")
    assert ev.accuracy == pytest.approx(summary["metrics"]["test/acc"], abs=1e-6)
    # The loss tells bf16 from 32-bit products where a small model's accuracy may not.
    assert ev.loss == pytest.approx(summary["metrics"]["test/loss"], abs=1e-6)
    loaded.model.use_precision(None)
    full = evaluate(loaded.model, build_datamodule(path, loaded.data), "test")
    assert full.loss != pytest.approx(summary["metrics"]["test/loss"], abs=1e-6)
    if members == 1:
        return
    # The command line: the checkpoint's own precision by default, 32-bit on request, and a
    # bad value refused in one line naming the key, with nothing written. Its process runs
    # torch's default threads; this one may have been left with others by an earlier test
    # (torch_threads=1), which moves a 32-bit loss in its sixth decimal.
    threads = torch.get_num_threads()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    try:
        full = evaluate(loaded.model, build_datamodule(path, loaded.data), "test")
    finally:
        torch.set_num_threads(threads)
    for precision_arg, expected in [([], ev), (["precision=32-true"], full)]:
        out = tmp_path / f"eval{len(precision_arg)}"
        proc = _eval(path, out, *precision_arg)
        assert proc.returncode == 0, proc.stderr[-2000:]
        result = json.loads((out / "eval.json").read_text())
        assert result["loss"] == pytest.approx(expected.loss, abs=1e-6)
        assert result["precision"] == ("32-true" if precision_arg else "bf16-mixed")
    # predict.py's path too: the checkpoint's bf16 unless 32-bit is asked for.
    dm = build_datamodule(path, loaded.data)
    dm.setup()
    np.save(tmp_path / "x.npy", dm.splits["test"][0].numpy())
    own = predict_to_csv(path, tmp_path / "x.npy", tmp_path / "own.csv")[1]
    at32 = predict_to_csv(path, tmp_path / "x.npy", tmp_path / "at32.csv", precision="32-true")[1]
    loaded.model.use_precision("bf16-mixed")
    torch.testing.assert_close(own, predict_proba(loaded.model, dm.splits["test"][0], transform=dm.eval_transform))
    assert not torch.allclose(own, at32, atol=1e-5)
    proc = _eval(path, tmp_path / "bad", "precision=bf16")
    assert proc.returncode == 1
    line, = proc.stderr.strip().splitlines()
    assert line.startswith("error: precision='bf16': expected one of 32-true, bf16-mixed"), line
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("precision", ["bf16-true", "64-true"])
def test_a_true_precision_run_is_reproduced_by_evaluating_its_checkpoint(precision: str, make_cfg,
                                                                          tmp_path: Path) -> None:
    # Its weights were loaded into a 32-bit model and scored at 32-bit under the run's name.
    # Several test batches: the run's loss metrics were summed in bf16 (Lightning converts the
    # module, torchmetrics states included), so its summary said test/loss 0.9921875 where
    # eval.py said 0.992256.
    train(make_cfg(["data=synthetic", "model.hidden_sizes=[32]", f"trainer.precision={precision}", *FAST,
                    "report=false", "data.eval_batch_size=64"]))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    path = tmp_path / "run" / "checkpoints" / "best.ckpt"
    loaded = load(path)
    ev = evaluate(loaded.model, build_datamodule(path, loaded.data), "test")
    assert ev.accuracy == pytest.approx(summary["metrics"]["test/acc"], abs=1e-6)
    assert ev.loss == pytest.approx(summary["metrics"]["test/loss"], abs=1e-6)
    loaded.model.use_precision("32-true")  # eval.py's precision=32-true
    assert next(loaded.model.parameters()).dtype == torch.float32
    full = evaluate(loaded.model, build_datamodule(path, loaded.data), "test")
    if precision == "bf16-true":
        assert full.loss != pytest.approx(summary["metrics"]["test/loss"], abs=1e-6)
    # predict.py on it: a bf16-true checkpoint's probabilities ended in "TypeError: Got
    # unsupported ScalarType BFloat16" (numpy) with a traceback.
    dm = build_datamodule(path, loaded.data)
    dm.setup()
    np.save(tmp_path / "x.npy", dm.splits["test"][0].numpy())
    ids, probs, _ = predict_to_csv(path, tmp_path / "x.npy", tmp_path / "p.csv")
    assert probs.dtype == torch.float32 and len(ids) == len(dm.splits["test"][1])
    assert (tmp_path / "p.csv").read_text().count("\n") == len(ids) + 1


def test_a_bf16_true_model_is_scored_by_the_argmax_of_its_logits() -> None:
    # Its probabilities were a softmax in bf16, which rounds nearby ones to ties: eval.py and
    # the report chose another class than the logits the run's test/acc counts (0.7630 for
    # a run whose summary said 0.7631).
    from mlplab.data.synthetic import SyntheticDataModule
    from mlplab.evaluation import split_outputs

    torch.manual_seed(0)
    model = Classifier(20, 10, hidden_sizes=[64]).eval()  # untrained: logits close together
    model.use_precision("bf16-true")
    dm = SyntheticDataModule(n_samples=3000, n_classes=10, val_size=100, test_size=2000, seed=0)
    dm.setup()
    probs, y, _ = split_outputs(model, dm, "test")
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in dm.test_dataloader()])
    assert logits.dtype == torch.bfloat16 and probs.dtype == torch.float32
    assert torch.equal(probs.argmax(1), logits.argmax(1))
    assert evaluate(model, dm, "test").accuracy == pytest.approx(float((logits.argmax(1) == y).float().mean()))


def test_a_bf16_true_run_gets_its_png_report(make_cfg, tmp_path: Path) -> None:
    # numpy has no bfloat16: the report was skipped with a warning, and mlplab.inspect raised.
    train(make_cfg(["data=synthetic", "model.hidden_sizes=[32]", "trainer.precision=bf16-true", *FAST]))
    assert (tmp_path / "run" / "confusion_matrix.png").is_file() and (tmp_path / "run" / "curves.png").is_file()


def _eval(ckpt: Path, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    return run_python(["src/eval.py", f"ckpt_path={ckpt}", f"hydra.run.dir={run_dir}", *overrides], timeout=300)


@pytest.mark.parametrize(("precision", "has_bf16", "warned"), [
    ("bf16-mixed", False, True), ("bf16-mixed", True, False), ("bf16-mixed", None, False), ("32-true", False, False),
])
def test_bf16_on_a_cpu_without_bf16_hardware_is_warned(precision: str, has_bf16: bool | None, warned: bool,
                                                        monkeypatch, caplog) -> None:
    monkeypatch.setattr(mlplab.training, "cpu_has_bf16", lambda: has_bf16)
    trainer = L.Trainer(accelerator="cpu", precision=precision, logger=False, enable_progress_bar=False)
    with caplog.at_level(logging.WARNING, logger="mlplab.training"):
        warn_slow_precision(trainer)
    assert ("trainer.precision=bf16-mixed" in caplog.text) is warned


@pytest.mark.parametrize(("text", "expected"), [
    ("flags\t\t: fpu avx2 avx512f amx_tile\n", False),
    ("flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n", True),
    ("flags\t\t: fpu avx2 avx512f avx512_bf16\n", True),  # AVX-512 BF16 without AMX (the AMD EPYC of docs/speed.md)
    ("Features\t: fp asimd sve bf16 i8mm\n", True),  # Arm (e.g. Graviton3)
    ("flags\t\t: fpu avx2 xamx_bf16x\n", False),  # whole flags only
])
def test_bf16_hardware_is_read_from_cpuinfo_flags(text: str, expected: bool, tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(text)
    assert cpu_has_bf16(tmp_path / "cpuinfo") is expected
    assert cpu_has_bf16(tmp_path / "missing") is None


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_the_direct_step_trains_exactly_as_lightnings_hooked_step(precision: str, make_cfg, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a loss scaler on one device, `_step` calls backward and the optimizer itself
    (`Classifier.on_fit_start`): bit for bit the fit that Lightning's hooked path gives."""
    original = Classifier.on_fit_start
    chosen: dict[bool, bool] = {}
    runs = {}
    for direct in (True, False):
        def on_fit_start(self: Classifier, direct: bool = direct) -> None:
            original(self)
            chosen[direct] = self._direct
            self._direct = self._direct and direct

        monkeypatch.setattr(Classifier, "on_fit_start", on_fit_start)
        run = tmp_path / f"direct{direct}"
        train(make_cfg(["data=synthetic", "model.hidden_sizes=[32]", "model.dropout=0.1", "optimizer=adamw",
                        "scheduler=onecycle", f"trainer.precision={precision}", *FAST, "report=false"], run_dir=run))
        runs[direct] = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert chosen == {True: True, False: True}  # the direct path is what a plain fit takes
    assert runs[True]["global_step"] == runs[False]["global_step"] > 0
    assert runs[True]["state_dict"].keys() == runs[False]["state_dict"].keys()
    for key, tensor in runs[False]["state_dict"].items():
        assert torch.equal(runs[True]["state_dict"][key], tensor), key


@pytest.mark.parametrize("members", [1, 2])
@pytest.mark.parametrize("fused", [False, True])
def test_gradients_are_clipped_after_the_loss_scaler_unscales_them(fused: bool, members: int) -> None:
    # Under 16-mixed (a GPU's; forced here on the CPU) the gradients were clipped while still
    # multiplied by the loss scale, so each step shrank ~65,536 times; a fused optimizer raised.
    from lightning.pytorch.plugins.precision import MixedPrecision

    from mlplab.data.synthetic import SyntheticDataModule

    def step(plugin: MixedPrecision | None) -> torch.Tensor:
        torch.manual_seed(0)
        data = SyntheticDataModule(n_samples=600, val_size=100, test_size=100, batch_size=50, batches_per_call=1)
        model = Classifier(20, 3, hidden_sizes=[8], members=members, dropout=0.0, gradient_clip_val=0.1,
                           optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.5, "fused": fused})
        before = [p.detach().clone() for p in model.parameters()]
        trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, accelerator="cpu", limit_val_batches=0,
                            num_sanity_val_steps=0, plugins=[plugin] if plugin else None)
        trainer.fit(model, data)
        return torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before, strict=True)])

    full, scaled = step(None), step(MixedPrecision("16-mixed", "cpu"))
    assert full.norm() > 0.01
    torch.testing.assert_close(scaled, full, atol=2e-4, rtol=1e-2)
