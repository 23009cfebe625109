"""Splits: sizes, disjointness, the official test set, seeded validation, DDP shards."""

from __future__ import annotations

import pytest
import torch

from conftest import DATA, have_data
from mlplab.data.augment import random_shift
from mlplab.data.batches import TensorBatches, stream_seed
from mlplab.data.images import FashionMNISTDataModule, MNISTDataModule, normalize
from mlplab.data.sources import load_split
from mlplab.data.synthetic import SyntheticDataModule, make_synthetic


def _rows(x: torch.Tensor) -> set[bytes]:
    return {bytes(r) for r in x.reshape(len(x), -1).numpy()}


@pytest.mark.skipif(not have_data("mnist"), reason="MNIST not provisioned (make data)")
@pytest.mark.parametrize("cls, name", [(MNISTDataModule, "mnist"), (FashionMNISTDataModule, "fashion")])
def test_image_splits_are_official_and_disjoint(cls, name) -> None:
    dm = cls(data_dir=str(DATA), val_size=5000, seed=3)
    dm.setup()
    (xtr, ytr), (xva, yva), (xte, yte) = dm.splits["train"], dm.splits["val"], dm.splits["test"]
    assert (len(ytr), len(yva), len(yte)) == (55000, 5000, 10000)
    assert xtr.dtype == torch.uint8 and xtr.shape[1:] == (28, 28)
    official_test = load_split(name, DATA, "test")
    assert torch.equal(xte, official_test[0]) and torch.equal(yte, official_test[1])
    # Train and val partition the 60k training images exactly (compare by content).
    full_x, _ = load_split(name, DATA, "train")
    assert len(_rows(xtr) | _rows(xva)) == len(_rows(full_x))
    assert torch.equal(torch.cat([xtr, xva]).sum(0, dtype=torch.int64), full_x.sum(0, dtype=torch.int64))
    other = cls(data_dir=str(DATA), val_size=5000, seed=4)
    other.setup()
    assert not torch.equal(other.splits["val"][1], yva)  # the hold-out follows the seed


@pytest.mark.skipif(not have_data("mnist"), reason="MNIST not provisioned (make data)")
def test_normalisation_is_applied_per_batch() -> None:
    dm = MNISTDataModule(data_dir=str(DATA), mean=0.1307, std=0.3081)
    dm.setup()
    x, _ = next(iter(dm.train_dataloader()))[0]  # the first batch of the first group
    assert x.dtype == torch.float32 and x.shape == (128, 784)
    raw = dm.splits["train"][0].float() / 255
    assert abs(x.mean().item() - (raw.mean().item() - 0.1307) / 0.3081) < 0.05


def test_synthetic_splits_partition_the_samples() -> None:
    dm = SyntheticDataModule(n_samples=500, n_features=20, n_classes=3, val_size=100, test_size=50, seed=420)
    dm.setup()
    sizes = [len(dm.splits[k][1]) for k in ("train", "val", "test")]
    assert sizes == [350, 100, 50]
    rows = [_rows(dm.splits[k][0]) for k in ("train", "val", "test")]
    assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])
    x, y = make_synthetic(500, 20, 3, "random_labels", 1.0, 420)
    assert x.min() >= 0 and x.max() <= 1 and set(y.tolist()) == {0, 1, 2}
    x2, _ = make_synthetic(500, 20, 3, "random_labels", 1.0, 420)
    assert torch.equal(x, x2)


@pytest.mark.skipif(not have_data("mnist"), reason="MNIST not provisioned (make data)")
def test_val_size_zero_trains_on_all_60k_and_has_no_validation_split() -> None:
    dm = MNISTDataModule(data_dir=str(DATA), val_size=0, seed=3)
    dm.setup()
    assert not dm.has_validation and set(dm.splits) == {"train", "test"}
    full_x, full_y = load_split("mnist", DATA, "train")
    assert torch.equal(dm.splits["train"][0], full_x) and torch.equal(dm.splits["train"][1], full_y)
    with pytest.raises(ValueError, match="val_size=0"):
        dm.val_dataloader()


def test_synthetic_val_size_zero_keeps_the_test_split() -> None:
    dm = SyntheticDataModule(n_samples=500, n_features=20, n_classes=3, val_size=0, test_size=50, seed=420)
    dm.setup()
    assert set(dm.splits) == {"train", "test"} and [len(dm.splits[k][1]) for k in ("train", "test")] == [450, 50]
    held = SyntheticDataModule(n_samples=500, n_features=20, n_classes=3, val_size=100, test_size=50, seed=420)
    held.setup()
    assert torch.equal(dm.splits["test"][0], held.splits["test"][0])  # the same test set either way


def test_batches_already_on_the_device_are_not_walked_again() -> None:
    dm = SyntheticDataModule(n_samples=500, n_features=20, n_classes=3, val_size=100, test_size=50, seed=420,
                             batches_per_call=4)
    dm.setup()
    group = next(iter(dm.train_dataloader()))
    assert dm.transfer_batch_to_device(group, torch.device("cpu"), 0) is group
    # Another device still gets Lightning's transfer, tensor by tensor.
    moved = dm.transfer_batch_to_device(group, torch.device("meta"), 0)
    assert len(moved) == 4 and all(x.device.type == "meta" and y.device.type == "meta" for x, y in moved)


