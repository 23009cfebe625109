"""Synthetic classification tensors generated with torch from a seed."""

from __future__ import annotations

import torch

from mlplab.data.base import TensorDataModule

KINDS = ("clusters", "random_labels")


def make_synthetic(
    n_samples: int, n_features: int, n_classes: int, kind: str, separability: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`clusters`: one Gaussian blob per class around centroids drawn with scale
    `separability` (larger → easier). `random_labels`: the course notes' example, uniform
    features and uniform labels, learnable only by memorising the training set."""
    g = torch.Generator().manual_seed(seed)
    if kind == "random_labels":
        x = torch.rand(n_samples, n_features, generator=g)
        y = torch.randint(0, n_classes, (n_samples,), generator=g)
        return x, y
    centroids = torch.randn(n_classes, n_features, generator=g) * separability
    y = torch.randint(0, n_classes, (n_samples,), generator=g)
    x = centroids[y] + torch.randn(n_samples, n_features, generator=g)
    return x, y


class SyntheticDataModule(TensorDataModule):
    """Every argument is a key of `conf/data/synthetic.yaml`. `n_samples` is split into
    train / `val_size` / `test_size` by a seeded permutation."""

    def __init__(
        self,
        n_samples: int = 2000,
        n_features: int = 20,
        n_classes: int = 3,
        kind: str = "clusters",
        separability: float = 0.5,
        val_size: int = 400,
        test_size: int = 400,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        batches_per_call: int = 8,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed, batches_per_call)
        self.save_hyperparameters()
        self.n_samples, self.n_features, self.n_classes = n_samples, n_features, n_classes
        self.kind, self.separability = kind, separability
        self.val_size, self.test_size = val_size, test_size
        self.class_names = tuple(str(i) for i in range(n_classes))

    def _load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        x, y = make_synthetic(self.n_samples, self.n_features, self.n_classes, self.kind,
                              self.separability, self.seed)
        order = torch.randperm(self.n_samples, generator=torch.Generator().manual_seed(self.seed + 1))
        test, val = order[: self.test_size], order[self.test_size : self.test_size + self.val_size]
        train = order[self.test_size + self.val_size :]
        splits = {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": (x[test], y[test])}
        return splits if self.has_validation else {k: v for k, v in splits.items() if k != "val"}
