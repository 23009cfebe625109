"""`model.members`: independent MLPs trained side by side, predicting by their mean probability."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import FAST
from mlplab.checkpoints import build_datamodule, load
from mlplab.evaluation import evaluate
from mlplab.models.classifier import Classifier
from mlplab.models.ensemble import Ensemble
from mlplab.training import train


def test_the_ensemble_predicts_the_mean_of_its_members_probabilities() -> None:
    torch.manual_seed(0)
    model = Classifier(6, 4, hidden_sizes=[8], members=3).eval()
    assert isinstance(model.net, Ensemble) and len(model.net.members) == 3
    first = [m.net[0].weight for m in model.net.members]
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])  # own inits
    x = torch.randn(5, 6)
    mean = torch.stack([F.softmax(m(x), dim=1) for m in model.net.members]).mean(0)
    torch.testing.assert_close(model(x).exp(), mean)
    torch.testing.assert_close(model.predict_step(x, 0), mean)
    # Evaluation's loss is the ensemble's negative log-likelihood.
    y = torch.tensor([0, 1, 2, 3, 0])
    torch.testing.assert_close(model.data_loss(model(x), y), F.nll_loss(mean.log(), y))


def test_each_member_learns_from_its_own_loss_only() -> None:
    torch.manual_seed(0)
    model = Classifier(6, 4, hidden_sizes=[8], members=2, l2=0.1).train()
    x, y = torch.randn(16, 6), torch.arange(16) % 4
    out, loss, total, _, l2 = model.objective(x, y)
    m0, m1 = model.net.members
    own = [F.cross_entropy(m(x), y) for m in (m0, m1)]
    torch.testing.assert_close(loss, (own[0] + own[1]) / 2)  # logged: the mean over members
    squares = sum(w.pow(2).sum() for m in (m0, m1) for w in (m.net[0].weight, m.net[2].weight))
    torch.testing.assert_close(l2, 0.1 * 0.5 * squares / 2)
    torch.testing.assert_close(out, model.net.combine(torch.stack([m0(x), m1(x)])))
    total.backward()
    # Member 0's gradient is that of its own objective, at full scale (plain SGD steps a member
    # exactly as it would step one MLP): member 1 does not enter it.
    w = m0.net[0].weight
    expected, = torch.autograd.grad(own[0] + 0.1 * 0.5 * (w.pow(2).sum() + m0.net[2].weight.pow(2).sum()), w)
    torch.testing.assert_close(w.grad, expected)


def test_gradient_clipping_is_per_member() -> None:
    torch.manual_seed(0)
    model = Classifier(6, 4, hidden_sizes=[8], members=2, dropout=0.0, gradient_clip_val=1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model._direct = True
    model.trainer = None  # no Lightning: only the member loop and the optimizer run

    class Opt:  # what `_step` calls on Lightning's wrapped optimizer
        optimizer = opt

        def zero_grad(self, set_to_none: bool = True) -> None:
            opt.zero_grad(set_to_none=set_to_none)

        def _on_before_step(self) -> None: ...

        def _on_after_step(self) -> None: ...

    m0, m1 = model.net.members
    with torch.no_grad():
        m1.net[-1].weight.mul_(1e4)  # member 1's gradients are huge, member 0's are not
    x, y = torch.randn(16, 6), torch.arange(16) % 4
    own, = torch.autograd.grad(F.cross_entropy(m0(x), y), m0.net[0].weight)
    before = m0.net[0].weight.detach().clone()
    model._step_schedulers = lambda interval: None
    model._step(Opt(), x, y)
    grads = [p.grad for p in m0.parameters()]
    assert torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])) <= 1.0 + 1e-5
    assert own.norm() < 0.5  # member 0 alone is well under the threshold: its step is unclipped
    torch.testing.assert_close(m0.net[0].weight, before - 0.1 * own)


def test_an_ensemble_run_learns_and_its_checkpoint_reloads_as_an_ensemble(make_cfg, tmp_path: Path) -> None:
    train(make_cfg(["data=synthetic", "model.hidden_sizes=[32]", "model.members=3", *FAST, "report=false"]))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["metrics"]["test/acc"] > 0.7  # 3 classes: chance is 1/3
    path = tmp_path / "run" / "checkpoints" / "best.ckpt"
    loaded = load(path)
    assert loaded.hparams["members"] == 3 and len(loaded.model.net.members) == 3
    ev = evaluate(loaded.model, build_datamodule(path, loaded.data), "test")
    assert ev.accuracy == pytest.approx(summary["metrics"]["test/acc"], abs=1e-6)
    # Every member learned, not just one of them.
    dm = build_datamodule(path, loaded.data)
    dm.setup()
    x, y = dm.splits["test"]
    with torch.no_grad():
        for member in loaded.model.net.members:
            assert (member(dm.eval_transform(x)).argmax(1) == y).float().mean() > 0.6
