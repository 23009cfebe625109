"""`model.mixup_alpha`: training batches are convex mixes of pairs of examples, the loss is the
same mix of their labels' losses, and a mixed run still learns."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from conftest import FAST
from mlplab.models.classifier import Classifier
from mlplab.training import train


def test_a_mixed_batch_pairs_each_example_with_another_and_mixes_the_loss_alike() -> None:
    torch.manual_seed(0)
    model = Classifier(6, 4, hidden_sizes=[8], mixup_alpha=1.0)
    x, y = torch.randn(32, 6), torch.arange(32) % 4
    torch.manual_seed(1)
    mixed, y_b, lam = model._mixup(x, y)
    assert 0.0 < lam < 1.0
    # Recover each row's partner from the inputs alone: (mixed − lam·x) / (1 − lam) is a row of x.
    partner = (mixed - lam * x) / (1.0 - lam)
    perm = torch.cdist(partner, x).argmin(1)
    torch.testing.assert_close(partner, x[perm], rtol=1e-4, atol=1e-4)
    assert sorted(perm.tolist()) == list(range(32))  # a permutation: every example used once
    assert torch.equal(y_b, y[perm])
    # The mixed loss is cross-entropy against the mixed one-hot target (it is linear in the target).
    _, loss, *_ = model.objective(mixed, y, (y_b, lam))
    target = lam * F.one_hot(y, 4).float() + (1.0 - lam) * F.one_hot(y_b, 4).float()
    torch.testing.assert_close(loss, F.cross_entropy(model(mixed), target))
    torch.manual_seed(1)
    again = model._mixup(x, y)
    assert torch.equal(again[0], mixed) and again[2] == lam  # seeded by torch's generator


def test_lam_follows_beta_alpha_alpha() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(4, 6), torch.arange(4)
    for alpha in (0.2, 1.0):
        model = Classifier(6, 4, hidden_sizes=[8], mixup_alpha=alpha)
        lams = torch.tensor([model._mixup(x, y)[2] for _ in range(4000)])
        # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)): 0.179 for a = 0.2, 0.083 for a = 1.
        assert abs(lams.mean().item() - 0.5) < 0.02
        assert abs(lams.var().item() - 1 / (4 * (2 * alpha + 1))) < 0.01


def test_a_mixup_run_mixes_every_training_batch_and_still_learns(make_cfg, tmp_path: Path, monkeypatch) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    calls: list[int] = []
    original = Classifier._mixup

    def counted(self: Classifier, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        assert self.training  # never on validation or test batches
        calls.append(len(x))
        return original(self, x, y)

    monkeypatch.setattr(Classifier, "_mixup", counted)
    train(make_cfg(["data=synthetic", "model.hidden_sizes=[32]", *FAST, "report=false",
                    "model.mixup_alpha=0.4"]))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["metrics"]["test/acc"] > 0.7  # 3 classes: chance is 1/3
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    train_acc = [e.value for e in events.Scalars("train/acc")]
    assert len(train_acc) == 3 and all(0.0 < a < 1.0 for a in train_acc)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert len(calls) == last["global_step"] > 0  # one mix per optimizer step
    assert last["hyper_parameters"]["mixup_alpha"] == 0.4