def test_epoch_order_depends_only_on_seed_and_epoch() -> None:
    x, y = torch.arange(100).float()[:, None], torch.arange(100)
    epoch = [0]
    b = TensorBatches(x, y, 10, lambda t, g: t, shuffle=True, seed=1, epoch=lambda: epoch[0])
    first = torch.cat([yb for _, yb in b])
    again = torch.cat([yb for _, yb in b])
    epoch[0] = 1
    second = torch.cat([yb for _, yb in b])
    assert torch.equal(first, again) and not torch.equal(first, second)
    assert sorted(first.tolist()) == list(range(100))


def test_no_two_seeds_share_an_epoch_order_or_augmentation_draws() -> None:
    # Seeding with seed + epoch gave seed 2's epoch 0 the order of seed 1's epoch 1: runs over
    # seed=1,2,3 trained on shifted copies of one sequence of orders.
    x, y = torch.zeros(100, 1), torch.arange(100)
    seen: dict[tuple[int, ...], tuple[int, int]] = {}
    draws: dict[float, tuple[int, int]] = {}
    epoch = [0]
    for seed in range(4):
        b = TensorBatches(x, y, 100, lambda t, g: torch.rand(t.shape, generator=g), shuffle=True, seed=seed,
                          epoch=lambda: epoch[0])
        for epoch[0] in range(4):
            (xb, yb), = list(b)
            assert seen.setdefault(tuple(yb.tolist()), (seed, epoch[0])) == (seed, epoch[0])
            assert draws.setdefault(xb[0, 0].item(), (seed, epoch[0])) == (seed, epoch[0])


def test_groups_hold_the_same_batches_in_the_same_order() -> None:
    x, y = torch.arange(103).float()[:, None], torch.arange(103)
    single = list(TensorBatches(x, y, 10, lambda t, g: t, shuffle=True, seed=3))
    grouped = TensorBatches(x, y, 10, lambda t, g: t, shuffle=True, seed=3, group=4)
    groups = list(grouped)
    assert [len(gr) for gr in groups] == [4, 4, 3] and len(grouped) == 3
    flat = [b for gr in groups for b in gr]
    assert len(flat) == len(single) == 11
    assert all(torch.equal(a[1], b[1]) for a, b in zip(single, flat, strict=True))
    assert grouped.batches_in(2) == 8 and grouped.batches_in(3) == 11 and grouped.batches_in(99) == 11


def test_ddp_shards_are_disjoint_equal_and_cover_the_epoch() -> None:
    x, y = torch.arange(103).float()[:, None], torch.arange(103)
    shards = [
        torch.cat([yb for _, yb in TensorBatches(x, y, 8, lambda t, g: t, shuffle=True, seed=5, rank=r, world_size=3)])
        for r in range(3)
    ]
    assert [len(s) for s in shards] == [34, 34, 34]
    assert len(set(torch.cat(shards).tolist())) == 102
    evals = [torch.cat([yb for _, yb in TensorBatches(x, y, 8, lambda t, g: t, rank=r, world_size=3)]) for r in range(3)]
    assert sorted(torch.cat(evals).tolist()) == list(range(103))  # evaluation sees every sample once
    assert len(TensorBatches(x, y, 8, lambda t, g: t, shuffle=True, rank=0, world_size=3)) == 5


def test_ddp_ranks_draw_their_own_augmentations() -> None:
    # One stream for all ranks gave image i of every rank's batch the same shift and erased box.
    x, y = torch.zeros(40, 1), torch.arange(40)
    draws = [torch.cat([xb for xb, _ in TensorBatches(x, y, 10, lambda t, g: torch.rand(t.shape, generator=g),
                                                       shuffle=True, seed=5, rank=r, world_size=2)]) for r in range(2)]
    assert not torch.equal(draws[0], draws[1])
    # A single process keeps the stream it always had, so its runs repeat as before.
    alone = torch.cat([xb for xb, _ in TensorBatches(x, y, 10, lambda t, g: torch.rand(t.shape, generator=g),
                                                      shuffle=True, seed=5)])
    g = torch.Generator().manual_seed(stream_seed(5, 0, 1))
    assert torch.equal(alone, torch.cat([torch.rand(10, 1, generator=g) for _ in range(4)]))


def test_a_last_training_batch_of_one_sample_joins_the_one_before() -> None:
    # model.norm=batchnorm crashed after a whole epoch on it (MNIST's 55,000 at batch 7).
    x, y = torch.arange(21).float()[:, None], torch.arange(21)
    batches = TensorBatches(x, y, 10, lambda t, g: t, shuffle=True, seed=1)
    sizes = [len(yb) for _, yb in batches]
    assert sizes == [10, 11] and batches.n_batches() == len(batches) == 2
    assert sorted(torch.cat([yb for _, yb in batches]).tolist()) == list(range(21))
    # Evaluation keeps its batches as they are; so does a one-batch epoch.
    assert [len(yb) for _, yb in TensorBatches(x, y, 10, lambda t, g: t)] == [10, 10, 1]
    assert [len(yb) for _, yb in TensorBatches(x[:1], y[:1], 10, lambda t, g: t, shuffle=True)] == [1]
    assert [len(yb) for _, yb in TensorBatches(x, y, 1, lambda t, g: t, shuffle=True)] == [1] * 21  # by choice


def test_random_shift_moves_content_within_bounds() -> None:
    img = torch.zeros(64, 28, 28, dtype=torch.uint8)
    img[:, 14, 14] = 255
    g = torch.Generator().manual_seed(0)
    out = random_shift(img, 2, g)
    pos = (out == 255).nonzero()[:, 1:]
    assert len(pos) == 64 and ((pos - 14).abs() <= 2).all()
    assert len({tuple(p) for p in pos.tolist()}) > 5  # offsets differ per image
    assert normalize(out, 0.0, 1.0).shape == (64, 784)
