"""Every `conf/experiment/notes_*.yaml` composes, builds the network, data and optimizer the
course notes describe, and runs a few batches of fit and test in-process."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping
from notes_support import TINY, notes_names
from torch import nn

from conftest import have_data
from mlplab.training import build, train

Built = dict[str, Any]


def _layers(model: nn.Module) -> list[str]:
    """The network as text: `Linear(20,13,nobias)`, `ReLU`, ... (dropout with p=0 is absent)."""
    out = []
    for m in model.net.net:
        if isinstance(m, nn.Linear):
            out.append(f"Linear({m.in_features},{m.out_features}{'' if m.bias is not None else ',nobias'})")
        else:
            out.append(type(m).__name__)
    return out


def _objects(cfg: Any) -> Built:
    datamodule, model, trainer = build(cfg)
    optimizer = model.configure_optimizers()
    early = next(c for c in trainer.callbacks if isinstance(c, EarlyStopping))
    group = optimizer.param_groups[0]
    return {"cfg": cfg, "dm": datamodule, "model": model, "trainer": trainer, "opt": optimizer,
            "lr": group["lr"], "momentum": group.get("momentum"), "early": early,
            "layers": _layers(model), "params": sum(p.numel() for p in model.parameters())}


def check_synthetic_backprop(b: Built, kind: str = "random_labels") -> None:
    dm, model = b["dm"], b["model"]
    assert (dm.n_samples, dm.n_features, dm.n_classes, dm.kind) == (500, 20, 3, kind)
    assert dm.seed == 420 and b["cfg"].seed == 420
    assert (dm.val_size, dm.test_size) == (50, 50)
    # 20→13 and 13→8 without bias, 8→3 with: the notes' parameter count.
    assert b["params"] == 20 * 13 + 13 * 8 + 8 * 3 + 3
    assert b["layers"] == ["Linear(20,13,nobias)", "ReLU", "Linear(13,8,nobias)", "Sigmoid", "Linear(8,3)"]
    assert model.loss_name == "cross_entropy"
    assert isinstance(b["opt"], torch.optim.SGD) and (b["lr"], b["momentum"]) == (0.1, 0.9)
    assert b["early"].patience >= b["trainer"].max_epochs  # early stopping off


def check_mnist_nll(b: Built) -> None:
    assert type(b["dm"]).__name__ == "MNISTDataModule" and b["dm"].batch_size == 64
    assert b["layers"] == ["Linear(784,128)", "ReLU", "Linear(128,64)", "ReLU", "Linear(64,10)", "LogSoftmax"]
    assert b["model"].loss_name == "nll"
    assert type(b["opt"]) is torch.optim.SGD and (b["lr"], b["momentum"]) == (0.003, 0.0)
    assert b["trainer"].max_epochs == 5


def check_mnist_sigmoid(b: Built) -> None:
    assert type(b["dm"]).__name__ == "MNISTDataModule"
    assert b["layers"] == ["Linear(784,256)", "Sigmoid", "Linear(256,10)"]
    assert b["model"].loss_name == "cross_entropy"


def check_mnist_sgd40(b: Built) -> None:
    assert b["layers"] == ["Linear(784,256)", "ReLU", "Linear(256,10)"]
    assert b["model"].loss_name == "cross_entropy" and b["dm"].batch_size == 64
    assert type(b["opt"]) is torch.optim.SGD and (b["lr"], b["momentum"]) == (1e-3, 0.0)
    assert b["trainer"].max_epochs == 40 and b["early"].patience >= 40


def check_fashion_adam(b: Built) -> None:
    dm = b["dm"]
    assert type(dm).__name__ == "FashionMNISTDataModule"
    assert (dm.mean, dm.std, dm.batch_size) == (0.5, 0.5, 64)
    assert b["layers"] == ["Linear(784,128)", "ReLU", "Linear(128,64)", "ReLU", "Linear(64,10)", "LogSoftmax"]
    assert b["model"].loss_name == "nll"
    assert type(b["opt"]) is torch.optim.Adam and b["lr"] == 0.01
    assert b["trainer"].max_epochs == 5


def check_regularisers(b: Built) -> None:
    model = b["model"]
    assert b["dm"].val_size == 55_000  # 5,000 training images: enough to overfit quickly
    assert b["layers"] == ["Linear(784,256)", "ReLU", "Linear(256,256)", "ReLU", "Linear(256,10)"]
    # The baseline carries no regulariser at all, not even the model group's default dropout.
    assert (model.l1, model.l2, model.max_norm) == (0.0, 0.0, None)
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    assert b["early"].patience >= b["trainer"].max_epochs


def check_init(b: Built) -> None:
    assert b["layers"] == ["Linear(784,256)", "Sigmoid", *["Linear(256,256)", "Sigmoid"] * 4, "Linear(256,10)"]
    assert b["cfg"].model.init == "default" and b["cfg"].model.init_std == 0.01
    assert type(b["opt"]) is torch.optim.Adam and b["lr"] == 1e-3


def check_optimizers_common(b: Built) -> None:
    assert b["layers"] == ["Linear(784,128)", "ReLU", "Linear(128,64)", "ReLU", "Linear(64,10)"]
    assert b["trainer"].max_epochs == 5 and b["early"].patience >= 5


def optimizer_setting(cls: type, lr: float, batch_size: int = 64, momentum: float | None = None,
                      limit_train_batches: int | None = None) -> Callable[[Built], None]:
    def check(b: Built) -> None:
        check_optimizers_common(b)
        assert type(b["opt"]) is cls and b["lr"] == lr
        if momentum is not None:
            assert b["momentum"] == momentum
        assert b["dm"].batch_size == batch_size
        if limit_train_batches is None:
            assert b["trainer"].limit_train_batches == 1.0
        else:  # optimizer steps per epoch: Lightning calls × batches per call
            assert b["trainer"].limit_train_batches * b["dm"].batches_per_call == limit_train_batches
    return check


EXPECTED: dict[str, Callable[[Built], None]] = {
    "notes_synthetic_backprop": check_synthetic_backprop,
    "notes_synthetic_backprop_clusters": lambda b: check_synthetic_backprop(b, kind="clusters"),
    "notes_mnist_nll": check_mnist_nll,
    "notes_mnist_sigmoid": check_mnist_sigmoid,
    "notes_mnist_sgd40": check_mnist_sgd40,
    "notes_fashion_adam": check_fashion_adam,
    "notes_regularisers": check_regularisers,
    "notes_init": check_init,
    "notes_optimizers": optimizer_setting(torch.optim.Adam, 1e-3),
    "notes_optimizers_gd": optimizer_setting(torch.optim.SGD, 0.1, batch_size=55_000, momentum=0.0),
    "notes_optimizers_sgd1": optimizer_setting(torch.optim.SGD, 0.01, batch_size=1, limit_train_batches=2000),
    "notes_optimizers_sgd": optimizer_setting(torch.optim.SGD, 0.1, momentum=0.0),
    "notes_optimizers_momentum": optimizer_setting(torch.optim.SGD, 0.01, momentum=0.9),
    "notes_optimizers_adagrad": optimizer_setting(torch.optim.Adagrad, 0.01),
    "notes_optimizers_adadelta": optimizer_setting(torch.optim.Adadelta, 1.0),
    "notes_optimizers_rmsprop": optimizer_setting(torch.optim.RMSprop, 1e-3),
    "notes_optimizers_adam": optimizer_setting(torch.optim.Adam, 1e-3),
}


def _dataset(name: str) -> str | None:
    text = (Path(__file__).resolve().parents[2] / "conf" / "experiment" / f"{name}.yaml").read_text()
    if "override /data: fashion" in text:
        return "fashion"
    return None if "synthetic" in name else "mnist"


def test_every_notes_experiment_has_expectations() -> None:
    # A new notes_* config must say here what defines it.
    assert set(notes_names("experiment")) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_experiment_builds_what_the_notes_describe_and_runs(name: str, make_cfg, tmp_path: Path) -> None:
    dataset = _dataset(name)
    if dataset and not have_data(dataset):
        pytest.skip(f"{dataset} not provisioned (make data)")
    EXPECTED[name](_objects(make_cfg([f"experiment={name}"], run_dir=tmp_path / "composed")))

    run = tmp_path / "run"
    train(make_cfg([f"experiment={name}", *TINY], run_dir=run))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"] == 1
    assert 0.0 <= summary["metrics"]["test/acc"] <= 1.0
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_full_batch_gd_is_one_batch_of_the_whole_training_split(make_cfg, tmp_path: Path) -> None:
    if not have_data("mnist"):
        pytest.skip("mnist not provisioned (make data)")
    b = _objects(make_cfg(["experiment=notes_optimizers_gd"], run_dir=tmp_path))
    b["dm"].setup("fit")
    assert len(b["dm"].splits["train"][1]) == b["dm"].batch_size
    assert len(b["dm"].train_dataloader()) == 1
