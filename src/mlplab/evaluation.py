"""Metrics of a checkpoint on a split, and class probabilities for new inputs.

Both go through the datamodule's own evaluation batches and `eval_transform`, so eval.py
reproduces the test metrics printed at the end of training and predict.py normalises inputs
exactly as training did.
"""

from __future__ import annotations

import csv
import io
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlplab.data.base import TensorDataModule
from mlplab.models.classifier import Classifier

SPLITS = ("test", "val")
PREDICT_BATCH = 8192  # rows per model call: an MLP this size handles it in one go


@dataclass(frozen=True)
class Evaluation:
    split: str
    n: int
    loss: float
    accuracy: float
    per_class: list[float]  # accuracy (recall) of each true class; nan if absent
    confusion: np.ndarray  # [true, predicted] counts
    class_names: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "n": self.n,
            "loss": self.loss,
            "accuracy": self.accuracy,
            "per_class_accuracy": dict(zip(self.class_names, self.per_class)),
            "confusion_matrix": self.confusion.tolist(),
            "class_names": self.class_names,
        }


def _batches(dm: TensorDataModule, split: str) -> Any:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return dm.test_dataloader() if split == "test" else dm.val_dataloader()


@torch.no_grad()
def split_outputs(model: Classifier, dm: TensorDataModule, split: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(class probabilities [N, C], labels [N], mean loss) over a split, batch by batch as
    the trainer's test loop does (same batches, same loss, so the same numbers)."""
    probs, labels = [], []
    loss_sum, n = 0.0, 0
    for x, y in _batches(dm, split):
        out = model(x)
        loss_sum += float(model.data_loss(out, y)) * y.numel()
        n += y.numel()
        probs.append(out.exp() if model.loss_name == "nll" else out.softmax(dim=1))
        labels.append(y)
    return torch.cat(probs), torch.cat(labels), loss_sum / max(n, 1)


def confusion_matrix(pred: torch.Tensor, y: torch.Tensor, n_classes: int) -> np.ndarray:
    idx = y.long() * n_classes + pred.long()
    return torch.bincount(idx.cpu(), minlength=n_classes * n_classes).reshape(n_classes, n_classes).numpy()


def evaluate(model: Classifier, dm: TensorDataModule, split: str = "test") -> Evaluation:
    if not dm.splits:
        dm.setup()
    was_training = model.training
    model.eval()
    try:
        probs, y, loss = split_outputs(model, dm, split)
    finally:
        model.train(was_training)
    cm = confusion_matrix(probs.argmax(1), y, dm.n_classes)
    totals = cm.sum(1)
    per_class = [float(cm[i, i] / totals[i]) if totals[i] else float("nan") for i in range(len(cm))]
    n = int(totals.sum())
    return Evaluation(split, n, loss, float(np.trace(cm) / n), per_class, cm, list(dm.class_names))


def format_evaluation(ev: Evaluation) -> str:
    names = ev.class_names
    width = max(len(n) for n in names)
    lines = [
        f"loss       {ev.loss:.6f}",
        f"accuracy   {ev.accuracy:.6f}  ({int(np.trace(ev.confusion))}/{ev.n})",
        "",
        "per-class accuracy:",
    ]
    totals = ev.confusion.sum(1)
    lines += [f"  {i:>2} {name:<{width}}  {acc:.4f}  (n={totals[i]})" for i, (name, acc) in enumerate(zip(names, ev.per_class))]
    cell = max(5, len(str(ev.confusion.max())) + 1)
    lines += ["", "confusion matrix (rows: true class, columns: predicted class index):",
              " " * (width + 5) + "".join(f"{j:>{cell}}" for j in range(len(names)))]
    lines += [f"  {i:>2} {name:<{width}}" + "".join(f"{v:>{cell}}" for v in row)
              for i, (name, row) in enumerate(zip(names, ev.confusion))]
    return "\n".join(lines)


@torch.no_grad()
def predict_proba(model: Classifier, features: torch.Tensor, batch_size: int = PREDICT_BATCH) -> torch.Tensor:
    """Class probabilities [N, C], a few thousand rows per model call."""
    model.eval()
    out = [model.predict_step(features[i : i + batch_size], i) for i in range(0, len(features), batch_size)]
    return torch.cat(out) if out else features.new_zeros((0, model.hparams.n_classes))


def write_atomic(path: Path, text: str) -> None:
    """Readers (and a killed run) see no file or the whole file, never a partial one."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def predictions_csv(ids: Sequence[str], probs: torch.Tensor, class_names: Sequence[str]) -> str:
    """One row per input: its id, the predicted class name, and every class's probability
    under a column named after the class."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["input", "predicted", *class_names])
    pred = probs.argmax(1).tolist()
    for i, row in enumerate(probs.cpu().numpy()):
        w.writerow([ids[i], class_names[pred[i]], *(f"{p:.6f}" for p in row)])
    return buf.getvalue()
