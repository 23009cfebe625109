"""MNIST and Fashion-MNIST: the official 10k test set, a seeded validation hold-out from the
60k training images, uint8 on the device, normalised (and optionally augmented) per batch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mlplab.data.augment import Augment, TestViews
from mlplab.data.base import TensorDataModule, seeded_split
from mlplab.data.sources import DATASETS, load_split, prepare


class ImageDataModule(TensorDataModule):
    """Every argument is a key of `conf/data/<dataset>.yaml`."""

    dataset: str = ""
    image_shape = (28, 28)

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        batches_per_call: int = 8,
        val_size: int = 5000,
        seed: int = 0,
        mean: float = 0.0,
        std: float = 1.0,
        augment: Mapping[str, Any] | None = None,
        tta: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed, batches_per_call)
        # A plain dict, not Hydra's DictConfig: checkpoints load with `weights_only=True`.
        augment, tta = dict(augment or {}), dict(tta or {})
        self.save_hyperparameters(ignore=["augment", "tta"])
        self.hparams["augment"] = augment
        self.hparams["tta"] = tta
        self.data_dir = data_dir
        self.val_size = val_size
        self.mean, self.std = mean, std
        self.augment = Augment(**augment)
        self.views = TestViews(**tta)
        spec = DATASETS[self.dataset]
        self.class_names = tuple(spec.class_names)
        self.n_classes = len(self.class_names)
        self.n_features = 28 * 28

    def prepare_data(self) -> None:
        prepare(self.dataset, self.data_dir)

    def _load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        x, y = load_split(self.dataset, self.data_dir, "train")
        keep, hold = seeded_split(len(y), self.val_size, self.seed)
        test = load_split(self.dataset, self.data_dir, "test")
        splits = {"train": (x[keep], y[keep]), "val": (x[hold], y[hold]), "test": test}
        return splits if self.has_validation else {k: v for k, v in splits.items() if k != "val"}

    def eval_transform(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        """[B, 784], or [views, B, 784] with `data.tta` (the classifier averages the views)."""
        if not self.views.active:
            return normalize(x, self.mean, self.std)
        views = self.views(x)
        return normalize(views.flatten(0, 1), self.mean, self.std).view(views.shape[0], x.shape[0], -1)

    def train_transform(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        if self.augment.active:
            x = self.augment(x, g)
        return normalize(x, self.mean, self.std)


def normalize(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 (or a fresh float32 tensor in 0-255) [B, 28, 28] → float32 [B, 784] in the
    training scale ((x/255 − mean) / std)."""
    return (x.reshape(x.shape[0], -1).float().div_(255.0).sub_(mean)).div_(std)


class MNISTDataModule(ImageDataModule):
    dataset = "mnist"


class FashionMNISTDataModule(ImageDataModule):
    dataset = "fashion"
