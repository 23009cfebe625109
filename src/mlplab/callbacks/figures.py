"""TensorBoard figures during training, each a callback switched on or off in
conf/callbacks/default.yaml.

They run at validation or epoch end only, never per step, on global rank zero, and only when
a TensorBoardLogger is configured. Figures that need predictions run the model once over the
whole validation split in large no-grad batches, rather than collecting outputs per step.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import lightning as L
import torch

log = logging.getLogger(__name__)


def tensorboard(trainer: L.Trainer) -> Any | None:
    """The run's SummaryWriter on rank zero, else None."""
    from lightning.pytorch.loggers import TensorBoardLogger

    if not trainer.is_global_zero:
        return None
    return next((lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def _due(trainer: L.Trainer, every_n_epochs: int) -> bool:
    return every_n_epochs > 0 and not trainer.sanity_checking and trainer.current_epoch % every_n_epochs == 0


@torch.no_grad()
def val_predictions(trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(probabilities [N, C], labels [N]) over the datamodule's whole validation split."""
    dm = trainer.datamodule
    splits = getattr(dm, "splits", None) or {}
    if "val" not in splits:
        return None
    x, y = splits["val"]
    step = max(getattr(dm, "eval_batch_size", 4096), 4096)
    was_training = pl_module.training
    pl_module.eval()
    # As Lightning's own loops do: `*-true` precisions hold the weights in that dtype.
    plugin = trainer.precision_plugin
    try:
        with plugin.forward_context():
            probs = torch.cat([pl_module.predict_step(plugin.convert_input(dm.eval_transform(x[i : i + step])), i)
                               for i in range(0, len(y), step)])
    finally:
        pl_module.train(was_training)
    return probs.float(), y


def _class_names(trainer: L.Trainer, n: int) -> list[str]:
    names = getattr(trainer.datamodule, "class_names", None)
    return list(names) if names and len(names) == n else [str(i) for i in range(n)]


class _BudgetedFigure(L.Callback):
    """Drawing a figure costs about half a second of CPU whatever the accelerator, which is
    a few percent of a CPU epoch on MNIST but can double a GPU epoch. So a figure that is due
    `every_n_epochs` validations is skipped while the time spent drawing it would exceed
    `max_overhead` of the fit time so far (null: never skipped). The final weights are always
    drawn when training ends, if no validation drew them: that state is the one most looked at.
    Validations, not epochs, are counted: with trainer.check_val_every_n_epoch=2 they fall on
    epochs 1, 3, …, and a count by epoch number never came due."""

    def __init__(self, every_n_epochs: int = 1, max_overhead: float | None = 0.01) -> None:
        self.every_n_epochs = every_n_epochs
        self.max_overhead = max_overhead
        self._spent = 0.0
        self._fit_start = time.perf_counter()
        self._validations = 0
        self._drawn_step: int | None = None  # the global step whose weights were last drawn
        self._epoch = 0  # the title's

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._spent, self._fit_start, self._validations, self._drawn_step = 0.0, time.perf_counter(), 0, None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_step = trainer.global_step  # after a resume's restore: a fit that trains nothing draws nothing

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.every_n_epochs <= 0:
            return
        self._validations += 1
        writer = tensorboard(trainer)
        if writer is None or (self._validations - 1) % self.every_n_epochs:
            return
        started = time.perf_counter()
        if self.max_overhead is not None and self._spent > self.max_overhead * (started - self._fit_start):
            return
        self._epoch = trainer.current_epoch
        try:
            self.draw(trainer, pl_module, writer)
            self._drawn_step = trainer.global_step
        finally:
            self._spent += time.perf_counter() - started

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard(trainer)
        if (writer is None or self.every_n_epochs <= 0 or self._drawn_step == trainer.global_step
                or trainer.global_step == getattr(self, "_start_step", None)):
            return
        # Lightning has counted the last epoch by now: its number is one less.
        self._epoch = max(trainer.current_epoch - 1, 0)
        try:
            self.draw(trainer, pl_module, writer)
            self._drawn_step = trainer.global_step
        except Exception as err:  # noqa: BLE001 - training is over: a figure must not fail the run
            log.warning("%s: the final figure was not drawn (%s)", type(self).__name__, err)

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, writer: Any) -> None:
        raise NotImplementedError


class ConfusionMatrixFigure(_BudgetedFigure):
    """The validation confusion matrix as an image, every `every_n_epochs` (0: off)."""

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, writer: Any) -> None:
        out = val_predictions(trainer, pl_module)
        if out is None:
            return
        from torchmetrics.classification import MulticlassConfusionMatrix

        from mlplab.inspect.plots import confusion_figure

        probs, y = out
        n = probs.shape[1]
        cm = MulticlassConfusionMatrix(num_classes=n).to(probs.device)(probs, y).cpu().numpy()
        fig = confusion_figure(cm, _class_names(trainer, n), f"validation, epoch {self._epoch}")
        writer.add_figure("val/confusion_matrix", fig, global_step=trainer.global_step)


class MisclassifiedFigure(_BudgetedFigure):
    """A grid of the `n_images` validation images misclassified with the highest confidence,
    captioned true / predicted, every `every_n_epochs` (0: off). Skipped for non-image data."""

    def __init__(self, every_n_epochs: int = 1, max_overhead: float | None = 0.01, n_images: int = 24) -> None:
        super().__init__(every_n_epochs, max_overhead)
        self.n_images = n_images

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, writer: Any) -> None:
        if getattr(trainer.datamodule, "image_shape", None) is None:
            return
        out = val_predictions(trainer, pl_module)
        if out is None:
            return
        from mlplab.inspect.plots import misclassified_figure, most_confident_mistakes

        probs, y = (t.cpu().numpy() for t in out)
        idx = most_confident_mistakes(probs, y, self.n_images)
        pred = probs.argmax(1)
        images = trainer.datamodule.splits["val"][0][torch.as_tensor(idx, device=out[1].device)].cpu().numpy()
        fig = misclassified_figure(
            images, y[idx].tolist(), pred[idx].tolist(), probs[idx, pred[idx]].tolist(),
            _class_names(trainer, probs.shape[1]),
            f"epoch {self._epoch}: {len(idx)} most confident of {int((pred != y).sum())} errors",
        )
        writer.add_figure("val/misclassified", fig, global_step=trainer.global_step)


