"""`data.tta`: evaluation scores each image by its mean class probability over fixed views."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import DATA, FAST, have_data
from mlplab import checkpoints
from mlplab.data.augment import TestViews
from mlplab.data.images import MNISTDataModule
from mlplab.evaluation import evaluate, predict_proba, predict_to_csv
from mlplab.models.classifier import Classifier
from mlplab.training import train


def test_views_are_the_image_its_four_one_pixel_moves_and_its_mirror() -> None:
    x = torch.randint(1, 256, (3, 5, 6), dtype=torch.uint8)
    views = TestViews(shift=1, hflip=True)(x)
    assert views.shape == (6, 3, 5, 6) and views.dtype == torch.uint8
    right, left, down, up, mirror = views[1:]
    assert torch.equal(views[0], x)
    assert torch.equal(right[:, :, 1:], x[:, :, :-1]) and not right[:, :, 0].any()
    assert torch.equal(left[:, :, :-1], x[:, :, 1:]) and not left[:, :, -1].any()
    assert torch.equal(down[:, 1:], x[:, :-1]) and not down[:, 0].any()
    assert torch.equal(up[:, :-1], x[:, 1:]) and not up[:, -1].any()
    assert torch.equal(mirror, x.flip(-1))
    assert TestViews(shift=2)(x).shape[0] == 5 and not TestViews().active


def test_an_image_datamodule_with_tta_hands_evaluation_every_view() -> None:
    x = torch.randint(0, 256, (2, 28, 28), dtype=torch.uint8)
    dm = MNISTDataModule(mean=0.1, std=0.3, tta={"shift": 1, "hflip": True})  # no data needed
    views = dm.eval_transform(x)
    assert views.shape == (6, 2, 784)
    plain = MNISTDataModule(mean=0.1, std=0.3)
    torch.testing.assert_close(views[0], plain.eval_transform(x))
    torch.testing.assert_close(views[5], plain.eval_transform(x.flip(-1)))
    assert plain.eval_transform(x).shape == (2, 784)
    # Prediction transforms a batch at a time and gives the same probabilities.
    model = Classifier(784, 10, hidden_sizes=[8]).eval()
    raw = torch.randint(0, 256, (7, 28, 28), dtype=torch.uint8)
    torch.testing.assert_close(predict_proba(model, raw, batch_size=3, transform=dm.eval_transform),
                               predict_proba(model, dm.eval_transform(raw)))


@pytest.mark.parametrize("norm", ["none", "batchnorm"])
def test_the_classifier_scores_views_by_their_mean_probability(norm: str) -> None:
    torch.manual_seed(0)
    model = Classifier(12, 4, hidden_sizes=[16], norm=norm).eval()
    views = torch.randn(5, 7, 12)
    mean = torch.stack([F.softmax(model(v), dim=1) for v in views]).mean(0)
    torch.testing.assert_close(model(views).exp(), mean)
    torch.testing.assert_close(predict_proba(model, views, batch_size=3), mean)


@pytest.mark.skipif(not have_data("mnist"), reason="MNIST not provisioned (make data)")
def test_a_run_with_tta_scores_validation_and_test_on_the_views_and_its_checkpoint_keeps_them(
    make_cfg, tmp_path: Path
) -> None:
    train(make_cfg(["model.hidden_sizes=[32]", "model.dropout=0.0", "trainer.limit_train_batches=10",
                    "data.tta.shift=1", *FAST, "report=false"]))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    path = tmp_path / "run" / "checkpoints" / "best.ckpt"
    loaded = checkpoints.load(path)
    assert loaded.data["tta"] == {"shift": 1, "hflip": False}
    dm = checkpoints.build_datamodule(path, loaded.data, str(DATA))
    ev = evaluate(loaded.model, dm, "test")
    assert ev.accuracy == pytest.approx(summary["metrics"]["test/acc"], abs=1e-6)
    assert ev.accuracy > 0.5  # 10 classes: chance is 0.1
    # The same number by hand, from the five views of each test image.
    plain = MNISTDataModule(data_dir=str(DATA), mean=loaded.data["mean"], std=loaded.data["std"])
    x, y = plain._load()["test"]
    shifted = TestViews(shift=1)(x)
    with torch.no_grad():
        probs = torch.stack([F.softmax(loaded.model.net(plain.eval_transform(v)), dim=1) for v in shifted]).mean(0)
    assert ev.accuracy == pytest.approx((probs.argmax(1) == y).float().mean().item(), abs=1e-6)
    # src/predict.py's path gets the same views.
    np.save(tmp_path / "five.npy", x[:5].numpy())
    _, predicted, _ = predict_to_csv(path, tmp_path / "five.npy", tmp_path / "five.csv")
    torch.testing.assert_close(predicted, probs[:5])
