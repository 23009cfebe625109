"""Batches served by slicing device-resident tensors.

A per-sample `Dataset` + `DataLoader` took 10.6 s per MNIST epoch against 0.95 s for slicing
tensors at batch 128 (`make bench`):
the model is so small that Python overhead per sample dominates. Each split is held once on
the training device (images as uint8, a quarter of float32's memory) and each batch is
normalised there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

Transform = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]


ORDER_VERSION = 2  # 1: seeded with seed + epoch, which gave seed s+1 the orders of seed s, one epoch on


def stream_seed(seed: int, epoch: int, stream: int, *more: int) -> int:
    """A generator seed for one random stream of one epoch of one run seed.

    Sums such as `seed + epoch` collide across seeds (seed 2's epoch 0 is seed 1's epoch 1), so
    runs over `seed=1,2,3` would train on shifted copies of one sequence of orders; hashing the
    triple through numpy's `SeedSequence` keeps every (seed, epoch, stream) apart.
    """
    return int(np.random.SeedSequence([seed, epoch, stream, *more]).generate_state(1, np.uint64)[0])


_ORDER, _AUGMENT = 0, 1


class TensorBatches:
    """An iterable of `(x, y)` batches over in-memory tensors.

    The order of epoch `e` is a permutation drawn from a generator seeded by `stream_seed(seed,
    e, _ORDER)`, so it depends only on the seed and the epoch number: a resumed run sees the same
    batches as an uninterrupted one, and no two seeds share an epoch's order. From a mid-epoch
    checkpoint, `steps_done()` says how many of the epoch's batches were already trained on,
    and the epoch goes on from the next one (`position()` is what the checkpoint records; the
    datamodule keeps it). Under DDP each
    rank takes a disjoint, equally long shard of that permutation (equal lengths keep the
    ranks' gradient all-reduces in step).

    With `group` > 1 each item is a list of up to `group` consecutive batches, one Lightning
    `training_step` call for all of them (`Classifier` still makes one optimizer step per
    batch): Lightning's own work per call (~1.5 ms here) is longer than a step of a small
    MLP, so grouping shares it out. The batches are the same as with `group=1`.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        transform: Transform,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
        group: int = 1,
        steps_done: Callable[[], int] = lambda: 0,
        global_step: Callable[[], int] = lambda: 0,
    ) -> None:
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.transform = transform
        self.shuffle, self.drop_last = shuffle, drop_last
        self.seed, self.epoch = seed, epoch
        self.rank, self.world_size = rank, world_size
        self.group = group
        self.steps_done = steps_done
        self.global_step = global_step
        self._epoch_start: tuple[int, int] | None = None  # (epoch, global step before its first batch)

    def _indices(self) -> torch.Tensor | None:
        n = len(self.y)
        if not self.shuffle and self.world_size == 1:
            return None
        if self.shuffle:
            g = torch.Generator().manual_seed(stream_seed(self.seed, self.epoch(), _ORDER))
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            # Training shards must be equally long; evaluation shards keep every sample once.
            per_rank = n // self.world_size if self.shuffle else None
            order = order[self.rank :: self.world_size][:per_rank]
        return order.to(self.y.device)

    def _length(self) -> int:
        n = len(self.y)
        if self.world_size > 1:
            n = n // self.world_size if self.shuffle else len(range(self.rank, n, self.world_size))
        return n

    def _bounds(self) -> list[tuple[int, int]]:
        """(start, stop) of each batch. A last training batch of one sample joins the batch
        before it: batch norm cannot train on one sample (MNIST's 55,000 at batch 7 left one),
        and a step on one sample is the noisiest of the epoch. Not at batch size 1, where every
        step is one sample by choice."""
        n, size = self._length(), self.batch_size
        stop = n - n % size if self.drop_last else n
        bounds = [(start, min(start + size, stop)) for start in range(0, stop, size)]
        if self.shuffle and size > 1 and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
            bounds[-2:] = [(bounds[-2][0], bounds[-1][1])]
        return bounds

    def n_batches(self) -> int:
        return len(self._bounds())

    def __len__(self) -> int:
        return -(-self.n_batches() // self.group)

    def batches_in(self, n_items: int) -> int:
        """How many batches (optimizer steps) the first `n_items` items hold."""
        return min(n_items * self.group, self.n_batches())

    def position(self) -> dict[str, int] | None:
        """Where training is in the current epoch, with what identifies its batches: a
        checkpoint's record for `steps_done` when the run resumes."""
        if self._epoch_start is None:
            return None
        epoch, start = self._epoch_start
        return {"epoch": epoch, "done": self.global_step() - start, "batch_size": self.batch_size,
                "group": self.group, "world_size": self.world_size, "n": len(self.y), "order": ORDER_VERSION}

    def __iter__(self) -> Iterator[Batch | list[Batch]]:
        done = self.steps_done() if self.shuffle else 0
        if self.shuffle:
            self._epoch_start = (self.epoch(), self.global_step() - done)
        items = self._single(done)
        if self.group == 1:
            yield from items
            return
        # Lightning counts a call that stopped part-way (trainer.max_steps) as done: the rest of
        # its batches ride with the next call, so the calls still line up with its count.
        carry = [b for _, b in zip(range(-done % self.group), items, strict=False)]
        while chunk := [b for _, b in zip(range(self.group), items, strict=False)]:
            yield carry + chunk
            carry = []

    def _single(self, skip: int = 0) -> Iterator[Batch]:
        order = self._indices()
        g = None
        if self.shuffle:
            g = torch.Generator(device=self.x.device)
            # Under DDP each rank draws its own augmentations: with one stream, image i of every
            # rank's batch got the same shift, rotation and erased box.
            ranked = (self.rank,) if self.world_size > 1 else ()
            g.manual_seed(stream_seed(self.seed, self.epoch(), _AUGMENT, *ranked))
        for i, (start, stop) in enumerate(self._bounds()):
            if order is None:
                xb, yb = self.x[start:stop], self.y[start:stop]
            else:
                idx = order[start:stop]
                xb, yb = self.x[idx], self.y[idx]
            if i < skip:
                if g is not None:
                    self.transform(xb, g)  # moves the augmentation stream on as training did
                continue
            yield self.transform(xb, g), yb
