"""`model.members`: independent MLPs trained side by side, predicting by their mean probability."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from conftest import FAST
from mlplab.checkpoints import load
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
    torch.testing.assert_close(loss, (own[0] + own[1]) / 2)
    squares = sum(w.pow(2).sum() for m in (m0, m1) for w in (m.net[0].weight, m.net[2].weight))
    torch.testing.assert_close(l2, 0.1 * 0.5 * squares / 2)
    torch.testing.assert_close(out, model.net.combine(torch.stack([m0(x), m1(x)])))
    total.backward()
    # Member 0's gradient is that of its own objective, halved: member 1 does not enter it.
    w = m0.net[0].weight
    expected, = torch.autograd.grad((own[0] + 0.1 * 0.5 * (w.pow(2).sum() + m0.net[2].weight.pow(2).sum())) / 2, w)
    torch.testing.assert_close(w.grad, expected)


def test_an_ensemble_run_learns_and_its_checkpoint_reloads_as_an_ensemble(make_cfg, tmp_path: Path) -> None:
    train(make_cfg(["data=synthetic", "model.hidden_sizes=[32]", "model.members=3", *FAST, "report=false"]))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["metrics"]["test/acc"] > 0.7  # 3 classes: chance is 1/3
    loaded = load(tmp_path / "run" / "checkpoints" / "best.ckpt")
    assert loaded.hparams["members"] == 3 and len(loaded.model.net.members) == 3
    x = torch.randn(7, loaded.in_features)
    probs = loaded.model.predict_step(x, 0)
    torch.testing.assert_close(probs.sum(1), torch.ones(7))
