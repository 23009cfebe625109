"""`model.ema_decay`: validation, test, prediction and checkpoint selection see a moving average
of the weights; it is the average its formula defines, and a resumed run keeps it exactly."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from conftest import FAST
from mlplab.checkpoints import load
from mlplab.models.classifier import Classifier
from mlplab.training import train

SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.5}


class RecordLiveWeights(L.Callback):
    def __init__(self) -> None:
        self.steps: list[list[torch.Tensor]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.steps.append([p.detach().clone() for p in pl_module.net.parameters()])

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        self.steps.append([p.detach().clone() for p in pl_module.net.parameters()])


def _fit(decay: float, steps: int) -> tuple[Classifier, RecordLiveWeights]:
    torch.manual_seed(0)
    x, y = torch.randn(256, 6), torch.randint(0, 3, (256,))
    model = Classifier(6, 3, hidden_sizes=[8], ema_decay=decay, optimizer=SGD)
    recorder = RecordLiveWeights()
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder])
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True))
    return model, recorder


def test_average_is_the_warmed_up_exponential_average_of_the_steps() -> None:
    decay = 0.8
    model, rec = _fit(decay, steps=20)
    assert len(rec.steps) == 21
    expected = [w.clone() for w in rec.steps[0]]
    for t, live in enumerate(rec.steps[1:], start=1):
        d = min(decay, (1 + t) / (10 + t))
        expected = [e + (1 - d) * (w - e) for e, w in zip(expected, live)]
    for avg, exp, live in zip(model.ema_net.parameters(), expected, rec.steps[-1]):
        torch.testing.assert_close(avg, exp)
        assert not torch.allclose(avg, live)  # it lags the live weights


def test_evaluation_runs_the_average_and_training_the_live_weights() -> None:
    model, _ = _fit(0.9, steps=10)
    x = torch.randn(5, 6)
    model.eval()
    torch.testing.assert_close(model(x), model.ema_net(x))
    assert not torch.allclose(model(x), model.net(x))
    model.train()
    torch.testing.assert_close(model(x), model.net(x))
    # Only the live weights are optimized.
    (opt,) = [model.configure_optimizers()]
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in model.net.parameters()}


SYNTH = ["data=synthetic", "model.hidden_sizes=[16]", "model.dropout=0.0", *FAST,
         "callbacks.early_stopping.patience=100", "report=false", "model.ema_decay=0.9"]


def test_checkpoint_holds_both_and_loads_the_average_for_evaluation(make_cfg, tmp_path: Path) -> None:
    train(make_cfg(SYNTH))
    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    state = torch.load(best, weights_only=True)["state_dict"]
    assert not torch.equal(state["ema_net.net.0.weight"], state["net.net.0.weight"])
    loaded = load(best).model.eval()
    x = torch.randn(4, loaded.hparams.in_features)
    torch.testing.assert_close(loaded.ema_net.net[0].weight, state["ema_net.net.0.weight"])
    torch.testing.assert_close(loaded(x), loaded.ema_net(x))


def test_resumed_run_has_the_same_average_as_an_uninterrupted_one(make_cfg, tmp_path: Path) -> None:
    train(make_cfg([*SYNTH, "trainer.max_epochs=4"], run_dir=tmp_path / "full"))
    train(make_cfg([*SYNTH, "trainer.max_epochs=2"], run_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train(make_cfg([*SYNTH, "trainer.max_epochs=4", f"ckpt_path={last}"], run_dir=tmp_path / "resumed"))
    full, resumed = (torch.load(tmp_path / r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
                     for r in ("full", "resumed"))
    ema_keys = [k for k in full if k.startswith("ema_net.")]
    assert ema_keys
    for key in ema_keys:
        torch.testing.assert_close(resumed[key], full[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("decay", [None, 0.99])
def test_parameter_count_for_the_optimizer_is_unchanged(decay: float | None) -> None:
    model = Classifier(6, 3, hidden_sizes=[8], ema_decay=decay)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 6 * 8 + 8 + 8 * 3 + 3
