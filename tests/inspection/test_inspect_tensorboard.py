"""TensorBoard's own reader finds the figures, histograms, graph and layout the callbacks
write during training."""

from __future__ import annotations

import json
from pathlib import Path

import inspection_support as support
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mlplab.inspect.events import event_files

# Session fixtures shared by the inspection tests (the runs train once per session).
mnist_run = support.mnist_run
synthetic_run = support.synthetic_run


def _tags(run_dir: Path) -> dict[str, set[str] | bool]:
    found: dict[str, set[str] | bool] = {"images": set(), "histograms": set(), "tensors": set(), "graph": False}
    for f in event_files(run_dir):
        acc = EventAccumulator(str(f), size_guidance={"images": 0, "histograms": 0, "tensors": 0, "scalars": 0})
        acc.Reload()
        tags = acc.Tags()
        for kind in ("images", "histograms", "tensors"):
            found[kind] |= set(tags[kind])  # type: ignore[operator]
        found["graph"] = found["graph"] or tags["graph"]
        for tag in tags["images"]:
            assert all(img.width > 300 and img.height > 200 for img in acc.Images(tag))
        if "val/confusion_matrix" in tags["images"]:
            epochs = json.loads((run_dir / "summary.json").read_text())["epochs"]
            assert len(acc.Images("val/confusion_matrix")) == epochs  # one per epoch
    return found


def test_mnist_run_has_figures_histograms_graph_and_layout(mnist_run: Path) -> None:
    found = _tags(mnist_run)
    assert {"val/confusion_matrix", "val/misclassified"} <= found["images"]
    hists = found["histograms"]
    assert {"weights/net.0.weight", "grad_norm/net.0.weight", "weights/net.6.bias", "grad_norm/net.6.bias"} <= hists
    assert found["graph"] is True
    assert "custom_scalars__config__" in found["tensors"]


def test_synthetic_run_has_confusion_matrix_but_no_images_grid(synthetic_run: Path) -> None:
    found = _tags(synthetic_run)
    assert "val/confusion_matrix" in found["images"] and "val/misclassified" not in found["images"]


def _draws(monkeypatch, every_n: int, max_overhead: float | None, validated: list[int], epochs: int) -> list[int]:
    """The epochs a figure is drawn for (titles), validation at `validated` of `epochs` epochs."""
    from types import SimpleNamespace

    from mlplab.callbacks import figures

    drawn: list[int] = []

    class Figure(figures._BudgetedFigure):
        def draw(self, trainer, pl_module, writer) -> None:  # noqa: ANN001
            drawn.append(self._epoch)

    monkeypatch.setattr(figures, "tensorboard", lambda trainer: object())
    fig = Figure(every_n_epochs=every_n, max_overhead=max_overhead)
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=0, global_step=0)
    fig.on_fit_start(trainer, None)
    fig.on_train_start(trainer, None)
    for epoch in range(epochs):
        trainer.current_epoch, trainer.global_step = epoch, 10 * (epoch + 1)
        if epoch in validated:
            fig.on_validation_epoch_end(trainer, None)
    trainer.current_epoch = epochs  # where Lightning's counter stands when training ends
    fig.on_train_end(trainer, None)
    fig.on_train_end(trainer, None)
    return drawn


def test_figures_are_drawn_every_n_validations_and_for_the_final_weights(monkeypatch) -> None:
    # Over budget (any time spent is too much): the first, then the final weights, once.
    assert _draws(monkeypatch, 1, 0.0, [0, 1, 2], 3) == [0, 2]
    assert _draws(monkeypatch, 1, None, [0, 1, 2], 3) == [0, 1, 2]  # null: every epoch
    # The last epoch was not due: drawn at the end all the same, titled with its own epoch.
    assert _draws(monkeypatch, 2, None, [0, 1, 2, 3], 4) == [0, 2, 3]
    # trainer.check_val_every_n_epoch=2: validations at epochs 1 and 3; counted by epoch number
    # (0, 2, …) none came due, and nothing was drawn at all.
    assert _draws(monkeypatch, 2, None, [1, 3], 4) == [1, 3]
    # Epoch 4 trained without validation: the final figure is its weights', not epoch 3's.
    assert _draws(monkeypatch, 1, None, [1, 3], 5) == [1, 3, 4]
    assert _draws(monkeypatch, 0, None, [0, 1], 2) == []  # 0: never


def test_torch_histograms_match_summarywriters_own(tmp_path: Path) -> None:
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from mlplab.callbacks.figures import HISTOGRAM_BINS, add_histogram

    values = torch.randn(5000) * 3 + 1
    with SummaryWriter(str(tmp_path)) as writer:
        add_histogram(writer, "ours", values, 7)
        writer.add_histogram("theirs", values.numpy(), 7, bins=HISTOGRAM_BINS)
        add_histogram(writer, "constant", torch.full((4,), 2.0), 7)
        add_histogram(writer, "nan", torch.tensor([1.0, float("nan")]), 7)
    (f,) = event_files(tmp_path)
    acc = EventAccumulator(str(f), size_guidance={"histograms": 0})
    acc.Reload()
    assert set(acc.Tags()["histograms"]) == {"ours", "theirs", "constant"}  # non-finite: skipped
    ours, theirs = (acc.Histograms(t)[0] for t in ("ours", "theirs"))
    assert ours.step == theirs.step == 7
    a, b = ours.histogram_value, theirs.histogram_value
    assert (a.min, a.max, a.num) == (b.min, b.max, b.num)
    assert abs(a.sum - b.sum) < 1e-2 and abs(a.sum_squares - b.sum_squares) / b.sum_squares < 1e-5
    assert len(a.bucket) == len(b.bucket) == HISTOGRAM_BINS + 1
    # Bucket edges agree; a value on an edge may fall either side in float32 vs float64.
    assert sum(abs(x - y) for x, y in zip(a.bucket, b.bucket)) <= 4 and sum(a.bucket) == 5000
    constant = acc.Histograms("constant")[0].histogram_value
    assert (constant.min, constant.max, constant.num, sum(constant.bucket)) == (2.0, 2.0, 4, 4)