# TensorBoard re-bins every histogram to ~30 buckets for display, so 64 lose nothing.
HISTOGRAM_BINS = 64


def add_histogram(writer: Any, tag: str, values: torch.Tensor, step: int, bins: int = HISTOGRAM_BINS) -> None:
    """`writer.add_histogram`, computed by torch. SummaryWriter's own computes the sum of
    squares with a numpy dot product, which wakes numpy's OpenBLAS thread; that thread then
    spins for a while and takes CPU from torch's threads: measured here, 8% of a core
    through the next epoch of training on a 2-core machine."""
    v = values.detach().flatten().float()
    if v.numel() == 0 or not bool(torch.isfinite(v).all()):
        return  # a non-finite weight stops the run elsewhere (FiniteLossGuard)
    lo, hi = v.aminmax()
    lo_f, hi_f = float(lo), float(hi)
    if hi_f <= lo_f:
        hi_f = lo_f + 1e-6 * max(1.0, abs(lo_f))  # all values equal: one non-empty bucket
    counts = torch.histc(v, bins=bins, min=lo_f, max=hi_f)
    edges = torch.linspace(lo_f, hi_f, bins + 1)
    # As SummaryWriter does: limits are the bucket edges, with an empty bucket before the first.
    writer.add_histogram_raw(tag, min=lo_f, max=float(hi), num=v.numel(), sum=float(v.sum()),
                             sum_squares=float(v.dot(v)), bucket_limits=edges.tolist(),
                             bucket_counts=[0.0, *counts.tolist()], global_step=step)


class ParameterHistograms(L.Callback):
    """Histograms of every parameter tensor (`weights/…`) and of the per-unit gradient norms
    of the epoch's last training step (`grad_norm/…`: one L2 norm per row of a weight
    matrix, absolute values for vectors), every `every_n_epochs` (0: off)."""

    def __init__(self, every_n_epochs: int = 1) -> None:
        self.every_n_epochs = every_n_epochs

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # The last batch, not epoch end: Lightning frees the gradients before validation.
        # Per step this is only the comparison below.
        if batch_idx + 1 < trainer.num_training_batches and not trainer.is_last_batch:
            return
        writer = tensorboard(trainer)
        if writer is None or not _due(trainer, self.every_n_epochs):
            return
        step = trainer.global_step
        for name, p in pl_module.named_parameters():
            if not p.requires_grad:  # e.g. the weight average of model.ema_decay
                continue
            tag = name.removeprefix("net.")
            add_histogram(writer, f"weights/{tag}", p.cpu(), step)
            if p.grad is not None:
                g = p.grad.detach().float()
                add_histogram(writer, f"grad_norm/{tag}", (g.norm(dim=1) if g.ndim > 1 else g.abs()).cpu(), step)


class ModelGraph(L.Callback):
    """The model's graph (Graphs tab), traced once at the start of fitting."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard(trainer)
        in_features = getattr(pl_module.hparams, "in_features", None) if hasattr(pl_module, "hparams") else None
        if writer is None or not in_features:
            return
        net = getattr(pl_module, "net", pl_module)
        was_training = net.training
        net.eval()
        try:
            with warnings.catch_warnings():
                # add_graph traces with torch.jit, which now warns that it is deprecated.
                warnings.simplefilter("ignore", FutureWarning)
                writer.add_graph(net, torch.zeros(1, int(in_features), device=pl_module.device, dtype=pl_module.dtype))
        except Exception as err:  # noqa: BLE001 - a picture of the model must never stop training
            log.warning("model graph not logged: %s: %s", type(err).__name__, err)
        finally:
            net.train(was_training)


class ScalarLayout(L.Callback):
    """A Custom Scalars layout with train and val of the same metric on one chart."""

    LAYOUT = {
        "train vs validation": {
            "loss": ["Multiline", [r"^train/loss$", r"^val/loss$"]],
            "accuracy": ["Multiline", [r"^train/acc$", r"^val/acc$", r"^val/acc_best$"]],
        },
        "optimisation": {
            "learning rate": ["Multiline", [r"^lr-"]],
            "train loss per step": ["Multiline", [r"^train/loss_step$"]],
        },
    }

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard(trainer)
        if writer is not None:
            writer.add_custom_scalars(self.LAYOUT)
