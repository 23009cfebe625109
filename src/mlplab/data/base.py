"""What the image and synthetic datamodules share: splits held as tensors on the device."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch

from mlplab.data.batches import ORDER_VERSION, TensorBatches


class TensorDataModule(L.LightningDataModule):
    """Subclasses fill `self.splits` with `{"train"|"val"|"test": (x, y)}` CPU tensors in
    `_load()`; this class moves them to the training device once and serves `TensorBatches`."""

    n_features: int
    n_classes: int
    class_names: tuple[str, ...]
    image_shape: tuple[int, int] | None = None
    val_size: int

    @property
    def has_validation(self) -> bool:
        """False with `val_size=0`: the whole training set is trained on (a final fit once the
        settings are chosen, as GridSearchCV's `refit`), and there is no "val" split."""
        return self.val_size > 0

    def __init__(self, batch_size: int, eval_batch_size: int | None, seed: int, batches_per_call: int = 1) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.batches_per_call = batches_per_call
        self.eval_batch_size = eval_batch_size or max(batch_size, 1024)
        self.seed = seed
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._train_batches: TensorBatches | None = None
        self._resume: dict[str, int] | None = None

    def _load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def train_transform(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        return self.eval_transform(x, g)

    def eval_transform(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        return x

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        self.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in self._load().items()}

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # Batches are slices of splits already on the device. Lightning's generic transfer
        # walks the nested list of a `batches_per_call` group on every call: ~0.3 ms here, a
        # fifth of Lightning's per-call cost (py-spy, docs/speed.md). A group's batches all
        # come from one split, so its first tensor tells where all of them are.
        first = batch[0][0] if isinstance(batch, list) else batch[0]
        if isinstance(first, torch.Tensor) and first.device == device:
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _batches(self, split: str, train: bool) -> TensorBatches:
        x, y = self.splits[split]
        trainer = self.trainer
        batches = TensorBatches(
            x,
            y,
            batch_size=self.batch_size if train else self.eval_batch_size,
            transform=self.train_transform if train else self.eval_transform,
            shuffle=train,
            seed=self.seed,
            epoch=lambda: trainer.current_epoch if trainer is not None else 0,
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
            group=self.batches_per_call if train else 1,
        )
        if train and trainer is not None:
            batches.steps_done = lambda: self._resume_at(batches)
            batches.global_step = lambda: trainer.global_step
            self._train_batches = batches
        return batches

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints: where training was in its epoch (see `TensorBatches`)."""
        position = self._train_batches.position() if self._train_batches is not None else None
        return {"train_position": position} if position is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume = state_dict.get("train_position")

    def _resume_at(self, batches: TensorBatches) -> int:
        """Batches the current epoch already trained on: nonzero only when a run resumes from a
        mid-epoch checkpoint (Ctrl-C), whose epoch then goes on from its next batch rather than
        train the first ones twice (and overrun a one-cycle schedule's planned steps). Only
        once, and only for the same epoch cut into the same batches: after a change of batch
        size, `batches_per_call`, devices or `ORDER_VERSION` the epoch is served from the start
        of its order, and Lightning stops it after the calls it still expects."""
        saved, self._resume = self._resume, None
        trainer = self.trainer
        if not saved or trainer is None:
            return 0
        same = {"epoch": trainer.current_epoch, "batch_size": batches.batch_size, "group": batches.group,
                "world_size": batches.world_size, "n": len(batches.y), "order": ORDER_VERSION}
        done = int(saved.get("done", 0))
        if any(saved.get(k) != v for k, v in same.items()) or not 0 < done < batches.n_batches():
            return 0
        return done

    def train_dataloader(self) -> Any:
        return self._batches("train", train=True)

    def val_dataloader(self) -> Any:
        if not self.has_validation:
            raise ValueError("no validation split: this data was set up with data.val_size=0")
        return self._batches("val", train=False)

    def test_dataloader(self) -> Any:
        return self._batches("test", train=False)


def seeded_split(n: int, holdout: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (keep, holdout) of a seeded random hold-out of `holdout` items out of `n`."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[holdout:].sort().values, order[:holdout].sort().values


# Data keys that leave the splits' samples as they are; every other one can change which
# samples form the hold-out (its size, the seed, a synthetic problem's generation).
SAME_SAMPLES = ("batch_size", "eval_batch_size", "batches_per_call", "data_dir", "mean", "std", "augment", "tta")


def holdout_difference(a: Mapping[str, Any], b: Mapping[str, Any], given_only: bool = False) -> str | None:
    """The first data key that can change which samples are held out and differs between the
    data configs `a` and `b` (with `given_only`, among the keys both set)."""
    for key in sorted(set(a) & set(b) if given_only else set(a) | set(b)):
        if not key.startswith("_") and key not in SAME_SAMPLES and a.get(key) != b.get(key):
            return key
    return None
